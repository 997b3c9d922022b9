"""Messages per second for ``parse_message`` over a mixed set of typical inquiries.

    python benchmarks/parse.py [--seconds 10] [--rounds 5]

The set: direct plain-text inquiries, HTML-only mail, inline forwards from an
internal forwarder (Gmail, Outlook, Apple Mail styles), a forward as
attachment, and a large message with an attachment; most are 2-8 KiB. The test fixtures
(tests/fixtures/mail, shorter) are measured apart. The
baseline, measured in the same run on the same messages, is what any reader
pays at the least: ``email.message_from_bytes(policy=default)`` plus
``get_body().get_content()``. Target: at least 500 messages/s on one core.
"""

import argparse
import base64
import email
import statistics
import sys
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

from leadflow.config import IntakeConfig
from leadflow.intake.message import parse_message

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mail"
SETTINGS = IntakeConfig(internal_domains=["ourco.example"], default_region="NL")

PARAGRAPH = ("We are a mid-sized company looking at options for planning our projects better. Today we "
             "work with spreadsheets and a shared calendar, which no longer scales now that we have "
             "several teams working across sites. ")
SIGNATURE = ("\n\nKind regards,\n\n{name}\nHead of Operations\n{company}\n+31 20 123 4567\n"
             "www.{domain}\n")


def _message(sender, subject, text, html=None, attachment=None):
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "leads@ourco.example"
    message["Subject"] = subject
    message["Date"] = "Fri, 27 Nov 2026 09:42:05 +0100"
    message["Message-ID"] = f"<{abs(hash((sender, subject, text, html)))}@bench.example>"
    if text is not None:
        message.set_content(text)
        if html:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    if attachment:
        message.add_attachment(attachment, maintype="application", subtype="pdf", filename="brief.pdf")
    return message.as_bytes()


def mixed_set():
    """(kind, raw bytes) pairs: the benchmark's messages."""
    items = []
    for n in range(10):
        body = (f"Hello,\n\n{PARAGRAPH * (3 + n % 6)}\nWe want to buy within three months, for about "
                f"{20 + n} users, budget EUR {10 + n},000." + SIGNATURE.format(
                    name=f"Anna Visser {n}", company=f"Visser Bouw {n} B.V.", domain=f"visser{n}.nl"))
        items.append(("plain", _message(f"Anna Visser <anna@visser{n}.nl>", "Question about planning", body)))
    for n in range(5):
        html = ("<html><head><style>p{margin:0}</style></head><body>"
                + "".join(f"<p>{PARAGRAPH}</p>" for _ in range(4 + n))
                + "<p>Could you send a quote for <b>35 seats</b>? We plan to start in Q1.</p>"
                "<p>Best regards,<br>Tom de Boer<br>IT Manager<br>De Boer Logistiek BV</p></body></html>")
        items.append(("html", _message(f"Tom de Boer <tom@deboer{n}.nl>", "Quote", None, html=html)))
    for n in range(8):
        inner = (f"Hi,\n\n{PARAGRAPH * (2 + n % 4)}\nWe are interested in your project management software "
                 "and want to decide next month." + SIGNATURE.format(
                     name="Sarah Mitchell", company="Tech Innovators Inc.", domain="techinnovators.com"))
        style = n % 3
        if style == 0:
            block = ("---------- Forwarded message ---------\nFrom: Sarah Mitchell <sarah@techinnovators.com>\n"
                     "Date: Thu, 26 Nov 2026 at 16:20\nSubject: Project software\nTo: <marketing@ourco.example>\n\n")
        elif style == 1:
            block = ("________________________________\nFrom: Sarah Mitchell <sarah@techinnovators.com>\n"
                     "Sent: Thursday, November 26, 2026 4:20 PM\nTo: Marketing <marketing@ourco.example>\n"
                     "Subject: Project software\n\n")
        else:
            block = ("Begin forwarded message:\n\nFrom: Sarah Mitchell <sarah@techinnovators.com>\n"
                     "Subject: Project software\nDate: 26 November 2026 at 16:20:00 CET\n"
                     "To: marketing@ourco.example\n\n")
        text = "Hot lead from the fair, please call her.\n\nMaria\n\n" + block + inner
        html = "<div>" + text.replace("\n", "<br>") + "</div>"
        items.append(("forwarded", _message("Maria <marketing@ourco.example>", "Fwd: Project software", text,
                                            html=html)))
    pdf = base64.b64decode(base64.b64encode(bytes(range(256)) * 24))   # 6 KiB "PDF"
    for n in range(2):
        body = f"Hello,\n\n{PARAGRAPH * 12}\nPlease see the attached brief." + SIGNATURE.format(
            name="Jan Smit", company="Smit Installatie BV", domain="smit.nl")
        items.append(("large", _message("Jan Smit <jan@smit.nl>", "Brief", body, attachment=pdf)))
    for path in sorted(FIXTURES.glob("*.eml")):
        items.append(("fixture", path.read_bytes()))
    return items


