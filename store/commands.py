"""CLI of the sales side: reps, routing, conversion, opportunities, activities, CRM records.

Every command is a thin wrapper over one library function (``store/crm.py``,
``store/conversion.py``, ``store/merge.py``, ``store/transfer.py``,
``scoring/routing.py``). Reps are named by id, email or name. ``--json``
prints data for scripts. Errors end as ``Error: ...`` with exit code 1.
"""

import contextlib
import datetime
import getpass
import sys

import click

from leadflow.app import echo_json, echo_table, pass_app
from leadflow.errors import LeadflowError
from leadflow.store import crm
from leadflow.store.database import db, utcnow
from leadflow.store.models import (
    Activity,
    Contact,
    Lead,
    Opportunity,
    Organisation,
    Rep,
    StageChange,
)


def actor():
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "cli"


@contextlib.contextmanager
def errors():
    """Deliberate errors of the library as ``Error: ...`` (exit 1)."""
    try:
        yield
    except LeadflowError as exc:
        raise click.ClickException(str(exc)) from None


class DayType(click.ParamType):
    """A calendar day: YYYY-MM-DD, today, tomorrow, or +N days (``+3d``, ``3d``, ``2w``)."""

    name = "date"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime.date):
            return value
        text = str(value).strip().lower()
        today = utcnow().date()
        if text in ("today", "tomorrow"):
            return today + datetime.timedelta(days=int(text == "tomorrow"))
        stripped = text.lstrip("+")
        if stripped[:-1].isdigit() and stripped[-1:] in ("d", "w"):
            days = int(stripped[:-1]) * (7 if stripped[-1] == "w" else 1)
            return today + datetime.timedelta(days=days)
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not a date: use YYYY-MM-DD, today, tomorrow or +3d", param, ctx)


DAY = DayType()


def get_rep(text):
    """A rep by id, email or name (after the database is open)."""
    from leadflow.cli import RepType

    return RepType().convert(text, None, None)


def _rep_name(rep_id):
    if rep_id is None:
        return ""
    rep = Rep.get_or_none(Rep.id == rep_id)
    return rep.email if rep else f"#{rep_id}"


def _rep_emails(ids):
    """{rep id: email} for these ids, in one query (lists must not query per row)."""
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return {r.id: r.email for r in Rep.select(Rep.id, Rep.email).where(Rep.id.in_(list(ids)))}


def _when(value):
    return f"{value:%Y-%m-%d %H:%M}" if isinstance(value, datetime.datetime) else (value or "")


# -- reps -------------------------------------------------------------------------------

@click.group()
def reps():
    """Sales reps: who gets leads and a daily digest."""


