"""``leadflow digest preview|send|log``: thin wrappers over the digest function."""

import datetime
import json

import pytest

from leadflow.notify.testing import SmtpSink, make_lead, make_rep
from leadflow.store.models import DigestLog

NOW = "2026-06-10T09:00"  # a Wednesday, after 08:00 UTC
YESTERDAY = datetime.datetime(2026, 6, 9, 12)


@pytest.fixture
def sink(tmp_path, cli):
    """The relay, configured in the leadflow.toml the CLI reads."""
    with SmtpSink(rcpt_replies={"bounce@ourco.example": "550 5.1.1 no such user"}) as running:
        (tmp_path / "leadflow.toml").write_text(
            f'[notify]\nfrom = "leadflow@ourco.example"\n'
            f'[notify.relay]\nhost = "127.0.0.1"\nport = {running.port}\n')
        yield running


@pytest.fixture
def sam(database):
    rep = make_rep("Sam")
    make_lead(rep, "Sarah Connor", company="Tech Innovators Inc.", score=85, assigned_at=YESTERDAY)
    return rep


def test_preview_renders_without_claiming(cli, sink, sam, tmp_path):
    """preview prints the text digest, writes the HTML, and neither sends nor claims."""
    out = tmp_path / "digest.html"
    result = cli("digest", "preview", "--rep", "sam@ourco.example", "--date", "2026-06-10",
                 "--html", out, "--at", NOW)
    assert "Subject: Your leads for Wed 10 Jun: 1 new" in result.output
    assert "Sarah Connor" in result.output and "leadflow leads show" in result.output
    assert "<html" in out.read_text()
    assert DigestLog.select().count() == 0 and sink.messages == []


@pytest.mark.parametrize("rep", ["sam@ourco.example", "1"])
def test_send_sends_what_is_due_once(cli, sink, sam, rep):
    """send delivers the due digest; a second send the same day finds it already claimed."""
    first = cli("digest", "send", "--rep", rep, "--at", NOW)
    assert "sam@ourco.example  rep  2026-06-10  sent, 1 items" in first.output
    again = cli("digest", "send", "--rep", rep, "--now", "--at", NOW)
    assert "already claimed" in again.output
    assert len(sink.messages) == 1


def test_send_now_forces_before_the_hour(cli, sink, sam):
    """--now sends today's digest even before the rep's digest hour."""
    assert "nothing due" in cli("digest", "send", "--at", "2026-06-10T05:00").output
    assert "sent" in cli("digest", "send", "--rep", "sam@ourco.example", "--now",
                         "--at", "2026-06-10T05:00").output
    assert len(sink.messages) == 1


def test_dry_run_lists_without_claiming(cli, sink, sam):
    """--dry-run shows what is due and leaves no trace."""
    result = cli("digest", "send", "--dry-run", "--json", "--at", NOW)
    assert [(o["email"], o["status"]) for o in json.loads(result.output)] == [
        ("sam@ourco.example", "due")]
    assert DigestLog.select().count() == 0 and sink.messages == []


def test_failed_send_exits_1_and_shows_in_the_log(cli, sink, sam):
    """A permanent failure makes send exit 1; log shows sent, skipped and failed rows."""
    make_lead(make_rep("Bounce", email="bounce@ourco.example"), "Someone", assigned_at=YESTERDAY)
    make_rep("Idle")
    result = cli("digest", "send", "--at", NOW, expect=1)
    assert "FAILED" in result.output and "550" in result.output
    table = cli("digest", "log").output
    assert "sent" in table and "skipped" in table and "failed" in table
    rows = json.loads(cli("digest", "log", "--json").output)
    assert sorted((r["rep"]["email"], r["status"]) for r in rows) == [
        ("bounce@ourco.example", "failed"), ("idle@ourco.example", "skipped"),
        ("sam@ourco.example", "sent")]
    failed = json.loads(cli("digest", "log", "--status", "failed", "--json").output)
    assert len(failed) == 1 and "no such user" in failed[0]["error"]


@pytest.mark.parametrize("args", [
    ("digest", "preview", "--rep", "nobody@ourco.example"),
    ("digest", "send", "--rep", "99"),
    ("digest", "log", "--rep", "nobody@ourco.example"),
])
def test_unknown_rep_is_a_clear_error(cli, database, args):
    """An unknown rep ends with Error: naming it, exit code 2, no traceback."""
    result = cli(*args, expect=2)
    assert "no rep" in result.output and "Traceback" not in result.output


def test_bad_at_is_a_clear_error(cli, database):
    """A malformed --at is refused with a usage error."""
    assert "not a date and time" in cli("digest", "send", "--at", "tomorrow", expect=2).output
