"""Versioned rule sets in the database, and their TOML form.

Every change — add, edit, enable, disable, remove, threshold, cap, import,
rollback — writes a new :class:`RuleSetVersion` holding the *whole* set
frozen (rules with their ids, threshold, group caps) with who, when and what;
:class:`ScoringRule` holds the current set unpacked, in order. A rule keeps its
id across versions (an import matches rules by name), so a breakdown's
``rule_id`` always means the same rule.

A change never rewrites stored scores: leads keep the score and version they
were scored with until the admin rescores (``leadflow rescore``, or
``--rescore`` on the change).

The TOML form (:func:`export_toml` / :func:`parse_toml`) is meant for version
control: one ``[[rules]]`` table per rule, conditions in the compact text form
under ``when`` (or as data under ``conditions`` where the text form cannot say
them exactly), defaults left out, no ids and no timestamps. Reading it
validates everything first; one broken rule refuses the whole file with the
rule's name and the wrong field.
"""

import json
import logging
import tomllib

import tomli_w
from peewee import IntegrityError, fn

from leadflow.errors import LeadflowError, NotFoundError
from leadflow.scoring.conditions import (
    ConditionError,
    format_condition,
    parse_condition,
    round_trips,
)
from leadflow.scoring.rules import (
    DEFAULT_THRESHOLD,
    RULE_KEYS,
    Rule,
    RuleError,
    RuleSet,
    validate_caps,
    validate_rule,
    validate_threshold,
)
from leadflow.store.database import db, utcnow
from leadflow.store.models import RuleSetVersion, ScoringRule

log = logging.getLogger("leadflow.scoring")

ACTIONS = ("init", "add", "edit", "enable", "disable", "remove", "threshold", "cap", "import",
           "rollback")


class RuleSetError(LeadflowError):
    """A change to the rule set cannot be made as asked."""

    def __init__(self, problem):
        super().__init__(problem)
        self.problem = problem

    def __str__(self):
        return self.problem


# ---------------------------------------------------------------------------
# reading

def latest_version_row():
    """The newest RuleSetVersion, or None before any rules exist."""
    return RuleSetVersion.select().order_by(RuleSetVersion.version.desc()).first()


def ruleset_from_row(row):
    """Build the :class:`RuleSet` frozen in a RuleSetVersion row."""
    rules = [validate_rule(data, where=f"rules[{i}]") for i, data in enumerate(row.rules or [])]
    return RuleSet(rules, row.threshold, row.groups or {}, version=row.version)


_cache = {}


def load_ruleset(version=None):
    """The current rule set (or a given version); an empty set before any exists.

    Compiled sets are cached by their content, so the pipeline pays one small
    query per lead and compiles a set only once.
    """
    if version is None:
        row = latest_version_row()
    else:
        row = RuleSetVersion.get_or_none(RuleSetVersion.version == version)
        if row is None:
            raise NotFoundError("rule set version", version)
    if row is None:
        return RuleSet([], DEFAULT_THRESHOLD, {}, version=None)
    key = (row.version, row.threshold, json.dumps(row.groups, sort_keys=True),
           json.dumps(row.rules, sort_keys=True))
    ruleset = _cache.get(key)
    if ruleset is None:
        ruleset = ruleset_from_row(row)
        if len(_cache) > 32:
            _cache.clear()
        _cache[key] = ruleset
    return ruleset


def history():
    """Every version, newest first, as dicts (version, at, author, action, summary, ...)."""
    return [{"version": row.version, "at": row.created_at, "author": row.author,
             "action": row.action, "summary": row.summary, "threshold": row.threshold,
             "rules": len(row.rules or [])}
            for row in RuleSetVersion.select().order_by(RuleSetVersion.version.desc())]


# ---------------------------------------------------------------------------
# writing: every change is one new version

def _next_rule_id():
    """One more than any rule id ever used, in any version."""
    highest = ScoringRule.select(fn.MAX(ScoringRule.id)).scalar() or 0
    for (rules,) in RuleSetVersion.select(RuleSetVersion.rules).tuples():
        for rule in rules or []:
            highest = max(highest, rule.get("id") or 0)
    return highest + 1


