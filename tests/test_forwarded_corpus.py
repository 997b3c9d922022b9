"""Every case of the shared forwarded-mail corpus, wrapped in a mail from marketing, finds its original.

The corpus (../shared/corpora/forwarded, 206 cases from email-forward-parser's suite: 13 clients,
24 locales, nested forwards, notes above forwards, and 10 messages that are not forwards) is not part
of the repository; the module skips where it is absent.
"""

import html
import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from leadflow.config import IntakeConfig
from leadflow.intake.message import parse_message

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "forwarded"
SETTINGS = IntakeConfig(internal_domains=["ourco.example"])
MINIMUM = 200

if not (CORPUS / "cases.json").exists():
    pytest.skip(f"forwarded corpus not found at {CORPUS}", allow_module_level=True)

CASES = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))


def wrap(case, as_html=False):
    """The case's body (and subject) as a message from an internal forwarder, as bytes."""
    body = (CORPUS / "fixtures" / case["body"]).read_text(encoding="utf-8")
    message = EmailMessage()
    message["From"] = "Marketing <marketing@ourco.example>"
    message["To"] = "leads@ourco.example"
    message["Date"] = "Fri, 27 Nov 2026 09:00:00 +0100"
    message["Message-ID"] = f"<{case['body']}@ourco.example>"
    if case["subject"]:
        subject = (CORPUS / "fixtures" / case["subject"]).read_text(encoding="utf-8").strip()
        message["Subject"] = subject
    if as_html:   # HTML-only, one line a <br>, as web mail writes it
        lines = html.escape(body).replace("\r\n", "\n").replace("\n", "<br>\n")
        message.set_content(f"<div>{lines}</div>", subtype="html")
    else:
        message.set_content(body)
    return message.as_bytes()


def outcome(parsed):
    """(forwarded, address, name, subject) as the corpus states them."""
    if not parsed.forwarded:
        return (False, None, None, None)
    return (True, parsed.prospect.email, parsed.fields.get("name", {}).get("value")
            if parsed.fields.get("name", {}).get("source") == "forward" else None, parsed.subject)


def expected(case):
    want = case["expected"]
    if not want["forwarded"]:
        return (False, None, None, None)
    sender = want["email"].get("from") or {}
    return (True, sender.get("address"), sender.get("name"), want["email"].get("subject"))


@pytest.mark.parametrize("as_html", [False, True], ids=["plain", "html"])
def test_forwarded_corpus_score(as_html):
    """At least 200 of the 206 cases match forwarded, sender address, sender name and subject.

    Once as the text/plain the clients wrote, once as HTML-only mail of the same lines.
    """
    misses = []
    for case in CASES:
        got, want = outcome(parse_message(wrap(case, as_html), SETTINGS)), expected(case)
        if got != want:
            misses.append(f"{case['body']}: got {got}, want {want}")
    score = len(CASES) - len(misses)
    print(f"\nforwarded corpus ({'html' if as_html else 'plain'}): {score}/{len(CASES)} match")
    for miss in misses:
        print("  miss:", miss)
    assert len(CASES) == 206
    assert score >= MINIMUM, "\n".join(misses)


@pytest.mark.parametrize("case", [c for c in CASES if not c["expected"]["forwarded"]],
                         ids=lambda c: c["body"])
def test_replies_in_the_corpus_are_not_forwards(case):
    """A reply quoting someone is not a forward: the internal sender's message goes to review."""
    parsed = parse_message(wrap(case), SETTINGS)
    assert parsed.forwarded is False
    assert parsed.needs_review is True
    assert parsed.prospect.email is None
    assert parsed.submitted_by == "marketing@ourco.example"
