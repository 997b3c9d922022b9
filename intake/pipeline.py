"""The processing pipeline: a stored raw inquiry in, a lead (or a reason) out.

Every inquiry is stored first (``store/inbound.py``), then processed here by
small named steps in the one order declared in :data:`STEPS`::

    parse -> classify -> reply -> normalise -> resolve -> score -> assign -> convert

(``convert`` only acts with ``assignment.auto_convert`` on; off by default.)

All steps of one inquiry run in one database transaction. A step that raises
rolls the whole inquiry back and marks its row ``failed`` with the step's name
and the error; the raw stays and ``leadflow inbox retry`` runs it again. So
every step is idempotent by construction: processing the same row twice can
only happen after a failure, and then nothing of the first try remains.

Two named outcomes end an inquiry early, caught only in :func:`_run_steps`:
:class:`Discard` (not a lead: ``ignored`` with the reason) and :class:`Stop`
(handled, e.g. a reply recorded on its lead: ``done``).

Workers claim ``new`` rows with :func:`claim_pending`; on PostgreSQL the claim
uses ``FOR UPDATE SKIP LOCKED`` so several instances share one queue, and a
row claimed by a worker that died is claimed again after
``worker.claim_timeout_seconds``.
"""

import datetime
import importlib
import logging
import os
import socket
import traceback
from dataclasses import dataclass, field

from peewee import IntegrityError

from leadflow.errors import LeadflowError
from leadflow.intake import normalise
from leadflow.store import fastsql
from leadflow.store.database import db, is_postgres, utcnow
from leadflow.store.models import (
    Activity,
    Contact,
    InboundMessage,
    Lead,
    Organisation,
)

log = logging.getLogger("leadflow.intake")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# Inquiries processed in one transaction: fewer commits, while SQLite's write
# lock is never held long enough to keep intake waiting.
GROUP_SIZE = 10


class Discard(LeadflowError):
    """Not a lead: the inquiry ends ``ignored`` (or ``status``) with a reason."""

    def __init__(self, reason, status="ignored", classification=None):
        super().__init__(reason, status, classification)
        self.reason = reason
        self.status = status
        self.classification = classification

    def __str__(self):
        return self.reason


class Stop(LeadflowError):
    """The inquiry is fully handled before the last step (e.g. a reply)."""

    def __init__(self, outcome):
        super().__init__(outcome)
        self.outcome = outcome

    def __str__(self):
        return self.outcome


@dataclass
class PipelineItem:
    """One inquiry on its way through the steps."""

    inbound: InboundMessage
    config: object
    parsed: object = None
    lead: Lead | None = None
    organisation: Organisation | None = None
    contact: Contact | None = None
    created: bool = False
    outcome: str | None = None
    notes: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)  # shared by the inquiries of one group


# -- parsers by channel: dotted paths, imported when first used ----------------

PARSERS = {
    "email": "leadflow.intake.pipeline:parse_mail",
    "cli": "leadflow.intake.pipeline:parse_mail",
    "form": "leadflow.intake.forms:parse_inbound",
    "import": "leadflow.store.transfer:parse_import_row",
}


def parse_mail(inbound, config):
    """Mail, from SMTP or a file: the bytes as received."""
    from leadflow.intake.message import parse_message

    return parse_message(bytes(inbound.raw), config.intake)


def _resolve_callable(path):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# -- the steps ----------------------------------------------------------------

class ParseStep:
    name = "parse"
    description = "read the raw inquiry into a prospect, a message and signals"

    def process(self, item):
        if item.parsed is not None:  # parsed ahead, outside the transaction (the worker)
            return
        path = PARSERS.get(item.inbound.channel)
        if path is None:
            raise Discard(f"no parser for channel {item.inbound.channel!r}", status="failed")
        item.parsed = _resolve_callable(path)(item.inbound, item.config)


class ClassifyStep:
    name = "classify"
    description = "auto-replies, bounces, bulk mail, spam and loops never become leads"

    def process(self, item):
        parsed = item.parsed
        if parsed.classification != "lead":
            raise Discard(parsed.reason or f"classified as {parsed.classification}",
                          classification=parsed.classification)
        own = normalise.normalise_email(item.config.notify.from_)
        if own and parsed.prospect.email == own:
            raise Discard("mail from leadflow itself (a loop)", classification="loop")


