"""The sales side: the lead lifecycle, opportunities and their stages, activities.

Lead lifecycle::

    new -> working -> qualified -> converted
      \\________\\___________\\-----> disqualified (with a reason) | spam

``new``, ``working`` and ``qualified`` are *open*. ``Lead.open_email`` holds
the prospect's address exactly while the lead is open (the unique column that
keeps one open lead per person): it is cleared whenever a lead leaves the open
statuses and restored by :func:`reopen`, which is refused while another open
lead holds the address. Every change of status is written down twice: an
Activity of kind ``status`` on the lead (what a rep reads) and an AuditEvent
(who did it).

Opportunities move through the stages of ``sales.stages`` (default
``qualification -> proposal -> negotiation -> won | lost``). Every move is a
StageChange row with its time and actor; ``won`` and ``lost`` close the
opportunity (``closed_at``), moving back to an open stage reopens it.

Activities are calls, emails, meetings and notes on a lead, contact or
opportunity; with a ``due_at`` date they are follow-ups, due until done.
An activity is linked to everything it concerns (an activity on an
opportunity also names its lead, contact and organisation), so an
organisation's history is one query.

Every function here is a library call; the CLI (``store/commands.py``) is a
thin wrapper. Functions that write run in one transaction.
"""

import datetime
import logging

from peewee import JOIN, IntegrityError, fn

from leadflow.errors import LeadflowError, NotFoundError
from leadflow.store.database import db, is_postgres, utcnow
from leadflow.store.models import (
    OPEN_LEAD_STATUSES,
    Activity,
    AuditEvent,
    Contact,
    Lead,
    Opportunity,
    Organisation,
    Rep,
    StageChange,
)

log = logging.getLogger("leadflow.sales")

DEFAULT_STAGES = ("qualification", "proposal", "negotiation", "won", "lost")
CLOSED_STAGES = ("won", "lost")
LOGGED_KINDS = ("call", "email", "meeting", "note")


# -- errors ---------------------------------------------------------------------

class LifecycleError(LeadflowError):
    """A lead cannot make the asked change of status."""

    def __init__(self, lead_id, action, problem):
        super().__init__(lead_id, action, problem)
        self.lead_id = lead_id
        self.action = action
        self.problem = problem

    def __str__(self):
        return f"cannot {self.action} lead {self.lead_id}: {self.problem}"


class StageError(LeadflowError):
    """An opportunity cannot move to the asked stage."""

    def __init__(self, opportunity_id, stage, problem):
        super().__init__(opportunity_id, stage, problem)
        self.opportunity_id = opportunity_id
        self.stage = stage
        self.problem = problem

    def __str__(self):
        return f"cannot move opportunity {self.opportunity_id} to {self.stage!r}: {self.problem}"


class ActivityError(LeadflowError):
    """An activity cannot be logged or completed as asked."""

    def __init__(self, problem):
        super().__init__(problem)
        self.problem = problem

    def __str__(self):
        return self.problem


# -- lookups --------------------------------------------------------------------

def get_lead(lead_id, for_update=False):
    """The lead with this id (locked for the transaction on PostgreSQL when asked)."""
    query = Lead.select().where(Lead.id == lead_id)
    if for_update and is_postgres():
        query = query.for_update()
    lead = query.first()
    if lead is None:
        raise NotFoundError("lead", lead_id)
    return lead


def get_opportunity(opp_id, for_update=False):
    query = Opportunity.select().where(Opportunity.id == opp_id)
    if for_update and is_postgres():
        query = query.for_update()
    opp = query.first()
    if opp is None:
        raise NotFoundError("opportunity", opp_id)
    return opp


def get_contact(contact_id):
    contact = Contact.get_or_none(Contact.id == contact_id)
    if contact is None:
        raise NotFoundError("contact", contact_id)
    return contact


def get_organisation(org_id):
    org = Organisation.get_or_none(Organisation.id == org_id)
    if org is None:
        raise NotFoundError("organisation", org_id)
    return org


def audit(action, obj, actor=None, **details):
    """Write an AuditEvent for ``obj`` (a model instance)."""
    return AuditEvent.create(actor=actor, action=action, object_type=type(obj).__name__.lower(),
                             object_id=obj.id, details=details)


# -- lead lifecycle -------------------------------------------------------------

def _record_status(lead, old, new, actor, reason=None):
    text = f"status {old} → {new}" + (f": {reason}" if reason else "")
    Activity.create(kind="status", text=text, lead=lead, contact=lead.contact_id,
                    organisation=lead.organisation_id, rep=lead.owner_id)
    audit("lead.status", lead, actor, **{"from": old, "to": new, "reason": reason})
    log.info("lead #%s: %s%s", lead.id, text, f" (by {actor})" if actor else "")


