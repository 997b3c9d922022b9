"""Scoring stored leads: one at a time in the pipeline, or all of them in batches.

:func:`score_lead` stores the score, the breakdown, the rule-set version and
the time on the lead, and moves its status *forward only*:

- a disqualify verdict makes an open lead (new, working, qualified)
  ``disqualified`` with the rule as the reason, and frees ``open_email`` (the
  lead is no longer open, so the next inquiry from that address starts a new
  lead);
- reaching the threshold makes a ``new`` or ``working`` lead ``qualified``
  (with the time): flagged for conversion.

Scoring never moves a lead back (a qualified lead whose score drops stays
qualified; converted, disqualified and spam leads keep their status); those
are a person's decisions. Only the score and its breakdown follow the rules.

:func:`rescore` rescores stored leads in batches of ``batch_size``, in id
order, one transaction per batch: it reads only the columns the rules look
at (straight from the cursor, without model objects), fetches the batch's
organisations and contacts in one query each, scores the batch rule by rule
(:meth:`RuleSet.score_many`: answers memoised per rule and value), and writes
it with one ``executemany``. Memory stays that of one batch, whatever the
number of leads. By default it picks the leads not
scored by the current version, so stopping it and running it again simply
carries on where it stopped.
"""

import datetime
import json
import logging
from dataclasses import dataclass, field

from peewee import BooleanField, DateTimeField

from leadflow.scoring.conditions import LEAD_FIELDS, LeadView
from leadflow.scoring.rules import breakdown_json
from leadflow.scoring.ruleset import load_ruleset
from leadflow.store import fastsql
from leadflow.store.database import db, utcnow
from leadflow.store.models import OPEN_LEAD_STATUSES, Contact, JSONField, Lead, Organisation

log = logging.getLogger("leadflow.scoring")

QUALIFY_FROM = ("new", "working")


def apply_result(lead, result, now=None):
    """Put a :class:`ScoreResult` on ``lead`` (not saved); return the new status if it changed."""
    now = now or utcnow()
    lead.score = result.score
    lead.score_breakdown = [dict(e) for e in result.breakdown]
    lead.ruleset_version = result.version
    lead.scored_at = now
    transition = _transition(lead.status, result)
    if transition == "disqualified":
        entry = result.disqualified_by
        lead.status = "disqualified"
        lead.disqualified_reason = f"rule {entry['rule']}: {entry['reason']}"
        lead.open_email = None
        lead.status_changed_at = now
    elif transition == "qualified":
        lead.status = "qualified"
        lead.qualified_at = now
        lead.status_changed_at = now
    return transition


def _transition(status, result):
    if result.disqualified and status in OPEN_LEAD_STATUSES:
        return "disqualified"
    if result.qualified and status in QUALIFY_FROM:
        return "qualified"
    return None


def score_lead(lead, ruleset=None, save=True):
    """Score one lead with ``ruleset`` (default: the current set); save it; the result."""
    ruleset = ruleset if ruleset is not None else load_ruleset()
    result = ruleset.score(lead)
    now = utcnow()
    transition = apply_result(lead, result, now)
    if save and lead.id is not None:
        lead.updated_at = now
        fastsql.save_dirty(lead)  # what scoring changed, not every column
    if transition:
        log.info("lead #%s: %s (score %s, rule set v%s)", lead.id, transition, result.score,
                 result.version)
    return result


class ScoreStep:
    """Pipeline step: score the lead this inquiry created or updated."""

    name = "score"
    description = "apply the scoring rules: score, breakdown, qualified or disqualified"

    def process(self, item):
        if item.lead is None:
            return
        cache = getattr(item, "cache", None)
        ruleset = None
        if cache is not None:
            if "ruleset" not in cache:
                cache["ruleset"] = load_ruleset()
            ruleset = cache["ruleset"]
        score_lead(item.lead, ruleset)


# ---------------------------------------------------------------------------
# batches

def needed_columns(ruleset):
    """The Lead columns the rules read (plus what scoring itself needs), and per
    related table (organisation, contact) the columns read there."""
    columns = {"id", "status", "last_inquiry_at", "created_at"}
    related = {}
    for rule in ruleset.rules:
        for condition in rule.conditions:
            head, _, rest = condition["field"].partition(".")
            if condition["field"] == "text":
                columns |= {"subject", "message"}
            elif head in ("organisation", "contact"):
                related.setdefault(head, {"id"}).add(rest)
                columns.add(head)
            elif head in ("signals", "custom") or condition["field"] in LEAD_FIELDS:
                columns.add(head)
    return sorted(columns), related


@dataclass
class Batch:
    """Leads read for scoring: rows (dicts) and the related rows by id."""

    rows: list
    organisations: dict = field(default_factory=dict)
    contacts: dict = field(default_factory=dict)

    def views(self):
        for row in self.rows:
            org = self.organisations.get(row.get("organisation")) if "organisation" in row else None
            contact = self.contacts.get(row.get("contact")) if "contact" in row else None
            yield row, LeadView(row, contact=contact, organisation=org)


def _converter(field):
    """How a raw column value becomes what a Lead attribute would hold (None: as is)."""
    if isinstance(field, JSONField):
        return lambda v: json.loads(v) if isinstance(v, (str, bytes)) else v
    if isinstance(field, BooleanField):
        return lambda v: v if v is None else bool(v)
    if isinstance(field, DateTimeField):
        return lambda v: datetime.datetime.fromisoformat(v) if isinstance(v, str) else v
    return None


