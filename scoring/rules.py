"""Scoring rules as data, and scoring a lead with a set of them.

A :class:`Rule` has a name, conditions joined by ``all`` or ``any`` (see
:mod:`leadflow.scoring.conditions`), and either ``points`` (positive or
negative) or the verdict ``disqualify``; optionally a ``group``. A
:class:`RuleSet` holds the rules in order, the threshold and a cap per group.

Scoring (:meth:`RuleSet.score`) is deterministic: the enabled rules are tried
in order; each hit adds its points to its group; a group's sum is cut to its
cap (positive sums only; a cut is written in the breakdown as its own entry,
so the entries always add up to the score). Any disqualify verdict wins over
any number of points: the lead is disqualified whatever its score. Otherwise
the lead is *qualified* when its score reaches the threshold.

Each breakdown entry is ``{rule_id, rule, points | verdict, reason}`` with a
reason an admin can read: ``"timeline 2027-02-15 is within 90 days: +20"``.

Speed: a rule's answer depends only on the values it reads, so compiled rules
memoise their answer (and breakdown entry, with its JSON text) per value. A
:class:`BatchScorer` (one per run: a rescore, a simulation) scores batches of
leads rule by rule over :class:`~leadflow.scoring.conditions.LeadColumns`:
memo lookups for whole columns, conditions tested column by column where
values do not repeat, reasons made only for hits. It gives exactly what
:meth:`RuleSet.score` gives lead by lead (a test checks every operator).
"""

import json
import re
from dataclasses import dataclass
from itertools import compress

from leadflow.errors import LeadflowError
from leadflow.scoring.conditions import (
    NOT_FOR_SCORING,
    ConditionError,
    LeadColumns,
    LeadView,
    Matcher,
    memo_keys,
    normalise_conditions,
)

VERDICTS = ("disqualify",)
DEFAULT_THRESHOLD = 50
MAX_POINTS = 1000
_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
RULE_KEYS = ("name", "description", "group", "match", "conditions", "points", "verdict",
             "enabled")


class RuleError(LeadflowError):
    """A rule is not valid: names the rule and the part that is wrong."""

    def __init__(self, rule, where, problem):
        super().__init__(rule, where, problem)
        self.rule = rule
        self.where = where
        self.problem = problem

    def __str__(self):
        who = f"rule {self.rule!r}" if self.rule else "rule"
        return f"{who}: {self.where}: {self.problem}" if self.where else f"{who}: {self.problem}"


@dataclass
class Rule:
    """One scoring rule. ``id`` is kept across versions (None until stored)."""

    name: str
    conditions: list
    match: str = "all"
    points: int = 0
    verdict: str | None = None
    group: str | None = None
    enabled: bool = True
    description: str = ""
    id: int | None = None

    def to_dict(self, with_id=True):
        """The rule as plain data (the form stored in a rule-set version)."""
        out = {"name": self.name, "description": self.description, "group": self.group,
               "match": self.match, "conditions": [dict(c) for c in self.conditions],
               "points": self.points, "verdict": self.verdict, "enabled": self.enabled}
        if with_id:
            out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data, where=None):
        """Validate plain data and build a Rule; raise :class:`RuleError` naming the part."""
        return validate_rule(data, where)

    @property
    def outcome(self):
        """``+20``, ``-10`` or ``disqualify``."""
        return self.verdict if self.verdict else f"{self.points:+d}"


