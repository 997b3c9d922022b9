"""The pipeline: one lead per prospect, idempotent steps, failures kept with their step."""

import threading

import pytest

from leadflow.intake import pipeline
from leadflow.store.inbound import store_inbound
from leadflow.store.models import Activity, InboundMessage, Lead, Organisation


def mail(sender="Sarah Jones <sarah@techinnovators.com>", subject="Question about pricing",
         body="Hello, we are looking for project management software for 40 users.",
         message_id="<q1@techinnovators.com>", extra=""):
    return (f"From: {sender}\r\nTo: sales@ourco.example\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id}\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n{extra}"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def ingest(raw, config, channel="cli"):
    stored = store_inbound(channel, raw)
    return stored, pipeline.process_inbound(stored.id, config)


def test_plain_inquiry_becomes_a_lead(database, config):
    """A plain inquiry gives one lead with the sender's name, email and company organisation."""
    stored, outcome = ingest(mail(), config)
    assert outcome == "created"
    lead = Lead.get()
    assert (lead.name, lead.email, lead.status, lead.domain_class) == \
        ("Sarah Jones", "sarah@techinnovators.com", "new", "company")
    assert lead.organisation.domain == "techinnovators.com"
    row = InboundMessage.get_by_id(stored.id)
    assert (row.status, row.lead_id, row.classification) == ("done", lead.id, "lead")
    assert Activity.select().where(Activity.lead == lead, Activity.kind == "inquiry").count() == 1


def test_second_inquiry_adds_to_the_open_lead(database, config):
    """A new inquiry from a prospect with an open lead adds to that lead, not a second one."""
    ingest(mail(), config)
    _, outcome = ingest(mail(subject="Follow-up", message_id="<q2@techinnovators.com>",
                             body="Also: can we get a demo next week? Call me on +31 20 123 4567."), config)
    assert outcome == "updated"
    lead = Lead.get()
    assert Lead.select().count() == 1 and lead.inquiry_count == 2
    assert lead.phone == "+31201234567"
    assert Activity.select().where(Activity.lead == lead, Activity.kind == "inquiry").count() == 2


def test_free_mail_has_no_organisation(database, config):
    """A free-mail sender gets a lead but no organisation made from gmail.com."""
    ingest(mail(sender="Piet <piet.jansen@gmail.com>", message_id="<g1@gmail.com>"), config)
    lead = Lead.get()
    assert (lead.domain_class, lead.organisation_id) == ("free", None)
    assert Organisation.select().count() == 0


def test_processing_twice_changes_nothing(database, config):
    """Processing a row that is already done is skipped and changes nothing."""
    stored, _ = ingest(mail(), config)
    before = [(lead.id, lead.inquiry_count, lead.updated_at) for lead in Lead.select()]
    assert pipeline.process_inbound(stored.id, config) == "skipped"
    assert [(lead.id, lead.inquiry_count, lead.updated_at) for lead in Lead.select()] == before
    assert Activity.select().count() == 1


@pytest.mark.parametrize("raw, statuses", [
    (b"", {"ignored", "failed"}),
    (bytes(range(256)) * 8, {"ignored", "failed"}),
    (b"\x00\x01 not mail at all \xff\xfe", {"ignored", "failed"}),
])
def test_garbage_ends_with_a_readable_reason(database, config, raw, statuses):
    """Empty or random bytes are stored and end ignored or failed with a reason; no lead."""
    stored, outcome = ingest(raw, config)
    row = InboundMessage.get_by_id(stored.id)
    assert row.status in statuses and outcome in statuses
    assert (row.reason or row.error) and "Traceback" not in (row.reason or row.error)
    assert bytes(row.raw) == raw and Lead.select().count() == 0


class ExplodingStep:
    name = "explode"
    description = "fails on purpose"

    def process(self, item):
        raise RuntimeError("disk on fire")


def test_failing_step_is_recorded_and_retry_works(database, config):
    """A step that raises rolls the inquiry back, marks it failed with the step; retry redoes it."""
    stored = store_inbound("cli", mail())
    steps = pipeline.STEPS[:-1] + [ExplodingStep()] + pipeline.STEPS[-1:]
    assert pipeline.process_inbound(stored.id, config, steps=steps) == "failed"
    row = InboundMessage.get_by_id(stored.id)
    assert (row.status, row.failed_step, row.error) == ("failed", "explode", "RuntimeError: disk on fire")
    assert Lead.select().count() == 0 and Organisation.select().count() == 0
    assert pipeline.retry([stored.id], config) == {stored.id: "created"}
    assert InboundMessage.get_by_id(stored.id).status == "done" and Lead.select().count() == 1


def test_reply_is_recorded_on_the_lead(database, config):
    """A reply to a stored inquiry becomes a reply activity on its lead, not a new lead."""
    ingest(mail(), config)
    _, outcome = ingest(mail(subject="Re: Question about pricing", message_id="<r1@techinnovators.com>",
                             body="Thanks, Tuesday works.",
                             extra="In-Reply-To: <q1@techinnovators.com>\r\n"), config)
    assert outcome == "reply"
    lead = Lead.get()
    assert Lead.select().count() == 1 and lead.inquiry_count == 1
    assert Activity.select().where(Activity.kind == "reply", Activity.lead == lead).count() == 1


def test_claims_do_not_overlap_and_stale_claims_return(database, config):
    """Two workers never claim the same row; a claim older than the timeout is claimed again."""
    ids = [store_inbound("cli", mail(message_id=f"<m{i}@x.example>")).id for i in range(6)]
    first = pipeline.claim_pending(4, config, worker_id="a")
    second = pipeline.claim_pending(4, config, worker_id="b")
    assert sorted(first + second) == ids and not set(first) & set(second)
    config.worker.claim_timeout_seconds = 0.000001
    assert pipeline.claim_pending(10, config, worker_id="c") == ids
    assert InboundMessage.get_by_id(ids[0]).attempts == 2


def test_concurrent_inquiries_from_one_person_make_one_lead(database, config):
    """Inquiries from the same address processed at the same time end in one open lead."""
    ids = [store_inbound("cli", mail(message_id=f"<c{i}@techinnovators.com>")).id for i in range(6)]
    outcomes = []

    def work(inbound_id):
        with database.connection_context():  # each thread returns its connection
            outcomes.append(pipeline.process_inbound(inbound_id, config))

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["updated"] * 5
    assert Lead.select().count() == 1 and Lead.get().inquiry_count == 6
    assert Organisation.select().count() == 1


def test_process_pending_drains_the_queue(database, config):
    """process_pending claims and processes until nothing waits, counting outcomes."""
    for i in range(3):
        store_inbound("email", mail(sender=f"P{i} <p{i}@firm{i}.example>", message_id=f"<p{i}@x>"))
    assert pipeline.process_pending(config) == {"created": 3}
    assert pipeline.process_pending(config) == {}


class FailOnSubject:
    name = "picky"
    description = "fails for one subject only"

    def process(self, item):
        if item.parsed.subject == "Poison":
            raise ValueError("poisoned")


def test_group_failure_rolls_back_alone(database, config):
    """In a group sharing one transaction, a failing inquiry is rolled back alone."""
    ids = [store_inbound("cli", mail(sender=f"P{i} <p{i}@firm{i}.example>", message_id=f"<g{i}@x>",
                                     subject="Poison" if i == 1 else "Fine")).id for i in range(3)]
    steps = pipeline.STEPS[:-1] + [FailOnSubject()] + pipeline.STEPS[-1:]
    outcomes = pipeline.process_many(ids, config, steps=steps)
    assert outcomes == {ids[0]: "created", ids[1]: "failed", ids[2]: "created"}
    failed = InboundMessage.get_by_id(ids[1])
    assert (failed.status, failed.failed_step, failed.error) == ("failed", "picky", "ValueError: poisoned")
    assert sorted(lead.email for lead in Lead.select()) == ["p0@firm0.example", "p2@firm2.example"]
    assert Activity.select().count() == 2


def test_group_stops_early_when_asked(database, config):
    """stop_early ends a group after the inquiry in progress; the rest stay waiting."""
    ids = [store_inbound("cli", mail(sender=f"P{i} <p{i}@firm{i}.example>", message_id=f"<s{i}@x>")).id
           for i in range(4)]
    outcomes = pipeline.process_many(ids, config, stop_early=lambda: True)
    assert outcomes == {ids[0]: "created"}
    assert [InboundMessage.get_by_id(i).status for i in ids] == ["done", "new", "new", "new"]
