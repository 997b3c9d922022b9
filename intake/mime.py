"""Reading a raw message with the stdlib ``email`` package, guarded against real mail.

``read_message(raw)`` never raises. It parses with ``policy.default`` (one
change: header values are fetched raw, see ``RAW_HEADERS``) and reads
everything through guarded helpers, because real mail breaks the happy path:

- header access that raises: ``From: . <user@example.com>`` and
  ``To: unlisted-recipients:;`` raise ``AttributeError`` in the header registry
  of Python 3.11. We read the *raw* header values and decode RFC 2047 words
  ourselves, so no header object is ever built (which also makes parsing about
  ten times cheaper);
- unknown or misspelled charsets (``LookupError``) fall back to UTF-8, then
  Windows-1252, which decodes every byte;
- 8-bit bytes in headers (kept by the parser as surrogate escapes) are decoded
  as UTF-8 or, failing that, Windows-1252;
- a ``multipart/*`` without a usable boundary reads as one text part;
- bare LF line ends are what the parser expects anyway;
- deeply nested multiparts: the walk is iterative and stops at ``MAX_DEPTH``;
  a message with more than ``MAX_BOUNDARIES`` boundaries (the stdlib parser
  slows down quadratically) or one that makes the parser fail is read as
  headers plus raw text;
- overlong header values are cut at ``MAX_HEADER`` characters.

HTML-only mail is turned into text with selectolax (lexbor) before anything
reads it. Attachments are listed by name, type and size; attached messages
(``message/rfc822``, also when sent base64-encoded, and ``.eml`` files) are
kept as parsed messages for the forward reader.
"""

import base64
import email
import email.header
import email.parser
import email.utils
import quopri
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy

from selectolax.lexbor import LexborHTMLParser

MAX_DEPTH = 30          # multipart nesting we follow
MAX_PARTS = 500         # leaf parts we look at
MAX_TEXT = 512 * 1024   # characters of body text we keep
MAX_BOUNDARIES = 200    # multipart boundaries we let the stdlib parser follow
MAX_HEADER = 8000       # characters of one header value we read

# Charsets that mail clients misspell or that Python does not know by that name.
_CHARSET_ALIASES = {
    "utf8": "utf-8", "utf-8-sig": "utf-8", "unicode-1-1-utf-8": "utf-8", "x-unknown": "utf-8",
    "unknown-8bit": "utf-8", "x-user-defined": "cp1252", "ansi_x3.4-1968": "ascii",
    "iso-8859-8-i": "iso-8859-8", "ks_c_5601-1987": "cp949", "x-sjis": "shift_jis",
    "windows-874": "cp874", "gb2312": "gb18030", "gbk": "gb18030", "default": "utf-8",
    "us-ascii": "utf-8", "ascii": "utf-8", "iso-8859-1": "cp1252", "latin1": "cp1252",
    "latin-1": "cp1252", "iso8859-1": "cp1252",
}

def decode_bytes(data, charset=None):
    """Text from bytes in ``charset``; unknown charsets and bad bytes never raise. NUL
    characters are dropped: they are never text, and PostgreSQL refuses them in text."""
    return _decode_bytes(data, charset).replace("\x00", "")


def _decode_bytes(data, charset):
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    name = (charset or "").strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name) or "utf-8"
    for candidate in (name, "utf-8"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError, ValueError, TypeError):
            continue
    return data.decode("cp1252", errors="replace").replace("\ufffd", "")


_ESCAPED_BYTE_RE = re.compile("[\udc80-\udcff]")  # an 8-bit byte kept by surrogateescape


def _unescape(value):
    """A header value the parser kept as str with surrogate-escaped 8-bit bytes -> real text."""
    if not isinstance(value, str):
        try:
            return str(value)
        except Exception:
            return ""
    if not _ESCAPED_BYTE_RE.search(value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), "utf-8")


