"""Storing raw inquiries: the first thing that happens to every one of them.

An inquiry is committed before anyone acknowledges it (SMTP 250, HTTP 2xx, the
CLI's summary). Each carries a dedup key (its Message-ID, a webhook delivery
id, or a hash of its content), unique in the database: a retried delivery
finds the key taken and is recorded as a ``duplicate`` row pointing at the
first, never processed again.

:func:`store_many` stores several inquiries in one transaction, so that the
SMTP listener can commit the messages of many concurrent sessions with one
fsync.
"""

import hashlib
import re
from dataclasses import dataclass, field

from peewee import IntegrityError

from leadflow.store import fastsql
from leadflow.store.database import db, utcnow
from leadflow.store.models import InboundMessage

_CONTROL_RE = re.compile(rb"[\x00-\x1f\x7f]")
_MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Inquiry:
    """One raw inquiry to store."""

    channel: str
    raw: bytes
    dedup_key: str | None = None
    content_type: str | None = None
    form: str | None = None
    mail_from: str | None = None
    rcpt_to: list = field(default_factory=list)
    peer: str | None = None
    origin: str | None = None
    received_at: object = None


@dataclass
class StoreResult:
    id: int
    duplicate: bool
    duplicate_of: int | None = None


def message_id_of(raw):
    """The Message-ID of raw mail bytes, without angle brackets, or None.

    Read from the header block only, with a regular expression: fast, and it
    never fails on malformed mail.
    """
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = _MESSAGE_ID_RE.search(head)
    if not match:
        return None
    value = b" ".join(match.group(1).split()).strip().strip(b"<>").strip()
    if not value or len(value) > 400 or _CONTROL_RE.search(value):
        return None  # no usable Message-ID (a NUL byte, say, which PostgreSQL text refuses)
    return value.decode("ascii", "replace")


def _text(value):
    """An envelope value as stored: without NUL characters, which PostgreSQL text refuses
    (the raw bytes keep everything as received)."""
    return value.replace("\x00", "") if isinstance(value, str) else value


def content_key(raw):
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _insert(inquiry, record_duplicate=True):
    is_mail = inquiry.channel in ("email", "cli", "import")
    message_id = message_id_of(inquiry.raw) if is_mail else None  # read the headers once
    key = inquiry.dedup_key
    if key is None:
        key = f"mid:{message_id}" if message_id and inquiry.channel in ("email", "cli") \
            else content_key(inquiry.raw)
    values = dict(
        channel=inquiry.channel, raw=inquiry.raw, content_type=inquiry.content_type,
        size=len(inquiry.raw), message_id=message_id, form=inquiry.form,
        mail_from=_text(inquiry.mail_from), rcpt_to=[_text(r) for r in inquiry.rcpt_to],
        peer=_text(inquiry.peer), origin=_text(inquiry.origin),
        received_at=inquiry.received_at or utcnow(),
    )
    # ON CONFLICT on the dedup key alone: no savepoint, and any other refusal still raises
    row_id = fastsql.insert(InboundMessage, {"dedup_key": key, "status": "new", "attempts": 0,
                                             **values}, unless_taken="dedup_key")
    if row_id is not None:
        return StoreResult(row_id, False)
    first = fastsql.get(InboundMessage, "dedup_key", key, fields=("id", "lead"))
    if first is None:  # the first copy went away meanwhile: refuse, the sender retries
        raise IntegrityError(f"dedup key {key} is taken and free at once")
    if not record_duplicate:
        return StoreResult(first.id, True, first.id)
    row_id = fastsql.insert(InboundMessage, {
        "dedup_key": None, "duplicate_of": first.id, "status": "duplicate", "attempts": 0,
        "processed_at": utcnow(), "lead": first.lead_id,
        "reason": f"same {'Message-ID' if key.startswith('mid:') else 'content'} as inbound "
                  f"#{first.id}", **values})
    return StoreResult(row_id, True, first.id)


def store_inbound(channel, raw, **kwargs):
    """Store one raw inquiry and commit; return its :class:`StoreResult`."""
    return store_many([Inquiry(channel, raw, **kwargs)])[0]


def store_many(inquiries, record_duplicates=True):
    """Store several inquiries in one transaction; results in the same order.

    With ``record_duplicates`` off (webhook posts retried with the same
    idempotency key), a duplicate adds no row and answers as the first:
    ``StoreResult(first, True, first)``.
    """
    with db.atomic():
        return [_insert(inquiry, record_duplicates) for inquiry in inquiries]
