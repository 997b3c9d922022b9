"""The worker of `leadflow serve`: processes new rows at once, sweeps the rest, acknowledges forwarders."""

import datetime
import smtplib
import time

import pytest

from leadflow.intake import pipeline
from leadflow.intake.server import BackgroundServer
from leadflow.intake.worker import acknowledgement, release
from leadflow.notify.testing import SmtpSink
from leadflow.store.database import utcnow
from leadflow.store.inbound import store_inbound
from leadflow.store.models import InboundMessage, Lead

pytestmark = pytest.mark.timeout(60)

MAIL = (b"From: Sarah Jones <sarah@techinnovators.example>\r\nSubject: Quote\r\n"
        b"Message-ID: <w-%d@techinnovators.example>\r\n\r\nPlease send a quote.\r\n")


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_notified_row_processed_at_once(config, database):
    """A row the edge reports is processed at once, long before the next sweep."""
    config.worker.sweep_seconds = 60
    with BackgroundServer(config) as server:
        time.sleep(0.2)  # the start-up sweep is over
        inbound_id = store_inbound("email", MAIL % 1).id
        started = time.monotonic()
        server.loop.call_soon_threadsafe(server.worker.notify, inbound_id)
        assert wait_for(lambda: InboundMessage.get_by_id(inbound_id).status == "done", timeout=5)
        assert time.monotonic() - started < 5


def test_smtp_delivery_becomes_lead_without_waiting_for_sweep(config, database):
    """A message received by SMTP becomes a lead within a second, with the sweep far away."""
    config.worker.sweep_seconds = 60
    with BackgroundServer(config) as server:
        with smtplib.SMTP(*server.smtp_address, timeout=10) as client:
            client.sendmail("sarah@techinnovators.example", ["leads@leadflow.localhost"], MAIL % 2)
        assert wait_for(lambda: Lead.select().count() == 1, timeout=1.5)


def test_sweep_finds_rows_stored_elsewhere(config, database):
    """Rows stored by another process (nobody notifies) are found by the periodic sweep."""
    config.worker.sweep_seconds = 0.2
    with BackgroundServer(config):
        time.sleep(0.1)
        ids = [store_inbound("email", MAIL % n).id for n in range(3, 6)]
        assert wait_for(lambda: InboundMessage.select().where(
            InboundMessage.id.in_(ids), InboundMessage.status == "done").count() == 3)


def test_rows_of_a_dead_worker_are_taken_over(config, database):
    """A row claimed long ago by a worker that died is claimed again and processed."""
    config.worker.sweep_seconds = 0.2
    config.worker.claim_timeout_seconds = 30
    inbound_id = store_inbound("email", MAIL % 7).id
    (InboundMessage.update(status="processing", claimed_by="deadhost:1", attempts=1,
                           claimed_at=utcnow() - datetime.timedelta(minutes=5))
     .where(InboundMessage.id == inbound_id).execute())
    with BackgroundServer(config):
        assert wait_for(lambda: InboundMessage.get_by_id(inbound_id).status == "done")
    assert InboundMessage.get_by_id(inbound_id).attempts == 2


def test_release_hands_claimed_rows_back(config, database):
    """Claimed rows a stopping worker did not start go back to `new`, attempts undone."""
    ids = [store_inbound("email", MAIL % n).id for n in range(10, 13)]
    claimed = pipeline.claim_pending(10, config, worker_id="me:1")
    assert claimed == ids
    release(claimed[1:], "me:1")
    statuses = [InboundMessage.get_by_id(i).status for i in ids]
    assert statuses == ["processing", "new", "new"]
    assert InboundMessage.get_by_id(ids[1]).attempts == 0


def _forwarded(config, forwarder, classification="lead", lead_email="sarah@techinnovators.example"):
    lead = Lead.create(name="Sarah", email=lead_email, company="Tech Innovators Inc.",
                       submitted_by=forwarder)
    row = InboundMessage.create(channel="email", raw=b"x", status="done", lead=lead,
                                classification=classification, message_id="m1@ourco.example")
    return row.id, lead


@pytest.mark.parametrize("forwarder, classification, lead_email, to", [
    ("maria@ourco.example", "lead", "sarah@techinnovators.example", "maria@ourco.example"),
    ("someone@elsewhere.example", "lead", "sarah@techinnovators.example", None),  # not internal
    ("maria@ourco.example", "auto_reply", "sarah@techinnovators.example", None),
    (None, "lead", "sarah@techinnovators.example", None),  # sent by the prospect herself
    ("sarah@techinnovators.example", "lead", "sarah@techinnovators.example", None),
])
def test_acknowledgement_only_to_internal_forwarder(config, database, forwarder, classification,
                                                     lead_email, to):
    """The note goes to an internal forwarder only: never the prospect, never for an auto-reply."""
    inbound_id, lead = _forwarded(config, forwarder, classification, lead_email)
    message = acknowledgement(inbound_id, config)
    if to is None:
        assert message is None
    else:
        assert message["To"] == to
        assert message["Subject"] == f"lead #{lead.id} created: Sarah, Tech Innovators Inc."
        assert message["Auto-Submitted"] == "auto-generated"


def test_acknowledgement_sent_after_forwarded_mail(config, database, mail_fixture):
    """With smtp.acknowledge_forwarder on, the colleague who forwarded gets the note by mail."""
    config.smtp.acknowledge_forwarder = True
    config.smtp.accept = ["leads@ourco.example"]
    raw = mail_fixture("worked_example_sarah.eml").read_bytes()
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # SMTP lines end in CRLF
    with SmtpSink() as sink:
        config.notify.relay.port = sink.port
        config.notify.relay.host = "127.0.0.1"
        with BackgroundServer(config) as server:
            with smtplib.SMTP(*server.smtp_address, timeout=10) as client:
                client.sendmail("marketing@ourco.example", ["leads@ourco.example"], raw)
            assert wait_for(lambda: len(sink.messages) == 1)
    lead = Lead.get()
    assert lead.email == "sarah.mitchell@techinnovators.com"
    assert sink.envelopes[0][1] == ["marketing@ourco.example"]
    assert sink.messages[0]["Subject"].startswith(f"lead #{lead.id} created: Sarah Mitchell")


