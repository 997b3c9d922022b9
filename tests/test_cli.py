"""The core CLI: init, db, config, ingest, leads, inbox; clear errors, never a traceback."""

import json
import mailbox
import subprocess
import sys

import pytest

from leadflow.store.models import InboundMessage, Lead

SARAH = (b"From: Sarah Jones <sarah@techinnovators.com>\r\nTo: sales@ourco.example\r\n"
         b"Subject: Project management software\r\nMessage-ID: <s1@techinnovators.com>\r\n"
         b"Date: Tue, 24 Nov 2026 10:00:00 +0100\r\n\r\n"
         b"Hi, we are evaluating project management tools for 40 people.\r\n")
SARAH_AGAIN = SARAH.replace(b"<s1@", b"<s2@").replace(b"40 people", b"45 people, pricing please")


def write(path, data):
    path.write_bytes(data)
    return path


def test_init_in_an_empty_folder(tmp_path, monkeypatch):
    """`leadflow init` writes a starter config, creates the SQLite database, refuses to overwrite."""
    monkeypatch.chdir(tmp_path)
    for var in ("LEADFLOW_DATABASE_URL", "LEADFLOW_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    run = [sys.executable, "-m", "leadflow.cli"]
    first = subprocess.run(run + ["init"], capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "leadflow.toml").exists() and (tmp_path / "leadflow.db").exists()
    again = subprocess.run(run + ["init"], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    status = subprocess.run(run + ["db", "status"], capture_output=True, text=True, cwd=tmp_path)
    assert status.returncode == 0 and "pending" not in status.stdout


def test_ingest_worked_through(cli, database, tmp_path):
    """Ingest: a lead; the same file again a duplicate; another inquiry adds to the lead."""
    first = cli("ingest", write(tmp_path / "a.eml", SARAH))
    assert "1 created" in first.output
    again = cli("ingest", tmp_path / "a.eml")
    assert "1 duplicate" in again.output
    more = cli("ingest", write(tmp_path / "b.eml", SARAH_AGAIN))
    assert "1 updated" in more.output
    assert Lead.select().count() == 1 and Lead.get().inquiry_count == 2
    statuses = [row.status for row in InboundMessage.select().order_by(InboundMessage.id)]
    assert statuses == ["done", "duplicate", "done"]


def test_ingest_garbage_and_empty(cli, database, tmp_path):
    """Random bytes and an empty file are stored and reported with a reason; exit 0 (all stored)."""
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "random.eml", bytes(range(256)) * 3)
    write(folder / "empty.eml", b"")
    result = cli("ingest", folder)
    assert "Traceback" not in result.output
    assert InboundMessage.select().count() == 2 and Lead.select().count() == 0
    for row in InboundMessage.select():
        assert row.status in ("ignored", "failed") and (row.reason or row.error)


def test_ingest_mbox_and_missing_path(cli, database, tmp_path):
    """An mbox file gives one inbound row a message; a missing path exits 1 naming it."""
    box = mailbox.mbox(str(tmp_path / "inquiries.mbox"))
    box.add(SARAH)
    box.add(SARAH_AGAIN.replace(b"sarah@", b"tom@").replace(b"Sarah Jones", b"Tom Baker"))
    box.close()
    result = cli("ingest", tmp_path / "inquiries.mbox", tmp_path / "nope.eml", expect=1)
    assert "2 created" in result.output and "nope.eml: not stored" in result.output
    assert Lead.select().count() == 2


def test_ingest_refuses_oversized_files(cli, database, tmp_path):
    """A file over intake.max_message_size is not stored, and the exit code says so."""
    (tmp_path / "leadflow.toml").write_text("[intake]\nmax_message_size = 100\n")
    result = cli("ingest", write(tmp_path / "big.eml", SARAH + b"x" * 200), expect=1)
    assert "larger than intake.max_message_size" in result.output
    assert InboundMessage.select().count() == 0


def test_leads_list_and_show_json(cli, database, tmp_path):
    """`leads list --json` and `leads show --json` carry the stable keys scripts rely on."""
    cli("ingest", write(tmp_path / "a.eml", SARAH))
    listed = json.loads(cli("leads", "list", "--json").output)
    keys = {"id", "status", "name", "email", "phone", "company", "title", "source",
            "submitted_by", "score", "qualified", "created_at"}
    assert len(listed) == 1 and keys <= set(listed[0])
    shown = json.loads(cli("leads", "show", listed[0]["id"], "--json").output)
    assert shown["email"] == "sarah@techinnovators.com" and len(shown["inbound"]) == 1
    assert shown["organisation"]["domain"] == "techinnovators.com"
    table = cli("leads", "list", "--status", "new", "--min-score", "0").output
    assert "sarah@techinnovators.com" in table
    assert "no leads" in cli("leads", "list", "--status", "converted").output


@pytest.mark.parametrize("args, message", [
    (["leads", "show", "999"], "no lead 999"),
    (["leads", "list", "--since", "yesterday-ish"], "is not a date"),
    (["leads", "list", "--owner", "nobody@example.com"], "no rep"),
    (["inbox", "show", "999"], "no inbound message 999"),
    (["inbox", "retry"], "give inbound ids or --failed"),
])
def test_bad_input_is_a_clear_error(cli, database, args, message):
    """Bad input gives `Error: ...`-style messages and a non-zero exit, not a traceback."""
    result = cli(*args, expect=None)
    assert result.exit_code != 0 and message in result.output


def test_inbox_list_show_and_retry(cli, database, tmp_path):
    """The inbox lists what failed; retry processes it again."""
    cli("ingest", write(tmp_path / "a.eml", SARAH))
    row = InboundMessage.get()
    InboundMessage.update(status="failed", failed_step="resolve", error="boom").execute()
    Lead.delete().execute()
    listed = cli("inbox", "list", "--status", "failed").output
    assert "resolve: boom" in listed
    assert json.loads(cli("inbox", "show", row.id, "--json").output)["failed_step"] == "resolve"
    assert "1 created" in cli("inbox", "retry", "--failed").output
    assert InboundMessage.get_by_id(row.id).status == "done" and Lead.select().count() == 1
    assert cli("inbox", "show", row.id, "--raw").stdout_bytes == SARAH


def test_config_show_masks_the_database_password(cli, tmp_path, monkeypatch):
    """`config show` prints the effective configuration with secrets masked."""
    (tmp_path / "leadflow.toml").write_text('[intake]\ninternal_domains = ["ourco.example"]\n')
    monkeypatch.setenv("LEADFLOW_DATABASE_URL", "postgresql://u:topsecret@127.0.0.1/x")
    out = cli("config", "show").output
    assert "topsecret" not in out and "ourco.example" in out and "********" in out


def test_bad_config_is_one_clear_message(tmp_path):
    """An unknown key stops every command with one message naming it, exit 1."""
    (tmp_path / "leadflow.toml").write_text("[smtp]\nprot = 25\n")
    result = subprocess.run([sys.executable, "-m", "leadflow.cli", "leads", "list"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "smtp.prot: unknown key" in result.stderr and "Traceback" not in result.stderr