class ReplyStep:
    name = "reply"
    description = "a reply to a stored inquiry is an activity on its lead, not a new lead"

    def process(self, item):
        parsed = item.parsed
        ids = [i for i in [parsed.in_reply_to, *(parsed.references or [])] if i]
        if not ids:
            return
        original = (InboundMessage.select()
                    .where(InboundMessage.message_id.in_(ids), InboundMessage.lead.is_null(False),
                           InboundMessage.id != item.inbound.id)
                    .order_by(InboundMessage.id.desc()).first())
        if original is None:
            return
        lead = Lead.get_by_id(original.lead_id)
        Activity.create(kind="reply", lead=lead, contact=lead.contact_id, inbound=item.inbound,
                        text=_activity_text(parsed), rep=lead.owner_id)
        lead.last_inquiry_at = utcnow()
        lead.updated_at = utcnow()
        lead.save(only=[Lead.last_inquiry_at, Lead.updated_at])
        item.lead = lead
        item.inbound.classification = "reply"
        raise Stop("reply")


class NormaliseStep:
    name = "normalise"
    description = "canonical email, phone (E.164) and the email domain's class"

    def process(self, item):
        prospect = item.parsed.prospect
        prospect.email = normalise.normalise_email(prospect.email)
        if prospect.phone:
            prospect.phone = (normalise.normalise_phone(prospect.phone, item.config.intake.default_region)
                              or prospect.phone)
        if prospect.email is None and not item.parsed.needs_review:
            raise Discard("no valid address of the person who asked", classification="no_sender")


class ResolveStep:
    name = "resolve"
    description = "link the organisation and contact; add to the prospect's open lead or make one"

    def process(self, item):
        parsed = item.parsed
        prospect = parsed.prospect
        internal = item.config.intake.internal_domains
        domain = normalise.email_domain(prospect.email)
        dclass = normalise.domain_class(domain, internal)
        if prospect.email:
            item.organisation = _organisation_for(prospect, domain, dclass, parsed)
            # Only the id: the contact is linked, not read (and wide SELECTs cost).
            item.contact = fastsql.get(Contact, "email", prospect.email, fields=("id",))
        lead = None
        if prospect.email:
            lead = _open_lead(prospect.email)
        if lead is None:
            lead, item.created = _create_lead(item, domain, dclass)
        if not item.created:
            _add_inquiry(lead, item)
        fastsql.create(Activity, kind="inquiry", lead=lead, contact=lead.contact_id,
                       inbound=item.inbound, organisation=lead.organisation_id,
                       text=_activity_text(parsed), rep=lead.owner_id)
        item.lead = lead
        item.outcome = "created" if item.created else "updated"


def _organisation_for(prospect, domain, dclass, parsed):
    if dclass != "company":
        return None
    company_domain = normalise.registered_domain(domain)
    org = fastsql.get(Organisation, "domain", company_domain)
    if org is not None:
        changed = _fill(org, {"website": prospect.website, "country": prospect.country,
                              "size": _size_text(parsed.signals)}, source="inquiry")
        if changed:
            org.updated_at = utcnow()
            fastsql.save_dirty(org)
        return org
    name = prospect.company or _name_from_domain(company_domain)
    provenance = {"name": {"source": "signature" if prospect.company else "domain"},
                  "domain": {"source": "email"}}
    try:
        with db.atomic():
            return Organisation.create(
                name=name, normalised_name=normalise.normalise_org_name(name), domain=company_domain,
                website=prospect.website, country=prospect.country,
                size=_size_text(parsed.signals), employees=_employees(parsed.signals),
                provenance=provenance)
    except IntegrityError:  # another worker made it a moment ago
        return Organisation.get(Organisation.domain == company_domain)


def _create_lead(item, domain, dclass):
    parsed, prospect, inbound = item.parsed, item.parsed.prospect, item.inbound
    now = utcnow()
    values = dict(
        status="new", name=prospect.name, email=prospect.email, open_email=prospect.email,
        email_domain=domain, domain_class=dclass, phone=prospect.phone, title=prospect.title,
        company=prospect.company or (item.organisation.name if item.organisation else None),
        website=prospect.website, country=prospect.country, subject=parsed.subject,
        message=parsed.body, signals=parsed.signals or {}, fields=parsed.fields or {},
        custom=getattr(parsed, "custom", None) or {},
        channel=inbound.channel if inbound.channel in ("form", "import") else "email", form=inbound.form,
        source=_source(inbound), submitted_by=parsed.submitted_by,
        needs_review=bool(parsed.needs_review), review_reason=parsed.review_reason,
        contact=item.contact, organisation=item.organisation,
        owner=item.organisation.owner_id if item.organisation else None,
        first_inquiry_at=parsed.date or now, last_inquiry_at=parsed.date or now,
        created_at=now, updated_at=now, status_changed_at=now,
    )
    if prospect.email is None:
        return fastsql.create(Lead, **values), True
    try:
        with db.atomic():
            return fastsql.create(Lead, **values), True
    except IntegrityError:  # a concurrent inquiry from the same person made the open lead
        return _open_lead(prospect.email), False