def _commit(ruleset, action, summary, actor):
    """Store ``ruleset`` as the next version and make it current; return the version."""
    with db.atomic():
        row = latest_version_row()
        version = (row.version if row else 0) + 1
        next_id = None
        rules = []
        for rule in ruleset.rules:
            if rule.id is None:
                next_id = next_id or _next_rule_id()
                rule = Rule(**{**rule.__dict__, "id": next_id})
                next_id += 1
            rules.append(rule)
        frozen = RuleSet(rules, ruleset.threshold, ruleset.caps, version=version)
        try:
            with db.atomic():
                RuleSetVersion.create(version=version, threshold=frozen.threshold,
                                      groups=frozen.caps, rules=[r.to_dict() for r in rules],
                                      action=action, summary=summary, author=actor,
                                      created_at=utcnow())
        except IntegrityError:
            raise RuleSetError("the rule set was changed by someone else meanwhile; "
                               "try again") from None
        created = {r.id: r.created_at for r in ScoringRule.select(ScoringRule.id,
                                                                  ScoringRule.created_at)}
        ScoringRule.delete().execute()
        now = utcnow()
        if rules:
            ScoringRule.insert_many([
                {"id": r.id, "name": r.name, "description": r.description, "match": r.match,
                 "conditions": r.conditions, "points": r.points, "verdict": r.verdict,
                 "group": r.group, "enabled": r.enabled, "position": i,
                 "created_at": created.get(r.id, now), "updated_at": now}
                for i, r in enumerate(rules)]).execute()
    log.info("rule set version %s: %s by %s: %s", version, action, actor or "?", summary)
    return version


def _current():
    ruleset = load_ruleset()
    return RuleSet(list(ruleset.rules), ruleset.threshold, dict(ruleset.caps), ruleset.version)


def _find(ruleset, ident):
    rule = ruleset.find(ident)
    if rule is None:
        raise NotFoundError("rule", ident)
    return rule


def _replace(ruleset, old, new):
    return [new if r is old else r for r in ruleset.rules]


def describe(rule):
    """One line: what a rule looks at and what it gives."""
    joiner = " and " if rule.match == "all" else " or "
    return joiner.join(format_condition(c) for c in rule.conditions) + f" -> {rule.outcome}"


def add_rule(rule, actor=None, position=None):
    """Add a rule (a :class:`Rule` or data); returns (version, rule id)."""
    rule = rule if isinstance(rule, Rule) else validate_rule(rule)
    rule = Rule(**{**rule.__dict__, "id": None})
    current = _current()
    rules = list(current.rules)
    rules.insert(len(rules) if position is None else position, rule)
    version = _commit(RuleSet(rules, current.threshold, current.caps), "add",
                      f"add {rule.name!r}: {describe(rule)}", actor)
    return version, load_ruleset().find(rule.name).id


def edit_rule(ident, changes, actor=None):
    """Change parts of a rule (``changes`` is a dict of rule keys); returns the version or None."""
    current = _current()
    old = _find(current, ident)
    data = old.to_dict()
    data.update(changes)
    if data.get("verdict"):
        data["points"] = 0
    new = validate_rule(data)
    if new == old:
        return None
    changed = [k for k in RULE_KEYS if getattr(new, k) != getattr(old, k)]
    summary = f"edit {old.name!r}: " + ", ".join(
        f"{k} {_short(getattr(old, k))} -> {_short(getattr(new, k))}" for k in changed)
    return _commit(RuleSet(_replace(current, old, new), current.threshold, current.caps),
                   "edit", summary, actor)


def set_enabled(ident, enabled, actor=None):
    """Enable or disable a rule; returns the version, or None when it already was."""
    current = _current()
    old = _find(current, ident)
    if old.enabled == enabled:
        return None
    new = Rule(**{**old.__dict__, "enabled": enabled})
    action = "enable" if enabled else "disable"
    return _commit(RuleSet(_replace(current, old, new), current.threshold, current.caps),
                   action, f"{action} {old.name!r}", actor)


def remove_rule(ident, actor=None):
    current = _current()
    old = _find(current, ident)
    rules = [r for r in current.rules if r is not old]
    return _commit(RuleSet(rules, current.threshold, current.caps), "remove",
                   f"remove {old.name!r}: {describe(old)}", actor)


def set_threshold(threshold, actor=None):
    validate_threshold(threshold)
    current = _current()
    if current.version is not None and current.threshold == threshold:
        return None
    return _commit(RuleSet(current.rules, threshold, current.caps), "threshold",
                   f"threshold {current.threshold} -> {threshold}", actor)


