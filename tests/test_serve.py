"""`leadflow serve` as a real process: starts on free ports, takes mail and form posts, stops cleanly."""

import json
import smtplib
import sqlite3
import time
import urllib.request

import pytest

from leadflow.intake.server import ServeProcess
from leadflow.store.database import make_database

pytestmark = pytest.mark.timeout(120)

MAIL = (b"From: Sarah Jones <sarah@techinnovators.example>\r\nSubject: Quote\r\n"
        b"Message-ID: <serve-%d@techinnovators.example>\r\n\r\nWe need 40 seats.\r\n")


def lead_count(url):
    database = make_database(url, pool_size=0)
    with database.connection_context():
        return database.execute_sql("SELECT COUNT(*) FROM lead").fetchone()[0]


def wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_serve_on_a_brand_new_database_without_config(tmp_path):
    """With no configuration and a new SQLite path, serve creates the schema and takes mail and posts."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    env = {"LEADFLOW_DATABASE_URL": url, "LEADFLOW_CONFIG": ""}
    with ServeProcess(env=env, cwd=tmp_path, log_path=tmp_path / "serve.log") as proc:
        with smtplib.SMTP(*proc.smtp_address, timeout=10) as client:
            assert client.sendmail("sarah@techinnovators.example", ["leads@leadflow.localhost"],
                                   MAIL % 1) == {}
        host, port = proc.http_address
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as response:
            assert json.load(response)["database"] == "ok"
        assert wait_for(lambda: lead_count(url) == 1)
        assert proc.terminate() == 0
    assert proc.output[-1] == "stopped"


def test_serve_takes_form_added_while_running(database_url, tmp_path):
    """A form added with `leadflow forms add` while serve runs takes posts at once (both backends)."""
    import subprocess
    import sys

    env = {"LEADFLOW_DATABASE_URL": database_url, "LEADFLOW_CONFIG": ""}
    with ServeProcess(env=env, cwd=tmp_path, log_path=tmp_path / "serve.log") as proc:
        out = subprocess.run([sys.executable, "-c", "from leadflow.cli import run; run()", "forms",
                              "add", "contact"], capture_output=True, text=True, cwd=tmp_path,
                             env={**proc.env}, check=True).stdout
        key = next(line.split()[-1] for line in out.splitlines() if line.startswith("public key:"))
        host, port = proc.http_address
        request = urllib.request.Request(
            f"http://{host}:{port}/forms/contact", method="POST",
            data=json.dumps({"name": "Sarah", "email": "sarah@techinnovators.example"}).encode(),
            headers={"Content-Type": "application/json", "X-Leadflow-Form-Key": key})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        assert wait_for(lambda: lead_count(database_url) == 1)


def test_sigterm_lets_a_transaction_in_flight_finish(tmp_path):
    """On SIGTERM a session in the middle of a mail transaction still gets its 250, then exit 0."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    env = {"LEADFLOW_DATABASE_URL": url, "LEADFLOW_CONFIG": ""}
    with ServeProcess(env=env, cwd=tmp_path, log_path=tmp_path / "serve.log") as proc:
        client = smtplib.SMTP(*proc.smtp_address, timeout=10)
        client.ehlo()
        client.mail("sarah@techinnovators.example")
        client.rcpt("leads@leadflow.localhost")
        proc.process.send_signal(15)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no longer accepting
            smtplib.SMTP(*proc.smtp_address, timeout=2)
        code, _ = client.data(MAIL % 2)
        assert code == 250
        client.close()
        assert proc.process.wait(30) == 0
    database = make_database(url, pool_size=0)
    with database.connection_context():
        assert database.execute_sql("SELECT COUNT(*) FROM inbound_message").fetchone()[0] == 1


def test_serve_refuses_a_database_whose_schema_is_behind(tmp_path):
    """An existing database at an older schema is not touched: serve exits with a clear error."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE something_else (id INTEGER)")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "from leadflow.cli import run; run()", "serve",
                             "--smtp-port", "0", "--http-port", "0"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60,
                            env={**__import__("os").environ, "LEADFLOW_DATABASE_URL": f"sqlite:///{path}",
                                 "LEADFLOW_CONFIG": ""})
    assert result.returncode == 1
    assert "schema is behind" in result.stderr and "leadflow db upgrade" in result.stderr


def test_digest_scheduler_runs_with_serve(config, database):
    """serve starts the digest scheduler on its loop and shuts it down when it stops."""
    from leadflow.intake.server import BackgroundServer

    with BackgroundServer(config, scheduler=True) as running:
        scheduler = running.scheduler
        assert scheduler is not None and scheduler.running
        assert scheduler.get_jobs()
    assert not scheduler.running
