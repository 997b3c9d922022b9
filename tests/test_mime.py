"""read_message reads what real mail does without raising: odd headers, charsets, structure."""

import base64

import pytest

from leadflow.intake.mime import decode_bytes, html_to_text, parse_date, read_message


@pytest.mark.parametrize("raw, header, addresses", [
    (b"From: . <user@example.com>\n\nhi", "from", [(".", "user@example.com")]),
    (b"To: unlisted-recipients:;\n\nhi", "to", []),
    (b"From: \"Doe, John\" <john@acme.example>\n\nhi", "from", [("Doe, John", "john@acme.example")]),
    (b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.fr>\n\nhi", "from", [("Renée", "renee@example.fr")]),
    (b"From: Jos\xc3\xa9 <jose@example.es>\n\nhi", "from", [("José", "jose@example.es")]),
    (b"From: M\xfcller <m@example.de>\n\nhi", "from", [("Müller", "m@example.de")]),
])
def test_address_headers_never_raise(raw, header, addresses):
    """Headers the stdlib registry chokes on (3.11) and 8-bit headers are still read."""
    assert read_message(raw).addresses(header) == addresses


@pytest.mark.parametrize("charset, body, text", [
    ("bogus", "hallo wereld".encode(), "hallo wereld"),
    ("utf8x", "Grüße".encode(), "Grüße"),
    ("iso-8859-1", "Grüße".encode("latin-1"), "Grüße"),
    ("utf-8", "Gr\xfc\xdfe".encode("latin-1"), "Grüße"),
    ("windows-1252", "“quoted” €5".encode("cp1252"), "“quoted” €5"),
])
def test_unknown_and_wrong_charsets_fall_back(charset, body, text):
    """Unknown, misspelled and wrong charsets decode instead of raising LookupError."""
    raw = b"From: a@b.example\nContent-Type: text/plain; charset=" + charset.encode() + b"\n\n" + body
    assert read_message(raw).text.strip() == text


def test_html_only_mail_is_turned_into_text():
    """HTML-only mail reads as text, line breaks kept and scripts dropped."""
    raw = (b"From: a@b.example\nContent-Type: text/html; charset=utf-8\n\n<html><head><style>p{}</style>"
           b"</head><body><p>Hello&nbsp;there,</p><div>we need <b>40</b> seats<br>soon</div>"
           b"<script>alert(1)</script></body></html>")
    mail = read_message(raw)
    assert mail.text == "Hello there,\nwe need 40 seats\nsoon"
    assert mail.text_from_html


def test_plain_text_is_preferred_over_html():
    """In multipart/alternative the plain part is the text."""
    raw = (b"From: a@b.example\nContent-Type: multipart/alternative; boundary=x\n\n--x\n"
           b"Content-Type: text/plain\n\nplain words\n--x\nContent-Type: text/html\n\n<p>html words</p>\n--x--\n")
    assert read_message(raw).text.strip() == "plain words"


def test_attachments_are_listed_with_name_type_and_size():
    """Attachments give filename, content type and decoded size; the body stays text."""
    raw = (b"From: a@b.example\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\n"
           b"see attached\n--x\nContent-Type: application/pdf; name=\"offer.pdf\"\n"
           b"Content-Disposition: attachment; filename=\"offer.pdf\"\nContent-Transfer-Encoding: base64\n\n"
           b"aGVsbG8gd29ybGQ=\n--x--\n")
    mail = read_message(raw)
    assert [a.to_dict() for a in mail.attachments] == [
        {"filename": "offer.pdf", "content_type": "application/pdf", "size": 11}]
    assert mail.text.strip() == "see attached"


@pytest.mark.parametrize("raw, text", [
    (b"From: a@b.example\nContent-Type: multipart/mixed\n\nno boundary at all", "no boundary at all"),
    (b"From: a@b.example\r\nSubject: crlf\r\n\r\nline one\r\nline two\r\n", "line one\nline two"),
    (b"From: a@b.example\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\n"
     b"unterminated part", "unterminated part"),
])
def test_broken_structure_still_gives_text(raw, text):
    """A missing boundary, CRLF/bare LF and an unterminated multipart still give the text."""
    assert read_message(raw).text.strip() == text


def test_deeply_nested_multiparts_do_not_recurse_forever():
    """Thousands of nested multiparts end in a result, not a RecursionError."""
    nested = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(3000))
    raw = b"From: a@b.example\nContent-Type: multipart/mixed; boundary=b0\n\n" + nested + b"--b3000\n\nend\n"
    mail = read_message(raw)
    assert mail.header("from") == "a@b.example"
    assert "NotParsed" in mail.defects


@pytest.mark.parametrize("value, expected", [
    ("Fri, 27 Nov 2026 09:42:05 +0100", "2026-11-27T08:42:05"),
    ("Thu, 26 Nov 2026 at 16:20", "2026-11-26T16:20:00"),
    ("Wednesday, October 27, 2021 3:14 PM", "2021-10-27T15:14:00"),
    ("Dienstag, 3. November 2026 17:48", "2026-11-03T17:48:00"),
    ("mercredi 4 novembre 2026 16:21", "2026-11-04T16:21:00"),
    ("dinsdag 3 november 2026 11:32", "2026-11-03T11:32:00"),
    ("not a date", None),
    ("Fri, 27 Nov 99999 09:42:05 +0100", None),
])
def test_dates_become_naive_utc(value, expected):
    """Date headers and forward date lines in several languages become naive UTC."""
    parsed = parse_date(value)
    assert (parsed.isoformat() if parsed else None) == expected


def test_decode_bytes_never_raises():
    """Any bytes in any named charset give text."""
    assert decode_bytes(b"\xff\xfe\x00abc", "no-such-charset")
    assert decode_bytes(None) == ""


def test_html_to_text_of_nothing():
    """Empty HTML is empty text."""
    assert html_to_text("") == ""


@pytest.mark.parametrize("html, text", [
    ("<p>a</p>\n<p>b</p>", "a\nb"),
    ("<p class=MsoNormal>a<o:p></o:p></p>\n<p class=MsoNormal><o:p>&nbsp;</o:p></p>\n<p class=MsoNormal>b</p>",
     "a\n\nb"),
    ("<div>a</div><div><br></div><div>b</div>", "a\n\nb"),
    ("<blockquote><p>quoted</p></blockquote><p>after</p>", "quoted\nafter"),
])
def test_html_lines_and_blank_lines(html, text):
    """Outlook's paragraph-per-line and Gmail's div-per-line HTML give lines; empty blocks blank lines."""
    assert html_to_text(html) == text


INNER = b"From: Dee <dee@client.example>\nSubject: Q\n\nCan you help?\n"


@pytest.mark.parametrize("part", [
    b"Content-Type: message/rfc822\n\n" + INNER,
    b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + base64.encodebytes(INNER),
    b"Content-Type: application/octet-stream; name=\"q.eml\"\nContent-Disposition: attachment; filename=\"q.eml\"\n"
    b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(INNER),
], ids=["rfc822", "rfc822-base64", "eml-file"])
def test_attached_messages_are_read(part):
    """A forwarded message attached as message/rfc822 (even encoded) or as an .eml file is read."""
    raw = (b"From: a@ourco.example\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\n"
           b"see attached\n--x\n" + part + b"\n--x--\n")
    mail = read_message(raw)
    assert [(m.first_address("from"), m.header("subject"), m.text.strip()) for m in mail.attached_messages] == [
        (("Dee", "dee@client.example"), "Q", "Can you help?")]
    assert mail.text.strip() == "see attached"