def set_cap(group, cap, actor=None):
    """Set (or with ``cap=None`` remove) the cap of a group."""
    current = _current()
    caps = dict(current.caps)
    if cap is None:
        if group not in caps:
            return None
        del caps[group]
        summary = f"cap of group {group!r} removed (was {current.caps[group]})"
    else:
        if caps.get(group) == cap:
            return None
        caps[group] = cap
        summary = f"cap of group {group!r}: {current.caps.get(group, 'none')} -> {cap}"
    validate_caps(caps)
    return _commit(RuleSet(current.rules, current.threshold, caps), "cap", summary, actor)


def rollback(version, actor=None):
    """Make an earlier version current again, as a new version."""
    target = load_ruleset(version)
    return _commit(target, "rollback", f"rollback to version {version}", actor)


def install_starter_rules(actor=None):
    """Install the starter set as version 1 if no version exists; the version, or None."""
    from leadflow.scoring.starter import starter_ruleset

    if latest_version_row() is not None:
        return None
    try:
        return _commit(starter_ruleset(), "init", "starter rules for a B2B seller", actor)
    except (RuleSetError, IntegrityError):  # another init was faster
        return None


# ---------------------------------------------------------------------------
# comparing and importing

def _short(value):
    if isinstance(value, list):
        return "[" + "; ".join(format_condition(c) for c in value) + "]"
    return repr(value)


def diff(old, new):
    """What changes from ``old`` to ``new`` (RuleSets), matching rules by name.

    A list of ``{"change": "add"|"remove"|"edit"|"move"|"threshold"|"cap", ...}``.
    """
    changes = []
    if old.threshold != new.threshold:
        changes.append({"change": "threshold", "old": old.threshold, "new": new.threshold})
    for group in sorted(set(old.caps) | set(new.caps)):
        if old.caps.get(group) != new.caps.get(group):
            changes.append({"change": "cap", "group": group, "old": old.caps.get(group),
                            "new": new.caps.get(group)})
    old_by_name = {r.name.casefold(): r for r in old.rules}
    new_by_name = {r.name.casefold(): r for r in new.rules}
    for rule in old.rules:
        if rule.name.casefold() not in new_by_name:
            changes.append({"change": "remove", "rule": rule.name, "text": describe(rule)})
    for rule in new.rules:
        before = old_by_name.get(rule.name.casefold())
        if before is None:
            changes.append({"change": "add", "rule": rule.name, "text": describe(rule)})
            continue
        fields = {k: [_plain(getattr(before, k)), _plain(getattr(rule, k))]
                  for k in RULE_KEYS if getattr(before, k) != getattr(rule, k)}
        if fields:
            changes.append({"change": "edit", "rule": rule.name, "fields": fields})
    common_old = [r.name.casefold() for r in old.rules if r.name.casefold() in new_by_name]
    common_new = [r.name.casefold() for r in new.rules if r.name.casefold() in old_by_name]
    if common_old != common_new:
        changes.append({"change": "move", "order": [new_by_name[n].name for n in common_new]})
    return changes


def _plain(value):
    if isinstance(value, list):
        return [format_condition(c) for c in value]
    return value


def format_diff(changes):
    """The diff as lines for a person: ``+`` added, ``-`` removed, ``~`` changed."""
    lines = []
    for c in changes:
        kind = c["change"]
        if kind == "threshold":
            lines.append(f"~ threshold: {c['old']} -> {c['new']}")
        elif kind == "cap":
            lines.append(f"~ cap of group {c['group']}: {c['old'] or 'none'} -> {c['new'] or 'none'}")
        elif kind == "add":
            lines.append(f"+ {c['rule']}: {c['text']}")
        elif kind == "remove":
            lines.append(f"- {c['rule']}: {c['text']}")
        elif kind == "edit":
            for name, (a, b) in c["fields"].items():
                lines.append(f"~ {c['rule']}: {name}: {_shown(a)} -> {_shown(b)}")
        elif kind == "move":
            lines.append("~ order: " + ", ".join(c["order"]))
    return lines


def _shown(value):
    if isinstance(value, list):
        return "[" + "; ".join(value) + "]"
    return repr(value)


def same_rules(a, b):
    """True when two RuleSets hold the same rules, threshold and caps (ids aside)."""
    return (a.threshold == b.threshold and a.caps == b.caps
            and [r.to_dict(with_id=False) for r in a.rules]
            == [r.to_dict(with_id=False) for r in b.rules])


