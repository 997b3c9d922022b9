"""Benchmark: daily digests for 1,000 reps over 1,000,000 leads on SQLite.

    python benchmarks/digest.py [--reps 1000] [--leads 1000000] [--db PATH] [--keep]

1. Load (not timed as part of the result): reps in several time zones,
   organisations, leads (most closed, some new and assigned in the last days,
   some qualified and waiting), opportunities in every stage, activities and
   follow-ups; bulk-inserted with ``insert_many`` in big transactions.
2. Baseline, in a fresh process: for every rep, read the rows its digest is
   about (open leads, open opportunities, open follow-ups) with plain selects.
3. Digests, in a fresh process: ``run_digests`` at 10:00 UTC, the real path —
   claim each DigestLog row, build the digest, render text + HTML, and send it
   over SMTP to a do-nothing aiosmtpd sink on 127.0.0.1 (the sink counts and
   drops). Then a second tick at 10:01 (everything already claimed).

Prints seconds and peak memory (max RSS of that process) for each phase, and
the ratio digests / baseline. Target: digests for all reps under 60 s.
"""

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time

NOW = datetime.datetime(2026, 6, 10, 10, 0)  # a Wednesday, 10:00 UTC
ZONES = ["UTC", "Europe/Amsterdam", "Europe/London", "Europe/Berlin", "Africa/Lagos",
         "Europe/Helsinki", "Asia/Dubai"]
STAGES = ["qualification", "proposal", "negotiation", "won", "lost"]
REASONS = ["Buying within 3 months", "Company domain", "Budget mentioned", "Team of 50+",
           "Asked for a demo", "Free-mail address"]


def _bulk(database, model, fields, rows):
    """Insert ``rows`` (tuples in ``fields`` order) in one transaction: the statement is
    peewee's own ``insert_many`` SQL (which adds the other columns' defaults), run with the
    driver's executemany."""
    sql, sample = model.insert_many([rows[0]], fields=fields).sql()
    columns = [c.strip().strip('"') for c in sql[sql.index("(") + 1:sql.index(")")].split(",")]
    slots = [columns.index(f.column_name) for f in fields]
    converters = [f.db_value for f in fields]

    def full(row):
        params = list(sample)
        for slot, convert, value in zip(slots, converters, row):
            params[slot] = convert(value)
        return params

    with database.atomic():
        database.cursor().executemany(sql, map(full, rows))


