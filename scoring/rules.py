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
memoise their answer (and breakdown entry, with its JSON text) per value;
:meth:`RuleSet.score_many` scores a batch rule by rule. Both give exactly what
:meth:`RuleSet.score` gives lead by lead (a test checks it).
"""

import json
import re
from dataclasses import dataclass

from leadflow.errors import LeadflowError
from leadflow.scoring.conditions import (
    LEAD_FIELDS,
    NOT_FOR_SCORING,
    ConditionError,
    LeadView,
    Matcher,
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


_MEMO_SIZE = 4096
_MEMO_RESETS = 4
_MEMO_TRIAL = 8192
_MISS = object()
_OWN_COLUMNS = frozenset(LEAD_FIELDS) - {"text"}


class _CompiledRule:
    """A rule ready to fire, with answers memoised by the values it reads.

    A rule's answer (and reason) depends only on the values of its fields (and
    the reference date for durations; for exists/missing only on whether the
    values are there), so leads that share them (the same domain class,
    country, title...) reuse one answer and one breakdown entry. Rules whose
    values hardly repeat (message text) stop memoising by themselves after a
    few full memos.
    """

    __slots__ = ("rule", "matcher", "memo", "resets", "fields", "relative", "presence",
                 "lookups", "misses", "_template", "_suffix", "_json_head", "_json_tail")

    def __init__(self, rule):
        self.rule = rule
        self.matcher = Matcher(rule.conditions, rule.match)
        self.fields = self.matcher.fields
        self.relative = self.matcher.relative
        self.presence = self.matcher.presence_only
        self.memo = {}
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
            key = get(self.fields[0]) is None if self.presence else get(self.fields[0])
        elif self.presence:
            key = tuple([get(f) is None for f in self.fields])
        else:
            key = tuple([get(f) for f in self.fields])
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

    def column(self, views, gets=None):
        """:meth:`fire` over many views: one entry (or None) per view.

        ``gets`` may hold each view's bound ``get`` (shared by all rules of a batch).
        """
        memo = self.memo
        if memo is None:
            answer = self._answer
            return [answer(v) for v in views]
        if gets is None:
            gets = [v.get for v in views]
        fields = self.fields
        if len(fields) == 1:
            field = fields[0]
            if self.presence:
                keys = [g(field) is None for g in gets]
            elif field in _OWN_COLUMNS and views and type(views[0].lead) is dict:
                # a raw column value is as good a key as the cleaned one, and cheaper
                keys = [v.lead.get(field) for v in views]
            else:
                keys = [g(field) for g in gets]
        elif self.presence:
            keys = [tuple([g(f) is None for f in fields]) for g in gets]
        else:
            keys = [tuple([g(f) for f in fields]) for g in gets]
        if self.relative:
            if self.matcher.relative_stable:
                test = self.matcher.test
                keys = [(k, test(v)) for k, v in zip(keys, views)]
            else:
                keys = [(k, v.reference) for k, v in zip(keys, views)]
        self.lookups += len(keys)
        lookup = memo.get
        try:
            out = [lookup(k, _MISS) for k in keys]
        except TypeError:  # list or table values: not hashable, answered one by one
            out = []
            for key, view in zip(keys, views):
                try:
                    out.append(memo.get(key, _MISS))
                except TypeError:
                    out.append(self._answer(view))
        if _MISS in out:
            for i, entry in enumerate(out):
                if entry is _MISS:
                    out[i] = self.remember(keys[i], views[i])
        return out

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
        rule = self.rule
        reason = "; ".join(self.matcher.reasons_for_hit(view)) + self._suffix
        entry = _Entry(self._template)
        entry["reason"] = reason
        # the JSON text json.dumps(entry, sort_keys=True) would give, without building it
        entry._json = self._json_head + _dumps(reason) + self._json_tail
        entry._rule = rule
        return entry


_dumps = json.JSONEncoder(ensure_ascii=False).encode


class _Entry(dict):
    """A breakdown entry: a plain dict that also keeps its own JSON text."""

    __slots__ = ("_json", "_rule")

    def json(self):
        try:
            return self._json
        except AttributeError:
            self._json = json.dumps(self, ensure_ascii=False, sort_keys=True)
            return self._json


def _cap_entry(group, cap, earned, cut):
    return _Entry(rule_id=None, rule=f"cap:{group}", points=cut,
                  reason=f"group {group} is capped at {cap} ({earned} earned): {cut:+d}")


def breakdown_json(breakdown):
    """The breakdown as stored JSON (the same text ``JSONField`` writes), reusing each
    entry's cached JSON."""
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
        self._compiled = [_CompiledRule(rule) for rule in self.rules if rule.enabled]

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
        results as :meth:`score` on each, for a fraction of the cost per lead."""
        gets = [v.get for v in views]
        columns = [c.column(views, gets) for c in self._compiled]
        result = self._result
        return [result([e for e in row if e is not None]) for row in zip(*columns)] \
            if columns else [result([]) for _ in views]

    def _result(self, fired):
        total = 0
        verdict = disqualified_by = None
        group_sums = None
        for entry in fired:
            rule = entry._rule
            if rule.verdict:
                if disqualified_by is None:
                    verdict, disqualified_by = rule.verdict, entry
            else:
                total += rule.points
                if rule.group:
                    if group_sums is None:
                        group_sums = {}
                    group_sums[rule.group] = group_sums.get(rule.group, 0) + rule.points
        breakdown = fired
        if group_sums:
            for group in sorted(group_sums):
                cap = self.caps.get(group)
                if cap is not None and group_sums[group] > cap:
                    cut = cap - group_sums[group]
                    total += cut
                    if breakdown is fired:
                        breakdown = list(fired)
                    breakdown.append(_cap_entry(group, cap, group_sums[group], cut))
        return ScoreResult(score=total, breakdown=breakdown, threshold=self.threshold,
                           version=self.version, verdict=verdict,
                           disqualified_by=disqualified_by)

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
