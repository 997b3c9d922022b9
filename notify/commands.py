"""``leadflow digest``: preview, send and log daily digests.

Thin wrappers: ``digest send`` calls :func:`leadflow.notify.digest.run_digests`,
the same function the scheduler's tick calls; ``digest preview`` renders with
:func:`leadflow.notify.digest.preview` and claims nothing.
"""

import datetime
import sys
from pathlib import Path

import click


def _parse_at(value):
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date and time (YYYY-MM-DDTHH:MM[+00:00])",
                                 param_hint="--at") from None
    return moment


def _build():
    from leadflow.app import echo_json, echo_table, pass_app
    from leadflow.cli import DATE, RepType

    def open_rep(app, value):
        """Open the database, then look the rep up (RepType needs the database)."""
        app.open_db()
        return None if value is None else RepType().convert(value, None, click.get_current_context())
    at_option = click.option(
        "--at", "at", default=None, hidden=True,
        help="(testing) act as if it were this UTC time, YYYY-MM-DDTHH:MM")

    @click.group("digest")
    def digest_group():
        """Daily digests: each rep's worklist, once per working morning."""

    @digest_group.command("preview")
    @click.option("--rep", "rep", required=True, help="The rep: id or email.")
    @click.option("--date", "day", type=DATE, help="The rep's local date (default: today there).")
    @click.option("--kind", type=click.Choice(["rep", "admin"]), default="rep", show_default=True,
                  help="rep: the worklist; admin: yesterday's intake.")
    @click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Also write the HTML part to this file.")
    @at_option
    @pass_app
    def preview(app, rep, day, kind, html_file, at):
        """Show a rep's digest as it would be sent now, without sending or claiming it."""
        from leadflow.notify import digest

        rep = open_rep(app, rep)
        built, message = digest.preview(rep, app.config, local_date=day, now=_parse_at(at),
                                        kind=kind)
        click.echo(f"Subject: {message['Subject']}")
        click.echo(f"To: {message['To']}")
        click.echo(f"Message-ID: {message['Message-ID']}")
        if built.empty:
            click.echo(f"(empty: {'sent anyway, notify.send_empty is on' if app.config.notify.send_empty else 'would be skipped'})")
        click.echo("")
        click.echo(message.get_body(("plain",)).get_content().rstrip())
        if html_file:
            html_file.write_text(message.get_body(("html",)).get_content(), encoding="utf-8")
            click.echo(f"\nwrote the HTML part to {html_file}")

    @digest_group.command("send")
    @click.option("--rep", "rep", help="Only this rep (id or email).")
    @click.option("--now", "force", is_flag=True,
                  help="Send today's digest now, even before the rep's hour or on a day off "
                       "(still once per day).")
    @click.option("--dry-run", is_flag=True, help="List what is due; claim and send nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @at_option
    @pass_app
    def send(app, rep, force, dry_run, as_json, at):
        """Send the digests that are due now (what the scheduler does every minute).

        Exits 1 when a digest failed.
        """
        from leadflow.notify.digest import run_digests

        rep = open_rep(app, rep)
        outcomes = run_digests(app.config, now=_parse_at(at), rep=rep, force=force,
                               dry_run=dry_run)
        if as_json:
            echo_json([o.as_dict() for o in outcomes])
        elif not outcomes:
            click.echo("nothing due" + (" for " + rep.email if rep else ""))
        for o in outcomes if not as_json else ():
            note = {"sent": f"sent, {o.items} items, {o.message_id}",
                    "skipped": "empty: skipped",
                    "already": "already claimed for this date (see `leadflow digest log`)",
                    "due": "due (dry run: not sent)",
                    "missed": "missed: past notify.cutoff_hour",
                    "retry": f"temporary failure, will retry: {o.error}",
                    "failed": f"FAILED: {o.error}"}.get(o.status, o.status)
            click.echo(f"{o.email}  {o.kind}  {o.local_date}  {note}")
        if any(o.status == "failed" for o in outcomes):
            sys.exit(1)

    @digest_group.command("log")
    @click.option("--rep", "rep", help="Only this rep (id or email).")
    @click.option("--status", type=click.Choice(["claimed", "retry", "sent", "skipped", "missed",
                                                 "failed"]), help="Only this status.")
    @click.option("--since", type=DATE, help="Local dates on or after this (YYYY-MM-DD or 7d).")
    @click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @pass_app
    def log_(app, rep, status, since, limit, as_json):
        """What was sent, skipped and failed, newest first."""
        from leadflow.store.models import DigestLog, Rep

        rep = open_rep(app, rep)
        query = (DigestLog.select(DigestLog, Rep).join(Rep)
                 .order_by(DigestLog.local_date.desc(), DigestLog.id.desc()).limit(limit))
        if rep is not None:
            query = query.where(DigestLog.rep == rep.id)
        if status:
            query = query.where(DigestLog.status == status)
        if since:
            query = query.where(DigestLog.local_date >= since)
        rows = list(query)
        if as_json:
            echo_json([{"id": r.id, "rep": {"id": r.rep.id, "email": r.rep.email},
                        "local_date": r.local_date, "kind": r.kind, "status": r.status,
                        "attempts": r.attempts, "items": r.items, "message_id": r.message_id,
                        "error": r.error, "claimed_by": r.claimed_by, "claimed_at": r.claimed_at,
                        "next_attempt_at": r.next_attempt_at, "sent_at": r.sent_at}
                       for r in rows])
            return

        def when(r):
            if r.sent_at:
                return f"sent {r.sent_at:%Y-%m-%d %H:%M}Z"
            if r.status == "retry" and r.next_attempt_at:
                return f"next try {r.next_attempt_at:%H:%M}Z"
            return f"claimed {r.claimed_at:%Y-%m-%d %H:%M}Z"

        echo_table(["id", "date", "kind", "rep", "status", "tries", "items", "when", "error"],
                   [[r.id, r.local_date, r.kind, r.rep.email, r.status, r.attempts, r.items,
                     when(r), r.error or ""] for r in rows], empty="no digests yet")

    return digest_group


def register(main):
    main.add_command(_build())
