"""One inbound message read for what matters: who asked, what, and is it an inquiry at all.

``parse_message(raw, settings)`` is the pipeline's parse step and the
``leadflow parse`` command. It never raises: empty input is classified
``empty``, input that is not a message ``unreadable``, each with a reason.

The steps:

1. read the MIME structure safely (``mime.read_message``);
2. recognise what is not an inquiry (``classify.classify``): auto-replies,
   bounces, bulk mail, no-reply senders;
3. when the sender is one of ours (``intake.internal_domains`` or
   ``intake.forwarders``), find the forwarded original (``forwarded``): its
   sender is the prospect, the forwarder becomes ``submitted_by`` and their
   words above the forward ``forwarder_note``. An internal sender with no
   findable original is flagged ``needs_review`` and no prospect address is
   set, so that the lead is never filed under our own colleague;
4. web-form notifications (sent by ``noreply@``/``wordpress@``-like robots,
   directly or forwarded by a colleague) are the visitor's: from ``Reply-To``,
   else from the ``Email:`` line, with the ``Message:`` field as the body;
5. split the prospect's words from quoted history and signature, then read the
   fields and buying signals (``extract``). A colleague's own signature is never
   read as the prospect's details.

Replies are only reported (``in_reply_to``, ``references``); the pipeline
matches them to stored inquiries.
"""

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

from . import classify as classify_mod
from .extract import (extract_fields, extract_signals, first_phone, key_values, normalise_email,
                      split_body)
from .forwarded import find_original, strip_forward_prefix
from .mime import read_message
from .normalise import domain_class, email_domain

log = logging.getLogger("leadflow.intake")

# Senders that relay web-form submissions ("wordpress@", "forms@"...), besides no-reply addresses.
FORM_ROBOTS = re.compile(r"^(?:wordpress|wp|forms?|webforms?|formulier|formular|website|webmaster|"
                         r"contact-?form|mailer|notifications?)(?:[+@]|$)", re.I)

CLASSIFICATIONS = ("lead", "auto_reply", "bounce", "bulk", "automated", "empty", "unreadable")
MAX_BODY = 20000


