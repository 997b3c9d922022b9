"""Finding the original message inside a forward.

Our adapter over email-forward-parser (the ``emailforwardparser`` package, a
port of crisp-oss/email-forward-parser): its regular expressions know the
separators and header labels of Gmail, Outlook (desktop, Live/365, "new"),
Apple Mail, Thunderbird, Yahoo, HubSpot, Missive, IONOS... in two dozen
languages. We use its building blocks rather than its top-level call, because
the top-level call

- parses only the text after the *last* separator (a nested forward then yields
  the innermost-but-one message, or a signature block after an Outlook line);
- ignores the body when a subject is given that has no forward prefix, while
  our forwarders often write their own subject ("hot lead from the fair");
- misses a few labels (``Від кого:``, Thunderbird's ``de la:`` are written
  with a stray backtick in its expressions) and MailMate's
  ``Forwarded message:`` block.

Our own fallbacks cover those, plus ``-----Original Message-----`` blocks,
forwards without any separator line (Outlook's HTML forward draws a border
instead: a From line with an address heading a block of header lines), and
forwards as attachments (``message/rfc822``). A reply subject (``Re:``) means
quoted history, not a forward. Nested forwards are followed inwards while the
sender found is internal: the prospect is the first sender outside our own
domains.

Speed: the package tries ~70 separator and ~25 expressions per header field
on the whole text. We skip separators whose fixed words are absent (a
substring test), parse the header fields from the header block only, and skip
To/Cc, which we do not use. Results on the shared corpus are unchanged (206/206).
"""

import re
from dataclasses import dataclass

from emailforwardparser import forward_parser as fp
from emailforwardparser import loop, regexs, utils

from .mime import parse_date

MAX_NESTING = 6
HEAD_CHARS = 1200   # of a forwarded part, where its header block is looked for

# A subject that says "forwarded", in the languages mail clients write (FW:, WG:, TR: ...).
FORWARD_PREFIX = re.compile(
    r"^\s*(?:\[?(?:fwd?|fw|tr|wg|rv|enc|i|pd|vs|vb|vl|videresend|redir\.?|ilt|İlt|doorst|trs|"
    r"fwd?\[\d+\]|weitergeleitet|wtr|rif|przekaz|fwd)\s*:\]?\s*)+", re.IGNORECASE)
REPLY_PREFIX = re.compile(
    r"^\s*(?:re|aw|antw|sv|r|ris|odp|vá|ynt|res|rep|ref|antwort|atb)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)

# Separators the package does not know.
_EXTRA_SEPARATORS = [
    re.compile(r"(?m)^\s*Forwarded message\s*:\s*$"),                       # MailMate
    re.compile(r"(?m)^>?\s*-{3,}\s*Original Message\s*-{3,}\s*$", re.I),    # Outlook desktop
    re.compile(r"(?m)^>?\s*-{3,}\s*(?:Oorspronkelijk bericht|Ursprüngliche Nachricht|"
               r"Message d'origine|Mensaje original|Messaggio originale|Mensagem original|"
               r"Originalmeddelande|Alkuperäinen viesti|Oprindelig meddelelse)\s*-{3,}\s*$", re.I),
    re.compile(r"(?m)^>?\s*-{3,}\s*(?:Forwarded by|Doorgestuurd door|Weitergeleitet von)[^\n]*-{3,}\s*$",
               re.I),
]
# From labels the package misses or writes with a typo.
_EXTRA_FROM = [
    re.compile(r"(?m)^\s*\*?(?:Від кого|De la|de la|Afzender|Absender|Expéditeur|Remitente|"
               r"Envoyé par|Sender)\s?:\*?\s*(.+)$"),
]
_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass
class ForwardedOriginal:
    """The message that was forwarded: who wrote it and what."""

    name: str | None = None
    address: str | None = None
    subject: str | None = None
    date_text: str | None = None
    body: str = ""
    note: str | None = None          # the forwarder's words above the forward
    via: str = "inline"              # inline | attachment
    depth: int = 1
    message_id: str | None = None

    @property
    def date(self):
        return parse_date(self.date_text) if self.date_text else None


def strip_forward_prefix(subject):
    """``Fwd: TR: Hello`` -> ``Hello``."""
    if not subject:
        return subject
    return FORWARD_PREFIX.sub("", subject).strip()


def is_forward_subject(subject):
    return bool(subject and FORWARD_PREFIX.match(subject))


def is_reply_subject(subject):
    return bool(subject and REPLY_PREFIX.match(subject)) and not is_forward_subject(subject)


def _clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = regexs.TRAILING_NON_BREAKING_SPACE.sub("", text)
    return text.replace("\xa0", " ")


# What the package's preprocess_string drops, as one expression: control and format characters
# (categories Cc, Cf, Co, Cs) but line breaks and tabs. Its per-character loop costs ~1 ms a message.
_NON_GRAPHIC = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd"
                          "\u070f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
                          "\ufff9-\ufffb\ud800-\uf8ff\u0890\u0891\u08e2\U000110bd\U000110cd"
                          "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
                          "\U000e0001-\U000e007f\U000f0000-\U0010ffff]")