def set_status(lead, status, actor=None, reason=None):
    """Move ``lead`` to ``status`` and record it; keeps ``open_email`` in step.

    For moves between open statuses and from open to closed ones. Leaving
    the open statuses clears ``open_email``; a closed lead comes back only
    through :func:`reopen`.
    """
    old = lead.status
    if status == old:
        return lead
    if old not in OPEN_LEAD_STATUSES:
        raise LifecycleError(lead.id, f"mark {status}",
                             f"it is {old}" + ("" if old == "converted" else "; reopen it first"))
    now = utcnow()
    lead.status = status
    lead.status_changed_at = now
    lead.updated_at = now
    if status not in OPEN_LEAD_STATUSES:
        lead.open_email = None
    if status == "qualified" and lead.qualified_at is None:
        lead.qualified_at = now
    lead.save(only=[Lead.status, Lead.status_changed_at, Lead.updated_at, Lead.open_email,
                    Lead.qualified_at])
    _record_status(lead, old, status, actor, reason)
    return lead


def start_working(lead, actor=None):
    """A rep took up a ``new`` lead (called when an interaction is logged on it)."""
    if lead.status == "new":
        set_status(lead, "working", actor, "first interaction logged")
    return lead


def qualify(lead_id, actor=None):
    """Mark an open lead qualified by hand."""
    with db.atomic():
        lead = get_lead(lead_id, for_update=True)
        if lead.status == "qualified":
            return lead
        return set_status(lead, "qualified", actor, "qualified by hand")


def disqualify(lead_id, reason, actor=None):
    """Close an open lead as ``disqualified`` with a reason (required)."""
    reason = (reason or "").strip()
    if not reason:
        raise LifecycleError(lead_id, "disqualify", "a reason is required")
    with db.atomic():
        lead = get_lead(lead_id, for_update=True)
        set_status(lead, "disqualified", actor, reason)
        lead.disqualified_reason = reason
        lead.save(only=[Lead.disqualified_reason])
        return lead


def mark_spam(lead_id, actor=None):
    with db.atomic():
        lead = get_lead(lead_id, for_update=True)
        return set_status(lead, "spam", actor, "marked as spam")


def reopen(lead_id, actor=None):
    """Bring a disqualified or spam lead back to an open status.

    It comes back ``qualified`` if it had been qualified, else ``working``.
    Refused for converted leads (the opportunity carries on) and while
    another open lead holds the same address (one open lead per person).
    """
    with db.atomic():
        lead = get_lead(lead_id, for_update=True)
        old = lead.status
        if old in OPEN_LEAD_STATUSES:
            raise LifecycleError(lead.id, "reopen", f"it is already open ({old})")
        if old == "converted":
            opp = Opportunity.get_or_none(Opportunity.lead == lead.id)
            raise LifecycleError(lead.id, "reopen", "it was converted"
                                 + (f" into opportunity {opp.id} ({opp.name})" if opp else ""))
        if lead.email:
            other = Lead.get_or_none((Lead.open_email == lead.email) & (Lead.id != lead.id))
            if other is not None:
                raise LifecycleError(lead.id, "reopen",
                                     f"lead {other.id} is open for {lead.email} ({other.status})")
        new = "qualified" if lead.qualified_at else "working"
        now = utcnow()
        try:
            with db.atomic():
                (Lead.update(status=new, open_email=lead.email, status_changed_at=now,
                             updated_at=now, disqualified_reason=None)
                 .where(Lead.id == lead.id).execute())
        except IntegrityError:  # another open lead took the address a moment ago
            other = Lead.get_or_none(Lead.open_email == lead.email)
            raise LifecycleError(lead.id, "reopen", f"lead {other.id if other else '?'} is open for "
                                 f"{lead.email}") from None
        lead = Lead.get_by_id(lead.id)
        _record_status(lead, old, new, actor, "reopened")
        return lead


# -- stages and opportunities -----------------------------------------------------

def stages(config=None):
    """The configured stages in order (open ones, then ``won`` and ``lost``)."""
    if config is None:
        return list(DEFAULT_STAGES)
    return list(config.sales.stages)


def open_stages(config=None):
    return [s for s in stages(config) if s not in CLOSED_STAGES]


def record_stage(opp, from_stage, to_stage, actor=None, at=None):
    return StageChange.create(opportunity=opp, from_stage=from_stage, to_stage=to_stage,
                              actor=actor, at=at or utcnow())


