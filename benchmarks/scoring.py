"""Benchmark: rescoring stored leads with 50 rules on SQLite.

    python benchmarks/scoring.py [--leads 100000] [--rules 50] [--batch-size 1000] [--jobs N]

Builds a temporary SQLite database with organisations and leads (short
realistic messages, signals, titles), installs the starter rules plus
generated ones up to ``--rules`` (every operator, lead/signal/organisation
fields, text searches), then for a quarter of the leads and for all of them:

- baseline: a plain read of the same leads in the same batches (the columns
  the rules need, plus their organisations), no scoring, no writing;
- rescore: ``engine.rescore(all_leads=True, jobs=N)`` — read, score, write,
  commit per batch; with ``--jobs`` above 1 (default: the number of CPUs)
  worker processes read and score while this process writes — in leads/s and
  as a ratio to the baseline, and per CPU-second of this process and its
  workers together;
- peak memory of the rescore (tracemalloc, in a second pass so that tracing
  does not slow the timed pass) in this process, and the peak resident size of
  the largest worker process; neither should grow with the number of leads.

Target: at least 10,000 leads/s, and the same peak memory at 25k and 100k.
"""

import argparse
import datetime
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc

from leadflow.scoring import engine
from leadflow.scoring import ruleset as rulesets
from leadflow.scoring.conditions import parse_condition
from leadflow.scoring.rules import RuleSet, validate_rule
from leadflow.scoring.starter import starter_ruleset
from leadflow.store import migrate
from leadflow.store.database import db, open_database
from leadflow.store.models import Lead, Organisation

TITLES = ["IT Manager", "CTO", "Head of Operations", "Student", "Office Manager", "Developer",
          "Geschäftsführer", "Directeur commercial", "Intern", "VP Engineering", None]
PRODUCTS = ["project management software", "time tracking", "crm", "invoicing", None]
WORDS = ("we are looking for a tool for our team please send information about your product "
         "and how onboarding works our current process is slow and we need something better").split()
EXTRA_WHENS = [
    "country in NL, BE, DE", "country not in US, GB", "channel = form", "form = contact",
    "title contains student, intern", "title matches ^(vp|head) ", "text contains urgent, asap",
    "text contains invoice, invoicing", "text matches \\d{2,} (users|seats)",
    "subject contains quote, offerte", "signals.budget.amount >= 10000",
    "signals.budget.amount < 1000", "signals.size > 100", "signals.size <= 5",
    "signals.timeline within 30d", "signals.timeline > 2027-06-01", "signals.product contains crm",
    "signals.product in time tracking, invoicing", "organisation.employees > 500",
    "organisation.sector in Software, IT", "organisation.country = NL", "website exists",
    "website missing", "company exists", "submitted_by exists", "email_domain = gmail.com",
    "domain_class = internal", "domain_class != unknown", "inquiry_count >= 3",
    "created_at within -30d", "last_inquiry_at within -7d", "name missing", "phone missing",
    "custom.seats >= 25", "custom.plan in pro, enterprise", "custom.referrer exists",
    "status = working", "message matches (?:call|phone) me", "subject matches ^re:",
    "source contains fair",
]


def make_rules(count):
    base = starter_ruleset()
    rules = list(base.rules)
    i = 0
    while len(rules) < count:
        when = EXTRA_WHENS[i % len(EXTRA_WHENS)]
        rules.append(validate_rule({"name": f"extra-{i}", "points": random.choice([-10, -5, 5, 10]),
                                    "group": random.choice([None, "fit", "intent"]),
                                    "conditions": [parse_condition(when)]}))
        i += 1
    return RuleSet(rules[:count], base.threshold, base.caps)


def add_leads(n, start, organisations, rng):
    now = datetime.datetime(2026, 11, 27, 10, 0)
    rows = []
    for i in range(start, start + n):
        org = rng.choice(organisations)
        signals = {}
        if rng.random() < 0.5:
            signals["timeline"] = {"date": (now + datetime.timedelta(days=rng.randint(5, 400)))
                                   .date().isoformat(), "text": "soon"}
        if rng.random() < 0.5:
            signals["size"] = {"value": rng.randint(1, 500), "unit": "users"}
        if rng.random() < 0.3:
            signals["budget"] = {"amount": rng.randint(100, 100000), "currency": "EUR"}
        product = rng.choice(PRODUCTS)
        if product:
            signals["product"] = [product]
        domain_class = rng.choice(["company", "company", "company", "free", "disposable"])
        rows.append({
            "status": rng.choice(["new", "working", "converted"]),
            "name": f"Person {i}", "email": f"p{i}@c{i % 997}.example",
            "email_domain": f"c{i % 997}.example", "domain_class": domain_class,
            "phone": "+31201234567" if rng.random() < 0.4 else None,
            "title": rng.choice(TITLES), "company": f"Company {i % 997}",
            "country": rng.choice(["NL", "BE", "DE", "US", None]),
            "subject": rng.choice(["Quote please", "Question", "Demo request", "Re: pricing"]),
            "message": " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90))),
            "signals": signals, "custom": {"seats": str(rng.randint(1, 80))},
            "channel": rng.choice(["email", "form"]), "source": "smtp:sales@ourco.example",
            "organisation": org, "inquiry_count": rng.randint(1, 4),
            "last_inquiry_at": now - datetime.timedelta(days=rng.randint(0, 60)),
            "created_at": now - datetime.timedelta(days=rng.randint(0, 90)),
        })
        if len(rows) == 2000:
            Lead.insert_many(rows).execute()
            rows = []
    if rows:
        Lead.insert_many(rows).execute()