@dataclass
class Prospect:
    """The person who asked."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    title: str | None = None
    website: str | None = None
    country: str | None = None

    def to_dict(self):
        return asdict(self)


@dataclass
class ParsedMessage:
    """What leadflow reads in one inbound message (see the module docstring)."""

    classification: str = "lead"
    reason: str | None = None
    forwarded: bool = False
    submitted_by: str | None = None
    forwarder_note: str | None = None
    prospect: Prospect = field(default_factory=Prospect)
    subject: str | None = None
    body: str = ""
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list = field(default_factory=list)
    signals: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    attachments: list = field(default_factory=list)
    needs_review: bool = False
    review_reason: str | None = None
    sender: str | None = None          # the outer From address, normalised
    forward_via: str | None = None     # "inline" | "attachment" when forwarded

    @property
    def is_lead(self):
        return self.classification == "lead"

    def to_dict(self):
        """The JSON form shown by ``leadflow parse --json``."""
        return {
            "classification": self.classification,
            "reason": self.reason,
            "forwarded": self.forwarded,
            "forward_via": self.forward_via,
            "submitted_by": self.submitted_by,
            "forwarder_note": self.forwarder_note,
            "sender": self.sender,
            "prospect": self.prospect.to_dict(),
            "subject": self.subject,
            "body": self.body,
            "date": self.date.isoformat() if self.date else None,
            "message_id": self.message_id,
            "in_reply_to": self.in_reply_to,
            "references": list(self.references),
            "signals": self.signals,
            "fields": self.fields,
            "attachments": list(self.attachments),
            "needs_review": self.needs_review,
            "review_reason": self.review_reason,
        }


def _setting(settings, name, default):
    value = getattr(settings, name, None) if settings is not None else None
    return default if value is None else value


_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffd\ud800-\udfff]")


def _looks_binary(text):
    sample = text[:4000]
    if not sample:
        return False
    return len(_UNPRINTABLE.findall(sample)) > len(sample) * 0.05


def parse_message(raw, settings=None):
    """A ParsedMessage for raw message bytes; never raises."""
    try:
        return _parse(raw, settings)
    except Exception as exc:  # the last guard: every input gets a classification
        log.warning("message could not be parsed: %s: %s", type(exc).__name__, exc)
        return ParsedMessage(classification="unreadable",
                             reason=f"could not be read ({type(exc).__name__})")


def watch_parent(parent_pid, interval=1.0):
    """In a parse process: exit when the process that started it is gone (even killed
    with SIGKILL, which gives it no chance to stop its helpers)."""
    import os
    import threading
    import time

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="leadflow-parent-watch", daemon=True).start()


def parse_many(raws, settings=None):
    """``{key: ParsedMessage}`` for ``[(key, raw bytes)]``: what the worker's parse
    process runs (this module imports nothing of the database)."""
    return {key: parse_message(raw, settings) for key, raw in raws}


def _parse(raw, settings):
    if raw is None:
        raw = b""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    raw = bytes(raw)
    if not raw.strip():
        return ParsedMessage(classification="empty", reason="empty message")

    internal_domains = [d.lower().lstrip("@") for d in _setting(settings, "internal_domains", [])]
    forwarders = {normalise_email(a) or a.lower() for a in _setting(settings, "forwarders", [])}
    region = _setting(settings, "default_region", "NL") or "NL"

    def is_internal(address):
        address = normalise_email(address) or (address or "").lower()
        if not address:
            return False
        if address in forwarders:
            return True
        domain = email_domain(address) or ""
        return any(domain == d or domain.endswith("." + d) for d in internal_domains) or \
            domain_class(domain, internal_domains) == "internal"

    mail = read_message(raw)
    result = ParsedMessage()
    result.attachments = [a.to_dict() for a in mail.attachments]
    result.message_id = mail.message_id()
    result.in_reply_to = mail.message_id("in-reply-to")
    result.references = mail.references
    result.date = mail.date
    outer_subject = mail.header("subject")
    from_name, from_address = mail.first_address("from")
    if not from_address:
        from_name, from_address = mail.first_address("sender")
    sender = normalise_email(from_address) if from_address else None
    if from_address and not sender:
        sender = from_address.strip().lower()
    result.sender = sender

    if mail.header_count == 0 and (not mail.text.strip() or _looks_binary(mail.text)):
        result.classification, result.reason = "unreadable", "no message headers and no readable text"
        return result
    if _looks_binary(mail.text) and not sender:
        result.classification, result.reason = "unreadable", "no sender and no readable text"
        return result

    reply_to_name, reply_to = mail.first_address("reply-to")
    reply_to = normalise_email(reply_to) if reply_to else None
    usable_reply_to = reply_to if reply_to and reply_to != sender and not is_internal(reply_to) else None

    kind, reason = classify_mod.classify(mail, sender=sender, subject=outer_subject or "",
                                         internal_domains=internal_domains,
                                         has_reply_to=bool(usable_reply_to))
    if kind:
        result.classification, result.reason = kind, reason

    # Who is the prospect?
    text = mail.text
    prospect_name, prospect_email, sender_source = from_name, sender, "header"
    key_source = "body"      # where "Key: value" lines come from: a person's text or a form
    colleague_wrote = False  # the text is a colleague's: their signature is not the prospect's
    subject = outer_subject
    if sender and is_internal(sender) and result.classification == "lead":
        original = find_original(mail, outer_subject, is_internal)
        result.submitted_by = sender
        if original is not None:
            result.forwarded = True
            result.forward_via = original.via
            result.forwarder_note = _note(original.note)
            prospect_name, prospect_email = original.name, original.address
            sender_source = "forward"
            text = original.body
            subject = original.subject or strip_forward_prefix(outer_subject)
            when = original.date
            if when:
                result.date = when
            robot = original.address and _is_robot(original.address)
            keys = key_values(split_body(text)[0] or text) if robot else {}
            labelled = normalise_email(keys.get("email")) if keys.get("email") else None
            if labelled and not is_internal(labelled):
                # A forwarded form notification: the visitor is in its "Email:" line.
                prospect_name, prospect_email, sender_source, key_source = \
                    keys.get("name"), labelled, "form", "form"
            elif not original.address or is_internal(original.address):
                colleague_wrote = bool(original.address)
                prospect_email = None
                result.needs_review = True
                who = original.address or original.name
                result.review_reason = (f"forwarded by {sender}, but the original sender {who} is internal"
                                        if original.address else
                                        f"forwarded by {sender}, but the original sender ({who}) "
                                        "has no address")
        else:
            keys = key_values(split_body(text)[0] or text)
            labelled = normalise_email(keys.get("email")) if keys.get("email") else None
            if labelled and not is_internal(labelled):
                # Contact details typed or pasted by a colleague ("Email: sarah@...").
                prospect_name, prospect_email, sender_source = keys.get("name"), labelled, "body"
            else:
                prospect_name, prospect_email = None, None
                colleague_wrote = True
                result.needs_review = True
                result.review_reason = (f"sent by internal address {sender}, "
                                        "but no forwarded original was found")
            subject = strip_forward_prefix(outer_subject)
    elif usable_reply_to and (not sender or is_internal(sender) or
                              classify_mod.NO_REPLY_SENDERS.match(sender.split("@", 1)[0])):
        # Web-form notifications: sent by a robot, answered to the visitor.
        prospect_name, prospect_email, sender_source = reply_to_name, usable_reply_to, "header"
        result.submitted_by = sender
        key_source = "form"
    elif sender and is_internal(sender):
        result.submitted_by = sender
        prospect_name, prospect_email = None, None
        colleague_wrote = True
    elif sender and (kind == "automated" or _is_robot(sender)):
        # A website's form notification without Reply-To: the visitor is in the "Email:" line.
        keys = key_values(split_body(text)[0] or text)
        labelled = normalise_email(keys.get("email")) if keys.get("email") else None
        if labelled and labelled != sender and not is_internal(labelled) and len(keys) >= 2:
            result.classification, result.reason = "lead", None
            prospect_name, prospect_email, sender_source = keys.get("name"), labelled, "form"
            result.submitted_by = sender
            key_source = "form"

    result.subject = (subject or "").strip() or None
    own, signature, _quoted = split_body(text)
    result.body = own[:MAX_BODY]

    fields = extract_fields(own, None if colleague_wrote else signature, name=prospect_name, email=prospect_email, region=region,
                            internal_domains=internal_domains, source=key_source, sender_source=sender_source)
    form_message = key_values(own).get("message") if key_source == "form" else None
    if form_message:
        result.body = form_message[:MAX_BODY]   # the visitor's words, not the form's labels
    if result.needs_review and "email" in fields and is_internal(fields["email"]["value"]):
        del fields["email"]
    if "phone" not in fields and result.forwarder_note and not colleague_wrote:
        # "Hot lead, call her on 06 1234 5678": a number in the forwarder's note.
        phone = first_phone(result.forwarder_note, region)
        if phone:
            fields["phone"] = {"value": phone, "source": "forward", "confidence": 0.5}
    result.fields = fields
    result.prospect = Prospect(**{name: fields[name]["value"] for name in
                                  ("name", "email", "phone", "company", "title", "website", "country")
                                  if name in fields})
    if result.needs_review:
        result.prospect.email = None
    signal_text = "\n".join(part for part in (result.subject or "", result.body) if part)
    result.signals = extract_signals(signal_text, result.date)

    if result.classification == "lead" and not result.needs_review and not result.prospect.email \
            and not result.prospect.phone:
        if not sender and mail.header_count == 0:
            result.classification, result.reason = "unreadable", "no message headers and no sender"
        elif not sender:
            result.classification, result.reason = "unreadable", "no sender address"
        else:
            result.needs_review = True
            result.review_reason = f"no usable sender address ({sender})"
    return result


def _is_robot(address):
    """A no-reply or form-relay address (``noreply@``, ``wordpress@``, ``forms@``...)."""
    local = (address or "").split("@", 1)[0]
    return bool(classify_mod.NO_REPLY_SENDERS.match(local) or FORM_ROBOTS.match(local))


def _note(note):
    if not note:
        return None
    own, _signature, _quoted = split_body(note)
    note = (own or note).strip()
    note = re.sub(r"\n{3,}", "\n\n", note)
    return note or None
