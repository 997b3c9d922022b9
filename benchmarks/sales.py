"""Benchmark: assignment by routing rules and lead conversion, on SQLite (or a given URL).

    python benchmarks/sales.py [--leads 5000] [--convert 1000] [--url URL]

1. Load (not timed): 50 reps in 5 teams (some away, some with a capacity),
   11 routing rules (country lists per team, a catch-all), N open leads
   without an owner, across 20 countries.
2. Baseline: give every lead an owner with one plain UPDATE per lead, each in
   its own transaction (the floor any per-lead assignment pays).
3. Assignment: ``assign_unassigned`` -- the real path: sticky-owner check,
   rules evaluated in order, round-robin with the compare-and-set turn, the
   reason and an ``assignment`` activity per lead, one transaction per lead.
4. Baseline: one Opportunity INSERT per lead, each in its own transaction.
5. Conversion: ``convert_lead`` for M qualified leads -- contact and
   organisation matched or made, opportunity, stage history, lead updated,
   activities and audit, one transaction each.

Prints seconds, leads per second and the ratio to the baseline of the same run.
"""

import argparse
import os
import random
import sys
import tempfile
import time

COUNTRIES = ["NL", "BE", "LU", "DE", "AT", "CH", "FR", "ES", "IT", "PT", "GB", "IE", "US", "CA",
             "SE", "NO", "DK", "FI", "PL", "CZ"]
TEAMS = {"Benelux": ["NL", "BE", "LU"], "DACH": ["DE", "AT", "CH"], "South": ["FR", "ES", "IT", "PT"],
         "North": ["SE", "NO", "DK", "FI"], "Anglo": ["GB", "IE", "US", "CA"]}


def load(n_leads):
    import datetime

    from leadflow.scoring.conditions import parse_condition
    from leadflow.scoring.routing import add_rule
    from leadflow.store.database import db, utcnow
    from leadflow.store.models import Lead, Rep

    rng = random.Random(7)
    today = utcnow().date()
    with db.atomic():
        for t, team in enumerate(TEAMS):
            for i in range(10):
                Rep.create(name=f"{team} rep {i}", email=f"{team.lower()}{i}@ourco.example", team=team,
                           away_until=today + datetime.timedelta(days=3) if i == 0 else None,
                           capacity=None if i % 3 else 10_000)
        for team, countries in TEAMS.items():
            add_rule(f"{team.lower()}-big", [parse_condition("signals.budget.amount >= 50000"),
                                             parse_condition("country in " + ", ".join(countries))],
                     team=team)
            add_rule(team.lower(), [parse_condition("country in " + ", ".join(countries))], team=team)
        add_rule("catch-all", [], team="Anglo")
        now = utcnow()
        rows = []
        for i in range(n_leads):
            email = f"p{i}@company{i}.example"
            rows.append({"email": email, "open_email": email, "status": "qualified",
                         "name": f"Person {i}", "company": f"Company {i} Inc.",
                         "country": rng.choice(COUNTRIES), "domain_class": "unknown",
                         "subject": "pricing", "signals": {"budget": {"amount": rng.choice(
                             [1000, 20000, 80000])}}, "created_at": now, "updated_at": now,
                         "last_inquiry_at": now, "first_inquiry_at": now,
                         "status_changed_at": now})
        for start in range(0, len(rows), 500):
            Lead.insert_many(rows[start:start + 500]).execute()


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--convert", type=int, default=1000)
    parser.add_argument("--url", help="database URL (default: a new SQLite file)")
    args = parser.parse_args()

    from leadflow.store import migrate
    from leadflow.store.database import db, open_database
    from leadflow.store.models import Lead, Opportunity, Rep

    folder = tempfile.mkdtemp(prefix="leadflow-bench-")
    url = args.url or f"sqlite:///{os.path.join(folder, 'bench.db')}"
    database = open_database(url, pool_size=2)
    migrate.upgrade(database)
    load(args.leads)
    ids = [r.id for r in Lead.select(Lead.id).order_by(Lead.id)]
    any_rep = Rep.select().first().id

    def baseline_assign():
        for lead_id in ids:
            with db.atomic():
                Lead.update(owner=any_rep).where(Lead.id == lead_id).execute()
        Lead.update(owner=None).execute()

    from leadflow.scoring.routing import assign_unassigned

    base_a, _ = timed(baseline_assign)
    real_a, results = timed(lambda: assign_unassigned())
    placed = sum(n for k, n in results.items() if k)
    print(f"assignment of {len(ids)} leads: baseline {base_a:.2f} s, "
          f"routing {real_a:.2f} s ({len(ids) / real_a:.0f} leads/s), "
          f"ratio {real_a / base_a:.1f}x; placed {placed}, unassigned {results.get(None, 0)}")

    from leadflow.store.conversion import convert_lead

    chosen = ids[:args.convert]

    def baseline_convert():
        for lead_id in chosen:
            with db.atomic():
                Opportunity.create(name=f"lead {lead_id}", lead=lead_id)
        Opportunity.delete().execute()

    base_c, _ = timed(baseline_convert)

    def convert_all():
        for lead_id in chosen:
            convert_lead(lead_id, actor="bench")

    real_c, _ = timed(convert_all)
    print(f"conversion of {len(chosen)} leads: baseline {base_c:.2f} s, "
          f"convert_lead {real_c:.2f} s ({len(chosen) / real_c:.0f} leads/s), "
          f"ratio {real_c / base_c:.1f}x")
    database.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
