"""The ``leadflow`` command.

Core commands live here: init, db, config, ingest, parse, leads, inbox. Each is
a thin wrapper over one function of the library. Other areas add their groups
through ``register(main)`` in their own ``commands`` module (see the end of
this file).

Every command reads the configuration the same way (``--config``, else
``$LEADFLOW_CONFIG``, else ``./leadflow.toml``, else defaults) and runs against
``$LEADFLOW_DATABASE_URL`` when it is set. Errors end as ``Error: ...`` with a
non-zero exit code, never as a traceback; ``--debug`` shows tracebacks.
"""

import datetime
import logging
import mailbox
import os
import sys
from pathlib import Path

import click
from peewee import OperationalError

from leadflow import __version__
from leadflow import config as config_module
from leadflow.app import App, echo_json, echo_table, pass_app
from leadflow.errors import LeadflowError
from leadflow.intake import pipeline
from leadflow.store import migrate
from leadflow.store.inbound import Inquiry, store_many
from leadflow.store.models import InboundMessage, Lead, Rep
from leadflow.store.serialize import inbound_dict, lead_dict

log = logging.getLogger("leadflow")


class DateType(click.ParamType):
    """A date as YYYY-MM-DD, or a number of days ago: ``7d``."""

    name = "date"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime.date):
            return value
        text = str(value).strip().lower()
        if text.endswith("d") and text[:-1].isdigit():
            return datetime.date.today() - datetime.timedelta(days=int(text[:-1]))
        try:
            return datetime.date.fromisoformat(text)
        except ValueError:
            self.fail(f"{value!r} is not a date: use YYYY-MM-DD or a number of days like 7d",
                      param, ctx)


DATE = DateType()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Configuration file (default: $LEADFLOW_CONFIG, else ./leadflow.toml).")
@click.option("--debug", is_flag=True, help="Log debug detail and show tracebacks.")
@click.version_option(__version__, prog_name="leadflow")
@click.pass_context
def main(ctx, config_path, debug):
    """leadflow: sales inquiries by mail and web form in, scored and assigned leads out."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = App(config_path)
    app.debug = debug
    ctx.obj = app
    ctx.call_on_close(app.close)


# -- init, db, config ---------------------------------------------------------

@main.command()
@click.option("--path", "toml_path", default=config_module.DEFAULT_PATH, show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the starter configuration.")
@pass_app
def init(app, toml_path):
    """Write a commented starter leadflow.toml and create the database."""
    path = Path(toml_path)
    if path.exists():
        raise click.ClickException(f"{path} already exists; not overwritten")
    path.write_text(config_module.starter_toml(), encoding="utf-8")
    click.echo(f"wrote {path}")
    if app.config_path is None and os.environ.get(config_module.ENV_CONFIG) is None:
        app.config_path = str(path)
    database = app.open_db(migrate_check=False)
    applied = migrate.upgrade(database)
    click.echo(f"database {config_module.mask_url(app.config.database.url)}: "
               + (f"created ({len(applied)} migration(s) applied)" if applied else "up to date"))
    _install_starter_rules(app)


def _install_starter_rules(app):
    from leadflow.scoring.ruleset import install_starter_rules

    version = install_starter_rules(actor="leadflow init")
    if version is not None:
        click.echo(f"scoring: starter rules installed (rule set version {version})")


@main.group()
def db():
    """Database schema: upgrade and status."""


@db.command("upgrade")
@pass_app
def db_upgrade(app):
    """Apply pending schema migrations (safe to run at any time, and concurrently)."""
    database = app.open_db(migrate_check=False)
    try:
        applied = migrate.upgrade(database)
    except OperationalError as exc:
        raise click.ClickException(f"migration failed: {exc}") from None
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")


@db.command("status")
@pass_app
def db_status(app):
    """List migrations and whether each is applied; exit 1 when some are pending."""
    database = app.open_db(migrate_check=False)
    rows = migrate.status(database)
    click.echo(f"database: {config_module.mask_url(app.config.database.url)}")
    for name, applied in rows:
        mark = f"applied {applied:%Y-%m-%d %H:%M:%S}" if applied else "pending"
        click.echo(f"  {name}  {mark}")
    if any(applied is None for _, applied in rows):
        click.echo("pending migrations: run `leadflow db upgrade`")
        sys.exit(1)


@db.command("makemigration", hidden=True)
@click.argument("name")
def db_makemigration(name):
    """(developers) Write the next migration from the models."""
    from leadflow.store.models import MODELS

    path = migrate.make_migration(name, MODELS)
    click.echo(path or "models match the migrations; nothing to write")


@main.group("config")
def config_group():
    """Inspect the configuration."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def config_show(app, as_json):
    """Print the effective configuration, secrets masked."""
    import tomli_w

    data = config_module.as_dict(app.config)
    if as_json:
        echo_json(data)
        return
    click.echo(f"# source: {app.config.source or '(defaults: no configuration file)'}")
    click.echo(tomli_w.dumps(data).rstrip())