def _open_lead(email):
    """The prospect's open lead, locked for this transaction (PostgreSQL: FOR UPDATE)."""
    return fastsql.get(Lead, "open_email", email, for_update=True)


def _add_inquiry(lead, item):
    parsed, prospect = item.parsed, item.parsed.prospect
    lead.inquiry_count += 1
    lead.last_inquiry_at = max(parsed.date or utcnow(), lead.last_inquiry_at or parsed.date or utcnow())
    _fill(lead, {"name": prospect.name, "phone": prospect.phone, "title": prospect.title,
                 "company": prospect.company, "website": prospect.website, "country": prospect.country,
                 "organisation": item.organisation, "contact": item.contact}, source="inquiry")
    lead.signals = {**(lead.signals or {}), **(parsed.signals or {})}
    lead.fields = {**(parsed.fields or {}), **(lead.fields or {})}
    lead.updated_at = utcnow()
    fastsql.save_dirty(lead)


def _fill(obj, values, source):
    """Set the fields that are still empty; return whether anything changed."""
    changed = False
    for name, value in values.items():
        if value is None or value == "":
            continue
        current = getattr(obj, f"{name}_id", None) if name in ("organisation", "contact") \
            else getattr(obj, name)
        if current in (None, ""):
            setattr(obj, name, value)
            changed = True
    return changed


def _source(inbound):
    if inbound.channel == "form":
        return f"form:{inbound.form}"
    if inbound.channel == "email":
        rcpt = (inbound.rcpt_to or [None])[0]
        return f"smtp:{rcpt}" if rcpt else "smtp"
    if inbound.channel == "cli":
        return f"file:{os.path.basename(inbound.origin)}" if inbound.origin else "file"
    return inbound.channel


def _name_from_domain(domain):
    label = domain.split(".", 1)[0]
    return label.replace("-", " ").title()


def _size_text(signals):
    size = (signals or {}).get("size") or {}
    if size.get("value"):
        return f"{size['value']} {size.get('unit') or ''}".strip()
    return None


def _employees(signals):
    size = (signals or {}).get("size") or {}
    return size.get("value") if size.get("unit") in ("employees", "people", "staff") else None


def _activity_text(parsed):
    subject = parsed.subject or "(no subject)"
    body = (parsed.body or "").strip()
    return f"{subject}\n\n{body}" if body else subject


STEPS = [
    ParseStep(),
    ClassifyStep(),
    ReplyStep(),
    NormaliseStep(),
    ResolveStep(),
    _resolve_callable("leadflow.scoring.engine:ScoreStep")(),
    _resolve_callable("leadflow.scoring.routing:AssignStep")(),
    _resolve_callable("leadflow.store.conversion:AutoConvertStep")(),
]


# -- running the steps -----------------------------------------------------------

def _run_steps(item, steps):
    """Run ``steps`` over ``item``; return (status, failed_step, error)."""
    current = None
    try:
        for current in steps:
            current.process(item)
    except Discard as outcome:
        item.outcome = outcome.status if outcome.status != "ignored" else "ignored"
        if outcome.classification:
            item.inbound.classification = outcome.classification
        if outcome.status == "failed":
            return "failed", current.name, outcome.reason
        item.inbound.reason = outcome.reason
        return outcome.status, None, None
    except Stop as outcome:
        item.outcome = outcome.outcome
        return "done", None, None
    return "done", None, None


def process_inbound(inbound_id, config, steps=None):
    """Run the pipeline over one stored inquiry; return its outcome.

    The outcome is ``created``, ``updated``, ``reply``, ``ignored``,
    ``failed`` or ``skipped`` (the row was not waiting to be processed).
    """
    return process_many([inbound_id], config, steps)[inbound_id]