def move_opportunity(opp_id, stage, actor=None, reason=None, config=None):
    """Move an opportunity to ``stage``; ``won``/``lost`` close it (lost needs a reason)."""
    known = stages(config)
    if stage not in known:
        raise StageError(opp_id, stage, "unknown stage; stages are " + " → ".join(known))
    reason = (reason or "").strip() or None
    if stage == "lost" and not reason:
        raise StageError(opp_id, stage, "a reason is required")
    with db.atomic():
        opp = get_opportunity(opp_id, for_update=True)
        old = opp.stage
        if old == stage:
            raise StageError(opp.id, stage, "it is already there")
        now = utcnow()
        opp.stage = stage
        opp.stage_changed_at = now
        opp.updated_at = now
        opp.closed_at = now if stage in CLOSED_STAGES else None
        opp.lost_reason = reason if stage == "lost" else None
        opp.save()
        record_stage(opp, old, stage, actor, now)
        text = f"stage {old} → {stage}" + (f": {reason}" if reason else "")
        Activity.create(kind="status", text=text, opportunity=opp, lead=opp.lead_id,
                        contact=opp.contact_id, organisation=opp.organisation_id, rep=opp.owner_id)
        audit("opportunity.stage", opp, actor, **{"from": old, "to": stage, "reason": reason})
        log.info("opportunity #%s: %s", opp.id, text)
        return opp


def list_opportunities(owner=None, stage=None, stale_days=None, now=None, limit=None):
    """Opportunities, newest first; ``stale_days``: open ones untouched that long.

    Untouched: no stage change and no activity logged on it for that many days.
    """
    query = (Opportunity.select(Opportunity, Organisation, Rep)
             .join(Organisation, on=(Opportunity.organisation == Organisation.id),
                   join_type=JOIN.LEFT_OUTER)
             .switch(Opportunity)
             .join(Rep, on=(Opportunity.owner == Rep.id), join_type=JOIN.LEFT_OUTER)
             .order_by(Opportunity.id.desc()))
    if owner is not None:
        query = query.where(Opportunity.owner == owner)
    if stage:
        query = query.where(Opportunity.stage == stage)
    if stale_days is not None:
        cutoff = (now or utcnow()) - datetime.timedelta(days=stale_days)
        recent = (Activity.select(Activity.opportunity)
                  .where(Activity.opportunity.is_null(False), Activity.created_at >= cutoff))
        query = query.where(Opportunity.stage.not_in(CLOSED_STAGES),
                            Opportunity.stage_changed_at < cutoff,
                            Opportunity.id.not_in(recent))
    if limit:
        query = query.limit(limit)
    return list(query)


# -- activities ---------------------------------------------------------------------

def log_activity(kind, text, lead=None, contact=None, opportunity=None, due=None, rep=None,
                 actor=None):
    """Log a call, email, meeting or note; with ``due`` (a date) it is a follow-up.

    ``lead``, ``contact`` and ``opportunity`` are ids or rows; exactly one is
    needed. The activity is linked to everything the target belongs to, and
    to the target's owner unless ``rep`` is given. Logging an interaction on a
    ``new`` lead moves it to ``working``.
    """
    if kind not in LOGGED_KINDS:
        raise ActivityError(f"unknown activity type {kind!r}; use " + ", ".join(LOGGED_KINDS))
    targets = [t for t in (lead, contact, opportunity) if t is not None]
    if len(targets) != 1:
        raise ActivityError("name exactly one of a lead, a contact or an opportunity")
    text = (text or "").strip()
    if not text:
        raise ActivityError("the activity needs a text")
    with db.atomic():
        links = {}
        if opportunity is not None:
            opp = opportunity if isinstance(opportunity, Opportunity) else get_opportunity(opportunity)
            links = dict(opportunity=opp.id, lead=opp.lead_id, contact=opp.contact_id,
                         organisation=opp.organisation_id, rep=opp.owner_id)
        elif lead is not None:
            row = lead if isinstance(lead, Lead) else get_lead(lead)
            links = dict(lead=row.id, contact=row.contact_id, organisation=row.organisation_id,
                         rep=row.owner_id)
            if kind != "note" and due is None:
                start_working(row, actor)
        else:
            row = contact if isinstance(contact, Contact) else get_contact(contact)
            links = dict(contact=row.id, organisation=row.organisation_id, rep=row.owner_id)
        if rep is not None:
            links["rep"] = rep.id if isinstance(rep, Rep) else rep
        activity = Activity.create(kind=kind, text=text, due_at=due, **links)
        log.info("activity #%s: %s logged%s", activity.id, kind, f", due {due}" if due else "")
        return activity