def load(url, reps, leads):
    from leadflow.store import migrate
    from leadflow.store.database import db, open_database
    from leadflow.store.models import Activity, Lead, Opportunity, Organisation, Rep

    database = open_database(url)
    migrate.upgrade(database)
    database.execute_sql("PRAGMA synchronous=OFF")
    rnd = random.Random(7)
    t0 = time.perf_counter()
    with db.atomic():
        Rep.insert_many([
            {"name": f"Rep {i}", "email": f"rep{i}@ourco.example", "timezone": ZONES[i % len(ZONES)],
             "digest_hour": 8, "working_days": "1,2,3,4,5", "created_at": NOW - datetime.timedelta(days=400),
             "role": "admin" if i % 100 == 0 else "rep"}
            for i in range(reps)]).execute()
        orgs = leads // 50
        Organisation.insert_many([
            {"name": f"Org {i} Inc.", "normalised_name": f"org {i}", "domain": f"org{i}.example",
             "provenance": {}} for i in range(orgs)]).execute()
    fields = [Lead.status, Lead.name, Lead.email, Lead.company, Lead.subject, Lead.channel,
              Lead.source, Lead.organisation, Lead.owner, Lead.assigned_at, Lead.score,
              Lead.score_breakdown, Lead.qualified_at, Lead.created_at, Lead.status_changed_at,
              Lead.signals, Lead.fields, Lead.custom, Lead.first_inquiry_at, Lead.last_inquiry_at,
              Lead.updated_at]
    batch = []
    for i in range(leads):
        age = datetime.timedelta(minutes=rnd.randrange(0, 60 * 24 * 90))
        created = NOW - age
        roll = rnd.random()
        status = ("new" if roll < 0.02 else "working" if roll < 0.04 else "qualified" if roll < 0.07
                  else "converted" if roll < 0.2 else "disqualified")
        breakdown = [{"rule_id": k, "rule": f"r{k}", "points": rnd.choice((5, 10, 20, 30)),
                      "reason": REASONS[k]} for k in rnd.sample(range(len(REASONS)), 3)]
        batch.append((status, f"Prospect {i}", f"p{i}@org{i % orgs}.example", f"Org {i % orgs} Inc.",
                      "Interested in project management software", "email",
                      "email:sales@ourco.example", i % orgs + 1, i % reps + 1,
                      created + datetime.timedelta(minutes=5), sum(b["points"] for b in breakdown),
                      breakdown, created + datetime.timedelta(hours=1)
                      if status == "qualified" else None, created, created,
                      {}, {}, {}, created, created, created))
        if len(batch) == 100_000 or i == leads - 1:
            _bulk(database, Lead, fields, batch)
            batch = []
    opps = leads // 20
    rows = []
    for i in range(opps):
        changed = NOW - datetime.timedelta(days=rnd.randrange(0, 60))
        stage = STAGES[i % len(STAGES)]
        rows.append((f"Org {i % orgs} Inc. - deal {i}", i % reps + 1, i % orgs + 1, stage,
                     rnd.randrange(1, 100) * 1000, changed, changed, changed,
                     changed if stage in ("won", "lost") else None))
    _bulk(database, Opportunity, [Opportunity.name, Opportunity.owner, Opportunity.organisation,
                                  Opportunity.stage, Opportunity.amount,
                                  Opportunity.stage_changed_at, Opportunity.created_at,
                                  Opportunity.updated_at, Opportunity.closed_at], rows)
    rows = []
    for i in range(leads // 5):
        on_opp = i % 2 == 0
        created = NOW - datetime.timedelta(days=rnd.randrange(0, 90))
        due = (NOW + datetime.timedelta(days=rnd.randrange(-20, 20))).date()
        target = rnd.randrange(1, (opps if on_opp else leads) + 1)
        owner = (target - 1) % reps + 1  # the owner of that lead or opportunity logged it
        rows.append(("call", f"Call back about the proposal {i}", target if on_opp else None,
                     None if on_opp else target, owner, due if i % 3 else None,
                     created if i % 4 == 0 else None, created))
    _bulk(database, Activity, [Activity.kind, Activity.text, Activity.opportunity, Activity.lead,
                               Activity.rep, Activity.due_at, Activity.done_at, Activity.created_at],
          rows)
    database.execute_sql("ANALYZE")
    database.close()
    return time.perf_counter() - t0


def baseline(url):
    """Read, per rep, the rows its digest is about: no joins, no rendering, no sending."""
    from leadflow.store.database import open_database
    from leadflow.store.models import Activity, Lead, Opportunity, Rep

    open_database(url)
    rows = 0
    for rep in Rep.select():
        rows += len(Lead.select().where((Lead.owner == rep.id)
                                        & Lead.status.in_(("new", "working", "qualified"))).tuples())
        opps = [o[0] for o in Opportunity.select(Opportunity.id)
                .where(Opportunity.owner == rep.id).tuples()]
        rows += len(opps)
        rows += len(Activity.select().where(Activity.opportunity.in_(opps)
                                            & Activity.done_at.is_null()).tuples())
    return rows


SINK = """
import sys
from leadflow.notify.testing import SmtpSink
sink = SmtpSink(store=False).start()
print(sink.port, flush=True)
sys.stdin.read()
print(sink.count, flush=True)
"""


def digests(url):
    """The real tick; the do-nothing SMTP sink runs in its own process."""
    from leadflow import config as config_module
    from leadflow.notify.digest import run_digests
    from leadflow.store.database import open_database

    open_database(url)
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline())
    config = config_module.parse({"notify": {"relay": {"host": "127.0.0.1", "port": port}}})
    outcomes = run_digests(config, now=NOW)
    t_second = time.perf_counter()
    again = run_digests(config, now=NOW + datetime.timedelta(minutes=1))
    t_second = time.perf_counter() - t_second
    received, _ = sink.communicate("")
    counts = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return {"outcomes": counts, "received_by_sink": int(received.strip()),
            "second_tick": len(again), "second_tick_seconds": round(t_second, 3)}


def phase(name, url):
    """Run one phase in a fresh process; its wall and CPU seconds, peak RSS and result."""
    code = (f"import json, resource, time, sys; sys.path.insert(0, {os.path.dirname(__file__)!r});"
            f"import digest as b; t=time.perf_counter(); r=b.{name}({url!r}); "
            f"u=resource.getrusage(resource.RUSAGE_SELF); "
            f"print(json.dumps({{'seconds': time.perf_counter()-t, 'cpu': u.ru_utime+u.ru_stime, "
            f"'peak_mb': u.ru_maxrss/1024, 'result': r}}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--db", help="SQLite file to use (loaded when it does not exist)")
    parser.add_argument("--load-only", action="store_true", help="Load the data and stop.")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="leadflow-bench-")
    path = args.db or os.path.join(folder, "digest.db")
    url = f"sqlite:///{path}"
    if not os.path.exists(path):
        seconds = load(url, args.reps, args.leads)
        print(f"load: {args.reps} reps, {args.leads} leads, {args.leads // 20} opportunities, "
              f"{args.leads // 5} activities in {seconds:.1f} s ({os.path.getsize(path) / 2**20:.0f} MB)")
        if args.load_only:
            return
    else:
        from leadflow.store.database import open_database
        from leadflow.store.models import DigestLog
        open_database(url)
        DigestLog.delete().execute()
    base = phase("baseline", url)
    print(f"baseline (read the rows, per rep):  {base['seconds']:6.1f} s (cpu {base['cpu']:5.1f} s)"
          f"  peak {base['peak_mb']:4.0f} MB  ({base['result']} rows)")
    run = phase("digests", url)
    print(f"digests (claim+build+render+SMTP):  {run['seconds']:6.1f} s (cpu {run['cpu']:5.1f} s)"
          f"  peak {run['peak_mb']:4.0f} MB  {run['result']}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"ratio digests / baseline: {run['seconds'] / base['seconds']:.1f}x; "
          f"target < 60 s: {'met' if run['seconds'] < 60 else 'NOT met'}")
    print(f"database: {path}")


if __name__ == "__main__":
    main()