def validate_rule(data, where=None):
    """Check every part of a rule given as data; return a :class:`Rule`."""
    if not isinstance(data, dict):
        raise RuleError(where, "", "must be a table with name, conditions and points or verdict")
    name = data.get("name")
    label = name if isinstance(name, str) and name else where
    unknown = sorted(set(data) - set(RULE_KEYS) - {"id", "when"})
    if unknown:
        raise RuleError(label, unknown[0], "unknown key; a rule has " + ", ".join(RULE_KEYS))
    if not isinstance(name, str) or not name.strip():
        raise RuleError(label, "name", "a rule needs a name")
    if name != name.strip() or len(name) > 80 or "\n" in name:
        raise RuleError(label, "name", "at most 80 characters, no leading or trailing spaces")
    if name.isdigit():
        raise RuleError(label, "name", "must not be only digits (numbers are rule ids)")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise RuleError(name, "description", "must be text")
    group = data.get("group") or None
    if group is not None and (not isinstance(group, str) or not _GROUP_RE.fullmatch(group)):
        raise RuleError(name, "group", f"{group!r} is not a group name (lower-case letters, digits, "
                                       "- and _)")
    match = data.get("match", "all")
    conditions = data.get("conditions")
    try:
        conditions = normalise_conditions(conditions, match)
    except ConditionError as exc:
        raise RuleError(name, exc.where, exc.problem) from None
    for i, condition in enumerate(conditions):
        if condition["field"] in NOT_FOR_SCORING:
            raise RuleError(name, f"conditions[{i}].field",
                            f"{condition['field']!r} cannot be scored on: a score cannot depend on "
                            "itself (routing rules may use it)")
    verdict = data.get("verdict") or None
    points = data.get("points", 0)
    if points is None:
        points = 0
    if isinstance(points, bool) or not isinstance(points, int):
        raise RuleError(name, "points", f"{points!r} is not a whole number")
    if not -MAX_POINTS <= points <= MAX_POINTS:
        raise RuleError(name, "points", f"must be between -{MAX_POINTS} and {MAX_POINTS}")
    if verdict is not None:
        if verdict not in VERDICTS:
            raise RuleError(name, "verdict", f"{verdict!r} is not a verdict; the only one is "
                                             "'disqualify'")
        if points:
            raise RuleError(name, "points", "a disqualify rule gives no points")
    elif points == 0:
        raise RuleError(name, "points", "a rule needs points (not 0) or the verdict 'disqualify'")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(name, "enabled", "must be true or false")
    rule_id = data.get("id")
    if rule_id is not None and (isinstance(rule_id, bool) or not isinstance(rule_id, int)):
        raise RuleError(name, "id", "must be a whole number")
    return Rule(name=name, conditions=conditions, match=match, points=points, verdict=verdict,
                group=group, enabled=enabled, description=description, id=rule_id)


