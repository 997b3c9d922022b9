"""Nothing acknowledged is lost: SIGKILL `leadflow serve` mid-stream, restart, check every acknowledged inquiry."""

import concurrent.futures
import http.client
import json
import smtplib
import threading
import time

import pytest

from leadflow.intake.server import ServeProcess
from leadflow.store.database import make_database
from leadflow.store.inbound import Inquiry, store_many

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

CONFIG = """
[worker]
sweep_seconds = 0.2
claim_timeout_seconds = 2

[http]
rate_limit_per_minute = 100000
"""


def mail(n):
    return (f"From: Person {n} <person{n}@company{n}.example>\r\nSubject: Inquiry {n}\r\n"
            f"Message-ID: <crash-{n}@company{n}.example>\r\n\r\nWe need {n} seats soon.\r\n").encode()


def query(url, sql, params=()):
    database = make_database(url, pool_size=0)
    with database.connection_context():
        return database.execute_sql(sql, params).fetchall()


def wait_drained(url, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = query(url, "SELECT COUNT(*) FROM inbound_message WHERE status IN ('new', 'processing')")
        if waiting[0][0] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the queue did not drain after the restart")


def run_until_killed(proc, send, total, kill_after, threads=16):
    """Send ``total`` items from ``threads`` clients; SIGKILL the server after ``kill_after`` acks."""
    acked, lock = [], threading.Lock()
    killed = threading.Event()

    def one(n):
        if killed.is_set():
            return
        try:
            ok = send(proc, n)
        except (OSError, smtplib.SMTPException, http.client.HTTPException):
            return
        if ok:
            with lock:
                acked.append(n)
                if len(acked) >= kill_after and not killed.is_set():
                    killed.set()
                    proc.process.kill()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(total)))
    proc.kill()
    assert killed.is_set(), "the server was not killed part-way"
    return acked


def send_mail(proc, n):
    with smtplib.SMTP(*proc.smtp_address, timeout=10) as client:
        return client.sendmail(f"person{n}@company{n}.example", ["leads@leadflow.localhost"],
                               mail(n)) == {}


def post_form(proc, n):
    connection = http.client.HTTPConnection(*proc.http_address, timeout=10)
    try:
        body = json.dumps({"name": f"Person {n}", "email": f"person{n}@company{n}.example",
                           "message": f"We need {n} seats."}).encode()
        connection.request("POST", "/forms/contact", body, {
            "Content-Type": "application/json", "X-Leadflow-Form-Key": "pk_crash",
            "Idempotency-Key": f"post-{n}"})
        return connection.getresponse().status == 202
    finally:
        connection.close()


def check_every_ack_is_one_lead(url, acked, key_sql):
    rows = query(url, f"SELECT {key_sql}, status, lead_id FROM inbound_message WHERE status != 'duplicate'")
    by_key = {}
    for key, status, lead_id in rows:
        by_key.setdefault(key, []).append((status, lead_id))
    for n, key in acked:
        assert len(by_key.get(key, [])) == 1, f"acknowledged #{n} stored {len(by_key.get(key, []))} times"
        status, lead_id = by_key[key][0]
        assert status == "done" and lead_id is not None, (n, status)
    leads = dict(query(url, "SELECT email, COUNT(*) FROM lead GROUP BY email"))
    for n, _ in acked:
        assert leads.get(f"person{n}@company{n}.example") == 1


@pytest.mark.parametrize("channel", ["smtp", "webhook"])
def test_sigkill_loses_nothing_acknowledged(database_url, tmp_path, channel):
    """Every inquiry that got 250/202 before a SIGKILL is stored once and a lead after the restart."""
    config = CONFIG + '\n[forms.contact]\npublic_key = "pk_crash"\n'
    (tmp_path / "leadflow.toml").write_text(config)
    env = {"LEADFLOW_DATABASE_URL": database_url, "LEADFLOW_CONFIG": str(tmp_path / "leadflow.toml")}
    send, total = (send_mail, 300) if channel == "smtp" else (post_form, 300)
    log = tmp_path / "serve.log"
    with ServeProcess(env=env, cwd=tmp_path, log_path=log, args=["--log-level", "warning"]) as proc:
        acked = run_until_killed(proc, send, total, kill_after=60)
    assert 60 <= len(acked) < total
    with ServeProcess(env=env, cwd=tmp_path, log_path=log, args=["--log-level", "warning"]) as proc:
        wait_drained(database_url)
        # The senders retry what was never acknowledged: still once each.
        unacked = sorted(set(range(total)) - set(acked))[:40]
        for n in unacked:
            assert send(proc, n)
        wait_drained(database_url)
    if channel == "smtp":
        keys = [(n, f"crash-{n}@company{n}.example") for n in [*acked, *unacked]]
        check_every_ack_is_one_lead(database_url, keys, "message_id")
    else:
        keys = [(n, f"form:contact:idem:post-{n}") for n in [*acked, *unacked]]
        check_every_ack_is_one_lead(database_url, keys, "dedup_key")


@pytest.mark.postgres
def test_two_servers_share_a_backlog_exactly_once(postgres_server, tmp_path):
    """Two serve processes on one PostgreSQL database process a shared backlog, each row once."""
    url = postgres_server
    database = make_database(url, pool_size=0)
    with database.connection_context():
        database.execute_sql("TRUNCATE inbound_message, lead, activity, contact, organisation "
                             "RESTART IDENTITY CASCADE")
    (tmp_path / "leadflow.toml").write_text(CONFIG.replace("claim_timeout_seconds = 2",
                                                           "claim_timeout_seconds = 300"))
    env = {"LEADFLOW_DATABASE_URL": url, "LEADFLOW_CONFIG": str(tmp_path / "leadflow.toml")}
    total = 240
    with ServeProcess(env=env, cwd=tmp_path, args=["--log-level", "warning"]), \
            ServeProcess(env=env, cwd=tmp_path, args=["--log-level", "warning"]):
        from leadflow.store.database import db

        db.initialize(database)
        with database.connection_context():
            for start in range(0, total, 80):
                store_many([Inquiry("email", mail(n)) for n in range(start, start + 80)])
        db.initialize(None)
        wait_drained(url)
    rows = query(url, "SELECT status, attempts, lead_id FROM inbound_message")
    assert len(rows) == total
    assert {(status, attempts) for status, attempts, _ in rows} == {("done", 1)}
    per_inbound = query(url, "SELECT inbound_id, COUNT(*) FROM activity WHERE kind = 'inquiry' "
                        "GROUP BY inbound_id")
    assert len(per_inbound) == total and {n for _, n in per_inbound} == {1}
    assert query(url, "SELECT COUNT(*) FROM lead")[0][0] == total
