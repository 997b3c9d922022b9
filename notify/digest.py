"""Daily digests: every rep's worklist, exactly once, in their own morning.

:func:`run_digests` is the one function behind the scheduler's tick and
``leadflow digest send`` (Mailman's ``maybe_send_digest_now``). On each call it:

1. works out, for every active rep, the local date and hour in the rep's time
   zone (``Rep.timezone``, else ``notify.timezone``); a digest is *due* on a
   working day (``Rep.working_days``, ISO weekdays) when the rep is not away
   and the local hour is at or after ``Rep.digest_hour`` and before
   ``notify.cutoff_hour`` (0: until midnight);
2. **claims** each due digest by inserting its ``DigestLog(rep, local_date,
   kind)`` row; the unique key decides, with insert-on-conflict-do-nothing,
   which process sends. Nothing in process memory counts: restarts and several
   ``leadflow serve`` instances on one database send each digest once;
3. renders and sends what it claimed; a temporary failure (4xx, relay down)
   goes to status ``retry`` with ``next_attempt_at`` doubling from
   ``notify.retry_seconds``, until ``notify.max_attempts`` makes it ``failed``;
   a permanent one (5xx) is ``failed`` at once, with the error;
4. sends the claimed digests that wait for a retry, and takes over claims
   whose sender died (a claim is a lease of :data:`LEASE` until it is settled).

Statuses: ``claimed`` (being sent), ``retry``, ``sent``, ``skipped`` (empty,
and ``notify.send_empty`` is off), ``missed`` (leadflow was down until after
the cut-off hour: recorded, not sent), ``failed``.

**What a local date is.** ``local_date`` is the calendar date in the rep's
time zone *at the moment of the claim*. A rep gets at most one digest of a
kind per local date, and local dates only move forward: a claim is refused
when the rep already has a digest of that kind for that date or a later one.
So on the day clocks go back the repeated hour finds the date taken, and a
time zone changed mid-day never yields a second digest that day: moving west
(e.g. Amsterdam to New York) the rep's date is still the one already logged;
moving back across midnight (e.g. Auckland to Amsterdam) the date is
*earlier* than the one logged and is refused. Moving east past midnight the
new date is the rep's next morning, which gets its own digest.

Content: :func:`build_rep_digest` and :func:`build_admin_digest` each run a
fixed number of queries whatever the number of leads (joins, window counts,
lists capped at :data:`MAX_ITEMS` per section).

Hot-lead alerts (:func:`send_hot_alerts`) ride on the same table: one
``DigestLog`` row per (owner, lead), kind ``hot:LEAD_ID``, claimed from the
tick and never from inside the pipeline's transaction.
"""

import datetime
import logging
import os
import socket
import zoneinfo
from dataclasses import dataclass, field

from peewee import JOIN, Case, fn

from leadflow.notify import mailer, render
from leadflow.store.database import db, is_postgres, utcnow
from leadflow.store.models import (
    Activity,
    DigestLog,
    InboundMessage,
    Lead,
    Opportunity,
    Organisation,
    Rep,
)

log = logging.getLogger("leadflow.notify")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
LEASE = datetime.timedelta(minutes=10)
MAX_ITEMS = 20
CLOSED_STAGES = ("won", "lost")
ADMIN_ROLES = ("admin", "marketing")
SETTLED = ("sent", "skipped", "missed", "failed")


# -- time -----------------------------------------------------------------------

def _utc(now):
    """``now`` (naive UTC, aware, or None for the clock) as naive UTC."""
    if now is None:
        return utcnow()
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return now


def rep_zone(rep, config):
    """The rep's time zone; ``notify.timezone`` when unset or unknown."""
    for name in (rep.timezone, config.notify.timezone, "UTC"):
        if not name:
            continue
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            log.warning("rep %s: unknown time zone %r; using %s", rep.id, name,
                        config.notify.timezone)
    return datetime.timezone.utc


def local_now(rep, config, now):
    """``now`` (naive UTC) on the rep's wall clock, as an aware datetime."""
    return now.replace(tzinfo=datetime.timezone.utc).astimezone(rep_zone(rep, config))


def _working_days(rep):
    days = set()
    for part in (rep.working_days or "").split(","):
        part = part.strip()
        if part.isdigit():
            days.add(int(part))
    return days


def _digest_hour(rep, config):
    return config.notify.digest_hour if rep.digest_hour is None else rep.digest_hour


