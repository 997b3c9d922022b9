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
order. A batch is read in one query (only the columns the rules look at, the
organisation's and contact's joined in, straight from the cursor as tuples),
scored column by column (:class:`~leadflow.scoring.rules.BatchScorer`: each
field read once per batch, answers memoised per rule and value, for this run
only), and written in a transaction of its own with one ``executemany`` per
kind of row. A lead changed between the read and the write (its
``updated_at`` moved) is not written over. With ``jobs`` above 1, worker
processes read and score id ranges side by side on their own connections
while the calling process writes (see :func:`rescore`). Memory stays that of
a few batches, whatever the number of leads. By default it picks the leads
not scored by the current version, so stopping it and running it again
simply carries on where it stopped.
"""

import datetime
import itertools
import json
import logging
import multiprocessing
import os
import queue
import signal
import traceback
from dataclasses import dataclass, field
from urllib.parse import quote

from peewee import JOIN, BooleanField, DateTimeField, PostgresqlDatabase

from leadflow.errors import LeadflowError
from leadflow.scoring.conditions import LEAD_FIELDS, LeadView
from leadflow.scoring.rules import breakdown_json
from leadflow.scoring.ruleset import load_ruleset
from leadflow.store import fastsql
from leadflow.store.database import db, is_postgres, make_database, utcnow
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


def _transition_of(status, score, disqualified_by, threshold):
    """:func:`_transition` from a :meth:`BatchScorer.outcomes` row."""
    if disqualified_by is not None:
        return "disqualified" if status in OPEN_LEAD_STATUSES else None
    return "qualified" if score >= threshold and status in QUALIFY_FROM else None


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
    """Leads read for scoring: the rows as the cursor gave them (tuples in ``names``
    order; ``organisation.NAME`` and ``contact.NAME`` are the linked rows' columns,
    joined in). Columns are converted on first use."""

    names: list
    rows: list
    converters: dict = field(default_factory=dict)
    _columns: dict = field(default_factory=dict, repr=False)

    @property
    def last_id(self):
        return self.rows[-1][self.names.index("id")]

    def column(self, name):
        """The batch's values of a column, as the model attribute would hold them
        (None for a column that was not read)."""
        try:
            return self._columns[name]
        except KeyError:
            pass
        try:
            index = self.names.index(name)
        except ValueError:
            values = [None] * len(self.rows)
        else:
            values = [row[index] for row in self.rows]
            convert = self.converters.get(name)
            if convert is not None:
                values = convert(values)
        self._columns[name] = values
        return values

    def raw(self, name):
        """A column's values as the database gave them (not converted)."""
        index = self.names.index(name)
        return [row[index] for row in self.rows]

    def related(self, kind):
        """Each lead's organisation or contact row (a dict of the columns read), or None."""
        if kind not in self.names:
            return [None] * len(self.rows)
        prefix = kind + "."
        names = [n for n in self.names if n.startswith(prefix)]
        columns = [self.column(n) for n in names]
        names = [n[len(prefix):] for n in names]
        rows = zip(*columns) if columns else itertools.repeat(())
        return [None if key is None else dict(zip(names, values), id=key)
                for key, values in zip(self.column(kind), rows)]

    def dicts(self):
        """Each lead's own columns as a dict."""
        names = [n for n in self.names if "." not in n]
        return [dict(zip(names, values)) for values in zip(*[self.column(n) for n in names])]

    def views(self):
        """``(row dict, LeadView)`` per lead."""
        for row, org, contact in zip(self.dicts(), self.related("organisation"),
                                     self.related("contact")):
            yield row, LeadView(row, contact=contact, organisation=org)


def _json_column(values):
    """JSON text to values; a text repeated in the batch is decoded once (the values
    are only read)."""
    decoded, out = {}, []
    for value in values:
        if isinstance(value, (str, bytes)):
            try:
                value = decoded[value]
            except KeyError:
                decoded[value] = value = json.loads(value)
        out.append(value)
    return out


def _converter(field):
    """How a column's raw values become what Lead attributes would hold (None: as they are)."""
    if isinstance(field, JSONField):
        return _json_column
    if isinstance(field, BooleanField):
        return lambda values: [v if v is None else bool(v) for v in values]
    if isinstance(field, DateTimeField):
        parse = datetime.datetime.fromisoformat
        return lambda values: [parse(v) if isinstance(v, str) else v for v in values]
    return None