def decode_header_value(value):
    """The readable text of a raw header value: RFC 2047 words decoded, 8-bit bytes read
    (NUL characters dropped, as in :func:`decode_bytes`)."""
    return _decode_header_value(value).replace("\x00", "")


def _decode_header_value(value):
    try:
        value = _unescape(value)
    except Exception:
        value = str(value).encode("utf-8", "replace").decode("utf-8")
    value = re.sub(r"\r?\n[ \t]+", " ", value).strip()
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
    except Exception:
        return value
    try:
        return str(email.header.make_header(parts)).strip()
    except Exception:
        pass
    # An unknown charset in an encoded word: decode each chunk ourselves.
    try:
        return "".join(decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk
                       for chunk, charset in parts).strip()
    except Exception:
        return value


_BLOCK = "\ue000"   # marks a block element's edge while converting HTML


def html_to_text(html):
    """Readable text from an HTML body: block elements become line breaks.

    Adjacent block edges make one line break (Outlook writes every line as a
    paragraph); an empty block (``<p>&nbsp;</p>``, Gmail's ``<div><br></div>``)
    makes a blank line.
    """
    if not html:
        return ""
    try:
        html = html.replace(_BLOCK, "")
        html = re.sub(r"(?is)<(script|style|head|title)\b.*?</\1\s*>", " ", html)
        html = re.sub(r"[\r\n\t ]+", " ", html)
        html = re.sub(r"(?i)<br\s*/?>", "\n", html)
        html = re.sub(r"(?i)</?(?:p|div|tr|li|h[1-6]|blockquote|table|ul|ol|pre|dt|dd|hr)\b[^>]*>",
                      _BLOCK, html)
        tree = LexborHTMLParser(html)
        root = tree.body or tree.root
        text = root.text(separator="") if root is not None else ""
    except Exception:
        text = re.sub(r"<[^>]+>", " ", html)
    text = re.sub(_BLOCK + "(?:[ \t\xa0]*" + _BLOCK + ")*",
                  lambda m: "\n\n" if "\xa0" in m.group(0) else "\n", text)
    text = text.replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


@dataclass
class Attachment:
    filename: str | None
    content_type: str
    size: int

    def to_dict(self):
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size}