def _preprocess(text):
    """The package's ``preprocess_string``, fast: non-graphic characters dropped, RFC 2047 words decoded."""
    text = _NON_GRAPHIC.sub("", text)
    if "=?" in text:
        try:
            return utils.preprocess_string(text)
        except Exception:
            return text
    return text


def _dequote(text):
    text = regexs.QUOTE_LINE_BREAK_OPTIONAL.sub("", text)
    text = regexs.QUOTE_LINE_BREAK.sub("", text)
    text = regexs.QUOTE.sub("", text)
    return regexs.FOUR_SPACES.sub("", text)


def _literal(pattern):
    """A piece of text every match of ``pattern`` contains, or "" when we cannot tell.

    Used to skip, with a fast substring test, the separator expressions that cannot match.
    """
    text = pattern.pattern
    if "|" in re.sub(r"\[[^\]]*\]", "", text) or pattern.flags & re.IGNORECASE:
        return ""
    text = re.sub(r"\[[^\]]*\]|\\.|\(\?\w+\)", "\x00", text)
    best = ""
    for match in re.finditer(r"[^\x00()?*+{}.^$]+", text):
        token = match.group(0)
        if text[match.end():match.end() + 1] in ("?", "*", "{"):
            token = token[:-1]
        token = token.strip()
        if len(token) > len(best):
            best = token
    return best if len(best) >= 4 else ""


# Outlook's "On ..., "Name" <a@b> wrote:" lines in 20 languages and its line of underscores.
_KNOWN_LITERALS = ("napsal(a)", "skrev følgende den", "följande", "skrev", "schrieb", "wrote", "escribió",
                   "a écrit", "kirjoitti", "ezt írta", "ha scritto", "geschreven", "napisał", "escreveu",
                   "написал", "napísal", "tarihinde şunu yazdı", "_" * 32)
_SEPARATOR_LITERALS = [
    (pattern, _literal(pattern) or next((k for k in _KNOWN_LITERALS if k in pattern.pattern.replace("\\", "")
                                         or (k.startswith("_") and "_{32}" in pattern.pattern)), ""))
    for pattern in regexs.SEPARATOR]


def _candidates(patterns, body):
    """The separator expressions of ``patterns`` that may match ``body``."""
    if patterns is not regexs.SEPARATOR:
        return patterns
    return [pattern for pattern, literal in _SEPARATOR_LITERALS if not literal or literal in body]


def _split(patterns, body):
    """(note, separator, rest) at the earliest separator of ``patterns``, or None."""
    patterns = _candidates(patterns, body)
    if not patterns:
        return None
    parts = loop.loop_regexes_split(patterns, body, True)
    if len(parts) > 2:
        return parts[0], parts[1], "".join(parts[2:])
    return None


def _from_fallback(text):
    """(name, address) from a From line the package does not know, or from the first address."""
    for pattern in _EXTRA_FROM:
        match = pattern.search(text)
        if match:
            box = fp.parse_mailbox([re.compile(r"(?m)^(.+)$")], match.group(1).strip())
            if box and (box[0].address or box[0].name):
                return box[0].name, box[0].address
    head = "\n".join(text.split("\n")[:8])
    match = re.search(r"(?m)^\s*(?:\"?([^\"<>\n:]{2,60}?)\"?\s*)?[<\[](?:mailto:)?(" + _ADDRESS.pattern
                      + r")[>\]]", head)
    if match:
        return (match.group(1) or "").strip(), match.group(2)
    return None


_HEADER_LINE = re.compile(r"^\s*\*?[^\W\d][\w .'`-]{0,30}?\*?\s?[:：]\*?(?:\s|$)")


def _body_after_headers(text):
    """The text after the header block (From:/Date:/To:... lines) at the top of ``text``."""
    lines = text.split("\n")
    index, seen_header = 0, False
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            if seen_header:
                break
        elif _HEADER_LINE.match(line):
            seen_header = True
        elif seen_header and (line[:1] in " \t" or "@" in line or line.rstrip().endswith((",", ";"))):
            pass   # a wrapped recipient list
        else:
            break
        index += 1
    return "\n".join(lines[index:]).strip()


def _header_block_end(text):
    """Offset just past the header block at the top of ``text`` (quote marks allowed), at most HEAD_CHARS."""
    offset, seen_header = 0, False
    for line in text[:HEAD_CHARS].split("\n"):
        bare = line.lstrip("> \t")
        if not bare.strip():
            if seen_header:
                return offset
        elif _HEADER_LINE.match(bare):
            seen_header = True
        elif not seen_header and offset > 300:
            return offset
        offset += len(line) + 1
    return min(offset, HEAD_CHARS)


def _original_metadata(text, body):
    """The package's ``parse_original_email`` without To and Cc, which we do not use and which cost
    the most (their lax fallbacks rewrite the text several times)."""
    text = regexs.BYTE_ORDER_MARK.sub("", text)
    text = _dequote(text)
    return fp.OriginalMetadata(
        body=fp.parse_original_body(text),
        from_=fp.parse_original_from(text, body),
        subject=fp.parse_original_subject(text),
        date=fp.parse_original_date(text, body),
    )