def test_write_gate_lets_intake_go_first():
    """On SQLite an intake commit waiting at the gate goes before the worker's next inquiry."""
    import threading

    from leadflow.intake.worker import WriteGate

    gate, order = WriteGate(), []
    inside, leave = threading.Event(), threading.Event()

    def first_inquiry():
        with gate.worker():
            order.append("worker-1")
            inside.set()
            leave.wait(5)

    def next_inquiry():
        with gate.worker():
            order.append("worker-2")

    def intake():
        with gate.intake():
            order.append("intake")

    threads = [threading.Thread(target=first_inquiry)]
    threads[0].start()
    assert inside.wait(5)
    threads.append(threading.Thread(target=next_inquiry))
    threads[1].start()
    threads.append(threading.Thread(target=intake))
    threads[2].start()
    assert wait_for(lambda: gate._intake_waiting == 1, timeout=5)
    leave.set()  # the first inquiry ends: the waiting intake commit goes next
    for thread in threads:
        thread.join(5)
    assert order == ["worker-1", "intake", "worker-2"]


def _store_fixtures(mail_fixture, names):
    ids = []
    for n, name in enumerate(names):
        raw = mail_fixture(name).read_bytes()
        ids.append(store_inbound("email", raw).id)
    return ids


def _fail_in_pipeline(*_args):
    raise AssertionError("parsed in the pipeline although the batch was parsed ahead")


def test_batch_parsed_ahead_in_another_process_gives_the_same_leads(config, database,
                                                                       mail_fixture, monkeypatch):
    """A backlog is parsed in the parse process; the leads are what in-process parsing gives."""
    from leadflow.intake.message import parse_message
    from leadflow.intake.worker import Worker

    names = sorted(p.name for p in mail_fixture("x").parent.glob("*.eml"))
    ids = _store_fixtures(mail_fixture, names)
    assert len(ids) > pipeline.GROUP_SIZE  # more than one group: parsed ahead
    config.worker.parse_processes = 1
    monkeypatch.setattr(pipeline, "parse_mail", _fail_in_pipeline)  # not in the pool's process
    worker = Worker(config)
    try:
        while worker.process_batch() is not None:
            pass
        assert worker.preparser._pool is not None
    finally:
        worker.close()
    rows = list(InboundMessage.select().where(InboundMessage.id.in_(ids)).order_by(InboundMessage.id))
    assert [r.status for r in rows if r.status not in ("done", "ignored")] == []
    for row in rows:
        expected = parse_message(bytes(row.raw), config.intake)
        if row.lead_id is None:
            assert not expected.is_lead or expected.prospect.email is None, row.id
            continue
        lead = Lead.get_by_id(row.lead_id)
        if lead.inquiry_count == 1 and row.classification != "reply":
            assert (lead.subject, lead.message) == (expected.subject, expected.body), row.id
            assert lead.signals == (expected.signals or {}), row.id
            assert lead.submitted_by == expected.submitted_by, row.id


def test_killed_parse_process_leaves_parsing_to_the_pipeline(config, database, caplog):
    """If the parse process dies, the rows are parsed in the pipeline; nothing is lost."""
    import os
    import signal

    from leadflow.intake.worker import Worker

    config.worker.parse_processes = 1
    worker = Worker(config)
    try:
        first = [store_inbound("email", MAIL % n).id for n in range(100, 125)]
        while worker.process_batch() is not None:
            pass
        pool = worker.preparser._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        second = [store_inbound("email", MAIL % n).id for n in range(200, 225)]
        while worker.process_batch() is not None:
            pass
    finally:
        worker.close()
    done = InboundMessage.select().where(InboundMessage.id.in_(first + second),
                                         InboundMessage.status == "done").count()
    assert done == 50
    assert Lead.select().count() == 1  # one prospect, one open lead with every inquiry
    assert Lead.get().inquiry_count == 50
    assert "parse process failed" in caplog.text


ORPHAN_SCRIPT = r"""
import sys, time
from leadflow import config as config_module
from leadflow.intake.worker import Preparser
from leadflow.store.database import open_database
from leadflow.store.inbound import store_inbound

if __name__ == "__main__":  # the parse process is spawned: it imports this file again
    open_database(sys.argv[1])
    ids = [store_inbound("email", b"From: a@b.example\r\nSubject: x\r\n\r\nhi %d\r\n" % n).id
           for n in range(3)]
    preparser = Preparser(config_module.parse({}), 1)
    assert len(preparser.result(preparser.submit(ids))) == 3
    print(*preparser._pool._processes, flush=True)
    time.sleep(60)
"""


def test_parse_process_exits_when_serve_is_killed(database_url, tmp_path):
    """A parse process does not outlive a `leadflow serve` killed with SIGKILL."""
    import os
    import signal
    import subprocess
    import sys

    from leadflow.store import migrate
    from leadflow.store.database import close_database, open_database

    if database_url.startswith("sqlite"):
        migrate.upgrade(open_database(database_url))
        close_database()
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), database_url], stdout=subprocess.PIPE,
                              text=True)
    try:
        children = [int(p) for p in parent.stdout.readline().split()]
        assert children and all(os.path.exists(f"/proc/{p}") for p in children)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    assert wait_for(lambda: not any(_running(p) for p in children), timeout=10)


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
