"""Assignment: which rep gets a lead, and why.

A lead without an owner is assigned, in this order:

1. **Sticky organisation.** If its organisation has an owner, that rep keeps
   the organisation's leads (even when away: the relationship wins).
2. **Routing rules**, in ``position`` order. A rule has conditions in the
   scoring condition language (``scoring/conditions.py``: country, domain,
   form, channel, signals, ...; no conditions = every lead) and names a rep
   or a team. The first rule that matches *and can place the lead* wins:
   a rule's rep who is away or at capacity, or a team with nobody available,
   lets the lead fall through to the next rule (and the reason says so).
3. Nothing matched: the lead stays unassigned, with the reason recorded
   (``leadflow assign --unassigned`` tries again later, e.g. after a rep is back).

**Round-robin within a team.** The available member (active, not away,
under capacity) who was assigned a lead longest ago (``Rep.last_assigned_at``,
never = first) gets it. The pick is a compare-and-set update of that rep's
``last_assigned_at`` (``WHERE last_assigned_at IS <what we read>``): if
another worker picked the same rep a moment earlier the update touches no
row and we read again, so two workers never both act on stale state.

*Away* means ``away_until`` is today or later (the rep is back the day after).
*At capacity* means open leads (new, working, qualified) >= ``capacity``.

Every assignment writes its reason on the lead (``assignment_reason``, e.g.
"rule 'benelux' → team Benelux → round-robin → Sam") and an Activity of kind
``assignment``. :class:`AssignStep` runs after scoring in the intake pipeline,
only for leads without an owner, so it is idempotent.
"""

import datetime
import logging

from peewee import JOIN, IntegrityError

from leadflow.errors import LeadflowError, NotFoundError
from leadflow.scoring.conditions import (
    ConditionError,
    LeadView,
    Matcher,
    format_condition,
    normalise_conditions,
)
from leadflow.store import fastsql
from leadflow.store.crm import audit, open_lead_counts
from leadflow.store.database import db, utcnow
from leadflow.store.models import OPEN_LEAD_STATUSES, Activity, Lead, Rep, RoutingRule

log = logging.getLogger("leadflow.sales")

MAX_PICK_ATTEMPTS = 10


class RoutingError(LeadflowError):
    def __init__(self, problem):
        super().__init__(problem)
        self.problem = problem

    def __str__(self):
        return self.problem


# -- rules as data ------------------------------------------------------------------

def add_rule(name, conditions=(), match="all", rep=None, team=None, position=None, actor=None):
    """Add a routing rule; ``position`` (1-based) inserts it there, else it goes last."""
    name = (name or "").strip()
    if not name:
        raise RoutingError("a routing rule needs a name")
    if (rep is None) == (team is None):
        raise RoutingError("a routing rule names a rep or a team (one of them)")
    try:
        conditions = normalise_conditions(list(conditions), match) if conditions else []
    except ConditionError as exc:
        raise RoutingError(f"routing rule {name!r}: {exc}") from None
    if team is not None and not Rep.select().where(Rep.team == team).exists():
        raise RoutingError(f"no rep is in team {team!r} (add one with `leadflow reps add ... "
                           f"--team {team}`)")
    with db.atomic():
        rules = list(RoutingRule.select().order_by(RoutingRule.position, RoutingRule.id))
        index = len(rules) if position is None else max(0, min(position - 1, len(rules)))
        try:
            with db.atomic():
                rule = RoutingRule.create(name=name, match=match, conditions=conditions,
                                          rep=rep, team=team, position=index + 1)
        except IntegrityError:
            raise RoutingError(f"a routing rule named {name!r} exists already") from None
        rules.insert(index, rule)
        _renumber(rules)
        audit("routing.add", rule, actor, name=name, conditions=conditions, match=match,
              rep=rep.id if isinstance(rep, Rep) else rep, team=team, position=index + 1)
        return RoutingRule.get_by_id(rule.id)


def _renumber(rules):
    for number, rule in enumerate(rules, 1):
        if rule.position != number:
            RoutingRule.update(position=number).where(RoutingRule.id == rule.id).execute()


def get_rule(ident):
    text = str(ident)
    rule = RoutingRule.get_or_none(RoutingRule.name == text)
    if rule is None and text.isdigit():
        rule = RoutingRule.get_or_none(RoutingRule.id == int(text))
    if rule is None:
        raise NotFoundError("routing rule", ident)
    return rule


def remove_rule(ident, actor=None):
    with db.atomic():
        rule = get_rule(ident)
        rule.delete_instance()
        _renumber(list(RoutingRule.select().order_by(RoutingRule.position, RoutingRule.id)))
        audit("routing.remove", rule, actor, name=rule.name, conditions=rule.conditions,
              team=rule.team, rep=rule.rep_id)
        return rule