def complete_activity(activity_id, actor=None):
    """Mark a follow-up done (idempotent: done once, the first time counts)."""
    with db.atomic():
        activity = Activity.get_or_none(Activity.id == activity_id)
        if activity is None:
            raise NotFoundError("activity", activity_id)
        if activity.done_at is None:
            activity.done_at = utcnow()
            activity.save(only=[Activity.done_at])
            audit("activity.done", activity, actor)
        return activity


def due_followups(rep=None, on=None):
    """Open follow-ups due on or before ``on`` (default today), oldest first."""
    on = on or utcnow().date()
    query = (Activity.select().where(Activity.due_at.is_null(False), Activity.done_at.is_null(),
                                     Activity.due_at <= on)
             .order_by(Activity.due_at, Activity.id))
    if rep is not None:
        query = query.where(Activity.rep == rep)
    return list(query)


def organisation_activities(org):
    """Everything that happened with an organisation: its own, its contacts', leads', opps'."""
    org_id = org.id if isinstance(org, Organisation) else org
    contacts = Contact.select(Contact.id).where(Contact.organisation == org_id)
    leads = Lead.select(Lead.id).where(Lead.organisation == org_id)
    opps = Opportunity.select(Opportunity.id).where(Opportunity.organisation == org_id)
    return list(Activity.select().where(
        (Activity.organisation == org_id) | Activity.contact.in_(contacts)
        | Activity.lead.in_(leads) | Activity.opportunity.in_(opps)).order_by(Activity.created_at,
                                                                                 Activity.id))


def open_lead_counts(rep_ids=None):
    """{rep id: number of open leads it owns}."""
    query = (Lead.select(Lead.owner, fn.COUNT(Lead.id).alias("n"))
             .where(Lead.status.in_(OPEN_LEAD_STATUSES), Lead.owner.is_null(False))
             .group_by(Lead.owner))
    if rep_ids is not None:
        query = query.where(Lead.owner.in_(list(rep_ids)))
    return {row.owner_id: row.n for row in query}


# -- dict views (the --json output and the export format) -------------------------------

def _iso(value):
    return value.isoformat() if value is not None else None


def rep_dict(rep, open_leads=None):
    out = {"id": rep.id, "name": rep.name, "email": rep.email, "timezone": rep.timezone,
           "digest_hour": rep.digest_hour, "team": rep.team, "capacity": rep.capacity,
           "away_until": _iso(rep.away_until), "active": rep.active, "role": rep.role,
           "last_assigned_at": _iso(rep.last_assigned_at)}
    if open_leads is not None:
        out["open_leads"] = open_leads
    return out


def _ref(row, *keys):
    return {k: getattr(row, k) for k in ("id", *keys)} if row is not None else None


def contact_dict(contact):
    return {"id": contact.id, "name": contact.name, "email": contact.email, "phone": contact.phone,
            "title": contact.title, "organisation_id": contact.organisation_id,
            "owner_id": contact.owner_id, "merged_into": contact.merged_into_id,
            "provenance": contact.provenance, "created_at": _iso(contact.created_at),
            "updated_at": _iso(contact.updated_at)}


def organisation_dict(org):
    return {"id": org.id, "name": org.name, "domain": org.domain, "website": org.website,
            "size": org.size, "employees": org.employees, "sector": org.sector, "needs": org.needs,
            "country": org.country, "owner_id": org.owner_id, "merged_into": org.merged_into_id,
            "provenance": org.provenance, "created_at": _iso(org.created_at),
            "updated_at": _iso(org.updated_at)}


def opportunity_dict(opp):
    return {"id": opp.id, "name": opp.name, "stage": opp.stage, "lead_id": opp.lead_id,
            "contact_id": opp.contact_id, "organisation_id": opp.organisation_id,
            "owner_id": opp.owner_id,
            "amount": str(opp.amount) if opp.amount is not None else None,
            "currency": opp.currency, "expected_close": _iso(opp.expected_close),
            "lost_reason": opp.lost_reason, "stage_changed_at": _iso(opp.stage_changed_at),
            "closed_at": _iso(opp.closed_at), "created_at": _iso(opp.created_at),
            "updated_at": _iso(opp.updated_at)}


def activity_dict(activity):
    return {"id": activity.id, "kind": activity.kind, "text": activity.text,
            "lead_id": activity.lead_id, "contact_id": activity.contact_id,
            "opportunity_id": activity.opportunity_id,
            "organisation_id": activity.organisation_id, "rep_id": activity.rep_id,
            "due_at": _iso(activity.due_at), "done_at": _iso(activity.done_at),
            "created_at": _iso(activity.created_at)}


def stage_change_dict(change):
    return {"from": change.from_stage, "to": change.to_stage, "actor": change.actor,
            "at": _iso(change.at)}
