"""Recognising mail that is not an inquiry: auto-replies, bounces, bulk, no-reply senders.

``classify(mail, ...)`` answers ``(classification, reason)``, where the
classification is ``None`` for a message that may be a lead, and the reason is
a sentence an admin can read ("out-of-office reply (Auto-Submitted:
auto-replied)"). The checks, in order:

1. bounces and delivery-status reports: ``multipart/report; report-type=
   delivery-status``, a ``message/delivery-status`` part, ``mailer-daemon`` or
   ``postmaster`` senders, the usual "Undeliverable"/"Mail delivery failed"
   subjects;
2. auto-replies: ``Auto-Submitted`` (anything but ``no``, RFC 3834),
   ``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``, read
   receipts (``report-type=disposition-notification``), and the out-of-office
   subjects of English, Dutch, German, French, Spanish, Italian, Portuguese and
   the Nordic languages;
3. bulk and list mail: ``List-Id``, ``List-Unsubscribe``, ``Precedence: bulk |
   list | junk`` (a list at one of our own domains is not bulk: a shared
   ``leads@`` group adds these headers to real inquiries);
4. no-reply senders (``noreply@``, ``do-not-reply@``...), unless the message
   names someone to answer in ``Reply-To`` (web-form notifications do).
"""

import re

from .normalise import domain_class, email_domain

BOUNCE_SENDERS = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon)(?:[+@]|$)", re.I)
NO_REPLY_SENDERS = re.compile(
    r"^(?:(?:no|do[-_.]?not|dont)[-_.]?reply[-_.\w]*|bounces?|notifications?|"
    r"auto[-_.]?(?:reply|responder)|automailer)(?:[+@]|$)", re.I)
BOUNCE_SUBJECTS = re.compile(
    r"\b(?:undeliverable|undelivered mail|delivery status notification|mail delivery failed|"
    r"delivery failure|returned mail|failure notice|delivery has failed|could not be delivered|"
    r"unzustellbar|nicht zustellbar|onbestelbaar|niet bezorgd|non remis|échec de (?:la )?remise|"
    r"no se puede entregar|non recapitabile)\b", re.I)
OUT_OF_OFFICE_SUBJECTS = re.compile(
    r"(?:out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|"
    r"vacation reply|on vacation|away from (?:the )?office|i am away|i'm away|"
    r"afwezig|afwezigheid|automatisch antwoord|automatisch bericht|niet op kantoor|"
    r"abwesenheit|automatische antwort|nicht im büro|außer haus|"
    r"réponse automatique|absence du bureau|absent du bureau|absente? |message d'absence|"
    r"respuesta automática|fuera de la oficina|ausente|"
    r"risposta automatica|fuori sede|fuori ufficio|"
    r"resposta automática|fora do escritório|"
    r"automatiskt svar|frånvaro|autosvar|fraværende|ikke på kontoret|automaattinen vastaus|poissa)",
    re.I)

# A subject that *starts* with an out-of-office phrase and then a colon (or ends there):
# "Automatic reply: Your quote", "Out of Office", but not "Out of office furniture".
OUT_OF_OFFICE_PREFIX = re.compile(
    r"^\s*\[?(?:automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|out of (?:the )?office|"
    r"vacation reply|abwesenheitsnotiz|abwesenheit|automatische antwort|automatisch antwoord|"
    r"afwezigheidsbericht|afwezig|automatisch bericht|réponse automatique|absence|absent|"
    r"respuesta automática|fuera de la oficina|risposta automatica|resposta automática|autosvar|"
    r"automatiskt svar|frånvaro|automaattinen vastaus|poissa)"
    r"(?:\s+(?:reply|auto[- ]?reply|notice|message|notification|bericht|antwort))?\s*\]?\s*(?::|$)",
    re.I)


def _header(mail, name):
    return (mail.header(name) or "").strip()


def _content_type_param(mail, param):
    value = _header(mail, "content-type")
    match = re.search(param + r'\s*=\s*"?([\w.-]+)"?', value, re.I)
    return match.group(1).lower() if match else ""


def classify(mail, sender=None, subject=None, internal_domains=(), has_reply_to=False):
    """``(classification, reason)``; classification None when the message may be a lead."""
    sender = (sender or "").lower()
    local = sender.split("@", 1)[0] if sender else ""
    subject = subject or ""

    # 1. Bounces and delivery reports.
    report_type = _content_type_param(mail, "report-type") if mail.content_type == "multipart/report" else ""
    if report_type == "delivery-status":
        return "bounce", "delivery-status report (multipart/report)"
    if report_type == "disposition-notification":
        return "auto_reply", "read receipt (multipart/report; report-type=disposition-notification)"
    if any(a.content_type == "message/delivery-status" for a in mail.attachments) or \
            mail.content_type == "message/delivery-status":
        return "bounce", "delivery-status report (message/delivery-status)"
    if BOUNCE_SENDERS.match(local):
        return "bounce", f"sent by {sender}"
    if BOUNCE_SUBJECTS.search(subject) and (not sender or NO_REPLY_SENDERS.match(local) or
                                            mail.has_header("x-failed-recipients")):
        return "bounce", f"bounce (subject: {subject[:80]})"
    if mail.has_header("x-failed-recipients"):
        return "bounce", f"bounce (X-Failed-Recipients: {_header(mail, 'x-failed-recipients')[:80]})"

    # 2. Auto-replies and out-of-office notices.
    ooo = bool(OUT_OF_OFFICE_SUBJECTS.search(subject))
    kind = "out-of-office reply" if ooo else "automatic reply"
    auto_submitted = _header(mail, "auto-submitted").lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return "auto_reply", f"{kind} (Auto-Submitted: {auto_submitted})"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        value = _header(mail, name)
        if mail.has_header(name) and value.lower() not in ("no", "false", "0"):
            return "auto_reply", f"{kind} ({name.title()}: {value or 'yes'})"
    precedence = _header(mail, "precedence").lower()
    if precedence == "auto_reply":
        return "auto_reply", f"{kind} (Precedence: auto_reply)"
    if _header(mail, "x-auto-response-suppress") and ooo:
        return "auto_reply", f"out-of-office reply (subject: {subject[:80]})"
    if OUT_OF_OFFICE_PREFIX.match(subject):
        return "auto_reply", f"out-of-office reply (subject: {subject[:80]})"

    # 3. Lists and bulk mail.
    list_id = _header(mail, "list-id")
    internal = {d.lower() for d in internal_domains}
    list_domain = re.search(r"<?[^<>\s]*?([\w-]+(?:\.[\w-]+)+)>?\s*$", list_id)
    own_list = bool(list_domain) and any(list_domain.group(1).lower() == d or
                                         list_domain.group(1).lower().endswith("." + d) for d in internal)
    if list_id and not own_list:
        return "bulk", f"mailing-list mail (List-Id: {list_id[:80]})"
    if precedence in ("bulk", "list", "junk") and not own_list:
        return "bulk", f"bulk mail (Precedence: {precedence})"
    if mail.has_header("list-unsubscribe") and not own_list:
        return "bulk", "bulk mail (List-Unsubscribe)"

    # 4. No-reply senders.
    if NO_REPLY_SENDERS.match(local) and not has_reply_to and \
            domain_class(email_domain(sender), internal_domains) != "internal":
        return "automated", f"sent from a no-reply address ({sender})"
    return None, None