def list_rules():
    return list(RoutingRule.select().order_by(RoutingRule.position, RoutingRule.id))


def describe_rule(rule):
    joiner = " and " if rule.match == "all" else " or "
    when = joiner.join(format_condition(c) for c in rule.conditions) or "every lead"
    target = f"team {rule.team}" if rule.team else f"rep {rule.rep.name} <{rule.rep.email}>"
    return f"{when} → {target}"


def rule_dict(rule):
    return {"id": rule.id, "name": rule.name, "position": rule.position, "match": rule.match,
            "conditions": rule.conditions, "rep_id": rule.rep_id, "team": rule.team,
            "enabled": rule.enabled, "description": describe_rule(rule)}


# -- availability -------------------------------------------------------------------------

def unavailable(rep, open_leads, today):
    """Why ``rep`` cannot take a lead now, or None when it can."""
    if not rep.active:
        return "inactive"
    if rep.away_until is not None and rep.away_until >= today:
        return f"away until {rep.away_until.isoformat()}"
    if rep.capacity is not None and open_leads >= rep.capacity:
        return f"at capacity ({open_leads}/{rep.capacity})"
    return None


def _claim(rep, now):
    """Compare-and-set ``last_assigned_at``: True if we took this rep's turn."""
    query = Rep.update(last_assigned_at=now).where(Rep.id == rep.id)
    if rep.last_assigned_at is None:
        query = query.where(Rep.last_assigned_at.is_null())
    else:
        query = query.where(Rep.last_assigned_at == rep.last_assigned_at)
    return query.execute() == 1


def _open_counts(reps):
    """Open leads of the reps that have a capacity (the others need no count)."""
    limited = [r.id for r in reps if r.capacity is not None]
    return open_lead_counts(limited) if limited else {}


def pick_from_team(team, now=None, today=None):
    """The next available rep of ``team`` by round-robin; ``(rep or None, skipped)``.

    The turn is stamped later than every turn of the team we read, so a
    worker whose clock reading is a few milliseconds old can never put a rep
    back at the front of the queue.
    """
    given = now
    today = today or (now or utcnow()).date()
    for _ in range(MAX_PICK_ATTEMPTS):
        members = list(Rep.select().where(Rep.team == team))
        latest = max((r.last_assigned_at for r in members if r.last_assigned_at), default=None)
        now = given or utcnow()
        if latest is not None and now <= latest:
            now = latest + datetime.timedelta(microseconds=1)
        counts = _open_counts(members)
        skipped = []
        order = sorted(members, key=lambda r: (r.last_assigned_at or datetime.datetime.min, r.id))
        chosen = None
        for rep in order:
            why = unavailable(rep, counts.get(rep.id, 0), today)
            if why:
                skipped.append(f"{rep.name} {why}")
                continue
            chosen = rep
            break
        if chosen is None:
            return None, skipped
        if _claim(chosen, now):
            return chosen, skipped
        # another worker took this rep's turn a moment ago: read again
    raise RoutingError(f"team {team}: could not take a turn after {MAX_PICK_ATTEMPTS} attempts")


# -- deciding -------------------------------------------------------------------------------

def load_rules():
    """The enabled rules in order, conditions compiled once: ``[(rule, matcher or None)]``."""
    rules = (RoutingRule.select(RoutingRule, Rep)
             .join(Rep, JOIN.LEFT_OUTER, on=(RoutingRule.rep == Rep.id))
             .where(RoutingRule.enabled == True)  # noqa: E712 - peewee expression
             .order_by(RoutingRule.position, RoutingRule.id))
    return [(rule, Matcher(rule.conditions, rule.match) if rule.conditions else None)
            for rule in rules]


def route(lead, now=None, rules=None):
    """Decide an owner for ``lead``: ``(rep or None, reason)``. Claims a round-robin turn.

    ``rules`` is :func:`load_rules`'s answer, for callers that route many leads.
    """
    now = now or utcnow()
    today = now.date()
    if lead.organisation_id:
        org = lead.organisation
        if org is not None and org.owner_id:
            return org.owner, f"organisation {org.name!r} is owned by {org.owner.name}"
    view = LeadView(lead)
    passed = []
    for rule, matcher in (load_rules() if rules is None else rules):
        if matcher is not None and not matcher.test(view):
            continue
        if rule.rep_id:
            rep = Rep.get_by_id(rule.rep_id)
            why = unavailable(rep, _open_counts([rep]).get(rep.id, 0), today)
            if why:
                passed.append(f"rule {rule.name!r} → {rep.name} {why}")
                continue
            Rep.update(last_assigned_at=now).where(Rep.id == rep.id).execute()
            return rep, "; ".join(passed + [f"rule {rule.name!r} → {rep.name}"])
        rep, skipped = pick_from_team(rule.team, now, today)
        steps = f"rule {rule.name!r} → team {rule.team} → round-robin"
        if skipped:
            steps += f" (skipped {', '.join(skipped)})"
        if rep is None:
            passed.append(steps + " → nobody available")
            continue
        return rep, "; ".join(passed + [f"{steps} → {rep.name}"])
    passed.append("no routing rule matched" if not passed else "no rule could place it")
    return None, "; ".join(passed)


