"""What proposed rules would do to the stored leads, without writing anything.

:func:`simulate` scores every stored lead with the proposed set (read in
batches, like a rescore) and compares with what is stored: the leads that
would newly qualify, stop qualifying or be disqualified, the score
distribution before and after, and the leads whose outcome changes.

"Qualified before" means the stored score reaches the *current* threshold and
the lead is not disqualified; "after", the same under the proposed set. The
database is only read.
"""

from dataclasses import dataclass, field

from leadflow.scoring.engine import read_batches
from leadflow.scoring.ruleset import load_ruleset

MAX_CHANGES_KEPT = 1000


@dataclass
class Simulation:
    leads: int = 0
    newly_qualified: int = 0
    stop_qualifying: int = 0
    newly_disqualified: int = 0
    score_changed: int = 0
    before: list = field(default_factory=list)  # scores
    after: list = field(default_factory=list)
    changes: list = field(default_factory=list)  # leads whose outcome changes
    threshold_before: int = 0
    threshold_after: int = 0

    def to_dict(self, histogram_bins=10):
        return {"leads": self.leads, "newly_qualified": self.newly_qualified,
                "stop_qualifying": self.stop_qualifying,
                "newly_disqualified": self.newly_disqualified,
                "score_changed": self.score_changed,
                "threshold": {"before": self.threshold_before, "after": self.threshold_after},
                "histogram": histogram(self.before, self.after, histogram_bins),
                "changes": self.changes}


def simulate(proposed, current=None, batch_size=1000):
    """Score the stored leads with ``proposed``; a :class:`Simulation`. Writes nothing."""
    current = current if current is not None else load_ruleset()
    sim = Simulation(threshold_before=current.threshold, threshold_after=proposed.threshold)
    extra = ("score", "name", "email")
    scorer = proposed.scorer()
    for batch in read_batches(proposed, None, batch_size, extra_columns=extra):
        results = scorer.score(scorer.columns(batch.column))
        rows = zip(batch.column("id"), batch.column("score"), batch.column("status"),
                   batch.column("name"), batch.column("email"))
        for (lead_id, score, status, name, email), result in zip(rows, results):
            before_score = score or 0
            was_disqualified = status == "disqualified"
            was_qualified = not was_disqualified and before_score >= current.threshold
            now_disqualified = result.disqualified or was_disqualified
            now_qualified = not now_disqualified and result.score >= proposed.threshold
            sim.leads += 1
            sim.before.append(before_score)
            sim.after.append(result.score)
            if before_score != result.score:
                sim.score_changed += 1
            outcome = None
            if result.disqualified and not was_disqualified:
                sim.newly_disqualified += 1
                outcome = "disqualified"
            elif now_qualified and not was_qualified:
                sim.newly_qualified += 1
                outcome = "qualifies"
            elif was_qualified and not now_qualified:
                sim.stop_qualifying += 1
                outcome = "stops qualifying"
            if outcome and len(sim.changes) < MAX_CHANGES_KEPT:
                sim.changes.append({"id": lead_id, "who": name or email,
                                    "status": status, "before": before_score,
                                    "after": result.score, "change": outcome,
                                    "rules": [e["rule"] for e in result.breakdown]})
    return sim


def histogram(before, after, bins=10):
    """Counts per score band, before and after: ``[{"from", "to", "before", "after"}]``."""
    values = before + after
    if not values:
        return []
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))
    bands = []
    start = low
    while start <= high:
        bands.append({"from": start, "to": start + width - 1, "before": 0, "after": 0})
        start += width
    for key, scores in (("before", before), ("after", after)):
        for s in scores:
            bands[(s - low) // width][key] += 1
    return bands


def histogram_lines(bands, width=30):
    """A text histogram, one line per score band: before and after side by side."""
    if not bands:
        return ["(no leads)"]
    peak = max(max(b["before"], b["after"]) for b in bands) or 1
    label_width = max(len(f"{b['from']}..{b['to']}") for b in bands)
    lines = [f"{'score':>{label_width}}  {'before':<{width + 7}}after"]
    for b in bands:
        bar_before = "#" * round(width * b["before"] / peak)
        bar_after = "#" * round(width * b["after"] / peak)
        lines.append(f"{b['from']}..{b['to']}".rjust(label_width)
                     + f"  {bar_before:<{width}} {b['before']:>5}  {bar_after:<{width}} {b['after']:>5}")
    return lines
