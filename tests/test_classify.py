"""classify recognises mail that is not an inquiry and says why."""

import pytest

from leadflow.intake.classify import classify
from leadflow.intake.mime import read_message


def check(headers, sender="someone@client.example", subject="Question", **kwargs):
    raw = "".join(f"{k}: {v}\n" for k, v in headers.items()).encode() + b"\nbody\n"
    return classify(read_message(raw), sender=sender, subject=subject, **kwargs)


@pytest.mark.parametrize("headers, sender, subject, expected", [
    ({"Auto-Submitted": "auto-replied"}, None, "Out of Office: Question",
     ("auto_reply", "out-of-office reply (Auto-Submitted: auto-replied)")),
    ({"Auto-Submitted": "auto-generated"}, None, "Your ticket",
     ("auto_reply", "automatic reply (Auto-Submitted: auto-generated)")),
    ({"Auto-Submitted": "no"}, None, "Question", (None, None)),
    ({"X-Autoreply": "yes"}, None, "Question", ("auto_reply", "automatic reply (X-Autoreply: yes)")),
    ({"X-Autorespond": "Vacation"}, None, "Question", ("auto_reply", "automatic reply (X-Autorespond: Vacation)")),
    ({"Precedence": "auto_reply"}, None, "Question", ("auto_reply", "automatic reply (Precedence: auto_reply)")),
    ({}, None, "Automatic reply: Question", ("auto_reply", "out-of-office reply (subject: Automatic reply: Question)")),
    ({}, None, "Automatisch antwoord: Vraag", ("auto_reply", "out-of-office reply (subject: Automatisch antwoord: Vraag)")),
    ({}, None, "Abwesenheitsnotiz: Frage", ("auto_reply", "out-of-office reply (subject: Abwesenheitsnotiz: Frage)")),
    ({}, None, "Réponse automatique : Devis", ("auto_reply", "out-of-office reply (subject: Réponse automatique : Devis)")),
    ({}, None, "Respuesta automática: Consulta", ("auto_reply", "out-of-office reply (subject: Respuesta automática: Consulta)")),
    ({"Content-Type": "multipart/report; report-type=delivery-status; boundary=x"}, None, "Failure",
     ("bounce", "delivery-status report (multipart/report)")),
    ({"Content-Type": "multipart/report; report-type=disposition-notification; boundary=x"}, None, "Read",
     ("auto_reply", "read receipt (multipart/report; report-type=disposition-notification)")),
    ({}, "MAILER-DAEMON@mx.example", "Hi", ("bounce", "sent by mailer-daemon@mx.example")),
    ({}, "postmaster@mx.example", "Hi", ("bounce", "sent by postmaster@mx.example")),
    ({"X-Failed-Recipients": "x@y.example"}, None, "Mail delivery failed",
     ("bounce", "bounce (subject: Mail delivery failed)")),
    ({"List-Id": "<news.vendor.example>"}, None, "News", ("bulk", "mailing-list mail (List-Id: <news.vendor.example>)")),
    ({"List-Unsubscribe": "<mailto:u@vendor.example>"}, None, "Deal", ("bulk", "bulk mail (List-Unsubscribe)")),
    ({"Precedence": "bulk"}, None, "Deal", ("bulk", "bulk mail (Precedence: bulk)")),
    ({"Precedence": "list"}, None, "Deal", ("bulk", "bulk mail (Precedence: list)")),
    ({}, "noreply@shop.example", "Order", ("automated", "sent from a no-reply address (noreply@shop.example)")),
    ({}, "do-not-reply@shop.example", "Order", ("automated", "sent from a no-reply address (do-not-reply@shop.example)")),
    ({}, "norah@client.example", "Out of office furniture", (None, None)),
    ({}, None, "Question about pricing", (None, None)),
])
def test_classify(headers, sender, subject, expected):
    """Each kind of automatic mail is recognised from its headers, sender or subject."""
    assert check(headers, sender=sender or "someone@client.example", subject=subject) == expected


def test_list_at_our_own_domain_is_not_bulk():
    """A shared leads@ group at our own domain adds List-Id to real inquiries: not bulk."""
    assert check({"List-Id": "Leads <leads.ourco.example>", "Precedence": "list"},
                 internal_domains=["ourco.example"]) == (None, None)


def test_no_reply_sender_with_reply_to_is_not_automated():
    """A form notification from noreply@ with a Reply-To is an inquiry."""
    assert check({}, sender="noreply@forms.example", has_reply_to=True) == (None, None)