def import_ruleset(proposed, actor=None, dry_run=False, source=None):
    """Apply ``proposed`` (a RuleSet without ids) as one new version.

    Returns ``(changes, version)``; ``version`` is None for a dry run or when
    nothing changes. Rules keep their ids by name.
    """
    current = _current()
    changes = diff(current, proposed)
    if dry_run or (not changes and current.version is not None):
        return changes, None
    ids = {r.name.casefold(): r.id for r in current.rules}
    rules = [Rule(**{**r.__dict__, "id": ids.get(r.name.casefold())}) for r in proposed.rules]
    counts = {k: sum(1 for c in changes if c["change"] == k) for k in ("add", "edit", "remove")}
    summary = (f"import{' ' + source if source else ''}: {counts['add']} added, "
               f"{counts['edit']} changed, {counts['remove']} removed")
    if any(c["change"] == "threshold" for c in changes):
        summary += f", threshold {current.threshold} -> {proposed.threshold}"
    version = _commit(RuleSet(rules, proposed.threshold, proposed.caps), "import", summary, actor)
    return changes, version


# ---------------------------------------------------------------------------
# TOML

TOML_HEADER = """\
# leadflow scoring rules.
# Edit this file and load it with `leadflow rules import FILE` (add --dry-run to see the
# changes first). Rules are tried in this order; `when` lists conditions in the compact
# form of `leadflow rules add --when`, joined by `match` ("all", the default, or "any").
# A rule gives `points` or `verdict = "disqualify"`; a group's points are capped under
# [groups]; `threshold` decides who is qualified.
"""


def ruleset_to_data(ruleset):
    """A RuleSet as the plain data written to TOML (defaults left out)."""
    rules = []
    for rule in ruleset.rules:
        data = {"name": rule.name}
        if rule.description:
            data["description"] = rule.description
        if rule.group:
            data["group"] = rule.group
        if rule.verdict:
            data["verdict"] = rule.verdict
        else:
            data["points"] = rule.points
        if rule.match != "all":
            data["match"] = rule.match
        if all(round_trips(c) for c in rule.conditions):
            data["when"] = [format_condition(c) for c in rule.conditions]
        else:
            data["conditions"] = [dict(c) for c in rule.conditions]
        if not rule.enabled:
            data["enabled"] = False
        rules.append(data)
    out = {"threshold": ruleset.threshold}
    if ruleset.caps:
        out["groups"] = dict(ruleset.caps)
    out["rules"] = rules
    return out


def export_toml(ruleset):
    """The rule set as a readable TOML document."""
    return TOML_HEADER + "\n" + tomli_w.dumps(ruleset_to_data(ruleset), multiline_strings=False)


def parse_toml(text, source=None):
    """Read and validate a TOML rule set; a :class:`RuleSet` without ids.

    Raises :class:`RuleError` naming the rule and the field on the first
    problem; nothing is half-read.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(None, "", f"{source or 'the file'} is not valid TOML: {exc}") from None
    return ruleset_from_data(data)


def ruleset_from_data(data):
    unknown = sorted(set(data) - {"threshold", "groups", "rules"})
    if unknown:
        raise RuleError(None, unknown[0], "unknown key; a rule file has threshold, groups, rules")
    threshold = data.get("threshold", DEFAULT_THRESHOLD)
    validate_threshold(threshold)
    caps = validate_caps(data.get("groups", {}))
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RuleError(None, "rules", "must be a list of [[rules]] tables")
    rules = []
    for i, raw in enumerate(raw_rules):
        if not isinstance(raw, dict):
            raise RuleError(f"rules[{i}]", "", "must be a [[rules]] table")
        name = raw.get("name") or f"rules[{i}]"
        raw = dict(raw)
        if "id" in raw:
            raise RuleError(name, "id", "ids are given by leadflow; leave them out")
        if "when" in raw:
            if "conditions" in raw:
                raise RuleError(name, "when", "give either when or conditions, not both")
            when = raw.pop("when")
            when = [when] if isinstance(when, str) else when
            if not isinstance(when, list) or not when:
                raise RuleError(name, "when", "must be a list of conditions such as "
                                              "\"title contains cto\"")
            conditions = []
            for j, text in enumerate(when):
                try:
                    conditions.append(parse_condition(text))
                except ConditionError as exc:
                    raise RuleError(name, f"when[{j}]", str(exc)) from None
            raw["conditions"] = conditions
        rules.append(validate_rule(raw, where=f"rules[{i}]"))
    return RuleSet(rules, threshold, caps)


def current_rules_table():
    """Rows of the current set with position, for listing (ScoringRule)."""
    return list(ScoringRule.select().order_by(ScoringRule.position))