# -- ingest and parse ---------------------------------------------------------

def _iter_messages(path, max_size):
    """Yield (origin, raw bytes or None, problem) for every message under ``path``."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and child.suffix.lower() in (".eml", ".msg", ".mbox", ""):
                yield from _iter_messages(child, max_size)
        return
    try:
        size = path.stat().st_size
        if size > max_size:
            yield str(path), None, f"larger than intake.max_message_size ({size} > {max_size} bytes)"
            return
        with open(path, "rb") as fh:
            head = fh.read(5)
        if head.startswith(b"From ") and path.suffix.lower() != ".eml":
            box = mailbox.mbox(str(path), create=False)
            try:
                for key in box.iterkeys():
                    yield f"{path}#{key}", box.get_bytes(key), None
            finally:
                box.close()
            return
        yield str(path), path.read_bytes(), None
    except OSError as exc:
        yield str(path), None, exc.strerror or str(exc)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message.")
@pass_app
def ingest(app, paths, as_json):
    """Store and process .eml files, folders of them, and mbox files.

    Prints a one-line summary (created, updated, duplicate, ignored, failed).
    Exits 0 when every message was stored, 1 when something could not be.
    """
    app.open_db()
    config = app.config
    counts = dict.fromkeys(("created", "updated", "reply", "duplicate", "ignored", "failed"), 0)
    not_stored = []
    results = []
    for path in paths:
        if not path.exists():
            not_stored.append((str(path), "no such file or folder"))
            continue
        for origin, raw, problem in _iter_messages(path, config.intake.max_message_size):
            if raw is None:
                not_stored.append((origin, problem))
                continue
            try:
                (stored,) = store_many([Inquiry("cli", raw, origin=origin)])
            except (OperationalError, LeadflowError) as exc:
                not_stored.append((origin, f"could not store: {exc}"))
                continue
            if stored.duplicate:
                outcome = "duplicate"
            else:
                outcome = pipeline.process_inbound(stored.id, config)
            counts[outcome] = counts.get(outcome, 0) + 1
            row = InboundMessage.get_by_id(stored.id)
            results.append({"origin": origin, "inbound_id": stored.id, "outcome": outcome,
                            "lead_id": row.lead_id, "reason": row.reason or row.error})
            if not as_json and outcome in ("failed", "ignored", "duplicate"):
                click.echo(f"{origin}: {outcome} (inbound #{stored.id}): {row.reason or row.error}")
    for origin, problem in not_stored:
        click.echo(f"{origin}: not stored: {problem}", err=True)
    if as_json:
        echo_json({"results": results, "counts": counts,
                   "not_stored": [{"origin": o, "problem": p} for o, p in not_stored]})
    else:
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n or k != "reply")
        click.echo(f"ingested {len(results)} message(s): {summary}"
                   + (f"; {len(not_stored)} not stored" if not_stored else ""))
    if not_stored:
        sys.exit(1)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything leadflow reads, as JSON.")
@pass_app
def parse(app, file, as_json):
    """Show what leadflow reads in one message, without storing anything."""
    from leadflow.intake.message import parse_message

    raw = file.read_bytes()
    parsed = parse_message(raw, app.config.intake)
    data = parsed.to_dict()
    if as_json:
        echo_json(data)
        return
    prospect = data["prospect"]
    click.echo(f"classification: {data['classification']}"
               + (f" ({parsed.reason})" if parsed.reason else ""))
    click.echo(f"forwarded:      {'yes, by ' + str(data['submitted_by']) if data['forwarded'] else 'no'}")
    for key in ("name", "email", "phone", "company", "title", "website", "country"):
        field = data.get("fields", {}).get(key) or {}
        where = f"  [{field.get('source')}, {field.get('confidence')}]" if field else ""
        click.echo(f"{key + ':':<15} {prospect.get(key) or '-'}{where}")
    click.echo(f"subject:        {data['subject'] or '-'}")
    for name, signal in (data.get("signals") or {}).items():
        click.echo(f"signal {name + ':':<8} {signal}")
    body = (data.get("body") or "").strip()
    click.echo("")
    click.echo(body[:2000] + ("…" if len(body) > 2000 else ""))


# -- leads ----------------------------------------------------------------------

class RepType(click.ParamType):
    """A rep named by id or email address."""

    name = "rep"

    def convert(self, value, param, ctx):
        if isinstance(value, Rep):
            return value
        text = str(value).strip()
        query = Rep.select().where((Rep.email == text.lower()) if "@" in text else
                                   (Rep.id == int(text)) if text.isdigit() else (Rep.name == text))
        rep = query.first()
        if rep is None:
            self.fail(f"no rep {value!r} (give an id or an email address; see `leadflow reps list`)",
                      param, ctx)
        return rep


@main.group()
def leads():
    """List and inspect leads."""


@leads.command("list")
@click.option("--status", type=click.Choice(["new", "working", "qualified", "converted",
                                             "disqualified", "spam", "open"]),
              help="Only leads with this status (open: new, working or qualified).")
@click.option("--since", type=DATE, help="Created on or after this date (YYYY-MM-DD or 7d).")
@click.option("--owner", help="Owner's id or email; 'none' for unassigned leads.")
@click.option("--min-score", type=int, help="Score at least this.")
@click.option("--review", is_flag=True, help="Only leads flagged for review.")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def leads_list(app, status, since, owner, min_score, review, limit, as_json):
    """List leads, newest first."""
    app.open_db()
    query = Lead.select().order_by(Lead.id.desc()).limit(limit)
    if status == "open":
        query = query.where(Lead.status.in_(("new", "working", "qualified")))
    elif status:
        query = query.where(Lead.status == status)
    if since:
        query = query.where(Lead.created_at >= datetime.datetime.combine(since, datetime.time()))
    if owner:
        if owner.lower() == "none":
            query = query.where(Lead.owner.is_null())
        else:
            query = query.where(Lead.owner == RepType().convert(owner, None, None))
    if min_score is not None:
        query = query.where(Lead.score >= min_score)
    if review:
        query = query.where(Lead.needs_review == True)  # noqa: E712 - peewee expression
    rows = list(query)
    if as_json:
        echo_json([lead_dict(lead) for lead in rows])
        return
    echo_table(["id", "status", "score", "name", "email", "company", "owner", "created"],
               [[lead.id, lead.status + (" !review" if lead.needs_review else ""), lead.score,
                 lead.name, lead.email, lead.company,
                 lead.owner.email if lead.owner_id else "", f"{lead.created_at:%Y-%m-%d %H:%M}"]
                for lead in rows], empty="no leads")


def _get_lead(lead_id):
    lead = Lead.get_or_none(Lead.id == lead_id)
    if lead is None:
        raise click.ClickException(f"no lead {lead_id}")
    return lead


@leads.command("show")
@click.argument("lead_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def leads_show(app, lead_id, as_json):
    """Show every field of a lead, where each came from, and the inquiries behind it."""
    app.open_db()
    lead = _get_lead(lead_id)
    inbound = list(InboundMessage.select().where(InboundMessage.lead == lead)
                   .order_by(InboundMessage.id))
    data = lead_dict(lead, full=True)
    data["inbound"] = [inbound_dict(row) for row in inbound]
    data["activities"] = [{"id": a.id, "kind": a.kind, "text": a.text, "due_at": a.due_at,
                           "done_at": a.done_at, "created_at": a.created_at}
                          for a in lead.activities.order_by(lead.activities.model.id)]
    if as_json:
        echo_json(data)
        return
    click.echo(f"Lead #{lead.id}  {lead.status}  score {lead.score}"
               + ("  (qualified)" if lead.qualified else ""))
    provenance = lead.fields or {}
    for key in ("name", "email", "phone", "title", "company", "website", "country",
                "submitted_by", "source", "channel", "form"):
        value = getattr(lead, key)
        where = provenance.get(key) or {}
        note = f"  [{where.get('source')}, {where.get('confidence')}]" if where.get("source") else ""
        click.echo(f"  {key + ':':<14}{value if value is not None else '-'}{note}")
    org = data["organisation"]
    click.echo(f"  {'organisation:':<14}{org['name'] + ' (' + str(org['domain']) + ')' if org else '-'}")
    click.echo(f"  {'owner:':<14}{data['owner']['email'] if data['owner'] else '-'}"
               + (f"  ({lead.assignment_reason})" if lead.assignment_reason else ""))
    click.echo(f"  {'inquiries:':<14}{lead.inquiry_count}, last {lead.last_inquiry_at:%Y-%m-%d %H:%M}")
    if lead.needs_review:
        click.echo(f"  needs review: {lead.review_reason}")
    if lead.disqualified_reason:
        click.echo(f"  disqualified: {lead.disqualified_reason}")
    for name, signal in (lead.signals or {}).items():
        click.echo(f"  signal {name}: {signal}")
    if lead.score_breakdown:
        click.echo(f"Score (rule set v{lead.ruleset_version}):")
        for entry in lead.score_breakdown:
            click.echo(f"  {entry.get('reason') or entry}")
    click.echo(f"Subject: {lead.subject or '-'}")
    click.echo((lead.message or "").strip()[:1500])
    click.echo("Inbound messages:")
    for row in inbound:
        click.echo(f"  #{row.id}  {row.received_at:%Y-%m-%d %H:%M}  {row.channel}  {row.status}"
                   f"  {row.classification or ''}")
    if data["activities"]:
        click.echo("Activities:")
        for act in data["activities"]:
            due = f" due {act['due_at']}" if act["due_at"] else ""
            click.echo(f"  #{act['id']}  {act['created_at']:%Y-%m-%d %H:%M}  {act['kind']}{due}: "
                       f"{(act['text'] or '').splitlines()[0] if act['text'] else ''}")


# -- inbox ------------------------------------------------------------------------

@main.group()
def inbox():
    """Raw inquiries as received: list, show, retry the failed."""


@inbox.command("list")
@click.option("--status", type=click.Choice(["new", "processing", "done", "duplicate", "ignored",
                                             "failed"]), help="Only rows with this status.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def inbox_list(app, status, limit, as_json):
    """List stored raw inquiries, newest first."""
    app.open_db()
    query = InboundMessage.select(
        *[f for f in InboundMessage._meta.sorted_fields if f.name != "raw"]
    ).order_by(InboundMessage.id.desc()).limit(limit)
    if status:
        query = query.where(InboundMessage.status == status)
    rows = list(query)
    if as_json:
        echo_json([inbound_dict(row) for row in rows])
        return
    echo_table(["id", "received", "channel", "status", "lead", "from / form", "note"],
               [[row.id, f"{row.received_at:%Y-%m-%d %H:%M}", row.channel, row.status,
                 row.lead_id or "", row.form or row.mail_from or row.origin or "",
                 (f"{row.failed_step}: {row.error}" if row.status == "failed"
                  else row.reason or row.classification or "")]
                for row in rows], empty="inbox is empty")


@inbox.command("show")
@click.argument("inbound_id", type=int)
@click.option("--raw", is_flag=True, help="Print the raw bytes exactly as received.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def inbox_show(app, inbound_id, raw, as_json):
    """Show one raw inquiry: envelope, status, error, and the start of the message."""
    app.open_db()
    row = InboundMessage.get_or_none(InboundMessage.id == inbound_id)
    if row is None:
        raise click.ClickException(f"no inbound message {inbound_id}")
    if raw:
        click.get_binary_stream("stdout").write(bytes(row.raw))
        return
    data = inbound_dict(row, full=True)
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if value not in (None, [], ""):
            click.echo(f"{key + ':':<15}{value}")
    text = bytes(row.raw)[:1500].decode("utf-8", "replace")
    click.echo("--- first lines ---")
    click.echo(text)


@inbox.command("retry")
@click.argument("inbound_ids", type=int, nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed row.")
@pass_app
def inbox_retry(app, inbound_ids, all_failed):
    """Process failed inquiries again (the raw was kept)."""
    app.open_db()
    if all_failed:
        inbound_ids = [row.id for row in InboundMessage.select(InboundMessage.id)
                       .where(InboundMessage.status == "failed").order_by(InboundMessage.id)]
    elif not inbound_ids:
        raise click.UsageError("give inbound ids or --failed")
    missing = [i for i in inbound_ids if InboundMessage.get_or_none(InboundMessage.id == i) is None]
    if missing:
        raise click.ClickException(f"no inbound message {missing[0]}")
    results = pipeline.retry(inbound_ids, app.config)
    counts = {}
    for inbound_id, outcome in results.items():
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome in ("failed", "skipped"):
            row = InboundMessage.get_by_id(inbound_id)
            why = row.error if outcome == "failed" else f"status is {row.status}, not failed"
            click.echo(f"inbound #{inbound_id}: {outcome}: {why}")
    click.echo(f"retried {len(results)}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
               if results else "nothing to retry")
    if counts.get("failed"):
        sys.exit(1)


# -- other areas register their commands here ------------------------------------

def _register_all():
    from leadflow.intake import commands as intake_commands
    from leadflow.notify import commands as notify_commands
    from leadflow.scoring import commands as scoring_commands
    from leadflow.store import commands as store_commands

    for module in (scoring_commands, intake_commands, store_commands, notify_commands):
        module.register(main)


_register_all()


def run():
    """Entry point: click's errors as ``Error: ...``; anything unexpected without a traceback."""
    try:
        code = main.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LeadflowError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OperationalError as exc:
        click.echo(f"Error: database: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last resort: a message, never a traceback
        if "--debug" in sys.argv:
            raise
        click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
                   err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