def baseline(raw):
    message = email.message_from_bytes(raw, policy=policy.default)
    try:
        part = message.get_body(("plain", "html"))
        return part.get_content() if part is not None else ""
    except Exception:
        return ""


def measure(function, messages, seconds):
    """(per wall-clock second, per CPU second) of ``function`` over ``messages``, for about ``seconds``.

    Messages per CPU second is "on one core" even on a busy machine, where the wall clock also
    counts the time other processes hold the core.
    """
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for raw in messages:
            function(raw)
        done += len(messages)
    return done / (time.perf_counter() - start), done / max(time.process_time() - cpu, 1e-9)


def compare(functions, messages, seconds, rounds):
    """Best and median messages per CPU second of each function, measured in alternating rounds.

    Alternating exposes both to the same load; the best round is the least disturbed one
    (as ``timeit`` advises), the median shows the spread.
    """
    for function in functions.values():   # warm up: imports, regular expressions, caches
        for raw in messages:
            function(raw)
    rates = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            rates[name].append(measure(function, messages, seconds / rounds)[1])
    return {name: (max(values), statistics.median(values)) for name, values in rates.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time per function, all rounds together")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurement rounds")
    args = parser.parse_args(argv)
    items = mixed_set()
    # The mixed set is the typical 2-8 KiB inquiries; the (shorter) test fixtures are measured apart.
    messages = [raw for kind, raw in items if kind != "fixture"]
    sizes = sorted(len(raw) for raw in messages)
    kinds = {}
    for kind, raw in items:
        kinds.setdefault(kind, []).append(raw)
    print(f"mixed set: {len(messages)} messages "
          f"({', '.join(f'{k} {len(v)}' for k, v in kinds.items() if k != 'fixture')}); "
          f"size median {sizes[len(sizes) // 2] / 1024:.1f} KiB, max {sizes[-1] / 1024:.1f} KiB")
    ours_function = lambda raw: parse_message(raw, SETTINGS)   # noqa: E731
    result = compare({"baseline": baseline, "parse_message": ours_function}, messages, args.seconds,
                     args.rounds)
    (base, base_median), (ours, ours_median) = result["baseline"], result["parse_message"]
    print(f"messages per CPU second, best (median) of {args.rounds} alternating rounds:")
    print(f"  baseline (message_from_bytes + get_body): {base:7.0f} ({base_median:.0f})")
    print(f"  parse_message, mixed set:                 {ours:7.0f} ({ours_median:.0f})  "
          f"= {ours / base:.2f}x baseline, {1000 / ours:.2f} ms CPU per message")
    for kind, raws in kinds.items():
        best, median = compare({kind: ours_function}, raws, args.seconds / 4, 3)[kind]
        print(f"    {kind:<10} {best:7.0f} ({median:.0f})")
    verdict = "meets" if ours >= 500 else "MISSES"
    print(f"target 500 msg/s on one core: {verdict}")
    return 0 if ours >= 500 else 1


if __name__ == "__main__":
    sys.exit(main())
