"""Plain-dict views of stored objects: the ``--json`` output and export format.

The keys are a stable interface for scripts; add keys, never rename them.
"""


def _iso(value):
    return value.isoformat() if value is not None else None


def rep_ref(rep):
    return {"id": rep.id, "name": rep.name, "email": rep.email} if rep is not None else None


def org_ref(org):
    return {"id": org.id, "name": org.name, "domain": org.domain} if org is not None else None


def lead_dict(lead, full=False):
    """A lead as a dict; ``full`` adds the message, provenance and breakdown."""
    out = {
        "id": lead.id,
        "status": lead.status,
        "name": lead.name,
        "email": lead.email,
        "phone": lead.phone,
        "company": lead.company,
        "title": lead.title,
        "website": lead.website,
        "country": lead.country,
        "source": lead.source,
        "channel": lead.channel,
        "form": lead.form,
        "submitted_by": lead.submitted_by,
        "score": lead.score,
        "qualified": lead.qualified,
        "qualified_at": _iso(lead.qualified_at),
        "needs_review": lead.needs_review,
        "inquiry_count": lead.inquiry_count,
        "subject": lead.subject,
        "organisation": org_ref(lead.organisation) if lead.organisation_id else None,
        "contact_id": lead.contact_id,
        "owner": rep_ref(lead.owner) if lead.owner_id else None,
        "created_at": _iso(lead.created_at),
        "updated_at": _iso(lead.updated_at),
        "last_inquiry_at": _iso(lead.last_inquiry_at),
    }
    if full:
        out.update({
            "message": lead.message,
            "signals": lead.signals,
            "fields": lead.fields,
            "custom": lead.custom,
            "review_reason": lead.review_reason,
            "score_breakdown": lead.score_breakdown,
            "ruleset_version": lead.ruleset_version,
            "disqualified_reason": lead.disqualified_reason,
            "assignment_reason": lead.assignment_reason,
            "converted_at": _iso(lead.converted_at),
            "email_domain": lead.email_domain,
            "domain_class": lead.domain_class,
        })
    return out


def inbound_dict(row, full=False):
    out = {
        "id": row.id,
        "channel": row.channel,
        "status": row.status,
        "classification": row.classification,
        "reason": row.reason,
        "failed_step": row.failed_step,
        "error": row.error,
        "received_at": _iso(row.received_at),
        "processed_at": _iso(row.processed_at),
        "size": row.size,
        "mail_from": row.mail_from,
        "rcpt_to": row.rcpt_to,
        "form": row.form,
        "message_id": row.message_id,
        "lead_id": row.lead_id,
        "duplicate_of": row.duplicate_of_id,
        "attempts": row.attempts,
    }
    if full:
        out.update({"peer": row.peer, "origin": row.origin, "content_type": row.content_type,
                    "dedup_key": row.dedup_key})
    return out