def due_state(rep, config, now):
    """``(local_date, state)`` for a rep at ``now``: due, early, late, off_day, away."""
    local = local_now(rep, config, now)
    day = local.date()
    if day.isoweekday() not in _working_days(rep):
        return day, "off_day"
    if rep.away_until is not None and day <= rep.away_until:
        return day, "away"
    hour = _digest_hour(rep, config)
    if local.hour < hour:
        return day, "early"
    cutoff = config.notify.cutoff_hour
    if cutoff > hour and local.hour >= cutoff:
        return day, "late"
    return day, "due"


def message_id(rep_id, local_date, kind, config):
    host = config.notify.from_.rpartition("@")[2] or "leadflow.localhost"
    return f"<digest-{rep_id}-{local_date.isoformat()}-{kind}@{host}>"


# -- content ----------------------------------------------------------------------

@dataclass
class Item:
    """One line of a digest: something the rep should act on."""

    ref: str  # "lead 42", "opportunity 7", "activity 3"
    title: str
    organisation: str | None = None
    email: str | None = None
    score: int | None = None
    reasons: list = field(default_factory=list)
    source: str | None = None
    age: str = ""
    detail: str = ""
    next_action: str = ""
    command: str = ""


@dataclass
class StageBar:
    stage: str
    count: int
    amount: float
    percent: int


@dataclass
class RepDigest:
    """Everything in one rep's digest for one local date."""

    rep: Rep
    local_date: datetime.date
    as_of: datetime.datetime
    since: datetime.datetime | None
    new_leads: list = field(default_factory=list)
    to_convert: list = field(default_factory=list)
    followups: list = field(default_factory=list)
    stale: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)  # section -> total count (lists are capped)
    pipeline: list = field(default_factory=list)
    overdue: int = 0
    kind: str = "rep"

    @property
    def items(self):
        return sum(self.totals.values())

    @property
    def empty(self):
        return self.items == 0


@dataclass
class AdminDigest:
    """Yesterday's intake for admins and marketing."""

    rep: Rep
    local_date: datetime.date
    day: datetime.date
    as_of: datetime.datetime
    inbound_total: int = 0
    by_channel: list = field(default_factory=list)  # [(channel, form, count)]
    by_status: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)  # [(classification, count)]
    leads_created: int = 0
    leads_qualified: int = 0
    failed: list = field(default_factory=list)  # [Item]
    failed_total: int = 0
    needs_review: int = 0  # of yesterday's leads
    unassigned: int = 0  # of yesterday's leads, still without an owner
    failed_digests: list = field(default_factory=list)  # [(rep email, date, kind, error)]
    kind: str = "admin"

    @property
    def qualification_rate(self):
        return self.leads_qualified / self.leads_created if self.leads_created else None

    @property
    def items(self):
        return (self.inbound_total + self.failed_total + self.needs_review
                + len(self.failed_digests))

    @property
    def empty(self):
        return self.items == 0


def _age(delta):
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    days = seconds // 86400
    return f"{days} day" + ("s" if days != 1 else "")


def top_reasons(breakdown, count=3):
    """The ``count`` strongest reasons of a score breakdown, with their points."""
    entries = [e for e in (breakdown or []) if isinstance(e, dict)]
    entries.sort(key=lambda e: -abs(e.get("points") or 0))
    out = []
    for entry in entries[:count]:
        text = str(entry.get("reason") or entry.get("rule") or "").strip()
        points = entry.get("points")
        suffix = f"{points:+d}" if isinstance(points, int) and points else entry.get("verdict")
        if text and suffix and not text.endswith(str(suffix)):  # scoring may have written it
            text = f"{text} ({suffix})"
        if text:
            out.append(text)
    return out


def _lead_item(lead, org_name, as_of, next_action, command, age_from=None, detail=""):
    return Item(
        ref=f"lead {lead.id}",
        title=lead.name or lead.email or f"lead {lead.id}",
        organisation=org_name or lead.company,
        email=lead.email,
        score=lead.score,
        reasons=top_reasons(lead.score_breakdown),
        source=lead.source or lead.channel,
        age=_age(as_of - (age_from or lead.created_at)),
        detail=detail or (lead.subject or ""),
        next_action=next_action,
        command=command,
    )