def _fetch(query):
    """Run ``query`` on the raw cursor: the rows as tuples (no model objects)."""
    sql, params = query.sql()
    return db.obj.execute_sql(sql, params).fetchall()


def read_batches(ruleset, where=None, batch_size=1000, extra_columns=(), ids=None):
    """Yield :class:`Batch` es of leads in id order (keyset pages; nothing held across),
    with the columns of their organisation and contact that the rules read joined in;
    ``ids``: only those from the first to the last id of this pair."""
    columns, related = needed_columns(ruleset)
    columns = sorted(set(columns) | set(extra_columns))
    fields = [getattr(Lead, c) for c in columns]
    names = list(columns)
    joins = []
    for kind, model in (("organisation", Organisation), ("contact", Contact)):
        if kind in related:
            for name in sorted(related[kind] - {"id"}):
                fields.append(model._meta.fields[name])
                names.append(f"{kind}.{name}")
            joins.append((model, getattr(Lead, kind) == model.id))
    converters = {n: c for n, c in ((n, _converter(f)) for n, f in zip(names, fields)) if c}
    id_index = names.index("id")
    last_id = 0 if ids is None else ids[0] - 1
    while True:
        query = Lead.select(*fields)
        for model, on in joins:
            query = query.join_from(Lead, model, JOIN.LEFT_OUTER, on=on)
        # the page's lower bound only from last_id: SQLite seeks the primary key by one
        query = query.where(Lead.id > last_id)
        if ids is not None:
            query = query.where(Lead.id <= ids[1])
        if where is not None:
            query = query.where(where)
        rows = _fetch(query.order_by(Lead.id).limit(batch_size))
        if not rows:
            return
        last_id = rows[-1][id_index]
        yield Batch(names, rows, converters)
        if len(rows) < batch_size:  # the last page
            return


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


class RescoreError(LeadflowError):
    """A scoring process of a parallel rescore failed; what it wrote is kept."""

    def __init__(self, problem):
        super().__init__(problem)
        self.problem = problem

    def __str__(self):
        return f"rescore failed: {self.problem}"


@dataclass
class ScoredBatch:
    """A batch scored and ready to write; plain data, so that it can cross from a
    scoring process to the writing one. Rows of parameters, each ending with the
    lead's id and its ``updated_at`` as read (a lead changed since is not written over):

    - ``scores``: ``(score, breakdown JSON, version, scored_at, ...)``, status unchanged;
    - ``qualified``: the same and ``qualified_at, status_changed_at, updated_at``;
    - ``disqualified``: the same and ``reason, status_changed_at, updated_at``.
    """

    scores: list = field(default_factory=list)
    qualified: list = field(default_factory=list)
    disqualified: list = field(default_factory=list)

    def __len__(self):
        return len(self.scores) + len(self.qualified) + len(self.disqualified)

    def extend(self, other):
        self.scores += other.scores
        self.qualified += other.qualified
        self.disqualified += other.disqualified

    def moves(self):
        """``(id, "qualified" | "disqualified", score)`` of the leads that change status."""
        return [(row[-2], "qualified", row[0]) for row in self.qualified] + \
            [(row[-2], "disqualified", row[0]) for row in self.disqualified]


@dataclass
class WrittenBatch:
    """What a worker that writes itself (on PostgreSQL) reports of a batch: its size, the
    counts :func:`write_batch` returns, and the status changes (logged by the rescore)."""

    size: int
    counts: tuple
    moves: list


def score_batch(scorer, batch):
    """Score a :class:`Batch` (read with ``updated_at``) with a :class:`BatchScorer`."""
    outcomes = scorer.outcomes(scorer.columns(batch.column))
    now = utcnow()
    if not is_postgres():
        now = now.isoformat(" ")  # the text sqlite3 would make of it for every row
    out = ScoredBatch()
    scores, qualified, disqualified = out.scores, out.qualified, out.disqualified
    dumps, version, threshold = breakdown_json, scorer.ruleset.version, scorer.ruleset.threshold
    for lead_id, status, stamp, (score, breakdown, by) in zip(
            batch.column("id"), batch.column("status"), batch.raw("updated_at"), outcomes):
        values = (score, dumps(breakdown), version, now)
        transition = _transition_of(status, score, by, threshold)
        if transition is None:
            scores.append((*values, lead_id, stamp))
        elif transition == "qualified":
            qualified.append((*values, now, now, now, lead_id, stamp))
        else:
            disqualified.append((*values, f"rule {by['rule']}: {by['reason']}", now, now,
                                 lead_id, stamp))
    return out


