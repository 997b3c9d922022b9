"""How well the rules predict outcomes, and how often each rule fires.

:func:`outcome_report` looks at the leads whose outcome is known:

- *good*: its opportunity was won, or the lead was converted and its
  opportunity is not (yet) lost;
- *bad*: its opportunity was lost, or the lead was disqualified.

"Predicted qualified" is the stored score: it reaches the threshold of the
current set and no rule disqualified the lead. From those it gives precision
(of the leads predicted qualified, how many were good) and recall (of the
good leads, how many were predicted qualified), and per rule of the current
set the good ("won") rate of the leads it fired on against those it did not:
a rule whose two rates are alike does not earn its points.

Leads disqualified by a rule count as predicted not qualified *and* bad, which
flatters precision/recall; the report says how many there are.
"""

import datetime

from peewee import JOIN

from leadflow.scoring.ruleset import load_ruleset
from leadflow.store.database import utcnow
from leadflow.store.models import Lead, Opportunity


def _rate(good, total):
    return round(good / total, 3) if total else None


def outcome_report(ruleset=None):
    """The report as a dict (see the module docstring)."""
    ruleset = ruleset if ruleset is not None else load_ruleset()
    query = (Lead.select(Lead.id, Lead.status, Lead.score, Lead.score_breakdown,
                         Opportunity.stage.alias("stage"))
             .join(Opportunity, join_type=JOIN.LEFT_OUTER, on=(Opportunity.lead == Lead.id))
             .where(Lead.status.in_(("converted", "disqualified")) |
                    Opportunity.stage.in_(("won", "lost")))
             .order_by(Lead.id).dicts())
    known = good_total = tp = fp = fn = by_rule_verdict = 0
    fired = {r.id: [0, 0] for r in ruleset.rules}  # id -> [good, total] when fired
    for row in query:
        stage, status = row["stage"], row["status"]
        if stage == "won" or (status == "converted" and stage != "lost"):
            good = True
        elif stage == "lost" or status == "disqualified":
            good = False
        else:
            continue
        known += 1
        good_total += good
        breakdown = row["score_breakdown"] or []
        verdict = any(e.get("verdict") for e in breakdown)
        by_rule_verdict += verdict and status == "disqualified"
        predicted = not verdict and (row["score"] or 0) >= ruleset.threshold
        tp += predicted and good
        fp += predicted and not good
        fn += (not predicted) and good
        for rule_id in {e.get("rule_id") for e in breakdown}:
            if rule_id in fired:
                fired[rule_id][0] += good
                fired[rule_id][1] += 1
    rules = []
    for rule in ruleset.rules:
        good_fired, n_fired = fired[rule.id]
        good_not, n_not = good_total - good_fired, known - n_fired
        rules.append({"id": rule.id, "rule": rule.name, "outcome": rule.outcome,
                      "fired": n_fired, "won_rate_fired": _rate(good_fired, n_fired),
                      "not_fired": n_not, "won_rate_not_fired": _rate(good_not, n_not)})
    return {"version": ruleset.version, "threshold": ruleset.threshold, "leads": known,
            "good": good_total, "bad": known - good_total,
            "true_positive": tp, "false_positive": fp, "false_negative": fn,
            "precision": _rate(tp, tp + fp), "recall": _rate(tp, tp + fn),
            "disqualified_by_rules": by_rule_verdict, "rules": rules}


def rule_hits(days=30, now=None):
    """How many leads each rule fired on among the leads scored in the last ``days``."""
    since = (now or utcnow()) - datetime.timedelta(days=days)
    hits = {}
    query = (Lead.select(Lead.score_breakdown).where(Lead.scored_at >= since).tuples())
    for (breakdown,) in query.iterator():
        for entry in breakdown or []:
            rule_id = entry.get("rule_id")
            if rule_id is not None:
                hits[rule_id] = hits.get(rule_id, 0) + 1
    return hits
