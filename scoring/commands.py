"""``leadflow rules ...`` and ``leadflow rescore``: scoring rules owned by admins.

Each command is a thin wrapper over :mod:`leadflow.scoring.ruleset`,
:mod:`~leadflow.scoring.engine`, :mod:`~leadflow.scoring.simulate` and
:mod:`~leadflow.scoring.report`. A change makes a new rule-set version and
does not touch stored scores unless ``--rescore`` is given.
"""

import datetime
import getpass
import os
from pathlib import Path

import click

from leadflow.app import echo_json, echo_table, pass_app
from leadflow.errors import LeadflowError
from leadflow.scoring import engine, report as report_module, ruleset as rulesets
from leadflow.scoring.conditions import ConditionError, format_condition, parse_condition
from leadflow.scoring.rules import RuleError, validate_rule


def actor():
    """Who is changing the rules: $LEADFLOW_ACTOR, else the login name."""
    name = os.environ.get("LEADFLOW_ACTOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


class ConditionType(click.ParamType):
    """A condition in the compact form, e.g. ``'signals.timeline within 90d'``."""

    name = "CONDITION"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            return parse_condition(value)
        except ConditionError as exc:
            self.fail(str(exc), param, ctx)


CONDITION = ConditionType()


def _fail(exc):
    raise click.ClickException(str(exc)) from None


def _open(app):
    app.open_db()


def _rescore_after(version, rescore):
    if version is None:
        click.echo("nothing changed")
        return
    click.echo(f"rule set version {version}")
    if rescore:
        _run_rescore()
    else:
        click.echo("stored scores are unchanged; run `leadflow rescore` to apply the rules to them")


MAX_DEFAULT_JOBS = 4  # one writer takes the batches: more workers add memory (~100 MiB each), not speed


def default_jobs():
    """Scoring processes when none are asked for: the CPUs, at most MAX_DEFAULT_JOBS."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def _run_rescore(all_leads=False, since=None, batch_size=1000, quiet=False, jobs=None):
    ruleset = rulesets.load_ruleset()
    jobs = jobs or default_jobs()
    total = engine.count_leads(engine.stale_condition(ruleset, all_leads, since))
    if quiet or total == 0:
        counts = engine.rescore(ruleset, all_leads, since, batch_size, jobs=jobs)
    else:
        with click.progressbar(length=total, label="rescoring", file=click.get_text_stream("stderr"),
                               show_pos=True) as bar:
            counts = engine.rescore(ruleset, all_leads, since, batch_size, progress=bar.update,
                                    jobs=jobs)
    if not quiet:
        click.echo(f"rescored {counts.scored} lead(s) with rule set version {counts.version}: "
                   f"{counts.qualified} newly qualified, {counts.disqualified} disqualified")
    return counts


def _rule_row(rule, hits=None):
    return {"id": rule.id, **rule.to_dict(with_id=False),
            "when": [format_condition(c) for c in rule.conditions],
            **({"hits_30d": hits.get(rule.id, 0)} if hits is not None else {})}


@click.group("rules")
def rules():
    """Scoring rules: list, change, test, simulate, version and roll back."""


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def list_rules(app, as_json):
    """The current rules in order, with hits in the last 30 days."""
    _open(app)
    ruleset = rulesets.load_ruleset()
    hits = report_module.rule_hits(30)
    if as_json:
        echo_json({"version": ruleset.version, "threshold": ruleset.threshold,
                   "groups": ruleset.caps, "rules": [_rule_row(r, hits) for r in ruleset.rules]})
        return
    rows = [(r.id, r.name, r.group or "", (" and " if r.match == "all" else " or ").join(
        format_condition(c) for c in r.conditions), r.outcome, "yes" if r.enabled else "no",
        hits.get(r.id, 0)) for r in ruleset.rules]
    echo_table(["id", "name", "group", "conditions", "points", "enabled", "hits 30d"], rows,
               empty="(no rules: `leadflow init` installs the starter rules)")
    caps = ", ".join(f"{g} at most {c}" for g, c in sorted(ruleset.caps.items())) or "no caps"
    click.echo(f"\nthreshold {ruleset.threshold}; groups: {caps}; "
               f"rule set version {ruleset.version or '-'}")


@rules.command("show")
@click.argument("rule")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show_rule(app, rule, as_json):
    """One rule by id or name."""
    _open(app)
    found = rulesets.load_ruleset().find(rule)
    if found is None:
        raise click.ClickException(f"no rule {rule!r}")
    if as_json:
        echo_json(_rule_row(found))
        return
    click.echo(f"rule #{found.id}: {found.name}")
    if found.description:
        click.echo(f"  {found.description}")
    click.echo(f"  gives:    {found.outcome}" + (f" (group {found.group})" if found.group else ""))
    click.echo(f"  enabled:  {'yes' if found.enabled else 'no'}")
    click.echo(f"  when ({found.match} of):")
    for condition in found.conditions:
        click.echo(f"    {format_condition(condition)}")


def _outcome_options(fn):
    fn = click.option("--description", help="What the rule is for.")(fn)
    fn = click.option("--group", help="Group whose points are capped together (e.g. fit, intent).")(fn)
    fn = click.option("--disqualify", is_flag=True, default=None,
                      help="Disqualify the lead instead of giving points.")(fn)
    fn = click.option("--points", type=int, help="Points when the rule fires (may be negative).")(fn)
    fn = click.option("--any", "match", flag_value="any", help="Fire when any condition holds.")(fn)
    fn = click.option("--all", "match", flag_value="all",
                      help="Fire when every condition holds (the default).")(fn)
    fn = click.option("--when", "conditions", type=CONDITION, multiple=True,
                      help="A condition, e.g. 'signals.timeline within 90d'; repeat for more.")(fn)
    fn = click.option("--rescore", is_flag=True, help="Rescore the stored leads after the change.")(fn)
    return fn


@rules.command("add")
@click.argument("name")
@_outcome_options
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@pass_app
def add_rule(app, name, conditions, match, points, disqualify, group, description, disabled,
             rescore):
    """Add a rule: conditions (--when), then --points N or --disqualify.

    \b
    leadflow rules add fast-buyer --when 'signals.timeline within 3m' --points 20 --group intent
    leadflow rules add students --when 'title contains student, intern' --disqualify
    """
    if not conditions:
        raise click.UsageError("give at least one --when condition")
    if points is None and not disqualify:
        raise click.UsageError("give --points N or --disqualify")
    if points is not None and disqualify:
        raise click.UsageError("give either --points or --disqualify, not both")
    data = {"name": name, "conditions": list(conditions), "match": match or "all",
            "points": points or 0, "verdict": "disqualify" if disqualify else None,
            "group": group, "description": description or "", "enabled": not disabled}
    _open(app)
    try:
        version, rule_id = rulesets.add_rule(validate_rule(data), actor())
    except LeadflowError as exc:
        _fail(exc)
    click.echo(f"added rule #{rule_id} {name!r}")
    _rescore_after(version, rescore)


@rules.command("edit")
@click.argument("rule")
@click.option("--name", "new_name", help="A new name.")
@_outcome_options
@click.option("--no-group", is_flag=True, help="Take the rule out of its group.")
@pass_app
def edit_rule(app, rule, new_name, conditions, match, points, disqualify, group, description,
              no_group, rescore):
    """Change a rule (by id or name); --when replaces all its conditions."""
    if points is not None and disqualify:
        raise click.UsageError("give either --points or --disqualify, not both")
    changes = {}
    if new_name is not None:
        changes["name"] = new_name
    if conditions:
        changes["conditions"] = list(conditions)
    if match:
        changes["match"] = match
    if points is not None:
        changes.update(points=points, verdict=None)
    if disqualify:
        changes.update(verdict="disqualify", points=0)
    if group is not None:
        changes["group"] = group
    if no_group:
        changes["group"] = None
    if description is not None:
        changes["description"] = description
    if not changes:
        raise click.UsageError("nothing to change: give --when, --points, --group, ...")
    _open(app)
    try:
        version = rulesets.edit_rule(rule, changes, actor())
    except LeadflowError as exc:
        _fail(exc)
    _rescore_after(version, rescore)


def _simple_change(name, help_text, call):
    @rules.command(name, help=help_text)
    @click.argument("rule")
    @click.option("--rescore", is_flag=True, help="Rescore the stored leads after the change.")
    @pass_app
    def command(app, rule, rescore):
        _open(app)
        try:
            version = call(rule, actor())
        except LeadflowError as exc:
            _fail(exc)
        _rescore_after(version, rescore)
    return command


_simple_change("enable", "Enable a rule.", lambda r, who: rulesets.set_enabled(r, True, who))
_simple_change("disable", "Disable a rule (it stays in the set).",
               lambda r, who: rulesets.set_enabled(r, False, who))
_simple_change("remove", "Remove a rule.", rulesets.remove_rule)


@rules.command("threshold")
@click.argument("value", type=click.IntRange(0, 100000), required=False)
@click.option("--rescore", is_flag=True, help="Rescore the stored leads after the change.")
@pass_app
def threshold(app, value, rescore):
    """Show the threshold, or set it to VALUE."""
    _open(app)
    if value is None:
        click.echo(rulesets.load_ruleset().threshold)
        return
    try:
        version = rulesets.set_threshold(value, actor())
    except LeadflowError as exc:
        _fail(exc)
    _rescore_after(version, rescore)


@rules.command("cap")
@click.argument("group")
@click.argument("value", type=click.IntRange(1, 100000), required=False)
@click.option("--remove", is_flag=True, help="Remove the group's cap.")
@click.option("--rescore", is_flag=True, help="Rescore the stored leads after the change.")
@pass_app
def cap(app, group, value, remove, rescore):
    """Show or set a group's cap: the most points its rules add together."""
    _open(app)
    if value is None and not remove:
        click.echo(rulesets.load_ruleset().caps.get(group, "no cap"))
        return
    try:
        version = rulesets.set_cap(group, None if remove else value, actor())
    except LeadflowError as exc:
        _fail(exc)
    _rescore_after(version, rescore)


@rules.command("export")
@click.argument("file", type=click.Path(dir_okay=False, writable=True), required=False)
@pass_app
def export(app, file):
    """Write the rule set as TOML to FILE (or standard output)."""
    _open(app)
    text = rulesets.export_toml(rulesets.load_ruleset())
    if file is None or file == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(file).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {file}: {exc.strerror}") from None
    click.echo(f"wrote {file}")


def _read_rules_file(file):
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {getattr(exc, 'strerror', exc)}") from None
    try:
        return rulesets.parse_toml(text, source=file)
    except RuleError as exc:
        raise click.ClickException(f"{file}: {exc}; nothing was changed") from None


@rules.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@click.option("--rescore", is_flag=True, help="Rescore the stored leads after the change.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def import_(app, file, dry_run, rescore, as_json):
    """Load FILE (TOML) as the rule set: validated, diff shown, one new version."""
    _open(app)
    proposed = _read_rules_file(file)
    try:
        changes, version = rulesets.import_ruleset(proposed, actor(), dry_run=dry_run,
                                                   source=os.path.basename(file))
    except LeadflowError as exc:
        _fail(exc)
    if as_json:
        echo_json({"changes": changes, "version": version, "dry_run": dry_run})
    else:
        for line in rulesets.format_diff(changes) or ["no changes"]:
            click.echo(line)
        if dry_run:
            click.echo("dry run: nothing was changed")
    if not dry_run and changes:
        if as_json:
            if rescore:
                _run_rescore(quiet=True)
        else:
            _rescore_after(version, rescore)


@rules.command("test")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def test(app, target, as_json):
    """Try every rule on a lead (LEAD_ID) or a mail file (FILE.eml): hit or miss, and why."""
    from leadflow.store.models import Lead

    _open(app)
    if target.isdigit() and not Path(target).exists():
        lead = Lead.get_or_none(Lead.id == int(target))
        if lead is None:
            raise click.ClickException(f"no lead #{target}")
        what = f"lead #{lead.id} {lead.name or lead.email or ''}".strip()
    else:
        from leadflow.intake.pipeline import preview_lead

        try:
            raw = Path(target).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read {target}: {exc.strerror} "
                                       "(give a lead id or a mail file)") from None
        try:
            lead = preview_lead(raw, app.config)
        except LeadflowError as exc:
            raise click.ClickException(f"{target}: {exc}") from None
        what = f"{target}: {lead.name or ''} <{lead.email or '?'}>"
    ruleset = rulesets.load_ruleset()
    result = ruleset.score(lead)
    explained = ruleset.explain(lead)
    if as_json:
        echo_json({"target": target, "version": ruleset.version, "score": result.score,
                   "threshold": ruleset.threshold, "qualified": result.qualified,
                   "verdict": result.verdict, "breakdown": result.breakdown,
                   "rules": [{"id": r.id, "rule": r.name, "hit": hit, "enabled": r.enabled,
                              "outcome": r.outcome, "reasons": reasons}
                             for r, hit, reasons in explained]})
        return
    click.echo(f"{what} — rule set version {ruleset.version or '-'}")
    for rule, hit, reasons in explained:
        mark = "HIT " if hit else ("off " if not rule.enabled else "miss")
        click.echo(f"  {mark} {rule.outcome:>10}  {rule.name}: {'; '.join(reasons)}")
    for entry in result.breakdown:
        if entry["rule_id"] is None:
            click.echo(f"  cap  {entry['points']:>+10}  {entry['reason']}")
    if result.disqualified:
        click.echo(f"total {result.score}: DISQUALIFIED by {result.disqualified_by['rule']}")
    else:
        verdict = "QUALIFIED" if result.qualified else "not qualified"
        sign = ">=" if result.qualified else "<"
        click.echo(f"total {result.score} {sign} threshold {ruleset.threshold}: {verdict}")


@rules.command("simulate")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False),
              help="Proposed rules (TOML); default: the current set.")