def _same_row():
    """SQL that the row is the one read: its updated_at unchanged (None-safe)."""
    param = db.obj.param if hasattr(db.obj, "param") else "?"
    return f"updated_at IS NOT DISTINCT FROM {param}" if is_postgres() else f"updated_at IS {param}"


def _sql_list(words):
    return ", ".join(f"'{w}'" for w in words)  # our own status names, never input


def write_batch(scored, version=None):
    """Write a :class:`ScoredBatch` in one transaction, one ``executemany`` for each
    kind of row (a lead that changes status is written once, score and status
    together). A lead changed since it was read (its ``updated_at`` moved) is left as
    it is: that change scored it, or a rerun will. Returns ``(scored, qualified,
    disqualified)`` as written."""
    counts = _write(scored)
    _log_moves(scored.moves(), version)
    return counts


def _log_moves(moves, version):
    for lead_id, transition, score in moves:
        log.info("lead #%s: %s on rescore (score %s, rule set v%s)", lead_id, transition, score,
                 version)


def _write(scored):
    table = Lead._meta.table_name
    param = db.obj.param if hasattr(db.obj, "param") else "?"
    head = (f'UPDATE "{table}" SET score = {param}, score_breakdown = {param}, '
            f'ruleset_version = {param}, scored_at = {param}')
    tail = f"WHERE id = {param} AND {_same_row()}"
    counts = []
    with db.atomic():
        cursor = db.obj.cursor()
        for rows, sql in (
                (scored.scores, f"{head} {tail}"),
                (scored.qualified,
                 (f"{head}, status = 'qualified', qualified_at = {param}, "
                  f"status_changed_at = {param}, updated_at = {param} {tail} AND status IN "
                  f"({_sql_list(QUALIFY_FROM)})")),
                (scored.disqualified,
                 (f"{head}, status = 'disqualified', disqualified_reason = {param}, "
                  f"open_email = NULL, status_changed_at = {param}, updated_at = {param} {tail} "
                  f"AND status IN ({_sql_list(OPEN_LEAD_STATUSES)})"))):
            if rows:
                cursor.executemany(sql, rows)
                counts.append(max(cursor.rowcount, 0))
            else:
                counts.append(0)
    return counts[0] + counts[1] + counts[2], counts[1], counts[2]