def _lead_query(rep, total):
    return (Lead.select(Lead.id, Lead.name, Lead.email, Lead.company, Lead.score,
                        Lead.score_breakdown, Lead.source, Lead.channel, Lead.subject, Lead.status,
                        Lead.created_at, Lead.assigned_at, Lead.qualified_at,
                        Lead.status_changed_at, Organisation.name.alias("org_name"),
                        total.alias("total"))
            .join(Organisation, JOIN.LEFT_OUTER, on=(Lead.organisation == Organisation.id))
            .where(Lead.owner == rep.id)
            .objects())


def previous_digest_at(rep, kind, local_date):
    """When the rep's last settled digest before ``local_date`` was claimed (or None)."""
    return (DigestLog.select(fn.MAX(DigestLog.claimed_at))
            .where((DigestLog.rep == rep.id) & (DigestLog.kind == kind)
                   & (DigestLog.local_date < local_date)
                   & DigestLog.status.in_(("sent", "skipped")))
            .scalar())


def _stale_limit(config, stage):
    days = config.notify.stale_days
    return days.get(stage, days.get("default", 7))


def build_rep_digest(rep, config, local_date, as_of, since=None):
    """The rep's worklist as of ``as_of`` (naive UTC): five queries whatever the data.

    ``since`` bounds "new leads" (default: the last digest's claim, else the
    rep's creation).
    """
    if since is None:
        since = previous_digest_at(rep, "rep", local_date) or rep.created_at
    digest = RepDigest(rep=rep, local_date=local_date, as_of=as_of, since=since)
    total = fn.COUNT(Lead.id).over()

    # 1. new leads assigned since the last digest (still open, not yet qualified)
    rows = list(_lead_query(rep, total)
                .where((Lead.assigned_at > since) & (Lead.assigned_at <= as_of)
                       & Lead.status.in_(("new", "working")))
                .order_by(Lead.score.desc(), Lead.id)
                .limit(MAX_ITEMS))
    digest.totals["new"] = rows[0].total if rows else 0
    digest.new_leads = [
        _lead_item(lead, lead.org_name, as_of, "Contact them and qualify",
                   f"leadflow leads show {lead.id}")
        for lead in rows]

    # 2. qualified leads awaiting conversion, oldest first
    waiting = fn.COALESCE(Lead.qualified_at, Lead.status_changed_at)
    rows = list(_lead_query(rep, total)
                .where(Lead.status == "qualified")
                .order_by(waiting, Lead.id)
                .limit(MAX_ITEMS))
    digest.totals["convert"] = rows[0].total if rows else 0
    digest.to_convert = [
        _lead_item(lead, lead.org_name, as_of, "Convert to an opportunity",
                   f"leadflow leads convert {lead.id}",
                   age_from=lead.qualified_at or lead.status_changed_at)
        for lead in rows]

    # 3. follow-ups due today or overdue: on the rep's open leads and opportunities, and those
    #    logged for the rep (each OR branch has its index: lead_id, opportunity_id, rep_id)
    own_leads = Lead.select(Lead.id).where((Lead.owner == rep.id)
                                           & Lead.status.in_(("new", "working", "qualified")))
    own_opps = Opportunity.select(Opportunity.id).where(Opportunity.owner == rep.id)
    ActLead = Lead.alias("act_lead")
    ActOpp = Opportunity.alias("act_opp")
    ActOrg = Organisation.alias("act_org")
    rows = list(
        Activity.select(Activity.id, Activity.kind, Activity.text, Activity.due_at,
                        Activity.created_at, Activity.lead, Activity.opportunity,
                        ActLead.name.alias("lead_name"), ActLead.email.alias("lead_email"),
                        ActLead.company.alias("lead_company"), ActLead.score.alias("lead_score"),
                        ActLead.score_breakdown.alias("lead_breakdown"),
                        ActLead.source.alias("lead_source"),
                        ActOpp.name.alias("opp_name"), ActOrg.name.alias("org_name"),
                        fn.COUNT(Activity.id).over().alias("total"))
        .join(ActLead, JOIN.LEFT_OUTER, on=(Activity.lead == ActLead.id))
        .switch(Activity)
        .join(ActOpp, JOIN.LEFT_OUTER, on=(Activity.opportunity == ActOpp.id))
        .switch(Activity)
        .join(ActOrg, JOIN.LEFT_OUTER,
              on=(ActOrg.id == fn.COALESCE(ActOpp.organisation, ActLead.organisation,
                                           Activity.organisation)))
        .where(Activity.done_at.is_null() & (Activity.due_at <= local_date)
               & (Activity.lead.in_(own_leads) | Activity.opportunity.in_(own_opps)
                  | (Activity.rep == rep.id)))
        .order_by(Activity.due_at, Activity.id)
        .limit(MAX_ITEMS)
        .objects())
    digest.totals["followups"] = rows[0].total if rows else 0
    for act in rows:
        late = (local_date - act.due_at).days
        what = act.opp_name or act.lead_name or act.lead_email or "(no lead)"
        ref = (f"opportunity {act.opportunity_id}" if act.opportunity_id
               else f"lead {act.lead_id}" if act.lead_id else f"activity {act.id}")
        digest.overdue += late > 0
        digest.followups.append(Item(
            ref=ref, title=what, organisation=act.org_name or act.lead_company,
            email=act.lead_email, score=act.lead_score if act.lead_id else None,
            reasons=top_reasons(act.lead_breakdown) if act.lead_id else [],
            source=act.lead_source,
            age=f"overdue {late} day{'s' if late != 1 else ''}" if late > 0 else "due today",
            detail=f"{act.kind}: {(act.text or '').strip().splitlines()[0] if act.text else ''}",
            next_action="Do it, then mark it done",
            command=f"leadflow activity done {act.id}"))

    # 4. open opportunities and when they were last touched
    last_activity = (Activity.select(fn.MAX(fn.COALESCE(Activity.done_at, Activity.created_at)))
                     .where(Activity.opportunity == Opportunity.id))
    rows = list(
        Opportunity.select(Opportunity.id, Opportunity.name, Opportunity.stage,
                           Opportunity.amount, Opportunity.currency, Opportunity.stage_changed_at,
                           Opportunity.created_at, Organisation.name.alias("org_name"),
                           Lead.score.alias("lead_score"),
                           Lead.score_breakdown.alias("lead_breakdown"),
                           Lead.source.alias("lead_source"), Lead.email.alias("lead_email"),
                           last_activity.alias("last_activity"))
        .join(Organisation, JOIN.LEFT_OUTER, on=(Opportunity.organisation == Organisation.id))
        .switch(Opportunity)
        .join(Lead, JOIN.LEFT_OUTER, on=(Opportunity.lead == Lead.id))
        .where((Opportunity.owner == rep.id) & Opportunity.stage.not_in(CLOSED_STAGES)
               & Opportunity.closed_at.is_null())
        .order_by(Opportunity.id)
        .objects())
    stale = []
    for opp in rows:
        last = opp.last_activity
        if isinstance(last, str):  # SQLite returns MAX() of datetimes as text
            last = datetime.datetime.fromisoformat(last)
        touched = max(t for t in (last, opp.stage_changed_at, opp.created_at) if t is not None)
        limit = _stale_limit(config, opp.stage)
        if as_of - touched >= datetime.timedelta(days=limit):
            stale.append((touched, Item(
                ref=f"opportunity {opp.id}", title=opp.name, organisation=opp.org_name,
                email=opp.lead_email, score=opp.lead_score,
                reasons=top_reasons(opp.lead_breakdown), source=opp.lead_source,
                age=f"no activity for {_age(as_of - touched)}",
                detail=f"stage {opp.stage}" + (f", {opp.amount:,.0f} {opp.currency or ''}".rstrip()
                                               if opp.amount is not None else ""),
                next_action=f"Log a call or move it on (stale after {limit} days in {opp.stage})",
                command=f"leadflow opps show {opp.id}")))
    stale.sort(key=lambda pair: pair[0])
    digest.totals["stale"] = len(stale)
    digest.stale = [item for _, item in stale[:MAX_ITEMS]]

    # 5. the pipeline by stage
    rows = list(Opportunity.select(Opportunity.stage, fn.COUNT(Opportunity.id).alias("n"),
                                   fn.SUM(Opportunity.amount).alias("amount"))
                .where(Opportunity.owner == rep.id)
                .group_by(Opportunity.stage)
                .tuples())
    digest.pipeline = pipeline_bars(rows)
    return digest