@click.option("--show", default=20, show_default=True, help="How many changed leads to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def simulate_command(app, file, show, as_json):
    """What the proposed rules would do to the stored leads. Writes nothing."""
    from leadflow.scoring.simulate import histogram_lines, simulate

    _open(app)
    proposed = _read_rules_file(file) if file else rulesets.load_ruleset()
    sim = simulate(proposed)
    data = sim.to_dict()
    if as_json:
        echo_json(data)
        return
    click.echo(f"{sim.leads} stored lead(s); threshold {sim.threshold_before} -> "
               f"{sim.threshold_after}")
    click.echo(f"  would newly qualify:    {sim.newly_qualified}")
    click.echo(f"  would stop qualifying:  {sim.stop_qualifying}")
    click.echo(f"  would be disqualified:  {sim.newly_disqualified}")
    click.echo(f"  score changes:          {sim.score_changed}")
    click.echo("")
    for line in histogram_lines(data["histogram"]):
        click.echo(line)
    if sim.changes:
        click.echo("")
        rows = [(c["id"], c["who"] or "", c["status"], c["before"], c["after"], c["change"])
                for c in sim.changes[:show]]
        echo_table(["lead", "who", "status", "before", "after", "change"], rows)
        if len(sim.changes) > show:
            click.echo(f"... and {len(sim.changes) - show} more (--show N)")
    click.echo("nothing was written")


@rules.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def history(app, as_json):
    """Every rule-set version: who changed what, and when."""
    _open(app)
    rows = rulesets.history()
    if as_json:
        echo_json(rows)
        return
    echo_table(["version", "at (UTC)", "by", "action", "summary"],
               [(r["version"], r["at"].strftime("%Y-%m-%d %H:%M"), r["author"] or "", r["action"],
                 r["summary"]) for r in rows], empty="(no versions yet)")


@rules.command("rollback")
@click.argument("version", type=int)
@click.option("--rescore", is_flag=True, help="Rescore the stored leads after the change.")
@pass_app
def rollback(app, version, rescore):
    """Make VERSION's rules current again (as a new version)."""
    _open(app)
    try:
        new = rulesets.rollback(version, actor())
    except LeadflowError as exc:
        _fail(exc)
    _rescore_after(new, rescore)


@rules.command("report")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def report(app, as_json):
    """How well 'qualified' predicted outcomes; each rule's won rate when it fired."""
    _open(app)
    data = report_module.outcome_report()
    if as_json:
        echo_json(data)
        return

    def pct(v):
        return "-" if v is None else f"{v * 100:.0f}%"

    click.echo(f"{data['leads']} lead(s) with a known outcome: {data['good']} won or converted, "
               f"{data['bad']} lost or disqualified ({data['disqualified_by_rules']} by a rule)")
    click.echo(f"qualified (score >= {data['threshold']}) predicted them with precision "
               f"{pct(data['precision'])} and recall {pct(data['recall'])}")
    echo_table(["id", "rule", "gives", "fired", "won when fired", "not fired", "won when not"],
               [(r["id"], r["rule"], r["outcome"], r["fired"], pct(r["won_rate_fired"]),
                 r["not_fired"], pct(r["won_rate_not_fired"])) for r in data["rules"]])


class DateType(click.ParamType):
    name = "DATE"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime.datetime):
            return value
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date such as 2026-11-01", param, ctx)


@click.command("rescore")
@click.option("--all", "all_leads", is_flag=True,
              help="Every lead, also those the current version has scored.")
@click.option("--since", type=DateType(), help="Only leads with an inquiry since DATE.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100000))
@click.option("--jobs", type=click.IntRange(1, 64), default=None,
              help="Scoring processes side by side (default: the number of CPUs, at most "
                   f"{MAX_DEFAULT_JOBS}; 1: all in this process).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def rescore(app, all_leads, since, batch_size, jobs, as_json):
    """Rescore stored leads with the current rules, in batches.

    By default only leads not yet scored by the current rule-set version: stop
    it at any time and run it again to carry on. With several jobs, worker
    processes read and score batches side by side while this one writes them.
    """
    _open(app)
    counts = _run_rescore(all_leads, since, batch_size, quiet=as_json, jobs=jobs)
    if as_json:
        echo_json({"scored": counts.scored, "qualified": counts.qualified,
                   "disqualified": counts.disqualified, "version": counts.version})


def register(main):
    """Add ``rules`` and ``rescore`` to the root command group."""
    main.add_command(rules)
    main.add_command(rescore)