def rescore(ruleset=None, all_leads=False, since=None, batch_size=1000, progress=None, jobs=1):
    """Rescore stored leads in batches; ``progress(n)`` after each batch. Returns counts.

    Each batch is read (outside any transaction), scored with one
    :class:`BatchScorer` for the run, and written in a transaction of its own
    (:func:`write_batch`). With ``jobs`` above 1 (and more than one batch to
    do, on a database other processes can open), that many worker processes
    read and score id ranges on their own connections, side by side, while this
    process hands out the ranges and writes what comes back (SQLite has one
    writer at a time; WAL lets the workers read meanwhile). On PostgreSQL, which
    takes writes side by side, each worker also writes its own batches.

    Safe to stop at any point and run again: each batch commits on its own,
    and by default a run skips the leads the current version has scored.
    """
    ruleset = ruleset if ruleset is not None else load_ruleset()
    where = stale_condition(ruleset, all_leads, since)
    counts = RescoreCounts(version=ruleset.version)
    spec = _connection_spec() if jobs > 1 else None
    todo = count_leads(where) if spec is not None else 0
    if todo > batch_size:
        jobs = min(jobs, -(-todo // batch_size))  # no more workers than batches
        batches = _parallel_batches(ruleset, where, spec, (all_leads, since), batch_size, jobs)
    else:
        batches = _batches(ruleset, where, batch_size)
    try:
        for scored in batches:
            if isinstance(scored, WrittenBatch):  # a worker wrote it
                written, qualified, disqualified = scored.counts
                _log_moves(scored.moves, ruleset.version)
                done = scored.size
            else:
                written, qualified, disqualified = write_batch(scored, ruleset.version)
                done = len(scored)
            counts.scored += written
            counts.qualified += qualified
            counts.disqualified += disqualified
            if progress:
                progress(done)
    finally:
        batches.close()  # stops the workers if the loop ends early
    log.info("rescored %s leads with rule set v%s: %s qualified, %s disqualified",
             counts.scored, counts.version, counts.qualified, counts.disqualified)
    return counts


def _batches(ruleset, where, batch_size):
    """Scored batches, read and scored in this process."""
    scorer = ruleset.scorer()
    for batch in read_batches(ruleset, where, batch_size, extra_columns=("updated_at",)):
        yield score_batch(scorer, batch)


# ---------------------------------------------------------------------------
# parallel: worker processes read and score, this process writes

_WORKER_WAIT = 1.0  # seconds between checks that the workers are alive


def _connection_spec():
    """How a worker process opens this database, or None when it cannot (in memory)."""
    database = db.obj
    if is_postgres(database):
        return ("postgresql", database.database, dict(database.connect_params))
    path = getattr(database, "database", None)
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return ("sqlite", os.path.abspath(path))


def _open_spec(spec):
    if spec[0] == "postgresql":
        return PostgresqlDatabase(spec[1], prefer_psycopg3=True, **spec[2])
    return make_database("sqlite:///" + quote(spec[1]))


def _id_ranges(where, batch_size):
    """``(first id, last id)`` of each batch of leads to do, in id order."""
    last_id = 0
    while True:
        query = Lead.select(Lead.id).where(Lead.id > last_id)
        if where is not None:
            query = query.where(where)
        ids = [row[0] for row in _fetch(query.order_by(Lead.id).limit(batch_size))]
        if not ids:
            return
        last_id = ids[-1]
        yield ids[0], ids[-1]


def _parallel_batches(ruleset, where, spec, picks, batch_size, jobs):
    """Scored batches from ``jobs`` worker processes, in the order they finish (on
    PostgreSQL, :class:`WrittenBatch` es: the workers write them).

    At most two ranges per worker are out at a time, so memory stays that of a
    few batches. Closing the generator (a stop, an error) ends the workers; the
    batches written so far stay written.
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, no inherited connection
    tasks, results = context.Queue(), context.Queue()
    write = spec[0] == "postgresql"
    workers = [context.Process(target=_score_ranges, name=f"leadflow-rescore-{i + 1}",
                               args=(spec, ruleset, picks, batch_size, tasks, results, write),
                               daemon=True) for i in range(jobs)]
    try:
        for worker in workers:
            worker.start()
        ranges = _id_ranges(where, batch_size)
        out = 0
        for task in itertools.islice(ranges, 2 * jobs):
            tasks.put(task)
            out += 1
        while out:
            item = _next_result(results, workers)
            out -= 1
            task = next(ranges, None)
            if task is not None:
                tasks.put(task)
                out += 1
            yield item
        for _worker in workers:
            tasks.put(None)
        for worker in workers:
            worker.join()
    finally:
        for worker in workers:
            if worker.pid is None:  # never started
                continue
            if worker.is_alive():
                worker.terminate()
            worker.join()
        tasks.close()
        results.close()


def _next_result(results, workers):
    while True:
        try:
            item = results.get(timeout=_WORKER_WAIT)
        except queue.Empty:
            for worker in workers:
                if worker.exitcode not in (None, 0):
                    raise RescoreError(f"{worker.name} ended with exit code {worker.exitcode}") \
                        from None
            continue
        if isinstance(item, tuple):  # a worker failed: (its name, the error, the traceback)
            name, error, trace = item
            log.debug("%s failed:\n%s", name, trace)
            raise RescoreError(f"{name}: {error}")
        return item


def _score_ranges(spec, ruleset, picks, batch_size, tasks, results, write=False):
    """A worker process: read and score each ``(first id, last id)`` range from ``tasks``
    on a connection of its own, put the :class:`ScoredBatch` on ``results`` (with
    ``write``: write it, put a :class:`WrittenBatch`).

    Ctrl-C is left to the rescore, which ends its workers when it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    database = None
    try:
        database = _open_spec(spec)
        db.initialize(database)
        database.connect()
        scorer = ruleset.scorer()
        where = stale_condition(ruleset, *picks)
        parent = os.getppid()
        while True:
            try:
                task = tasks.get(timeout=5)
            except queue.Empty:
                if os.getppid() != parent:  # the rescore is gone
                    return
                continue
            if task is None:
                return
            scored = ScoredBatch()
            for batch in read_batches(ruleset, where, batch_size, ("updated_at",), ids=task):
                scored.extend(score_batch(scorer, batch))
            if write:
                scored = WrittenBatch(len(scored), _write(scored), scored.moves())
            results.put(scored)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((multiprocessing.current_process().name, f"{type(exc).__name__}: {exc}",
                     traceback.format_exc()))
    finally:
        if database is not None and not database.is_closed():
            database.close()