@reps.command("add")
@click.argument("name")
@click.argument("email")
@click.option("--timezone", "tz", help="IANA time zone of the rep (default: notify.timezone).")
@click.option("--digest-hour", type=click.IntRange(0, 23), help="Local hour of the daily digest.")
@click.option("--team", help="Team name (routing rules can send leads to a team).")
@click.option("--capacity", type=click.IntRange(1), help="Open leads at most (default: no limit).")
@click.option("--role", type=click.Choice(["rep", "admin", "marketing"]), default="rep",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def reps_add(app, name, email, tz, digest_hour, team, capacity, role, as_json):
    """Add a rep."""
    from leadflow.config import _timezone
    from leadflow.intake.normalise import normalise_email

    app.open_db()
    address = normalise_email(email)
    if address is None:
        raise click.BadParameter(f"{email!r} is not an email address", param_hint="EMAIL")
    tz = tz or app.config.notify.timezone
    if _timezone(tz):
        raise click.BadParameter(f"{tz!r}: {_timezone(tz)}", param_hint="--timezone")
    if Rep.get_or_none(Rep.email == address) is not None:
        raise click.ClickException(f"a rep with email {address} exists already")
    with db.atomic():
        rep = Rep.create(name=name, email=address, timezone=tz, team=team, capacity=capacity,
                         digest_hour=app.config.notify.digest_hour if digest_hour is None
                         else digest_hour, role=role)
        crm.audit("rep.add", rep, actor(), **crm.rep_dict(rep))
    if as_json:
        echo_json(crm.rep_dict(rep))
    else:
        click.echo(f"rep {rep.id}: {rep.name} <{rep.email}>" + (f", team {team}" if team else ""))


@reps.command("list")
@click.option("--team", help="Only this team.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def reps_list(app, team, as_json):
    """List reps with their open leads, capacity and availability."""
    from leadflow.scoring.routing import unavailable

    app.open_db()
    query = Rep.select().order_by(Rep.team, Rep.name)
    if team:
        query = query.where(Rep.team == team)
    rows = list(query)
    counts = crm.open_lead_counts()
    today = utcnow().date()
    if as_json:
        echo_json([crm.rep_dict(r, counts.get(r.id, 0)) for r in rows])
        return
    echo_table(["id", "name", "email", "team", "open", "capacity", "tz", "digest", "status"],
               [[r.id, r.name, r.email, r.team, counts.get(r.id, 0), r.capacity or "-", r.timezone,
                 f"{r.digest_hour}:00", unavailable(r, counts.get(r.id, 0), today) or "available"]
                for r in rows], empty="no reps; add one with `leadflow reps add NAME EMAIL`")


@reps.command("show")
@click.argument("rep")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def reps_show(app, rep, as_json):
    """Show a rep: settings, open leads, opportunities and due follow-ups."""
    app.open_db()
    row = get_rep(rep)
    counts = crm.open_lead_counts([row.id])
    opps = crm.list_opportunities(owner=row.id)
    due = crm.due_followups(rep=row.id, on=utcnow().date() + datetime.timedelta(days=7))
    data = crm.rep_dict(row, counts.get(row.id, 0))
    data["opportunities"] = [crm.opportunity_dict(o) for o in opps]
    data["followups"] = [crm.activity_dict(a) for a in due]
    if as_json:
        echo_json(data)
        return
    for key in ("id", "name", "email", "team", "role", "timezone", "digest_hour", "capacity",
                "away_until", "open_leads", "last_assigned_at"):
        click.echo(f"{key + ':':<18}{data[key] if data[key] is not None else '-'}")
    click.echo(f"opportunities:    {len(opps)} ({sum(o.stage not in crm.CLOSED_STAGES for o in opps)} open)")
    click.echo(f"follow-ups due within 7 days: {len(due)}")
    for a in due:
        click.echo(f"  #{a.id}  due {a.due_at}  {a.kind}: {a.text.splitlines()[0] if a.text else ''}")


@reps.command("edit")
@click.argument("rep")
@click.option("--name")
@click.option("--email")
@click.option("--timezone", "tz")
@click.option("--digest-hour", type=click.IntRange(0, 23))
@click.option("--team", help="Team name; '' for none.")
@click.option("--capacity", type=click.IntRange(0), help="Open leads at most; 0 for no limit.")
@click.option("--role", type=click.Choice(["rep", "admin", "marketing"]))
@click.option("--active/--inactive", default=None, help="Inactive reps get no new leads.")
@pass_app
def reps_edit(app, rep, name, email, tz, digest_hour, team, capacity, role, active):
    """Change a rep's settings."""
    from leadflow.config import _timezone
    from leadflow.intake.normalise import normalise_email

    app.open_db()
    row = get_rep(rep)
    changes = {}
    if name:
        changes["name"] = name
    if email:
        address = normalise_email(email)
        if address is None:
            raise click.BadParameter(f"{email!r} is not an email address", param_hint="--email")
        other = Rep.get_or_none(Rep.email == address)
        if other is not None and other.id != row.id:
            raise click.ClickException(f"rep {other.id} has email {address} already")
        changes["email"] = address
    if tz:
        if _timezone(tz):
            raise click.BadParameter(f"{tz!r}: {_timezone(tz)}", param_hint="--timezone")
        changes["timezone"] = tz
    if digest_hour is not None:
        changes["digest_hour"] = digest_hour
    if team is not None:
        changes["team"] = team or None
    if capacity is not None:
        changes["capacity"] = capacity or None
    if role:
        changes["role"] = role
    if active is not None:
        changes["active"] = active
    if not changes:
        raise click.UsageError("nothing to change; see `leadflow reps edit --help`")
    with db.atomic():
        Rep.update(changes).where(Rep.id == row.id).execute()
        crm.audit("rep.edit", row, actor(), **{k: v for k, v in changes.items()})
    click.echo(f"rep {row.id} updated: " + ", ".join(f"{k}={v}" for k, v in changes.items()))


@reps.command("away")
@click.argument("rep")
@click.option("--until", "until", type=DAY, required=True,
              help="Last day away (YYYY-MM-DD or +7d); back the day after.")
@pass_app
def reps_away(app, rep, until):
    """Mark a rep away: no new leads by routing until the day after --until."""
    app.open_db()
    row = get_rep(rep)
    if until < utcnow().date():
        raise click.BadParameter(f"{until} is in the past", param_hint="--until")
    with db.atomic():
        Rep.update(away_until=until).where(Rep.id == row.id).execute()
        crm.audit("rep.away", row, actor(), until=until)
    click.echo(f"{row.name} is away until {until} (back {until + datetime.timedelta(days=1)})")


@reps.command("back")
@click.argument("rep")
@pass_app
def reps_back(app, rep):
    """Mark a rep back: routing gives them leads again."""
    app.open_db()
    row = get_rep(rep)
    with db.atomic():
        Rep.update(away_until=None).where(Rep.id == row.id).execute()
        crm.audit("rep.back", row, actor())
    click.echo(f"{row.name} is back")


# -- routing --------------------------------------------------------------------------------

@click.group()
def routing():
    """Routing rules: which rep or team gets which leads (first match wins)."""


@routing.command("add")
@click.argument("name")
@click.option("--when", "when", multiple=True,
              help="A condition, as in scoring rules: 'country in NL, BE', 'form = demo', "
                   "'signals.budget.amount >= 10000'. Repeat for more; none = every lead.")
@click.option("--any", "any_", is_flag=True, help="Match when any condition holds (default: all).")
@click.option("--rep", "rep", help="Give matching leads to this rep.")
@click.option("--team", help="Give matching leads to this team, round-robin.")
@click.option("--position", type=click.IntRange(1), help="Put the rule here (1 = first); default last.")
@pass_app
def routing_add(app, name, when, any_, rep, team, position):
    """Add a routing rule."""
    from leadflow.scoring.conditions import ConditionError, parse_condition
    from leadflow.scoring.routing import add_rule, describe_rule

    app.open_db()
    conditions = []
    for text in when:
        try:
            conditions.append(parse_condition(text))
        except ConditionError as exc:
            raise click.BadParameter(str(exc), param_hint="--when") from None
    with errors():
        rule = add_rule(name, conditions, "any" if any_ else "all",
                        rep=get_rep(rep) if rep else None, team=team, position=position,
                        actor=actor())
    click.echo(f"routing rule {rule.position}. {rule.name}: {describe_rule(rule)}")


@routing.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def routing_list(app, as_json):
    """List routing rules in the order they are tried."""
    from leadflow.scoring.routing import describe_rule, list_rules, rule_dict

    app.open_db()
    rules = list_rules()
    if as_json:
        echo_json([rule_dict(r) for r in rules])
        return
    echo_table(["#", "name", "rule"], [[r.position, r.name, describe_rule(r)] for r in rules],
               empty="no routing rules: leads stay unassigned unless their organisation has an "
                     "owner; add one with `leadflow routing add NAME --team T`")


@routing.command("remove")
@click.argument("rule")
@pass_app
def routing_remove(app, rule):
    """Remove a routing rule (by name or id)."""
    from leadflow.scoring.routing import remove_rule

    app.open_db()
    with errors():
        removed = remove_rule(rule, actor())
    click.echo(f"removed routing rule {removed.name}")


@click.command("assign")
@click.option("--unassigned", is_flag=True, required=True,
              help="Run routing again over every open lead without an owner.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def assign_cmd(app, unassigned, as_json):
    """Assign open leads that have no owner (e.g. after a rep is back or a rule was added)."""
    from leadflow.scoring.routing import assign_unassigned

    app.open_db()
    with errors():
        results = assign_unassigned(app.config, actor())
    if as_json:
        echo_json({"assigned": {k: v for k, v in results.items() if k},
                   "unassigned": results.get(None, 0)})
        return
    if not results:
        click.echo("no unassigned open leads")
    for email, n in sorted(results.items(), key=lambda kv: (kv[0] is None, kv[0] or "")):
        click.echo(f"{n} lead(s) → {email}" if email else f"{n} lead(s) still unassigned "
                   "(see `leadflow leads show ID` for why)")


# -- leads: assign, convert, disqualify, reopen ------------------------------------------------

@click.command("assign")
@click.argument("lead_id", type=int)
@click.argument("rep")
@pass_app
def leads_assign(app, lead_id, rep):
    """Give a lead to a rep by hand."""
    from leadflow.scoring.routing import assign_to

    app.open_db()
    with errors():
        lead = assign_to(lead_id, get_rep(rep), actor())
    click.echo(f"lead {lead.id} → {lead.owner.name} <{lead.owner.email}>")


def _print_plan(plan):
    data = plan.as_dict()
    contact, org, opp = data["contact"], data["organisation"], data["opportunity"]
    how = {"new": "new", "linked": "existing (linked to the lead)", "email": "existing, same email",
           "phone": "existing, same phone", "chosen": "existing, chosen",
           "domain": "existing, same domain", "name": "existing, same name",
           "contact": "existing, the contact's organisation"}
    click.echo(("Dry run: converting " if plan.dry_run else "Converted ")
               + f"lead {plan.lead.id}" + (" would make:" if plan.dry_run else ":"))
    label = f"  contact:      {contact.get('name') or '-'} <{contact.get('email') or '-'}>"
    click.echo(label + (f" #{contact['id']}" if contact.get("id") else "")
               + f"  ({how.get(contact['action'], contact['action'])})")
    if org is None:
        click.echo("  organisation: none (the lead names no company)")
    else:
        click.echo(f"  organisation: {org.get('name')}" + (f" #{org['id']}" if org.get("id") else "")
                   + (f" [{org['domain']}]" if org.get("domain") else "")
                   + f"  ({how.get(org['action'], org['action'])})")
    owner = Rep.get_or_none(Rep.id == opp["owner_id"]) if opp["owner_id"] else None
    click.echo(f"  opportunity:  {opp['name']}" + (f" #{opp['id']}" if opp["id"] else "")
               + f"  stage {opp['stage']}, owner {owner.name if owner else '(none)'}"
               + (f", amount {opp['amount']} {opp['currency'] or ''}".rstrip() if opp["amount"] else "")
               + (f", expected close {opp['expected_close']}" if opp["expected_close"] else ""))


@click.command("convert")
@click.argument("lead_id", type=int)
@click.option("--contact", "contact_id", type=int, help="Use this existing contact.")
@click.option("--org", "org_id", type=int, help="Use this existing organisation.")
@click.option("--new-contact", is_flag=True, help="Make a new contact even if one matches.")
@click.option("--new-org", is_flag=True, help="Make a new organisation even if one matches.")
@click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def leads_convert(app, lead_id, contact_id, org_id, new_contact, new_org, dry_run, as_json):
    """Convert a lead into an opportunity with its contact and organisation (all or nothing)."""
    from leadflow.store.conversion import AmbiguousMatchError, convert_lead

    app.open_db()
    try:
        plan = convert_lead(lead_id, contact=contact_id, org=org_id, new_contact=new_contact,
                            new_org=new_org, dry_run=dry_run, actor=actor(), config=app.config)
    except AmbiguousMatchError as exc:
        if as_json:
            echo_json({"error": "ambiguous", "kind": exc.kind, "by": exc.by,
                       "candidates": exc.candidates})
            sys.exit(1)
        raise click.ClickException(str(exc)) from None
    except LeadflowError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(plan.as_dict())
    else:
        _print_plan(plan)


@click.command("disqualify")
@click.argument("lead_id", type=int)
@click.option("--reason", required=True, help="Why (kept on the lead and in its history).")
@pass_app
def leads_disqualify(app, lead_id, reason):
    """Close a lead as disqualified."""
    app.open_db()
    with errors():
        lead = crm.disqualify(lead_id, reason, actor())
    click.echo(f"lead {lead.id} disqualified: {reason}")


@click.command("spam")
@click.argument("lead_id", type=int)
@pass_app
def leads_spam(app, lead_id):
    """Close a lead as spam."""
    app.open_db()
    with errors():
        lead = crm.mark_spam(lead_id, actor())
    click.echo(f"lead {lead.id} marked as spam")


@click.command("reopen")
@click.argument("lead_id", type=int)
@pass_app
def leads_reopen(app, lead_id):
    """Reopen a disqualified or spam lead."""
    app.open_db()
    with errors():
        lead = crm.reopen(lead_id, actor())
    click.echo(f"lead {lead.id} reopened: {lead.status}")


@click.command("qualify")
@click.argument("lead_id", type=int)
@pass_app
def leads_qualify(app, lead_id):
    """Mark an open lead qualified by hand (ready to convert)."""
    app.open_db()
    with errors():
        lead = crm.qualify(lead_id, actor())
    click.echo(f"lead {lead.id} is qualified")


# -- opportunities ------------------------------------------------------------------------------

@click.group()
def opps():
    """Opportunities: the sales pipeline."""


@opps.command("list")
@click.option("--owner", help="Owner's id, email or name.")
@click.option("--stage", help="Only this stage (see `sales.stages`), or 'open'.")
@click.option("--stale", type=click.IntRange(1), metavar="DAYS",
              help="Only open ones without a stage change or activity for DAYS days.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def opps_list(app, owner, stage, stale, limit, as_json):
    """List opportunities, newest first."""
    app.open_db()
    stages = crm.stages(app.config)
    if stage and stage != "open" and stage not in stages:
        raise click.BadParameter(f"unknown stage {stage!r}; stages: {', '.join(stages)}, open",
                                 param_hint="--stage")
    owner_row = get_rep(owner) if owner else None
    rows = crm.list_opportunities(owner=owner_row.id if owner_row else None,
                                  stage=None if stage == "open" else stage, stale_days=stale,
                                  limit=limit)
    if stage == "open":
        rows = [o for o in rows if o.stage not in crm.CLOSED_STAGES]
    if as_json:
        echo_json([crm.opportunity_dict(o) for o in rows])
        return
    echo_table(["id", "name", "stage", "owner", "amount", "close", "since"],
               [[o.id, o.name, o.stage, o.owner.email if o.owner_id else "",
                 f"{o.amount} {o.currency or ''}".strip() if o.amount is not None else "",
                 o.expected_close or "", f"{o.stage_changed_at:%Y-%m-%d}"] for o in rows],
               empty="no opportunities")


def opportunity_detail(opp):
    """Everything about an opportunity, as a dict."""
    data = crm.opportunity_dict(opp)
    data["owner"] = crm.rep_dict(opp.owner) if opp.owner_id else None
    data["lead"] = None
    if opp.lead_id:
        from leadflow.store.serialize import lead_dict

        data["lead"] = lead_dict(opp.lead, full=True)
    data["contact"] = crm.contact_dict(opp.contact) if opp.contact_id else None
    data["organisation"] = crm.organisation_dict(opp.organisation) if opp.organisation_id else None
    data["stage_history"] = [crm.stage_change_dict(c) for c in
                             StageChange.select().where(StageChange.opportunity == opp.id)
                             .order_by(StageChange.at, StageChange.id)]
    data["activities"] = [crm.activity_dict(a) for a in Activity.select().where(
        (Activity.opportunity == opp.id) | ((Activity.lead == opp.lead_id) if opp.lead_id
                                            else (Activity.id < 0)))
        .order_by(Activity.created_at, Activity.id)]
    return data


@opps.command("show")
@click.argument("opp_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def opps_show(app, opp_id, as_json):
    """Show an opportunity: lead, contact, organisation, owner, stage history, activities."""
    app.open_db()
    with errors():
        opp = crm.get_opportunity(opp_id)
    data = opportunity_detail(opp)
    if as_json:
        echo_json(data)
        return
    click.echo(f"Opportunity #{opp.id}: {opp.name}")
    click.echo(f"  stage:          {opp.stage}" + (f" (lost: {opp.lost_reason})" if opp.lost_reason
                                                    else ""))
    owner = data["owner"]
    click.echo(f"  owner:          {owner['name'] + ' <' + owner['email'] + '>' if owner else '-'}")
    amount = f"{opp.amount} {opp.currency or ''}".strip() if opp.amount is not None else "-"
    click.echo(f"  amount:         {amount}")
    click.echo(f"  expected close: {opp.expected_close or '-'}")
    contact = data["contact"]
    if contact:
        click.echo(f"Contact #{contact['id']}: {contact['name'] or '-'} <{contact['email'] or '-'}>"
                   f"  {contact['phone'] or ''}  {contact['title'] or ''}".rstrip())
    org = data["organisation"]
    if org:
        click.echo(f"Organisation #{org['id']}: {org['name']}" + (f" [{org['domain']}]" if org["domain"]
                                                               else ""))
        for key in ("website", "size", "sector", "needs", "country"):
            if org[key]:
                click.echo(f"  {key + ':':<15} {org[key]}")
    lead = data["lead"]
    if lead:
        click.echo(f"Lead #{lead['id']}: {lead['status']}, score {lead['score']}, from {lead['source']}"
                   + (f", forwarded by {lead['submitted_by']}" if lead["submitted_by"] else ""))
        click.echo(f"  subject:        {lead['subject'] or '-'}")
        if lead["assignment_reason"]:
            click.echo(f"  assigned:       {lead['assignment_reason']}")
    click.echo("Stage history:")
    for change in data["stage_history"]:
        click.echo(f"  {change['at'][:16].replace('T', ' ')}  {change['from'] or '(new)'} → "
                   f"{change['to']}" + (f"  by {change['actor']}" if change["actor"] else ""))
    click.echo("Activities:")
    if not data["activities"]:
        click.echo("  (none)")
    for act in data["activities"]:
        first = (act["text"] or "").strip().splitlines()[0] if (act["text"] or "").strip() else ""
        due = f" due {act['due_at']}" + (" (done)" if act["done_at"] else "") if act["due_at"] else ""
        click.echo(f"  #{act['id']}  {act['created_at'][:16].replace('T', ' ')}  {act['kind']}{due}: "
                   f"{first}")


def _move(app, opp_id, stage, reason=None):
    app.open_db()
    with errors():
        opp = crm.move_opportunity(opp_id, stage, actor(), reason, app.config)
    click.echo(f"opportunity {opp.id} ({opp.name}) → {opp.stage}"
               + (f": {reason}" if reason else ""))


@opps.command("move")
@click.argument("opp_id", type=int)
@click.argument("stage")
@pass_app
def opps_move(app, opp_id, stage):
    """Move an opportunity to a stage."""
    if stage == "lost":
        raise click.UsageError("use `leadflow opps lost ID --reason TEXT`")
    _move(app, opp_id, stage)


@opps.command("won")
@click.argument("opp_id", type=int)
@pass_app
def opps_won(app, opp_id):
    """Close an opportunity as won."""
    _move(app, opp_id, "won")


@opps.command("lost")
@click.argument("opp_id", type=int)
@click.option("--reason", required=True, help="Why it was lost.")
@pass_app
def opps_lost(app, opp_id, reason):
    """Close an opportunity as lost, with the reason."""
    _move(app, opp_id, "lost", reason)


# -- activities -------------------------------------------------------------------------------

@click.group()
def activity():
    """Calls, emails, meetings and notes; follow-ups with a due date."""


@activity.command("log")
@click.argument("text")
@click.option("--lead", "lead_id", type=int, help="On this lead.")
@click.option("--contact", "contact_id", type=int, help="On this contact.")
@click.option("--opp", "opp_id", type=int, help="On this opportunity.")
@click.option("--type", "kind", type=click.Choice(crm.LOGGED_KINDS), default="note",
              show_default=True)
@click.option("--due", type=DAY, help="A follow-up due on this day (YYYY-MM-DD, tomorrow, +3d).")
@click.option("--rep", help="Whose follow-up (default: the owner).")
@pass_app
def activity_log(app, text, lead_id, contact_id, opp_id, kind, due, rep):
    """Log an interaction, or with --due a follow-up."""
    app.open_db()
    with errors():
        act = crm.log_activity(kind, text, lead=lead_id, contact=contact_id, opportunity=opp_id,
                               due=due, rep=get_rep(rep) if rep else None, actor=actor())
    click.echo(f"activity {act.id}: {kind}" + (f", due {due}" if due else "")
               + (f", for {_rep_name(act.rep_id)}" if act.rep_id else ""))


@activity.command("done")
@click.argument("activity_id", type=int)
@pass_app
def activity_done(app, activity_id):
    """Mark a follow-up done."""
    app.open_db()
    with errors():
        act = crm.complete_activity(activity_id, actor())
    click.echo(f"activity {act.id} done at {act.done_at:%Y-%m-%d %H:%M}")


@activity.command("list")
@click.option("--due", "due_only", is_flag=True, help="Only open follow-ups due by --by.")
@click.option("--by", "by", type=DAY, help="Due on or before this day (default today).")
@click.option("--rep", help="Only this rep's.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def activity_list(app, due_only, by, rep, limit, as_json):
    """List recent activities, or open follow-ups with --due."""
    app.open_db()
    rep_row = get_rep(rep) if rep else None
    if due_only:
        rows = crm.due_followups(rep_row.id if rep_row else None, by)[:limit]
    else:
        query = Activity.select().order_by(Activity.id.desc()).limit(limit)
        if rep_row:
            query = query.where(Activity.rep == rep_row.id)
        rows = list(query)
    if as_json:
        echo_json([crm.activity_dict(a) for a in rows])
        return
    emails = _rep_emails(a.rep_id for a in rows)
    echo_table(["id", "when", "kind", "due", "done", "rep", "on", "text"],
               [[a.id, _when(a.created_at), a.kind, a.due_at or "", "yes" if a.done_at else "",
                 emails.get(a.rep_id, ""), _target(a), (a.text or "").strip().split("\n")[0]]
                for a in rows], empty="no activities")


def _target(a):
    if a.opportunity_id:
        return f"opp {a.opportunity_id}"
    if a.lead_id:
        return f"lead {a.lead_id}"
    if a.contact_id:
        return f"contact {a.contact_id}"
    return f"org {a.organisation_id}" if a.organisation_id else ""


# -- contacts and organisations ---------------------------------------------------------------

@click.group()
def contacts():
    """Contacts: the people you talk to."""


@contacts.command("list")
@click.option("--org", "org_id", type=int, help="Only this organisation's.")
@click.option("--search", help="Name or email contains this.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def contacts_list(app, org_id, search, limit, as_json):
    """List contacts (merged ones hidden)."""
    app.open_db()
    query = (Contact.select().where(Contact.merged_into.is_null()).order_by(Contact.id.desc())
             .limit(limit))
    if org_id:
        query = query.where(Contact.organisation == org_id)
    if search:
        query = query.where(Contact.name.contains(search) | Contact.email.contains(search.lower()))
    rows = list(query)
    if as_json:
        echo_json([crm.contact_dict(c) for c in rows])
        return
    names = {o.id: o.name for o in Organisation.select(Organisation.id, Organisation.name)
             .where(Organisation.id.in_([c.organisation_id for c in rows if c.organisation_id]))}
    echo_table(["id", "name", "email", "phone", "title", "organisation"],
               [[c.id, c.name, c.email, c.phone, c.title, names.get(c.organisation_id, "")]
                for c in rows], empty="no contacts")


@contacts.command("show")
@click.argument("contact_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def contacts_show(app, contact_id, as_json):
    """Show a contact: fields with provenance, leads, opportunities, activities."""
    app.open_db()
    with errors():
        contact = crm.get_contact(contact_id)
    data = crm.contact_dict(contact)
    data["leads"] = [{"id": lead.id, "status": lead.status, "subject": lead.subject}
                     for lead in Lead.select().where(Lead.contact == contact.id).order_by(Lead.id)]
    data["opportunities"] = [crm.opportunity_dict(o) for o in
                             Opportunity.select().where(Opportunity.contact == contact.id)]
    data["activities"] = [crm.activity_dict(a) for a in Activity.select()
                          .where(Activity.contact == contact.id).order_by(Activity.created_at,
                                                                           Activity.id)]
    if as_json:
        echo_json(data)
        return
    click.echo(f"Contact #{contact.id}" + (f" (merged into #{contact.merged_into_id})"
                                          if contact.merged_into_id else ""))
    _print_fields(contact, ("name", "email", "phone", "title"))
    if contact.organisation_id:
        click.echo(f"  {'organisation:':<14}{contact.organisation.name} #{contact.organisation_id}")
    _print_related(data)


def _print_fields(row, keys):
    provenance = row.provenance or {}
    for key in keys:
        value = getattr(row, key)
        where = provenance.get(key) or {}
        note = f"  [{where.get('source')}" + (f", was also {', '.join(str(a['value']) for a in where['alternatives'])}"
                                               if where.get("alternatives") else "") + "]" \
            if where.get("source") or where.get("alternatives") else ""
        click.echo(f"  {key + ':':<14}{value if value not in (None, '') else '-'}{note}")


def _print_related(data):
    if data.get("leads"):
        click.echo("Leads:")
        for lead in data["leads"]:
            click.echo(f"  #{lead['id']}  {lead['status']}  {lead['subject'] or ''}")
    if data.get("opportunities"):
        click.echo("Opportunities:")
        for o in data["opportunities"]:
            click.echo(f"  #{o['id']}  {o['stage']}  {o['name']}")
    click.echo("Activities:" if data.get("activities") else "Activities: (none)")
    for a in data.get("activities") or ():
        first = (a["text"] or "").strip().split("\n")[0]
        click.echo(f"  #{a['id']}  {a['created_at'][:16].replace('T', ' ')}  {a['kind']}"
                   + (f" due {a['due_at']}" if a["due_at"] else "") + f": {first}")


@contacts.command("merge")
@click.argument("keep", type=int)
@click.argument("drop", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def contacts_merge(app, keep, drop, as_json):
    """Merge contact DROP into KEEP: every link moves, every value is kept."""
    from leadflow.store.merge import merge_contacts

    app.open_db()
    with errors():
        kept, moved = merge_contacts(keep, drop, actor())
    _print_merge("contact", kept, drop, moved, as_json)


def _print_merge(kind, kept, drop, moved, as_json):
    if as_json:
        echo_json({"kept": kept.id, "merged": drop, "moved": moved})
        return
    click.echo(f"{kind} {drop} merged into {kept.id} ({kept.name}); moved: "
               + (", ".join(f"{n} {t}" for t, n in moved.items()) or "no links"))


@click.group()
def orgs():
    """Organisations: the companies leads, contacts and opportunities belong to."""


@orgs.command("list")
@click.option("--search", help="Name or domain contains this.")
@click.option("--owner", help="Owner's id, email or name.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def orgs_list(app, search, owner, limit, as_json):
    """List organisations (merged ones hidden)."""
    app.open_db()
    query = (Organisation.select().where(Organisation.merged_into.is_null())
             .order_by(Organisation.id.desc()).limit(limit))
    if search:
        query = query.where(Organisation.name.contains(search)
                            | Organisation.domain.contains(search.lower()))
    if owner:
        query = query.where(Organisation.owner == get_rep(owner).id)
    rows = list(query)
    if as_json:
        echo_json([crm.organisation_dict(o) for o in rows])
        return
    emails = _rep_emails(o.owner_id for o in rows)
    echo_table(["id", "name", "domain", "size", "sector", "owner"],
               [[o.id, o.name, o.domain, o.size, o.sector, emails.get(o.owner_id, "")]
                for o in rows],
               empty="no organisations")


@orgs.command("show")
@click.argument("org_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def orgs_show(app, org_id, as_json):
    """Show an organisation: fields, contacts, leads, opportunities, past interactions."""
    app.open_db()
    with errors():
        org = crm.get_organisation(org_id)
    data = crm.organisation_dict(org)
    data["contacts"] = [crm.contact_dict(c) for c in Contact.select()
                        .where(Contact.organisation == org.id, Contact.merged_into.is_null())]
    data["leads"] = [{"id": lead.id, "status": lead.status, "subject": lead.subject}
                     for lead in Lead.select().where(Lead.organisation == org.id).order_by(Lead.id)]
    data["opportunities"] = [crm.opportunity_dict(o) for o in
                             Opportunity.select().where(Opportunity.organisation == org.id)]
    data["activities"] = [crm.activity_dict(a) for a in crm.organisation_activities(org)]
    if as_json:
        echo_json(data)
        return
    click.echo(f"Organisation #{org.id}" + (f" (merged into #{org.merged_into_id})"
                                           if org.merged_into_id else ""))
    _print_fields(org, ("name", "domain", "website", "size", "employees", "sector", "needs",
                        "country"))
    click.echo(f"  {'owner:':<14}{_rep_name(org.owner_id) or '-'}")
    if data["contacts"]:
        click.echo("Contacts:")
        for c in data["contacts"]:
            click.echo(f"  #{c['id']}  {c['name'] or '-'} <{c['email'] or '-'}>  {c['title'] or ''}")
    _print_related(data)


@orgs.command("edit")
@click.argument("org_id", type=int)
@click.option("--name")
@click.option("--domain")
@click.option("--website")
@click.option("--size")
@click.option("--employees", type=click.IntRange(0))
@click.option("--sector")
@click.option("--needs")
@click.option("--country")
@click.option("--owner", help="Owner's id, email or name; 'none' for no owner. The owner keeps "
                              "the organisation's new leads.")
@pass_app
def orgs_edit(app, org_id, owner, **values):
    """Change an organisation's fields (each change is recorded as typed by hand)."""
    from leadflow.intake.normalise import normalise_org_name, registered_domain

    app.open_db()
    with errors():
        org = crm.get_organisation(org_id)
    changes = {k: v for k, v in values.items() if v is not None}
    if "domain" in changes:
        domain = registered_domain(changes["domain"]) if changes["domain"] else None
        if changes["domain"] and domain is None:
            raise click.BadParameter(f"{changes['domain']!r} is not a domain", param_hint="--domain")
        other = Organisation.get_or_none(Organisation.domain == domain) if domain else None
        if other is not None and other.id != org.id:
            raise click.ClickException(f"organisation {other.id} ({other.name}) has {domain}; "
                                       f"merge them with `leadflow orgs merge {other.id} {org.id}`")
        changes["domain"] = domain
    if owner is not None:
        changes["owner"] = None if owner.lower() == "none" else get_rep(owner).id
    if not changes:
        raise click.UsageError("nothing to change; see `leadflow orgs edit --help`")
    if "name" in changes:
        changes["normalised_name"] = normalise_org_name(changes["name"])
    now = utcnow()
    provenance = dict(org.provenance or {})
    for key in changes:
        if key != "normalised_name":
            provenance[key] = {"source": "edit", "by": actor(), "at": now.isoformat()}
    with db.atomic():
        Organisation.update({**changes, "provenance": provenance, "updated_at": now}).where(
            Organisation.id == org.id).execute()
        crm.audit("organisation.edit", org, actor(),
                  changes={k: v for k, v in changes.items() if k != "normalised_name"},
                  before={k: getattr(org, k + "_id" if k == "owner" else k) for k in changes
                          if k != "normalised_name"})
    click.echo(f"organisation {org.id} updated: "
               + ", ".join(f"{k}={v}" for k, v in changes.items() if k != "normalised_name"))


@orgs.command("merge")
@click.argument("keep", type=int)
@click.argument("drop", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def orgs_merge(app, keep, drop, as_json):
    """Merge organisation DROP into KEEP: every link moves, every value is kept."""
    from leadflow.store.merge import merge_organisations

    app.open_db()
    with errors():
        kept, moved = merge_organisations(keep, drop, actor())
    _print_merge("organisation", kept, drop, moved, as_json)


# -- import and export ---------------------------------------------------------------------------

@click.command("export")
@click.argument("kind", type=click.Choice(["leads", "contacts", "orgs", "opps"]))
@click.option("--csv", "fmt", flag_value="csv", default=True, help="CSV with a header row (default).")
@click.option("--json", "fmt", flag_value="json", help="A JSON list.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file (default: standard output).")
@pass_app
def export_cmd(app, kind, fmt, output):
    """Export leads, contacts, organisations or opportunities as CSV or JSON."""
    import json

    from leadflow.store.transfer import export_rows, write_csv

    app.open_db()
    rows = export_rows(kind)
    with (open(output, "w", encoding="utf-8", newline="") if output
          else contextlib.nullcontext(click.get_text_stream("stdout"))) as out:
        if fmt == "json":
            out.write(json.dumps(rows, indent=2, ensure_ascii=False, sort_keys=True, default=str))
            out.write("\n")
        else:
            write_csv(rows, out)
    if output:
        click.echo(f"exported {len(rows)} {kind} to {output}", err=True)


@click.group("import")
def import_group():
    """Import leads from a spreadsheet (CSV)."""


@import_group.command("leads")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--map", "mapping", multiple=True, metavar="COLUMN=FIELD",
              help="Map a column to a lead field (name, email, phone, company, title, website, "
                   "country, subject, message, date, first_name, last_name, custom.KEY, "
                   "signals.KEY); COLUMN= skips it. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Check every row; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def import_leads_cmd(app, file, mapping, dry_run, as_json):
    """Import leads from FILE.csv through the intake pipeline (dedup, scoring, assignment).

    Bad rows are reported with their line numbers and skipped; good rows are
    imported. Exits 1 when any row was bad.
    """
    from leadflow.store.transfer import import_leads

    app.open_db()
    with errors():
        report = import_leads(file, app.config, mapping, dry_run)
    if as_json:
        echo_json(report.as_dict())
    else:
        for row in report.rows:
            if row.outcome in ("bad", "failed", "ignored", "duplicate"):
                click.echo(f"line {row.line}: {row.outcome}: {row.problem}"
                           + (f" ({row.email})" if row.email else ""))
        counts = report.counts()
        click.echo(("dry run: " if dry_run else "imported: ")
                   + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no rows"))
        if dry_run:
            click.echo("columns: " + ", ".join(f"{c} → {t or '(skipped)'}"
                                               for c, t in report.mapping.items()))
    if report.bad:
        sys.exit(1)


def register(main):
    """Add the sales commands to the root ``leadflow`` group."""
    for group in (reps, routing, opps, activity, contacts, orgs, export_cmd, import_group):
        main.add_command(group)
    main.add_command(assign_cmd, "assign")
    leads = main.commands["leads"]
    for command in (leads_assign, leads_convert, leads_disqualify, leads_reopen, leads_spam,
                    leads_qualify):
        leads.add_command(command)
