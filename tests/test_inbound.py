"""Storing raw inquiries: committed as received, deduplicated by key, duplicates recorded."""

import pytest

from leadflow.store.inbound import Inquiry, message_id_of, store_inbound, store_many
from leadflow.store.models import InboundMessage

MAIL = (b"From: Sarah <sarah@techinnovators.com>\r\nTo: sales@ourco.example\r\n"
        b"Message-ID: <abc.123@mail.techinnovators.com>\r\nSubject: Pricing\r\n\r\nHello\r\n")


@pytest.mark.parametrize("raw, expected", [
    (MAIL, "abc.123@mail.techinnovators.com"),
    (b"Message-Id:\r\n <folded@x.example>\r\n\r\nbody", "folded@x.example"),
    (b"message-id: bare-id@x\n\nbody", "bare-id@x"),
    (b"Subject: none\r\n\r\nMessage-ID: <in-body@x>", None),
    (b"", None),
    (b"\xff\xfe\x00garbage", None),
])
def test_message_id_of(raw, expected):
    """The Message-ID comes from the header block only, and odd bytes never raise."""
    assert message_id_of(raw) == expected


def test_dedup_key_prefers_message_id(database):
    """Mail is keyed by its Message-ID, and by a content hash when it has none."""
    with_id = InboundMessage.get_by_id(store_inbound("email", MAIL).id)
    without = InboundMessage.get_by_id(store_inbound("email", b"Subject: x\r\n\r\nhi").id)
    assert (with_id.dedup_key, with_id.message_id) == ("mid:abc.123@mail.techinnovators.com",
                                                       "abc.123@mail.techinnovators.com")
    assert without.dedup_key.startswith("sha256:") and without.message_id is None


def test_store_then_redelivery_is_a_duplicate(database):
    """The same message delivered twice is stored once; the second delivery is a duplicate row."""
    first = store_inbound("email", MAIL, mail_from="sarah@techinnovators.com",
                          rcpt_to=["sales@ourco.example"], peer="192.0.2.7")
    again = store_inbound("email", MAIL.replace(b"Hello", b"Hello again"))
    assert (first.duplicate, again.duplicate, again.duplicate_of) == (False, True, first.id)
    row = InboundMessage.get_by_id(first.id)
    assert (bytes(row.raw), row.status, row.peer, row.rcpt_to) == \
        (MAIL, "new", "192.0.2.7", ["sales@ourco.example"])
    dup = InboundMessage.get_by_id(again.id)
    assert (dup.status, dup.dedup_key, dup.duplicate_of_id) == ("duplicate", None, first.id)
    assert "Message-ID" in dup.reason


def test_batch_with_duplicates_inside(database):
    """A batch stores every item in one transaction, deduplicating within the batch too."""
    other = b"Subject: hi\r\n\r\nno message id here"
    results = store_many([Inquiry("email", MAIL), Inquiry("email", other),
                          Inquiry("email", other), Inquiry("form", b'{"a":1}', dedup_key="form:x:idem:1"),
                          Inquiry("form", b'{"a":2}', dedup_key="form:x:idem:1")])
    assert [r.duplicate for r in results] == [False, False, True, False, True]
    assert InboundMessage.select().where(InboundMessage.status == "new").count() == 3
    assert InboundMessage.select().where(InboundMessage.status == "duplicate").count() == 2


def test_binary_garbage_is_stored_exactly(database):
    """Any bytes at all are stored as received."""
    raw = bytes(range(256)) * 4
    stored = store_inbound("cli", raw)
    assert bytes(InboundMessage.get_by_id(stored.id).raw) == raw


def test_nul_bytes_are_stored_and_processed_on_every_backend(database, config):
    """A NUL in the Message-ID, the envelope, the subject or the body (PostgreSQL text refuses
    NUL) is stored (the raw exactly as received) and processed, never refused for ever."""
    from leadflow.intake.pipeline import process_inbound
    from leadflow.store.models import Lead

    raw = (b"From: Sarah <sarah@techinnovators.example>\r\nSubject: Quote\x00 please\r\n"
           b"Message-ID: <nul\x00id@techinnovators.example>\r\n\r\nWe need 20\x00 seats.\r\n")
    stored = store_inbound("email", raw, mail_from="sarah\x00@techinnovators.example",
                           rcpt_to=["leads\x00@leadflow.localhost"])
    row = InboundMessage.get_by_id(stored.id)
    assert bytes(row.raw) == raw and row.message_id is None
    assert row.dedup_key.startswith("sha256:") and "\x00" not in row.mail_from
    assert store_inbound("email", raw).duplicate  # a redelivery is still recognised
    assert process_inbound(stored.id, config) == "created"
    lead = Lead.get()
    assert lead.email == "sarah@techinnovators.example" and "\x00" not in lead.subject + lead.message