def process_many(inbound_ids, config, steps=None, stop_early=None, parsed=None):
    """Run the pipeline over several stored inquiries; their outcomes by id.

    The group shares one transaction (one commit, one fsync) and a cache for
    what every inquiry reads alike (the rule set, the routing rules). Each
    inquiry runs in a savepoint of its own: one that fails is rolled back
    alone and marked failed; the others commit. Should the commit itself fail,
    each inquiry is tried again in a transaction of its own.

    ``stop_early()``, asked after each inquiry, ends the group there (so that
    a waiting intake commit gets SQLite's write lock); the outcomes then cover
    only the inquiries processed, always at least one.

    ``parsed`` maps ids to what the parse step would make of their raw
    inquiry, when the caller parsed them already (the worker does, in
    another process, while the previous group holds the transaction).
    """
    steps = STEPS if steps is None else steps
    parsed = parsed or {}
    if len(inbound_ids) > 1:
        try:
            return _process_group(inbound_ids, config, steps, stop_early=stop_early,
                                  parsed=parsed)
        except Exception as exc:  # noqa: BLE001 - fall back to one transaction each
            log.warning("group of %d inquiries could not commit (%s); one by one",
                        len(inbound_ids), exc)
    return {i: _process_group([i], config, steps, fallback=True, parsed=parsed)[i]
            for i in inbound_ids}


def _process_group(inbound_ids, config, steps, fallback=False, stop_early=None, parsed=None):
    cache = {}
    parsed = parsed or {}
    outcomes, failures = {}, {}
    try:
        with db.atomic():
            for inbound_id in inbound_ids:
                current = {"name": None}
                try:
                    with db.atomic():  # a savepoint: this inquiry alone rolls back
                        outcomes[inbound_id] = _process_one(inbound_id, config, steps, cache,
                                                            current, parsed.get(inbound_id))
                except _StepFailed as failure:
                    failures[inbound_id] = (failure.step, failure.error)
                except Exception as exc:  # noqa: BLE001 - any step may fail; the raw must stay
                    log.error("inbound #%s: failed in %s: %s", inbound_id, current["name"], exc)
                    log.debug("inbound #%s: %s", inbound_id, traceback.format_exc())
                    failures[inbound_id] = (current["name"], f"{type(exc).__name__}: {exc}")
                if stop_early is not None and stop_early():
                    break
            for inbound_id, (step, error) in failures.items():
                _mark_failed(inbound_id, step, error)
                outcomes[inbound_id] = "failed"
    except Exception as exc:  # noqa: BLE001 - the transaction itself failed
        if not fallback:
            raise
        (inbound_id,) = inbound_ids
        log.error("inbound #%s: could not commit: %s", inbound_id, exc)
        _mark_failed(inbound_id, "commit", f"{type(exc).__name__}: {exc}")
        return {inbound_id: "failed"}
    for inbound_id, outcome in outcomes.items():
        if outcome not in ("failed", "skipped"):
            log.info("inbound #%s: %s", inbound_id, outcome)
    return outcomes


def _process_one(inbound_id, config, steps, cache, current, parsed=None):
    inbound = fastsql.get(InboundMessage, "id", inbound_id)
    if inbound is None or inbound.status not in ("new", "processing"):
        return "skipped"
    item = PipelineItem(inbound=inbound, config=config, cache=cache, parsed=parsed)

    def tracked():
        for step in steps:
            current["name"] = step.name
            yield step

    status, failed_step, error = _run_steps(item, tracked())
    if status == "failed":
        raise _StepFailed(failed_step, error)
    inbound.status = status
    inbound.classification = inbound.classification or (
        item.parsed.classification if item.parsed else None)
    inbound.lead = item.lead
    inbound.failed_step = inbound.error = None
    inbound.processed_at = utcnow()
    inbound.claimed_by = None
    # Only what processing changed: the raw bytes are never written again.
    fastsql.save(inbound, ["status", "classification", "reason", "lead", "failed_step", "error",
                           "processed_at", "claimed_by"])
    outcome = item.outcome or status
    if item.lead is not None:
        outcome_note = f"lead #{item.lead.id}"
    else:
        outcome_note = inbound.reason or ""
    current["name"] = None
    log.debug("inbound #%s: %s %s", inbound_id, outcome, outcome_note)
    return outcome


class _StepFailed(Exception):
    def __init__(self, step, error):
        super().__init__(step, error)
        self.step = step
        self.error = error