@dataclass
class MailMessage:
    """What leadflow reads in one message; every attribute is safe to use."""

    headers: list = field(default_factory=list)   # [(name, decoded value)] in order
    text: str = ""                                 # the body as plain text (HTML converted)
    html: str | None = None                        # the HTML body, when there was one
    text_from_html: bool = False
    attachments: list = field(default_factory=list)
    attached_messages: list = field(default_factory=list)   # MailMessage of message/rfc822 parts
    content_type: str = "text/plain"
    defects: list = field(default_factory=list)
    header_count: int = 0

    def header(self, name, default=None):
        """The first value of header ``name`` (case-insensitive), decoded; ``default`` if absent."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_all(self, name):
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def has_header(self, name):
        name = name.lower()
        return any(key == name for key, _ in self.headers)

    def addresses(self, name):
        """``[(display name, address)]`` of an address header; never raises."""
        values = self.header_all(name)
        if not values:
            return []
        try:
            pairs = email.utils.getaddresses(values)
        except Exception:
            pairs = []
        result = []
        for display, address in pairs:
            display = (display or "").strip().strip('"').strip()
            address = (address or "").strip()
            if "@" not in address:
                # getaddresses gave up (odd display name): find the address ourselves.
                continue
            result.append((display, address))
        if not result:
            for value in values:
                for match in re.finditer(r"<?([^\s<>\"',;:]+@[^\s<>\"',;:]+\.[^\s<>\"',;:]+)>?", value):
                    before = value[:match.start()].strip().strip("<").strip().strip('"').strip()
                    result.append((before if len(before) < 80 else "", match.group(1)))
        return result

    def first_address(self, name):
        found = self.addresses(name)
        return found[0] if found else (None, None)

    @property
    def date(self):
        """The Date header as a naive UTC datetime, or None."""
        return parse_date(self.header("date"))

    def message_id(self, name="message-id"):
        value = self.header(name)
        if not value:
            return None
        ids = extract_ids(value)
        return ids[0] if ids else value.strip().strip("<>").strip() or None

    @property
    def references(self):
        return extract_ids(" ".join(self.header_all("references")))


def extract_ids(value):
    """Message-ids in a header, without angle brackets."""
    if not value:
        return []
    found = re.findall(r"<([^<>\s]+)>", value)
    if not found:
        found = [token for token in value.split() if "@" in token]
    return found


_DATE_FORMATS = (
    "%b %d %Y %I:%M %p", "%B %d %Y %I:%M:%S %p", "%b %d %Y %H:%M", "%B %d %Y %H:%M:%S", "%d %B %Y %H:%M",
    "%d %b %Y %H:%M:%S", "%B %d %Y %H:%M", "%B %d %Y %I:%M %p", "%d %b %Y %H:%M", "%B %d, %Y %H:%M",
    "%b %d, %Y %H:%M", "%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M", "%d-%m-%Y %H:%M",
    "%A, %B %d, %Y %I:%M %p", "%A, %B %d, %Y %H:%M", "%B %d, %Y %I:%M %p", "%b %d, %Y %I:%M %p",
    "%A, %d %B %Y %H:%M", "%d %B %Y %H:%M:%S")


_LOCAL_MONTHS = {
    "januari": "January", "februari": "February", "maart": "March", "mei": "May", "juni": "June",
    "juli": "July", "augustus": "August", "oktober": "October", "januar": "January",
    "februar": "February", "märz": "March", "mai": "May", "dezember": "December", "janvier": "January",
    "février": "February", "mars": "March", "avril": "April", "juin": "June", "juillet": "July",
    "août": "August", "septembre": "September", "octobre": "October", "novembre": "November",
    "décembre": "December", "enero": "January", "febrero": "February", "marzo": "March",
    "abril": "April", "mayo": "May", "junio": "June", "julio": "July", "agosto": "August",
    "septiembre": "September", "octubre": "October", "noviembre": "November", "diciembre": "December",
    "gennaio": "January", "febbraio": "February", "aprile": "April", "maggio": "May",
    "giugno": "June", "luglio": "July", "settembre": "September", "ottobre": "October",
    "dicembre": "December", "okt": "Oct", "mrt": "Mar", "mär": "Mar", "dez": "Dec", "mei.": "May",
}
_LOCAL_WORDS = re.compile(
    r"\b(?:maandag|dinsdag|woensdag|donderdag|vrijdag|zaterdag|zondag|montag|dienstag|mittwoch|"
    r"donnerstag|freitag|samstag|sonntag|lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|"
    r"lunes|martes|miércoles|jueves|viernes|sábado|domingo|lunedì|martedì|mercoledì|giovedì|"
    r"venerdì|sabato|domenica|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"mon|tue|wed|thu|fri|sat|sun|[a-z]{2}\.|de|del|uhr|h)(?=[\s,.]|$)", re.I)


def _englished(text):
    """A Dutch/German/French/Spanish/Italian date line with English month names, weekdays dropped."""
    words = []
    for word in re.split(r"(\s+)", text):
        key = word.lower().rstrip(".,")
        words.append(_LOCAL_MONTHS.get(key, word))
    text = _LOCAL_WORDS.sub(" ", "".join(words))
    text = re.sub(r"(\d)\.(?=\s)", r"\1", text)   # "3. November" -> "3 November"
    text = re.sub(r"(?<=[^\W\d_])\.(?=\s|$)", "", text)   # "Nov." -> "Nov"
    return " ".join(text.replace(",", " ").split())


def parse_date(value):
    """A Date header value (or a forward's English date line) as naive UTC, or None."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except Exception:
        parsed = None
    if parsed is not None and re.search(r"\d\s*[AP]M\b", value, re.I):
        parsed = None   # parsedate ignores AM/PM: read it below
    if parsed is None:
        # Forward header lines: "Thu, 26 Nov 2026 at 16:20", "Wednesday, October 27, 2021 3:14 PM".
        text = re.sub(r"\s+(?:at|um|à|om)\s+", " ", value.strip(), flags=re.I)
        text = re.sub(r"\s*(?:GMT|UTC|CET|CEST)?\s*[+-]\d{1,4}\s*$|\s+(?:GMT|UTC)$", "", text)
        try:
            if not re.search(r"\d\s*[AP]M\b", text, re.I):
                parsed = email.utils.parsedate_to_datetime(text)
        except Exception:
            parsed = None
        if parsed is None:
            text = _englished(text)
            stripped = re.sub(r"^[A-Za-z]+,?\s+(?=\d)", "", text)
            for candidate in (text, stripped):
                for fmt in _DATE_FORMATS:
                    try:
                        parsed = datetime.strptime(candidate, fmt)
                        break
                    except ValueError:
                        continue
                if parsed is not None:
                    break
    if parsed is None:
        return None
    if parsed is None:
        return None
    try:
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        if not (1970 <= parsed.year <= 2200):
            return None
        return parsed
    except (OverflowError, ValueError):
        return None


def _content_type(part):
    try:
        return (part.get_content_type() or "text/plain").lower()
    except Exception:
        return "application/octet-stream"


def _filename(part):
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        try:
            name = part.get_param("name")
            if isinstance(name, tuple):
                name = email.utils.collapse_rfc2231_value(name)
        except Exception:
            name = None
    return decode_header_value(name) if name else None


def _disposition(part):
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _payload_bytes(part):
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        try:
            raw = part.get_payload()
        except Exception:
            raw = None
        if isinstance(raw, str):
            data = raw.encode("utf-8", "surrogateescape")
    return data if isinstance(data, bytes) else b""


def _charset(part):
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return charset


def _read_headers(msg):
    headers = []
    try:
        items = msg.raw_items() if hasattr(msg, "raw_items") else msg.items()
        for name, value in items:
            try:
                if isinstance(value, str) and len(value) > MAX_HEADER:
                    value = value[:MAX_HEADER]
                headers.append((str(name).strip().lower(), decode_header_value(value)))
            except Exception:
                continue
    except Exception:
        pass
    return headers


def _message_bytes(msg):
    try:
        return msg.as_bytes(policy=policy.compat32)
    except Exception:
        try:
            return msg.as_string().encode("utf-8", "surrogateescape")
        except Exception:
            return b""


def _encoded_message(part, inner):
    """The attached message of a message/rfc822 part sent base64 or quoted-printable encoded.

    RFC 2046 forbids it and the stdlib parser ignores the encoding, but some clients do it:
    the "message" then has no headers and the encoded text as body.
    """
    try:
        encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
        if encoding not in ("base64", "quoted-printable") or inner.keys():
            return inner
        text = inner.get_payload()
        if not isinstance(text, str):
            return inner
        if encoding == "base64":
            data = base64.b64decode(re.sub(r"\s+", "", text), validate=False)
        else:
            data = quopri.decodestring(text.encode("ascii", "replace"))
        return email.message_from_bytes(data, policy=RAW_HEADERS)
    except Exception:
        return inner


def _read(msg, depth=0):
    """Build a MailMessage from a parsed email.message.Message; nothing here may raise."""
    result = MailMessage()
    result.headers = _read_headers(msg)
    result.header_count = len(result.headers)
    result.content_type = _content_type(msg)
    try:
        result.defects = [type(d).__name__ for d in getattr(msg, "defects", [])]
    except Exception:
        result.defects = []

    plain, html = [], []
    stack = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, level = stack.pop()
        seen += 1
        ctype = _content_type(part)
        try:
            payload = part.get_payload()
        except Exception:
            payload = None
        if ctype == "message/rfc822" or (ctype.startswith("message/") and isinstance(payload, list)
                                         and ctype != "message/delivery-status"):
            inner = payload[0] if isinstance(payload, list) and payload else None
            if inner is not None and hasattr(inner, "get_payload") and depth < 5:
                if ctype == "message/rfc822" or ctype == "message/global":
                    inner = _encoded_message(part, inner)
                    size = len(_message_bytes(inner))
                    result.attachments.append(Attachment(_filename(part) or None, ctype, size))
                    result.attached_messages.append(_read(inner, depth + 1))
                continue
        if isinstance(payload, list):
            if level >= MAX_DEPTH:
                result.defects.append("TooDeeplyNested")
                continue
            for child in reversed(payload):
                if hasattr(child, "get_payload"):
                    stack.append((child, level + 1))
            continue
        disposition = _disposition(part)
        filename = _filename(part)
        data = _payload_bytes(part)
        is_text = ctype in ("text/plain", "text/html") or ctype.startswith("multipart/") \
            or (ctype.startswith("text/") and ctype not in ("text/calendar", "text/csv", "text/x-vcard",
                                                           "text/vcard", "text/rfc822-headers"))
        if disposition == "attachment" or (filename and disposition != "inline") or not is_text:
            if ctype not in ("message/delivery-status", "text/rfc822-headers") or filename:
                result.attachments.append(Attachment(filename, ctype, len(data)))
            if filename and filename.lower().endswith(".eml") and data and depth < 5:
                # A forwarded message saved as a file (application/octet-stream, name.eml).
                try:
                    inner = email.message_from_bytes(data, policy=RAW_HEADERS)
                    result.attached_messages.append(_read(inner, depth + 1))
                except Exception:
                    pass
            continue
        text = decode_bytes(data, _charset(part))
        if ctype == "text/html":
            html.append(text)
        else:
            plain.append(text)

    if plain and any(p.strip() for p in plain):
        text = "\n\n".join(p for p in plain if p.strip())
    elif html:
        text = html_to_text("\n".join(html))
        result.text_from_html = True
    else:
        text = ""
    result.html = "\n".join(html) if html else None
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    result.text = text[:MAX_TEXT]
    return result


class _RawHeaderPolicy(policy.EmailPolicy):
    """``policy.default`` whose header values are fetched as the raw strings.

    Everything the parser does stays as in ``policy.default``; only
    ``msg[name]`` returns the raw value instead of a header-registry object. The
    registry raises on real mail (see above) and building its objects costs
    more than the rest of parsing together; we decode values ourselves.
    """

    def header_fetch_parse(self, name, value):
        return value


RAW_HEADERS = _RawHeaderPolicy()


def read_message(raw):
    """A MailMessage from raw bytes; never raises."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    try:
        # The stdlib parser checks every line against every open boundary: thousands of nested
        # multiparts take seconds. Such a message is read as headers plus raw text.
        if raw.count(b"oundary") <= MAX_BOUNDARIES:
            msg = email.message_from_bytes(raw, policy=RAW_HEADERS)
            return _read(msg)
    except RecursionError:
        pass
    except Exception:
        pass
    # The parser gave up (e.g. absurd nesting): keep the headers and the raw text.
    try:
        msg = email.parser.BytesHeaderParser(policy=RAW_HEADERS).parsebytes(raw)
        result = MailMessage(headers=_read_headers(msg))
        result.header_count = len(result.headers)
    except Exception:
        result = MailMessage()
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    result.text = decode_bytes(body or head, "utf-8")[:MAX_TEXT]
    result.defects.append("NotParsed")
    return result


def message_from_object(msg):
    """A MailMessage from an already parsed email.message.Message (e.g. an attachment)."""
    try:
        return _read(msg)
    except Exception:
        return MailMessage()