def baseline_read(ruleset, batch_size):
    """Read the same leads and organisations in the same batches; no scoring, no writes."""
    n = 0
    for batch in engine.read_batches(ruleset, None, batch_size):
        for _row, _view in batch.views():
            n += 1
    return n


def cpu_seconds():
    """CPU time of this process and of its finished child processes (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def workers_peak_rss():
    """The peak resident size of the largest child process so far, in bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def measure(label, ruleset, batch_size, jobs):
    started, cpu = time.perf_counter(), time.process_time()
    read = baseline_read(ruleset, batch_size)
    base_s, base_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), cpu_seconds()
    counts = engine.rescore(ruleset, all_leads=True, batch_size=batch_size, jobs=jobs)
    rescore_s, rescore_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    tracemalloc.start()
    engine.rescore(ruleset, all_leads=True, batch_size=batch_size, jobs=jobs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    workers = f", largest worker's peak RSS {workers_peak_rss() / 2**20:.0f} MiB" if jobs > 1 else ""
    print(f"{label:>8} leads: baseline read {read / base_s:>9,.0f} leads/s ({base_s:.2f} s)   "
          f"rescore {counts.scored / rescore_s:>8,.0f} leads/s ({rescore_s:.2f} s, "
          f"{rescore_s / base_s:.1f}x the read)   peak traced memory {peak / 2**20:.1f} MiB"
          f"{workers}")
    print(f"{'':>8}        per CPU-second: read {read / base_cpu:>9,.0f} leads/s   "
          f"rescore {counts.scored / rescore_cpu:>8,.0f} leads/s (CPU time of this process and "
          f"its workers, which other load on the machine does not inflate)")
    return counts.scored / rescore_s, peak, workers_peak_rss()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="scoring processes (default: the number of CPUs)")
    args = parser.parse_args(argv)
    rng = random.Random(5)
    random.seed(5)
    with tempfile.TemporaryDirectory() as folder:
        database = open_database(f"sqlite:///{os.path.join(folder, 'bench.db')}")
        migrate.upgrade(database)
        with db.atomic():
            Organisation.insert_many([
                {"name": f"Org {i}", "normalised_name": f"org {i}", "domain": f"o{i}.example",
                 "employees": rng.randint(1, 2000), "sector": rng.choice(["Software", "Retail", "IT"]),
                 "country": rng.choice(["NL", "DE"])} for i in range(5000)]).execute()
        organisations = [o.id for o in Organisation.select(Organisation.id)]
        rulesets.import_ruleset(make_rules(args.rules), "benchmark")
        ruleset = rulesets.load_ruleset()
        print(f"SQLite, {len(ruleset.rules)} rules (version {ruleset.version}), "
              f"batches of {args.batch_size}, {args.jobs} job(s), Python {sys.version.split()[0]}")
        started = time.perf_counter()
        for _ in range(1_000_000):
            pass
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"machine: an empty 1e6-iteration loop takes {(time.perf_counter() - started) * 1e3:.0f} ms "
              f"(~20-40 ms on an idle core); load average {load:.1f} on {os.cpu_count()} CPU(s)")
        quarter = args.leads // 4
        with db.atomic():
            add_leads(quarter, 0, organisations, rng)
        rate_small, peak_small, rss_small = measure(f"{quarter:,}", ruleset, args.batch_size, args.jobs)
        with db.atomic():
            add_leads(args.leads - quarter, quarter, organisations, rng)
        rate, peak, rss = measure(f"{args.leads:,}", ruleset, args.batch_size, args.jobs)
        qualified = Lead.select().where(Lead.status == "qualified").count()
        print(f"qualified after rescoring: {qualified:,} of {args.leads:,}")
        print(f"result: {rate:,.0f} leads/s (target 10,000: {'met' if rate >= 10_000 else 'NOT met'}); "
              f"peak memory {peak_small / 2**20:.1f} MiB at {quarter:,} vs {peak / 2**20:.1f} MiB "
              f"at {args.leads:,} (x{peak / peak_small:.2f})"
              + (f"; largest worker {rss_small / 2**20:.0f} MiB after {quarter:,}, "
                 f"{rss / 2**20:.0f} MiB after {args.leads:,}" if args.jobs > 1 else ""))
        database.close()


if __name__ == "__main__":
    main()