STAGE_ORDER = ("qualification", "proposal", "negotiation", "won", "lost")


def pipeline_bars(rows):
    """``[(stage, count, amount)]`` as bars, in pipeline order, widths in percent."""
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    rows = sorted(rows, key=lambda r: (order.get(r[0], len(order) - 2 + 0.5), r[0]))
    top = max((r[1] for r in rows), default=0)
    return [StageBar(stage, count, float(amount or 0),
                     max(2, round(100 * count / top)) if top else 0)
            for stage, count, amount in rows]


def _day_bounds(day, zone):
    """Naive-UTC [start, end) of a calendar ``day`` in ``zone``."""
    start = datetime.datetime.combine(day, datetime.time(), zone)
    end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), zone)
    return (start.astimezone(datetime.timezone.utc).replace(tzinfo=None),
            end.astimezone(datetime.timezone.utc).replace(tzinfo=None))


def build_admin_digest(rep, config, local_date, as_of):
    """Yesterday's intake (the day before ``local_date`` in ``notify.timezone``): four queries,
    each bounded by an index (received_at, created_at, status, claimed_at)."""
    zone = zoneinfo.ZoneInfo(config.notify.timezone)
    day = local_date - datetime.timedelta(days=1)
    start, end = _day_bounds(day, zone)
    digest = AdminDigest(rep=rep, local_date=local_date, day=day, as_of=as_of)
    in_window = (InboundMessage.received_at >= start) & (InboundMessage.received_at < end)

    rows = list(InboundMessage.select(InboundMessage.channel, InboundMessage.form,
                                      InboundMessage.status, InboundMessage.classification,
                                      fn.COUNT(InboundMessage.id))
                .where(in_window)
                .group_by(InboundMessage.channel, InboundMessage.form, InboundMessage.status,
                          InboundMessage.classification)
                .tuples())
    channels, ignored = {}, {}
    for channel, form, status, classification, count in rows:
        digest.inbound_total += count
        channels[(channel, form or "")] = channels.get((channel, form or ""), 0) + count
        digest.by_status[status] = digest.by_status.get(status, 0) + count
        if status == "ignored":
            key = classification or "other"
            ignored[key] = ignored.get(key, 0) + count
    digest.by_channel = sorted(((c, f, n) for (c, f), n in channels.items()),
                               key=lambda r: (-r[2], r[0], r[1]))
    digest.ignored = sorted(ignored.items(), key=lambda r: (-r[1], r[0]))

    created, qualified, review, unassigned = (
        Lead.select(fn.COUNT(Lead.id),
                    fn.SUM(Case(None, [(Lead.qualified_at.is_null(False), 1)], 0)),
                    fn.SUM(Case(None, [(Lead.needs_review == True, 1)], 0)),  # noqa: E712
                    fn.SUM(Case(None, [(Lead.owner.is_null(), 1)], 0)))
        .where((Lead.created_at >= start) & (Lead.created_at < end))
        .tuples().get())
    digest.leads_created, digest.leads_qualified = created or 0, qualified or 0
    digest.needs_review, digest.unassigned = review or 0, unassigned or 0

    rows = list(InboundMessage.select(InboundMessage.id, InboundMessage.channel,
                                      InboundMessage.form, InboundMessage.mail_from,
                                      InboundMessage.received_at, InboundMessage.failed_step,
                                      InboundMessage.error,
                                      fn.COUNT(InboundMessage.id).over().alias("total"))
                .where(InboundMessage.status == "failed")
                .order_by(InboundMessage.id)
                .limit(MAX_ITEMS)
                .objects())
    digest.failed_total = rows[0].total if rows else 0
    digest.failed = [Item(ref=f"inbound {row.id}",
                          title=row.mail_from or row.form or row.channel,
                          source=row.channel + (f":{row.form}" if row.form else ""),
                          age=_age(as_of - row.received_at),
                          detail=f"failed at {row.failed_step or '?'}: "
                                 f"{(row.error or '').strip().splitlines()[-1] if row.error else ''}",
                          next_action="Look at it, then retry",
                          command=f"leadflow inbox retry {row.id}") for row in rows]

    digest.failed_digests = list(
        DigestLog.select(Rep.email, DigestLog.local_date, DigestLog.kind, DigestLog.error)
        .join(Rep)
        .where((DigestLog.status == "failed") & (DigestLog.claimed_at >= start)
               & (DigestLog.claimed_at < end))
        .order_by(DigestLog.id)
        .limit(MAX_ITEMS)
        .tuples())
    return digest