class _OwnedMeanwhile(Exception):
    """Another worker assigned the lead since we read it: undo our turn."""


def _write(lead, rep, reason, now, only_if_unowned=False):
    values = {"owner": rep.id if rep else None, "assigned_at": now if rep else None,
              "assignment_reason": reason if rep else f"unassigned: {reason}", "updated_at": now}
    if fastsql.update(Lead, lead.id, values, unowned="owner" if only_if_unowned else None) != 1:
        raise _OwnedMeanwhile()
    for name, value in values.items():
        setattr(lead, name if name != "owner" else "owner_id", value)
    if rep is not None:
        fastsql.create(Activity, kind="assignment", text=reason, lead=lead.id, rep=rep.id,
                       contact=lead.contact_id, organisation=lead.organisation_id)
        log.info("lead #%s: assigned to %s: %s", lead.id, rep.email, reason)
    else:
        log.info("lead #%s: not assigned: %s", lead.id, reason)


def assign_lead(lead, config=None, actor=None, now=None, rules=None):
    """Assign an open lead that has no owner; return the rep (None: nobody, or already owned).

    The lead is written only if it still has no owner, so a lead assigned by
    someone else in the meantime keeps that owner (and our round-robin turn
    is given back).
    """
    if lead.owner_id or lead.status not in OPEN_LEAD_STATUSES:
        return None
    now = now or utcnow()
    try:
        with db.atomic():
            rep, reason = route(lead, now, rules)
            _write(lead, rep, reason, now, only_if_unowned=True)
    except _OwnedMeanwhile:
        return None
    return rep


def assign_to(lead_id, rep, actor=None, now=None):
    """Assign a lead by hand (also to take it from its current owner)."""
    now = now or utcnow()
    with db.atomic():
        lead = Lead.get_or_none(Lead.id == lead_id)
        if lead is None:
            raise NotFoundError("lead", lead_id)
        if lead.owner_id == rep.id:
            return Lead.get_by_id(lead.id)
        before = lead.owner.name if lead.owner_id else None
        reason = f"assigned by hand{' by ' + actor if actor else ''}" + (
            f" (was {before})" if before else "")
        _write(lead, rep, reason, now)
        audit("lead.assign", lead, actor, rep=rep.id, previous=before)
        return Lead.get_by_id(lead.id)


def assign_unassigned(config=None, actor=None, limit=None, batch_size=500):
    """Run routing again over open leads without an owner; ``{rep email or None: count}``."""
    unowned = (Lead.owner.is_null()) & (Lead.status.in_(OPEN_LEAD_STATUSES))
    rules = load_rules()
    results = {}
    last_id, done = 0, 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        batch = list(Lead.select().where(unowned, Lead.id > last_id).order_by(Lead.id).limit(size))
        if not batch:
            break
        for lead in batch:
            rep = assign_lead(lead, config, actor, rules=rules)
            if rep is None and lead.owner_id is None and lead.assignment_reason is None:
                continue  # owned meanwhile by someone else
            key = rep.email if rep else None
            results[key] = results.get(key, 0) + 1
        last_id, done = batch[-1].id, done + len(batch)
    return results


class AssignStep:
    name = "assign"
    description = "give a lead without an owner to a rep: sticky organisation, routing rules, round-robin"

    def process(self, item):
        lead = item.lead
        if lead is None or lead.status not in OPEN_LEAD_STATUSES:
            return
        if lead.owner_id:
            if lead.assignment_reason is None and lead.organisation_id:
                org = lead.organisation
                if org is not None and org.owner_id == lead.owner_id:
                    reason = f"organisation {org.name!r} is owned by {org.owner.name}"
                    _write(lead, org.owner, reason, lead.assigned_at or utcnow())
            return
        cache = getattr(item, "cache", None)
        rules = None
        if cache is not None:
            if "routing_rules" not in cache:
                cache["routing_rules"] = load_rules()
            rules = cache["routing_rules"]
        assign_lead(lead, item.config, rules=rules)


def team_names():
    return [r.team for r in Rep.select(Rep.team).where(Rep.team.is_null(False))
            .group_by(Rep.team).order_by(Rep.team)]