def _rows(query, names, fields):
    """Run ``query`` on the raw cursor and build dicts: much cheaper than peewee's row
    wrappers, with the same values for the columns scoring reads."""
    sql, params = query.sql()
    cursor = db.obj.execute_sql(sql, params)
    converters = [(i, c) for i, c in ((i, _converter(f)) for i, f in enumerate(fields)) if c]
    rows = []
    for values in cursor.fetchall():
        if converters:
            values = list(values)
            for i, convert in converters:
                if values[i] is not None:
                    values[i] = convert(values[i])
        rows.append(dict(zip(names, values)))
    return rows


def _related(model, ids, names):
    if not ids:
        return {}
    names = sorted(names)
    fields = [model._meta.fields[n] for n in names]
    rows = _rows(model.select(*fields).where(model.id.in_(sorted(ids))), names, fields)
    return {r["id"]: r for r in rows}


def read_batches(ruleset, where=None, batch_size=1000, extra_columns=()):
    """Yield :class:`Batch` es of leads in id order (keyset pages; nothing held across)."""
    columns, related = needed_columns(ruleset)
    columns = sorted(set(columns) | set(extra_columns))
    fields = [getattr(Lead, c) for c in columns]
    last_id = 0
    while True:
        query = Lead.select(*fields).where(Lead.id > last_id)
        if where is not None:
            query = query.where(where)
        rows = _rows(query.order_by(Lead.id).limit(batch_size), columns, fields)
        if not rows:
            return
        last_id = rows[-1]["id"]
        batch = Batch(rows)
        if "organisation" in related:
            batch.organisations = _related(
                Organisation, {r["organisation"] for r in rows if r.get("organisation")},
                related["organisation"])
        if "contact" in related:
            batch.contacts = _related(Contact, {r["contact"] for r in rows if r.get("contact")},
                                      related["contact"])
        yield batch


def stale_condition(ruleset, all_leads=False, since=None):
    """Which leads a rescore picks: not scored by this version (default), all, or since a date."""
    where = None
    if not all_leads and ruleset.version is not None:
        where = Lead.ruleset_version.is_null() | (Lead.ruleset_version != ruleset.version)
    if since is not None:
        recent = Lead.last_inquiry_at >= since
        where = recent if where is None else (where & recent)
    return where


def count_leads(where):
    query = Lead.select()
    if where is not None:
        query = query.where(where)
    return query.count()


@dataclass
class RescoreCounts:
    scored: int = 0
    qualified: int = 0
    disqualified: int = 0
    version: int | None = None


def rescore(ruleset=None, all_leads=False, since=None, batch_size=1000, progress=None):
    """Rescore stored leads in batches; ``progress(n)`` after each batch. Returns counts.

    Safe to stop at any point and run again: each batch commits on its own,
    and by default a run skips the leads the current version has scored.
    """
    ruleset = ruleset if ruleset is not None else load_ruleset()
    where = stale_condition(ruleset, all_leads, since)
    counts = RescoreCounts(version=ruleset.version)
    table = Lead._meta.table_name
    param = db.obj.param if hasattr(db.obj, "param") else "?"
    update_sql = (f'UPDATE "{table}" SET score = {param}, score_breakdown = {param}, '
                  f'ruleset_version = {param}, scored_at = {param} WHERE id = {param}')
    dumps = breakdown_json
    last_id = 0
    while True:
        page = Lead.id > last_id if where is None else ((Lead.id > last_id) & where)
        with db.atomic():  # one batch: read, score, write, commit
            batch = next(read_batches(ruleset, page, batch_size), None)
            if batch is None:
                break
            last_id = batch.rows[-1]["id"]
            now = utcnow()
            params, moves = [], []
            pairs = list(batch.views())
            results = ruleset.score_many([view for _, view in pairs])
            for (row, _view), result in zip(pairs, results):
                params.append((result.score, dumps(result.breakdown), result.version, now,
                               row["id"]))
                transition = _transition(row["status"], result)
                if transition:
                    moves.append((row["id"], transition, result))
            db.obj.cursor().executemany(update_sql, params)
            _moves(moves, now)
            for _lead_id, transition, _result in moves:
                if transition == "qualified":
                    counts.qualified += 1
                else:
                    counts.disqualified += 1
        counts.scored += len(params)
        if progress:
            progress(len(params))
    log.info("rescored %s leads with rule set v%s: %s qualified, %s disqualified",
             counts.scored, counts.version, counts.qualified, counts.disqualified)
    return counts


def _moves(moves, now):
    """Apply a batch's status changes: one statement for the qualified, one for the rest."""
    qualified = [lead_id for lead_id, transition, _ in moves if transition == "qualified"]
    if qualified:
        (Lead.update(status="qualified", qualified_at=now, status_changed_at=now, updated_at=now)
         .where(Lead.id.in_(qualified), Lead.status.in_(QUALIFY_FROM)).execute())
    closed = [(lead_id, result) for lead_id, transition, result in moves
              if transition == "disqualified"]
    if closed:
        table, param = Lead._meta.table_name, db.obj.param
        statuses = ", ".join(f"'{s}'" for s in OPEN_LEAD_STATUSES)
        sql = (f'UPDATE "{table}" SET status = {param}, disqualified_reason = {param}, '
               f'open_email = NULL, status_changed_at = {param}, updated_at = {param} '
               f'WHERE id = {param} AND status IN ({statuses})')
        db.obj.cursor().executemany(sql, [
            ("disqualified", f"rule {r.disqualified_by['rule']}: {r.disqualified_by['reason']}",
             now, now, lead_id) for lead_id, r in closed])
    for lead_id, transition, result in moves:
        log.info("lead #%s: %s on rescore (score %s, rule set v%s)", lead_id, transition,
                 result.score, result.version)