def build_digest(rep, config, kind, local_date, as_of):
    if kind == "admin":
        return build_admin_digest(rep, config, local_date, as_of)
    return build_rep_digest(rep, config, local_date, as_of)


# -- claiming and sending ------------------------------------------------------------

@dataclass
class Outcome:
    """What one call did about one digest."""

    rep_id: int
    email: str
    kind: str
    local_date: datetime.date
    status: str  # sent, skipped, retry, failed, missed, already, due (dry run)
    items: int = 0
    error: str | None = None
    message_id: str | None = None

    def as_dict(self):
        return {"rep_id": self.rep_id, "email": self.email, "kind": self.kind,
                "local_date": self.local_date.isoformat(), "status": self.status,
                "items": self.items, "error": self.error, "message_id": self.message_id}


def claim(rep, kind, local_date, now, status="claimed", worker_id=WORKER_ID):
    """Insert the rep's log row for ``local_date``; the DigestLog id if this call won, else None.

    Refused when the rep already has a row of this kind for this date or a
    later one (local dates only move forward). On PostgreSQL the rep's row is
    locked for the check; SQLite transactions are IMMEDIATE, so one writer at
    a time. The unique key (rep, local_date, kind) is what finally decides.
    """
    with db.atomic():
        if is_postgres():
            Rep.select(Rep.id).where(Rep.id == rep.id).for_update().execute()
        taken = (DigestLog.select(DigestLog.id)
                 .where((DigestLog.rep == rep.id) & (DigestLog.kind == kind)
                        & (DigestLog.local_date >= local_date))
                 .exists())
        if taken:
            return None
        inserted = (DigestLog.insert(rep=rep.id, kind=kind, local_date=local_date, status=status,
                                     claimed_by=worker_id, claimed_at=now,
                                     next_attempt_at=now + LEASE if status == "claimed" else None)
                    .on_conflict_ignore()
                    .as_rowcount()
                    .execute())
        if not inserted:
            return None
        return (DigestLog.select(DigestLog.id)
                .where((DigestLog.rep == rep.id) & (DigestLog.kind == kind)
                       & (DigestLog.local_date == local_date))
                .scalar())


