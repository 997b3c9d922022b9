"""The forward adapter finds the original sender, subject, body and the forwarder's note."""

import pytest

from leadflow.intake.forwarded import (find_original, is_forward_subject, is_reply_subject, parse_inline,
                                       strip_forward_prefix)
from leadflow.intake.mime import read_message


@pytest.mark.parametrize("subject, stripped", [
    ("Fwd: Hello", "Hello"),
    ("FW: Fwd: Hello", "Hello"),
    ("TR: Demande", "Demande"),
    ("WG: Anfrage", "Anfrage"),
    ("RV: Consulta", "Consulta"),
    ("Doorst: Vraag", "Vraag"),
    ("Re: Hello", "Re: Hello"),
    ("Fwdx: Hello", "Fwdx: Hello"),
    (None, None),
])
def test_strip_forward_prefix(subject, stripped):
    """Forward prefixes of many clients are removed; reply prefixes stay."""
    assert strip_forward_prefix(subject) == stripped


@pytest.mark.parametrize("subject, forward, reply", [
    ("Fwd: x", True, False), ("AW: x", False, True), ("Antw: x", False, True), ("x", False, False),
])
def test_subject_kinds(subject, forward, reply):
    """Forward and reply subjects are told apart."""
    assert (is_forward_subject(subject), is_reply_subject(subject)) == (forward, reply)


GMAIL_NL = """Graag oppakken.

---------- Doorgestuurd bericht ---------
Van: Eva Jansen <eva@jansen-advies.nl>
Date: ma 23 nov 2026 om 10:12
Subject: Vraag over licenties
To: <info@ourco.example>


Hallo, wij zoeken software voor 10 gebruikers.
"""

OUTLOOK_EN = """________________________________
From: Smith, Anna <anna.smith@contoso.example>
Sent: Monday, November 23, 2026 10:12 AM
To: Info <info@ourco.example>
Subject: Pricing

Hi, please send pricing.
"""

MAILMATE = """Forwarded message:

> From: Ola Nordmann <ola@nordmann.no>
> Subject: Tilbud
> Date: 23 Nov 2026 10:00
>
> Hei, we want a quote.
"""


@pytest.mark.parametrize("text, subject, address, name, original_subject, note, body", [
    (GMAIL_NL, "Fwd: Vraag over licenties", "eva@jansen-advies.nl", "Eva Jansen", "Vraag over licenties",
     "Graag oppakken.", "Hallo, wij zoeken software voor 10 gebruikers."),
    (OUTLOOK_EN, "FW: Pricing", "anna.smith@contoso.example", "Smith, Anna", "Pricing", None,
     "Hi, please send pricing."),
    (MAILMATE, None, "ola@nordmann.no", "Ola Nordmann", "Tilbud", None, "Hei, we want a quote."),
])
def test_parse_inline(text, subject, address, name, original_subject, note, body):
    """Inline forwards give the original's sender, subject and body, and the note above."""
    original = parse_inline(text, subject)
    assert (original.address, original.name, original.subject) == (address, name, original_subject)
    assert original.note == note
    assert original.body == body


@pytest.mark.parametrize("text, subject", [
    ("Just a question, no forward here.", "Question"),
    (OUTLOOK_EN, "Re: Pricing"),
    ("", None),
])
def test_no_forward(text, subject):
    """Text without a forward, and a reply's quoted history, give no original."""
    assert parse_inline(text, subject) is None


def test_nested_forward_is_followed_while_the_sender_is_internal():
    """Internal forwards of forwards are followed in to the first outside sender; the outer note stays."""
    text = ("Outer note.\n\n---------- Forwarded message ---------\nFrom: Bob <bob@ourco.example>\n"
            "Subject: Fwd: Hi\n\nInner note.\n\n---------- Forwarded message ---------\n"
            "From: Carla <carla@client.example>\nSubject: Hi\n\nThe question.\n")
    mail = read_message(b"From: a@ourco.example\nSubject: Fwd: Fwd: Hi\n\n" + text.encode())
    original = find_original(mail, mail.header("subject"), lambda a: a.endswith("@ourco.example"))
    assert (original.address, original.subject, original.note, original.depth) == (
        "carla@client.example", "Hi", "Outer note.", 2)
    assert original.body.startswith("The question.")


def test_forward_as_attachment():
    """A message/rfc822 part is the original; the outer text is the note."""
    raw = (b"From: a@ourco.example\nSubject: Fwd: Q\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"
           b"Content-Type: text/plain\n\nhave a look\n--x\nContent-Type: message/rfc822\n\n"
           b"From: Dee <dee@client.example>\nSubject: Q\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n\n"
           b"Can you help?\n--x--\n")
    mail = read_message(raw)
    original = find_original(mail, "Fwd: Q", lambda a: a.endswith("@ourco.example"))
    assert (original.via, original.address, original.name, original.subject) == (
        "attachment", "dee@client.example", "Dee", "Q")
    assert original.note == "have a look"
    assert original.date.isoformat() == "2026-11-23T10:00:00"