def validate_threshold(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100000:
        raise RuleError(None, "threshold", f"{value!r} is not a whole number from 0 to 100000")
    return value


def validate_caps(caps):
    if caps is None:
        return {}
    if not isinstance(caps, dict):
        raise RuleError(None, "groups", "must be a table of group = cap")
    out = {}
    for group, cap in sorted(caps.items()):
        if not isinstance(group, str) or not _GROUP_RE.fullmatch(group):
            raise RuleError(None, f"groups.{group}", "is not a group name")
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 100000:
            raise RuleError(None, f"groups.{group}", f"cap {cap!r} is not a whole number from 1 "
                                                     "to 100000")
        out[group] = cap
    return out


def check_unique_names(rules):
    seen = set()
    for rule in rules:
        key = rule.name.casefold()
        if key in seen:
            raise RuleError(rule.name, "name", "two rules have this name")
        seen.add(key)


@dataclass
class ScoreResult:
    """What scoring made of one lead."""

    score: int
    breakdown: list
    threshold: int
    version: int | None
    verdict: str | None = None
    disqualified_by: dict | None = None

    @property
    def hits(self):
        """The ids of the rules that fired, in order."""
        return [e["rule_id"] for e in self.breakdown if e["rule_id"] is not None]

    @property
    def qualified(self):
        """True when no rule disqualifies and the score reaches the threshold."""
        return self.verdict is None and self.score >= self.threshold

    @property
    def disqualified(self):
        return self.verdict == "disqualify"


def _memo_key(value):
    return memo_keys((value,))[0]


_MEMO_SIZE = 4096
_MEMO_RESETS = 4
_MEMO_TRIAL = 8192  # lookups before a rule may stop memoising (one lead at a time)
_BATCH_TRIAL = 8192  # the same, for batches
_REASONS_KEPT = 512  # entries shared by reason, per rule (reasons that repeat come back)
_FEW_MISSES = 16  # more misses than this in a batch: test the batch column-wise
_MISS = object()
_UNHASHABLE = object()


class _CompiledRule:
    """A rule ready to fire, with answers memoised by the values it reads.

    A rule's answer (and reason) depends only on the values of its fields (and
    the reference date for durations; for exists/missing only on whether the
    values are there), so leads that share them (the same domain class,
    country, title...) reuse one answer and one breakdown entry; a condition
    compared as a date only looks at a time's day. Rules whose values hardly
    repeat (message text) stop memoising by themselves after a trial. Entries
    are also shared by reason (leads whose values differ but read the same).
    """

    __slots__ = ("rule", "matcher", "memo", "resets", "fields", "relative", "presence", "days",
                 "by_reason", "lookups", "misses", "_template", "_suffix", "_json_head",
                 "_json_tail", "_weight")

    def __init__(self, rule, caps=None):
        self.rule = rule
        self.matcher = Matcher(rule.conditions, rule.match)
        # what a hit adds up to: points, the group when it has a cap (sums of groups
        # without one change nothing), the verdict
        self._weight = (0, None, rule.verdict) if rule.verdict else \
            (rule.points, rule.group if rule.group in (caps or {}) else None, None)
        self.fields = self.matcher.fields
        self.relative = self.matcher.relative
        self.presence = self.matcher.presence_only
        # fields only compared as dates: their answers (and reasons) depend on the day
        self.days = frozenset(f for f in self.fields
                              if all(c.dates for c in self.matcher.checks if c.field == f))
        self.memo = {}
        self.by_reason = {}
        self.resets = 0
        self.lookups = self.misses = 0
        if rule.verdict:
            self._template = {"rule_id": rule.id, "rule": rule.name, "verdict": rule.verdict}
            self._suffix = f": {rule.verdict}"
        else:
            self._template = {"rule_id": rule.id, "rule": rule.name, "points": rule.points}
            self._suffix = f": {rule.points:+d}"
        # sorted keys: points | reason | rule | rule_id | verdict
        head = {k: v for k, v in self._template.items() if k < "reason"}
        tail = {k: v for k, v in self._template.items() if k > "reason"}
        self._json_head = "{" + "".join(f"{_dumps(k)}: {_dumps(v)}, " for k, v in sorted(head.items())) \
            + '"reason": '
        self._json_tail = "".join(f", {_dumps(k)}: {_dumps(v)}" for k, v in sorted(tail.items())) + "}"

    def key(self, view):
        get = view.get
        if len(self.fields) == 1:
            key = get(self.fields[0]) is None if self.presence else _memo_key(get(self.fields[0]))
        elif self.presence:
            key = tuple([get(f) is None for f in self.fields])
        else:
            key = tuple([_memo_key(get(f)) for f in self.fields])
        if not self.relative:
            return key
        return (key, self.matcher.test(view)) if self.matcher.relative_stable else \
            (key, view.reference)

    def fire(self, view):
        """The breakdown entry when the rule fires on ``view``, else None."""
        memo = self.memo
        if memo is None:
            return self._answer(view)
        key = self.key(view)
        self.lookups += 1
        try:
            return memo[key]
        except KeyError:
            return self.remember(key, view)
        except TypeError:  # a list or table value: not hashable, not memoised
            return self._answer(view)

    def entries(self, cols):
        """:meth:`fire` for every lead of a :class:`LeadColumns`: one entry (or None) each.

        While memoising, the answers are looked up by the leads' values and the values
        not seen yet are answered from the conditions tested column by column; once
        values hardly repeat, every batch is tested that way and only hits explained.
        """
        memo = self.memo
        if memo is None:
            columns = [c.column(cols) for c in self.matcher.checks]
            hits = self.matcher.combine(columns)
            out = [None] * cols.size
            indices = list(compress(range(cols.size), hits))
            for i, entry in zip(indices, self._hit_entries(cols, indices, columns)):
                out[i] = entry
            return out
        keys, hits = self._keys(cols)
        self.lookups += len(keys)
        try:
            new = set(keys).difference(memo)
        except TypeError:  # list or table values: not hashable, answered one by one
            return self._entries_unhashable(cols, keys, hits)
        if new:
            first = {}  # the first lead of each value not met before
            for i, key in enumerate(keys):
                if key in new and key not in first:
                    first[key] = i
            self.misses += len(first)
            answers = self._answers(cols, list(first.values()), hits)
            if len(first) * 10 > len(keys) * 9 and len(keys) >= 100:
                # nearly every lead of a batch brings a new value (a text): memoising
                # would only hold on to them
                self.memo = None
                return [answers[first[key]] for key in keys]
            for key, i in first.items():
                memo[key] = answers[i]
        out = list(map(memo.__getitem__, keys))
        if new and len(memo) >= _MEMO_SIZE:
            self.resets += 1
            memo.clear()
            if self.resets >= _MEMO_RESETS:
                self.memo = None
        if self.lookups >= _BATCH_TRIAL and self.misses * 2 > self.lookups:
            self.memo = None  # values hardly repeat: memoising costs more than it saves
        return out

    def _entries_unhashable(self, cols, keys, hits):
        memo, out, unhashable = self.memo, [], set()
        for i, key in enumerate(keys):
            try:
                out.append(memo.get(key, _MISS))
            except TypeError:
                out.append(_MISS)
                unhashable.add(i)
        missing = [i for i, entry in enumerate(out) if entry is _MISS]
        answers = self._answers(cols, missing, hits)
        for i in missing:
            out[i] = answers[i]
            if i not in unhashable:
                memo[keys[i]] = answers[i]
                self.misses += 1
        return out

    def _answers(self, cols, indices, hits=None):
        """``{index: entry or None}`` for the leads at ``indices``: tested column by
        column when they are many, else one by one."""
        if len(indices) <= _FEW_MISSES:
            view = cols.view
            if hits is None:
                return {i: self._answer(view(i)) for i in indices}
            return {i: self._entry(view(i)) if hits[i] else None for i in indices}
        columns = [c.column(cols) for c in self.matcher.checks]
        if hits is None:
            hits = self.matcher.combine(columns)
        held = [i for i in indices if hits[i]]
        answers = dict.fromkeys(indices)
        answers.update(zip(held, self._hit_entries(cols, held, columns)))
        return answers

    def _hit_entries(self, cols, indices, columns=None):
        """The breakdown entries of the hits at ``indices``, from their reasons made
        column by column (``columns``: each condition's answers, when known)."""
        suffix, known = self._suffix, self.by_reason
        out = []
        for reasons in self.matcher.reasons_column(cols, indices, columns):
            reason = "; ".join(reasons) + suffix
            entry = known.get(reason)
            out.append(entry if entry is not None else self._new_entry(reason))
        return out

    def _keys(self, cols):
        """The memo keys of a batch (what the answer depends on, per lead), and the
        hits when they had to be tested for the keys (else None)."""
        columns = []
        for field in self.fields:
            if self.presence:
                columns.append([v is None for v in cols.values(field)])
            elif field in self.days:
                columns.append(cols.days(field))
            else:
                columns.append(cols.tagged(field))
        keys = columns[0] if len(columns) == 1 else list(zip(*columns))
        if not self.relative:
            return keys, None
        if self.matcher.relative_stable:
            hits = self.matcher.column(cols)
            return list(zip(keys, hits)), hits
        return list(zip(keys, cols.references())), None

    def remember(self, key, view):
        memo = self.memo
        entry = self._answer(view)
        if memo is None:
            return entry
        self.misses += 1
        if self.lookups > _MEMO_TRIAL and self.misses * 2 > self.lookups:
            self.memo = None  # values hardly repeat: memoising costs more than it saves
            return entry
        if len(memo) >= _MEMO_SIZE:
            self.resets += 1
            memo.clear()
            if self.resets >= _MEMO_RESETS:
                self.memo = None
                return entry
        memo[key] = entry
        return entry

    def _answer(self, view):
        if not self.matcher.test(view):
            return None
        return self._entry(view)

    def _entry(self, view):
        """The breakdown entry of a hit on ``view``: one per distinct reason."""
        reason = "; ".join(self.matcher.reasons_for_hit(view)) + self._suffix
        try:
            return self.by_reason[reason]
        except KeyError:
            return self._new_entry(reason)

    def _new_entry(self, reason):
        entry = _Entry(self._template)
        entry["reason"] = reason
        # the JSON text json.dumps(entry, sort_keys=True) would give, without building it
        entry._json = self._json_head + _dumps(reason) + self._json_tail
        entry._rule = self.rule
        entry._weight = self._weight
        if len(self.by_reason) >= _REASONS_KEPT:
            self.by_reason.clear()
        self.by_reason[reason] = entry
        return entry


_dumps = json.JSONEncoder(ensure_ascii=False).encode


class _Entry(dict):
    """A breakdown entry: a plain dict that also keeps its own JSON text."""

    __slots__ = ("_json", "_rule", "_weight")

    def json(self):
        try:
            return self._json
        except AttributeError:
            self._json = json.dumps(self, ensure_ascii=False, sort_keys=True)
            return self._json


def _cap_entry(group, cap, earned, cut):
    entry = _Entry(rule_id=None, rule=f"cap:{group}", points=cut,
                   reason=f"group {group} is capped at {cap} ({earned} earned): {cut:+d}")
    entry.json()
    return entry


def _cut_entry(known, group, cap, earned):
    """The entry cutting ``earned`` points of ``group`` to ``cap``, one per cut in ``known``."""
    try:
        return known[(group, earned)]
    except KeyError:
        if len(known) >= _MEMO_SIZE:
            known.clear()
        entry = known[(group, earned)] = _cap_entry(group, cap, earned, cap - earned)
        return entry


def breakdown_json(breakdown):
    """The breakdown as stored JSON (the same text ``JSONField`` writes), reusing each
    entry's cached JSON."""
    try:
        return "[" + ", ".join([e._json for e in breakdown]) + "]"
    except AttributeError:  # an entry without its text yet, or a plain dict
        return "[" + ", ".join(e.json() if isinstance(e, _Entry) else
                               json.dumps(e, ensure_ascii=False, sort_keys=True)
                               for e in breakdown) + "]"


class RuleSet:
    """Rules in order, with a threshold and group caps: the unit that scores."""

    def __init__(self, rules=(), threshold=DEFAULT_THRESHOLD, caps=None, version=None):
        self.rules = list(rules)
        check_unique_names(self.rules)
        self.threshold = validate_threshold(threshold)
        self.caps = validate_caps(caps)
        self.version = version
        self._compiled = [_CompiledRule(rule, self.caps) for rule in self.rules if rule.enabled]
        self._cut_entries = {}  # (group, earned) -> the cap's entry (read-only, like all entries)
        self._groups = sorted(self.caps)
        self._caps = [self.caps[g] for g in self._groups]

    def __reduce__(self):
        # pickled as its data (a parallel rescore's workers rebuild it); compiled rules
        # hold closures
        return (RuleSet, (self.rules, self.threshold, self.caps, self.version))

    def to_dict(self):
        return {"version": self.version, "threshold": self.threshold, "groups": dict(self.caps),
                "rules": [r.to_dict() for r in self.rules]}

    def score(self, lead, view=None):
        """Score a Lead (or a :class:`LeadView`): a :class:`ScoreResult`, nothing saved.

        Breakdown entries may be shared between results (they are memoised per
        rule and value): treat them as read-only.
        """
        if view is None:
            view = lead if isinstance(lead, LeadView) else LeadView(lead)
        fired = [e for e in (c.fire(view) for c in self._compiled) if e is not None]
        return self._result(fired)

    def score_many(self, views):
        """Score many :class:`LeadView` s at once, rule by rule (column-wise): the same
        results as :meth:`score` on each (see :class:`BatchScorer`)."""
        return BatchScorer(self).score(LeadColumns.from_views(views))

    def scorer(self):
        """A :class:`BatchScorer` for one run over many batches."""
        return BatchScorer(self)

    def _result(self, fired):
        total = 0
        disqualified_by = group_sums = None
        for entry in fired:
            points, group, verdict = entry._weight
            if verdict:
                if disqualified_by is None:
                    disqualified_by = entry
                continue
            total += points
            if group:
                if group_sums is None:
                    group_sums = {}
                group_sums[group] = group_sums.get(group, 0) + points
        cuts = None
        if group_sums:
            cuts = [(group, cap, group_sums[group]) for group, cap in zip(self._groups, self._caps)
                    if group_sums.get(group, 0) > cap]
        return self._scored(fired, total, disqualified_by, cuts)

    def _scored(self, fired, total, disqualified_by, cuts):
        """The result of hits ``fired`` adding up to ``total``; ``cuts``: ``(group, cap,
        earned)`` of each group over its cap, in the groups' order."""
        breakdown = fired
        if cuts:
            breakdown = list(fired)
            for group, cap, earned in cuts:
                entry = self._cut_entry(group, cap, earned)
                total += entry["points"]
                breakdown.append(entry)
        return ScoreResult(score=total, breakdown=breakdown, threshold=self.threshold,
                           version=self.version,
                           verdict=disqualified_by._weight[2] if disqualified_by else None,
                           disqualified_by=disqualified_by)

    def _cut_entry(self, group, cap, earned):
        """The breakdown entry that cuts a group's ``earned`` points to its cap (shared)."""
        return _cut_entry(self._cut_entries, group, cap, earned)

    def explain(self, lead, view=None):
        """Every rule with hit or miss and why: ``[(rule, hit, reasons)]``, disabled ones too."""
        if view is None:
            view = lead if isinstance(lead, LeadView) else LeadView(lead)
        out = []
        for rule in self.rules:
            hit, reasons = Matcher(rule.conditions, rule.match).explain(view)
            out.append((rule, hit and rule.enabled, reasons))
        return out

    def find(self, ident):
        """A rule by id (int or digits) or by name; None if there is none."""
        text = str(ident).strip()
        for rule in self.rules:
            if text.isdigit() and rule.id == int(text):
                return rule
        for rule in self.rules:
            if rule.name.casefold() == text.casefold():
                return rule
        return None


class BatchScorer:
    """Scores batches of leads column by column, for one run (a rescore, a simulation).

    For each rule in turn, the batch's values of the fields the rule reads give
    its answer for every lead: looked up in the rule's memo while the values
    repeat (a domain class, a country, a timeline's day), else tested column by
    column (:meth:`Matcher.column`) with only the hits explained. What each lead
    then gets is exactly what :meth:`RuleSet.score` gives it (a test checks every
    operator). Memos (answers per rule, derived values per field) live as long as
    the scorer: one run, never across runs; they are bounded in size.
    """

    def __init__(self, ruleset):
        self.ruleset = ruleset
        self.rules = [_CompiledRule(rule, ruleset.caps) for rule in ruleset.rules if rule.enabled]
        self.memos = {}
        self.cut_entries = {}

    def columns(self, column):
        """A batch read from the database as :class:`LeadColumns` (see
        :meth:`LeadColumns.from_rows`), sharing this run's memos."""
        return LeadColumns.from_rows(column, self.memos)

    def score(self, cols):
        """A :class:`ScoreResult` per lead of ``cols``, in order."""
        ruleset = self.ruleset
        return [ScoreResult(score=total, breakdown=breakdown, threshold=ruleset.threshold,
                            version=ruleset.version, verdict=by._weight[2] if by else None,
                            disqualified_by=by)
                for total, breakdown, by in self.outcomes(cols)]

    def outcomes(self, cols):
        """Per lead of ``cols``: ``(score, breakdown, disqualifying entry or None)``, what a
        :class:`ScoreResult` holds, without making one. The hits of each rule (a column
        of entries per rule) are added up rule by rule, then the caps applied."""
        ruleset, n = self.ruleset, cols.size
        columns = [rule.entries(cols) for rule in self.rules]
        totals = [0] * n
        sums = {group: [0] * n for group in ruleset._groups}
        disqualified_by = [None] * n
        leads = range(n)
        for rule, column in zip(self.rules, columns):
            points, group, verdict = rule._weight
            if verdict:
                for i in compress(leads, column):
                    if disqualified_by[i] is None:
                        disqualified_by[i] = column[i]
            elif group:
                earned = sums[group]
                for i in compress(leads, column):
                    totals[i] += points
                    earned[i] += points
            else:
                for i in compress(leads, column):
                    totals[i] += points
        breakdowns = [list(filter(None, row)) for row in zip(*columns)] if columns else \
            [[] for _ in leads]
        for group, cap in zip(ruleset._groups, ruleset._caps):  # in the groups' order
            for i, earned in enumerate(sums[group]):
                if earned > cap:
                    totals[i] += cap - earned
                    breakdowns[i].append(_cut_entry(self.cut_entries, group, cap, earned))
        return list(zip(totals, breakdowns, disqualified_by))