def _take_over(entry, now, worker_id=WORKER_ID):
    """Claim a row that waits for a retry or whose sender's lease ran out; True if won."""
    return bool(DigestLog.update(status="claimed", claimed_by=worker_id,
                                 next_attempt_at=now + LEASE)
                .where((DigestLog.id == entry.id) & (DigestLog.status == entry.status)
                       & (DigestLog.next_attempt_at == entry.next_attempt_at))
                .execute())


def _settle(log_id, **values):
    DigestLog.update(**values).where(DigestLog.id == log_id).execute()


def deliver(entry_id, config, now, relay=None):
    """Render and send the claimed digest ``entry_id``; record the result; an Outcome."""
    entry = DigestLog.select(DigestLog, Rep).join(Rep).where(DigestLog.id == entry_id).get()
    rep = entry.rep
    outcome = Outcome(rep.id, rep.email, entry.kind, entry.local_date, "failed")
    attempts = entry.attempts + 1
    mid = message_id(rep.id, entry.local_date, entry.kind, config)
    try:
        digest = build_digest(rep, config, entry.kind, entry.local_date, entry.claimed_at)
        outcome.items = digest.items
        if digest.empty and not config.notify.send_empty:
            _settle(entry.id, status="skipped", items=0, next_attempt_at=None)
            outcome.status = "skipped"
            log.info("digest %s: %s %s for %s is empty: skipped", entry.id, entry.kind,
                     entry.local_date, rep.email)
            return outcome
        message = render.digest_message(digest, config, mid)
        if relay is None:
            mailer.send(config, message)
        else:
            relay.send(message)
    except mailer.TemporarySendError as exc:
        outcome.error = str(exc)
        if attempts >= config.notify.max_attempts:
            _settle(entry.id, status="failed", attempts=attempts, error=str(exc),
                    next_attempt_at=None, message_id=mid)
            log.error("digest %s: failed after %d attempts: %s", entry.id, attempts, exc)
            return outcome
        wait = datetime.timedelta(seconds=config.notify.retry_seconds * 2 ** (attempts - 1))
        _settle(entry.id, status="retry", attempts=attempts, error=str(exc),
                next_attempt_at=now + wait, message_id=mid)
        outcome.status = "retry"
        log.warning("digest %s: temporary failure (attempt %d), retry in %s: %s",
                    entry.id, attempts, wait, exc)
        return outcome
    except mailer.PermanentSendError as exc:
        outcome.error = str(exc)
        _settle(entry.id, status="failed", attempts=attempts, error=str(exc),
                next_attempt_at=None, message_id=mid)
        log.error("digest %s: permanent failure: %s", entry.id, exc)
        return outcome
    except Exception as exc:  # a bug in building or rendering: visible, never a crash loop
        outcome.error = f"{type(exc).__name__}: {exc}"
        _settle(entry.id, status="failed", attempts=attempts, error=outcome.error,
                next_attempt_at=None)
        log.exception("digest %s: could not be built", entry.id)
        return outcome
    _settle(entry.id, status="sent", attempts=attempts, items=digest.items, sent_at=utcnow(),
            message_id=mid, error=None, next_attempt_at=None)
    outcome.status, outcome.message_id = "sent", mid
    log.info("digest %s: %s %s sent to %s (%d items)", entry.id, entry.kind, entry.local_date,
             rep.email, digest.items)
    return outcome