def _header_block(body, strict):
    """(note, "", rest) at the first From line of ``body``, or None."""
    first = None
    for pattern in regexs.ORIGINAL_FROM + _EXTRA_FROM:
        match = pattern.search(body)
        if match and (first is None or match.start() < first.start()):
            first = match
    if first is None:
        return None
    start = body.rfind("\n", 0, first.start()) + 1
    rest = body[start:]
    if strict:
        following = rest.split("\n")[1:6]
        if "@" not in first.group(0) or \
                sum(1 for line in following if _HEADER_LINE.match(line.lstrip("> *"))) < 2:
            return None
    return body[:start], "", rest


def parse_inline(text, subject=None):
    """The forwarded original in a text body, or None when the text holds no forward.

    A reply subject (``Re:``) without a forward prefix means quoted history, not a forward.
    """
    if not text or not text.strip():
        return None
    if subject and is_reply_subject(subject):
        return None
    body = _clean(_preprocess(_clean(text))).strip()
    fwd_subject = None
    if subject:
        try:
            fwd_subject = fp.parse_subject(_preprocess(subject)) or None
        except Exception:
            fwd_subject = None
    found = _split(regexs.SEPARATOR, body)
    if found is None:
        found = _split(_EXTRA_SEPARATORS, body)
    if found is None:
        # No separator line: an Outlook HTML forward (its separator is a border) or a pasted header
        # block. Accepted with a forward subject, or when a From line with an address heads a block
        # of at least two more header lines.
        found = _header_block(body, strict=not fwd_subject)
    if found is None:
        return None
    note, separator, email_text = found
    email_text = email_text.strip()
    if not email_text:
        return None
    # The header block is at the top: the package's two dozen expressions per field need not scan
    # the whole quoted history (the full body is taken below).
    head = email_text[:_header_block_end(email_text) + 300]
    try:
        meta = _original_metadata(head, note[-600:] + separator + head)
    except Exception:
        meta = fp.OriginalMetadata()
    name, address = meta.from_.name or None, meta.from_.address or None
    plain = _dequote(email_text)
    if not address and separator:
        # Outlook 2019 writes the sender into the separator: 'On ..., "Name" <a@b> wrote:'.
        for pattern in regexs.SEPARATOR_WITH_INFORMATION:
            match = pattern.search(separator.strip())
            if match and match.groupdict().get("from_address"):
                name = (match.groupdict().get("from_name") or "").strip() or name
                address = match.group("from_address").strip()
                break
    if not address:
        fallback = _from_fallback(plain)
        if fallback:
            name, address = fallback[0] or name, fallback[1] or None
    if address and not _ADDRESS.fullmatch(address):
        match = _ADDRESS.search(address)
        address = match.group(0) if match else None
    if name:
        name = name.strip().strip('"').strip("'").strip() or None
        if name and address and name.lower() == address.lower():
            name = None
    body_text = meta.body or ""
    # The package cuts the body at the next "Subject:" line, which loses a nested forward.
    full = _body_after_headers(plain)
    # It also reads only the head, and leaves header lines after the Subject line (MailMate
    # writes Date: last) in the body: take the full text after the header block instead.
    if body_text and full and (full.startswith(body_text[:60])
                               or _body_after_headers(body_text)[:60] == full[:60]):
        body_text = full
    original_subject = meta.subject or None
    if original_subject is None and fwd_subject:
        original_subject = fwd_subject.strip() or None
    if not (name or address):
        return None
    return ForwardedOriginal(
        name=name, address=address, subject=original_subject,
        date_text=meta.date or None, body=body_text,
        note=note.strip() or None,
    )


def _from_attachment(outer, inner):
    name, address = inner.first_address("from")
    if not address:
        return None
    return ForwardedOriginal(
        name=name or None, address=address, subject=inner.header("subject"),
        date_text=inner.header("date"), body=inner.text, note=outer.text.strip() or None,
        via="attachment",
        message_id=inner.message_id())


def find_original(mail, subject, is_internal):
    """The original behind a forward in ``mail`` (a MailMessage), or None.

    ``is_internal(address)`` says whether an address is one of ours; nested forwards are
    followed inwards while the sender found is internal.
    """
    original = None
    for inner in mail.attached_messages:
        original = _from_attachment(mail, inner)
        if original is not None:
            attached = inner
            break
    if original is None:
        original = parse_inline(mail.text, subject)
        attached = None
    if original is None:
        return None
    note = original.note
    depth = 1
    while original.address and is_internal(original.address) and depth < MAX_NESTING:
        if attached is not None:
            deeper = find_original(attached, attached.header("subject"), is_internal)
        else:
            deeper = parse_inline(original.body, original.subject)
        if deeper is None:
            break
        depth += 1
        original, attached = deeper, None
    original.note = note
    original.depth = depth
    return original