def _mark_failed(inbound_id, step, error):
    with db.atomic():
        (InboundMessage.update(status="failed", failed_step=step, error=str(error)[:2000],
                               processed_at=utcnow(), claimed_by=None)
         .where(InboundMessage.id == inbound_id).execute())


def claim_pending(limit, config, worker_id=WORKER_ID):
    """Claim up to ``limit`` rows waiting to be processed; return their ids.

    Waiting: ``new``, or ``processing`` but claimed longer ago than the claim
    timeout by a worker that died. Each claim counts as an attempt; a row that
    reached ``worker.max_attempts`` is marked failed instead.
    """
    now = utcnow()
    stale = now - datetime.timedelta(seconds=config.worker.claim_timeout_seconds)
    waiting = ((InboundMessage.status == "new")
               | ((InboundMessage.status == "processing") & (InboundMessage.claimed_at < stale)))
    with db.atomic():
        candidates = (InboundMessage.select(InboundMessage.id).where(waiting)
                      .order_by(InboundMessage.id).limit(limit))
        if is_postgres():
            candidates = candidates.for_update("FOR UPDATE SKIP LOCKED")
        ids = [row.id for row in candidates]
        if not ids:
            return []
        (InboundMessage.update(status="failed", failed_step="claim",
                               error=f"gave up after {config.worker.max_attempts} attempts")
         .where(InboundMessage.id.in_(ids),
                InboundMessage.attempts >= config.worker.max_attempts).execute())
        (InboundMessage.update(status="processing", claimed_by=worker_id, claimed_at=now,
                               attempts=InboundMessage.attempts + 1)
         .where(InboundMessage.id.in_(ids), InboundMessage.status != "failed").execute())
        return [row.id for row in InboundMessage.select(InboundMessage.id)
                .where(InboundMessage.id.in_(ids), InboundMessage.claimed_by == worker_id,
                       InboundMessage.status == "processing")
                .order_by(InboundMessage.id)]


def process_pending(config, limit=None, worker_id=WORKER_ID):
    """Claim and process waiting rows until none is left (or ``limit``); count outcomes."""
    counts = {}
    done = 0
    while limit is None or done < limit:
        batch = config.worker.batch_size if limit is None else min(config.worker.batch_size,
                                                                    limit - done)
        ids = claim_pending(batch, config, worker_id)
        if not ids:
            break
        for start in range(0, len(ids), GROUP_SIZE):
            for outcome in process_many(ids[start:start + GROUP_SIZE], config).values():
                counts[outcome] = counts.get(outcome, 0) + 1
                done += 1
    return counts


def retry(inbound_ids, config):
    """Put failed rows back to ``new`` and process them; outcomes by id."""
    results = {}
    for inbound_id in inbound_ids:
        with db.atomic():
            reset = (InboundMessage.update(status="new", failed_step=None, error=None,
                                           claimed_by=None, attempts=0)
                     .where(InboundMessage.id == inbound_id,
                            InboundMessage.status.in_(("failed", "new", "processing")))
                     .execute())
        results[inbound_id] = process_inbound(inbound_id, config) if reset else "skipped"
    return results


def preview_lead(raw, config):
    """An unsaved Lead built from raw mail bytes, as the pipeline would build it.

    Nothing is written. The organisation is looked up (not created) when a
    database is open. Used by ``leadflow rules test FILE.eml``.
    """
    inbound = InboundMessage(channel="cli", raw=raw, size=len(raw), received_at=utcnow())
    item = PipelineItem(inbound=inbound, config=config)
    ParseStep().process(item)
    NormaliseStep().process(item)
    parsed, prospect = item.parsed, item.parsed.prospect
    domain = normalise.email_domain(prospect.email)
    dclass = normalise.domain_class(domain, config.intake.internal_domains)
    organisation = None
    if db.obj is not None and dclass == "company":
        organisation = Organisation.get_or_none(
            Organisation.domain == normalise.registered_domain(domain))
    now = utcnow()
    return Lead(
        status="new", name=prospect.name, email=prospect.email, email_domain=domain,
        domain_class=dclass, phone=prospect.phone, title=prospect.title,
        company=prospect.company or (organisation.name if organisation else None),
        website=prospect.website, country=prospect.country, subject=parsed.subject,
        message=parsed.body, signals=parsed.signals or {}, fields=parsed.fields or {},
        channel="email", source="file", submitted_by=parsed.submitted_by, organisation=organisation,
        first_inquiry_at=parsed.date or now, last_inquiry_at=parsed.date or now, created_at=now,
        updated_at=now)