def _kinds(rep):
    return ("rep", "admin") if rep.role in ADMIN_ROLES else ("rep",)


def run_digests(config, now=None, rep=None, force=False, dry_run=False, worker_id=WORKER_ID):
    """Send every digest due at ``now``; the list of :class:`Outcome`.

    ``now`` (naive UTC or aware; default the clock) is when this tick happens.
    ``rep`` limits the run to one rep. ``force`` claims today's digest of
    ``rep`` (or of every rep) even outside the hour, on a day off or while
    away — still once per local date. ``dry_run`` claims and sends nothing:
    it lists what is due (status ``due``).
    """
    now = _utc(now)
    query = Rep.select().where(Rep.active == True).order_by(Rep.id)  # noqa: E712
    if rep is not None:
        query = query.where(Rep.id == rep.id)
    reps = list(query)
    outcomes = []
    if not reps:
        return outcomes
    with mailer.Relay(config) as relay:  # one relay session for the whole tick
        return _run(config, now, reps, rep, force, dry_run, worker_id, relay)


def _run(config, now, reps, rep, force, dry_run, worker_id, relay):
    outcomes = []
    earliest = now.date() - datetime.timedelta(days=1)
    logged = (DigestLog.select(DigestLog.rep, DigestLog.kind, DigestLog.local_date)
              .where((DigestLog.local_date >= earliest) & DigestLog.kind.in_(("rep", "admin")))
              .tuples())
    if rep is not None:
        logged = logged.where(DigestLog.rep == rep.id)
    latest = {}
    for rep_id, kind, day in logged:
        latest[(rep_id, kind)] = max(day, latest.get((rep_id, kind), day))

    for person in reps:
        day, state = due_state(person, config, now)
        if force:
            state = "due"
        if state not in ("due", "late"):
            continue
        for kind in _kinds(person):
            seen = latest.get((person.id, kind))
            if seen is not None and seen >= day:
                if force:
                    outcomes.append(Outcome(person.id, person.email, kind, day, "already"))
                continue
            if dry_run:
                outcomes.append(Outcome(person.id, person.email, kind, day,
                                        "due" if state == "due" else "missed"))
                continue
            if state == "late":
                if claim(person, kind, day, now, status="missed", worker_id=worker_id):
                    log.warning("rep %s: %s digest for %s missed (leadflow was down past the "
                                "cut-off hour)", person.id, kind, day)
                    outcomes.append(Outcome(person.id, person.email, kind, day, "missed"))
                continue
            entry_id = claim(person, kind, day, now, worker_id=worker_id)
            if entry_id is None:
                if force:
                    outcomes.append(Outcome(person.id, person.email, kind, day, "already"))
                continue
            outcomes.append(deliver(entry_id, config, now, relay))

    if not dry_run:
        outcomes.extend(resume_pending(config, now, rep=rep, worker_id=worker_id, relay=relay))
    return outcomes


def resume_pending(config, now=None, rep=None, worker_id=WORKER_ID, relay=None):
    """Send digests waiting for a retry, and those whose sender died (lease over)."""
    now = _utc(now)
    query = (DigestLog.select()
             .where(DigestLog.status.in_(("retry", "claimed"))
                    & (DigestLog.next_attempt_at <= now)
                    & DigestLog.kind.in_(("rep", "admin")))
             .order_by(DigestLog.next_attempt_at))
    if rep is not None:
        query = query.where(DigestLog.rep == rep.id)
    outcomes = []
    for entry in list(query):
        if _take_over(entry, now, worker_id):
            outcomes.append(deliver(entry.id, config, now, relay))
    return outcomes


def preview(rep, config, local_date=None, now=None, kind="rep"):
    """The digest the rep would get (nothing claimed, nothing sent) and its message."""
    now = _utc(now)
    if local_date is None:
        local_date = local_now(rep, config, now).date()
    digest = build_digest(rep, config, kind, local_date, now)
    return digest, render.digest_message(digest, config, message_id(rep.id, local_date, kind, config))


# -- hot-lead alerts ----------------------------------------------------------------

HOT_WINDOW = datetime.timedelta(days=1)


def send_hot_alerts(config, now=None, worker_id=WORKER_ID):
    """Alert owners of leads that reached ``scoring.hot_score``; at most
    ``notify.hot_alert_per_hour`` per rep per hour. Each (owner, lead) is
    alerted once: its claim is a DigestLog row of kind ``hot:LEAD_ID`` whose
    ``local_date`` is the lead's creation date. Only leads scored in the last
    day are considered, so turning alerts on does not mail the whole backlog.
    """
    if not config.notify.hot_alerts:
        return []
    now = _utc(now)
    candidates = list(
        Lead.select(Lead, Rep, Organisation.name.alias("org_name"))
        .join(Rep, on=(Lead.owner == Rep.id))
        .switch(Lead)
        .join(Organisation, JOIN.LEFT_OUTER, on=(Lead.organisation == Organisation.id))
        .where((Lead.score >= config.scoring.hot_score) & Lead.owner.is_null(False)
               & Lead.status.in_(("new", "working", "qualified")) & (Rep.active == True)  # noqa: E712
               & (Lead.scored_at >= now - HOT_WINDOW))
        .order_by(Lead.scored_at, Lead.id)
        .objects())
    if not candidates:
        return []
    alerted = set(DigestLog.select(DigestLog.rep, DigestLog.kind)
                  .where(DigestLog.kind.in_([f"hot:{lead.id}" for lead in candidates]))
                  .tuples())
    candidates = [lead for lead in candidates if (lead.owner_id, f"hot:{lead.id}") not in alerted]
    hour_ago = now - datetime.timedelta(hours=1)
    recent = dict(DigestLog.select(DigestLog.rep, fn.COUNT(DigestLog.id))
                  .where(DigestLog.kind.startswith("hot:") & (DigestLog.claimed_at > hour_ago))
                  .group_by(DigestLog.rep)
                  .tuples())
    outcomes = []
    for lead in candidates:
        owner = lead.owner
        if recent.get(owner.id, 0) >= config.notify.hot_alert_per_hour:
            continue  # later: the lead stays a candidate for HOT_WINDOW
        entry_kind = f"hot:{lead.id}"
        entry_id = claim(owner, entry_kind, lead.created_at.date(), now, worker_id=worker_id)
        if entry_id is None:
            continue
        recent[owner.id] = recent.get(owner.id, 0) + 1
        mid = f"<hot-{owner.id}-{lead.id}@{config.notify.from_.rpartition('@')[2]}>"
        outcome = Outcome(owner.id, owner.email, entry_kind, lead.created_at.date(), "failed")
        item = _lead_item(lead, lead.org_name, now,
                          "Call them today" if lead.status != "qualified" else "Convert it",
                          f"leadflow leads show {lead.id}")
        try:
            mailer.send(config, render.hot_alert_message(owner, lead, item, config, mid))
        except mailer.SendError as exc:
            outcome.error = str(exc)
            _settle(entry_id, status="failed", attempts=1, error=str(exc), next_attempt_at=None,
                    message_id=mid)
            log.warning("hot alert %s: lead %s to %s: %s", entry_id, lead.id, owner.email, exc)
        else:
            _settle(entry_id, status="sent", attempts=1, items=1, sent_at=utcnow(),
                    message_id=mid, next_attempt_at=None)
            outcome.status, outcome.message_id, outcome.items = "sent", mid, 1
        outcomes.append(outcome)
    return outcomes


def tick(config, now=None):
    """One scheduler tick: due digests, retries, hot alerts. Returns the outcomes."""
    outcomes = run_digests(config, now=now)
    try:
        outcomes += send_hot_alerts(config, now=now)
    except Exception:  # alerts must never stop digests
        log.exception("hot alerts failed")
    return outcomes
