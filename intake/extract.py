"""What a message tells about the person who wrote it, and what they want.

Three kinds of reading, usable on mail bodies and on web-form text alike:

- ``split_body(text)`` -> ``(own words, signature, quoted history)``;
- ``extract_fields(text, signature, ...)`` -> ``{field: {"value", "source", "confidence"}}``
  for name, email, phone (E.164), company, title, website and country, from
  ``Key: value`` lines, the signature block, the headers and the email's
  company domain;
- ``extract_signals(text, reference_date)`` -> the buying signals scoring uses:
  budget (amount + currency), timeline (an expected date relative to the
  message date), size (users, seats, employees) and the product asked about.

Sources are ``header``, ``forward`` (the header block of a forwarded message),
``signature``, ``body``, ``form`` and ``domain``; confidence is a float in
[0, 1]: explicit labels and headers score high, guesses from layout and
domains low.
"""

import calendar
import functools
import re
from datetime import date, datetime, timedelta, timezone

import phonenumbers

from .normalise import company_domain, display_name_from_email
from .normalise import normalise_email as _normalise_email_uncached
from .normalise import normalise_phone, phone_country

# email-validator is thorough and therefore not cheap; the same few addresses recur in every message.
normalise_email = functools.lru_cache(maxsize=8192)(_normalise_email_uncached)

# ---------------------------------------------------------------------------
# Splitting a body into own words, signature and quoted history.

_QUOTE_HEADERS = [
    re.compile(r"^\s*On\b.{0,200}\bwrote\s*:\s*$", re.I | re.S),
    re.compile(r"^\s*Op\b.{0,200}\b(?:schreef|geschreven)\b.{0,120}:\s*$", re.I | re.S),
    re.compile(r"^\s*Am\b.{0,200}\bschrieb\b.{0,120}:\s*$", re.I | re.S),
    re.compile(r"^\s*Le\b.{0,200}\ba écrit\s*:\s*$", re.I | re.S),
    re.compile(r"^\s*El\b.{0,200}\bescribió\s*:\s*$", re.I | re.S),
    re.compile(r"^\s*Il giorno\b.{0,200}\bha scritto\s*:\s*$", re.I | re.S),
    re.compile(r"^\s*Em\b.{0,200}\bescreveu\s*:\s*$", re.I | re.S),
    re.compile(r"^\s*>?\s*-{2,}\s*(?:Original Message|Oorspronkelijk bericht|Ursprüngliche Nachricht|"
               r"Message d'origine|Mensaje original|Forwarded message|Doorgestuurd bericht|"
               r"Weitergeleitete Nachricht|Message transféré|Mensaje reenviado)\s*-{2,}\s*$", re.I),
    re.compile(r"^\s*_{20,}\s*$"),
    re.compile(r"^\s*(?:Begin forwarded message|Begin doorgestuurd bericht|"
               r"Anfang der weitergeleiteten Nachricht|Début du message réexpédié|"
               r"Début du message transféré|Inicio del mensaje reenviado)\s*:\s*$", re.I),
]
# One pattern for all of them (a line is tested once, not once per pattern): every one is
# anchored at the start; they differ only in re.S, which a single stripped line never needs.
_QUOTE_HEADER = re.compile("|".join(f"(?:{p.pattern})" for p in _QUOTE_HEADERS), re.I | re.S)
_HEADER_BLOCK = re.compile(r"^\s*\*?(?:From|Van|Von|De|Da|Från|Fra|Od)\s*:\*?\s.*@", re.I)

CLOSINGS = re.compile(
    r"^\s*(?:(?:with\s+)?(?:best|kind|warm|many|warmest|kindest)\s+(?:regards|wishes)|regards|"
    r"best|cheers|thanks(?: (?:again|in advance))?|thank you(?: in advance)?|many thanks|sincerely|"
    r"yours(?: sincerely| truly)?|all the best|"
    r"met vriendelijke groet(?:en)?|vriendelijke groet(?:en)?|hartelijke groet(?:en)?|"
    r"(?:met )?(?:vriendelijke |hartelijke )?groet(?:en|jes)?|mvg|gr\.?|alvast bedankt|bvd|"
    r"mit freundlichen grüßen|mit freundlichen gruessen|freundliche grüße|viele grüße|beste grüße|"
    r"liebe grüße|herzliche grüße|mfg|lg|vg|gruß|grüße|"
    r"cordialement|bien cordialement|bien à vous|salutations(?: distinguées)?|meilleures salutations|"
    r"amicalement|merci(?: d'avance| beaucoup)?|"
    r"saludos(?: cordiales)?|un saludo|atentamente|gracias|cordiali saluti|distinti saluti|saluti|"
    r"atenciosamente|cumprimentos|abraços|med vänlig hälsning|vänliga hälsningar|med venlig hilsen|"
    r"med vennlig hilsen|ystävällisin terveisin)\s*[,.!]?\s*$", re.I)
_SENT_FROM = re.compile(r"^\s*(?:sent from my|verzonden (?:vanaf|met) mijn|von meinem|envoyé de mon|"
                        r"enviado desde mi|get outlook for)\b", re.I)


def _cut_quoted(lines):
    """Index of the first line of quoted history, or len(lines)."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(">"):
            rest = [l for l in lines[index:] if l.strip()]
            if rest and sum(1 for l in rest if l.lstrip().startswith(">")) >= len(rest) * 0.6:
                return index
        if _QUOTE_HEADER.match(stripped):
            return index
        # "On Mon, 1 Jan 2024 at 10:00, Sarah <s@x.com>\nwrote:" across two lines
        if index + 1 < len(lines) and re.match(r"^\s*(?:On|Op|Am|Le|El)\b.*@", stripped) and \
                re.match(r"^\s*(?:wrote|schreef|schrieb|a écrit|escribió)\b.*:\s*$", lines[index + 1]):
            return index
        if _HEADER_BLOCK.match(stripped) and index + 1 < len(lines) and \
                re.match(r"^\s*\*?[\w .-]{2,20}:\*?\s", lines[index + 1]):
            return index
    return len(lines)


def _signature_start(lines):
    """Index where the signature block starts, or None."""
    for index, line in enumerate(lines):
        if line.rstrip() in ("--", "-- ", "—", "__", "___"):
            return index
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if CLOSINGS.match(line) or _SENT_FROM.match(line):
            # A closing line near the end: what follows is short, sign-off material.
            tail = [l for l in lines[index + 1:] if l.strip()]
            if len(tail) <= 12:
                return index
    # No closing words: a last paragraph of short lines carrying contact details, or a bare name.
    blocks = "\n".join(lines).rstrip().rsplit("\n\n", 1)
    if len(blocks) == 2 and blocks[0].strip():
        last = [l for l in blocks[1].split("\n") if l.strip()]
        if 1 <= len(last) <= 2 and all(re.fullmatch(r"[A-ZÀ-ÖØ-Þ][\w'’.-]*(?: [A-ZÀ-ÖØ-Þ][\w'’.-]*){0,2}",
                                                     l.strip()) for l in last):
            return len(blocks[0].split("\n")) + 1
        if 1 < len(last) <= 8 and all(len(l) < 70 for l in last) and \
                any(re.search(r"@|\+?\d[\d ()./-]{7,}|www\.|https?://", l) for l in last):
            return len(blocks[0].split("\n")) + 1
    return None


def split_body(text):
    """``(own words, signature, quoted history)`` of a message body."""
    if not text:
        return "", "", ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    cut = _cut_quoted(lines)
    own_lines, quoted = lines[:cut], "\n".join(lines[cut:]).strip()
    start = _signature_start(own_lines)
    if start is None:
        signature = ""
    else:
        signature = "\n".join(own_lines[start:]).strip()
        own_lines = own_lines[:start]
    own = re.sub(r"\n{3,}", "\n\n", "\n".join(l.rstrip() for l in own_lines)).strip()
    return own, signature, quoted


# ---------------------------------------------------------------------------
# Fields.

_KEY_LABELS = {
    "name": r"(?:full\s*)?name|naam|volledige naam|vor-? und nachname|nom(?: complet)?|nombre(?: completo)?|"
            r"nome|contact(?:\s*person)?|contactpersoon|ansprechpartner|your name|uw naam|ihr name",
    "first_name": r"first\s*name|given name|voornaam|vorname|prénom|nombre de pila",
    "last_name": r"last\s*name|surname|family name|achternaam|nachname|nom de famille|apellidos?",
    "email": r"e-?mail(?:\s*address|adres|adresse)?|mail|courriel|correo(?: electrónico)?|your email",
    "phone": r"phone(?:\s*number)?|tel(?:ephone|efoon|efon|éphone|éfono)?\.?|mobile|mobiel|mob\.?|gsm|"
             r"handy|telefoonnummer|telefonnummer|cell|t|m",
    "company": r"company(?:\s*name)?|organi[sz]ation|organisatie|bedrijf(?:snaam)?|firma|unternehmen|"
               r"firmenname|société|entreprise|empresa|azienda|employer",
    "title": r"(?:job\s*)?title|function|functie|position|role|job|funktion|position|poste|fonction|"
             r"cargo|puesto|rol",
    "website": r"web\s*site|website|web|url|homepage|site(?: web)?|webseite|internet",
    "country": r"country|land|pays|país|paese|staat",
    "message": r"message|bericht|nachricht|comments?|opmerking(?:en)?|vraag|question|mensaje|"
               r"your message|uw bericht|ihre nachricht|inquiry|enquiry",
}
_KEY_LINE = re.compile(r"^\s*[*\-•]?\s*(?P<label>[^:\n]{1,30}?)\s*\*?\s*[:：]\s*\*?\s*(?P<value>.*?)\s*$")
_KEY_MATCHERS = [(field, re.compile(r"^(?:%s)$" % pattern, re.I)) for field, pattern in _KEY_LABELS.items()]

TITLE_WORDS = re.compile(
    r"\b(?:manager|director|head of|head|chief|ceo|cto|cfo|coo|cio|cmo|vp|vice president|president|"
    r"founder|co-founder|owner|partner|consultant|engineer|developer|architect|officer|lead|"
    r"specialist|coordinator|administrator|analyst|buyer|purchaser|procurement|assistant|"
    r"directeur|direc?trice|eigenaar|oprichter|bedrijfsleider|inkoper|teamleider|adviseur|"
    r"medewerker|beheerder|afdelingshoofd|geschäftsführer(?:in)?|leiter(?:in)?|inhaber(?:in)?|"
    r"einkäufer(?:in)?|berater(?:in)?|responsable|gérant(?:e)?|chef de|directeur général|"
    r"gerente|jefe|director(?:a)?|responsabile|amministratore)\b", re.I)
LEGAL_FORMS = re.compile(
    r"\b(?:inc|incorporated|ltd|limited|llc|llp|plc|corp|corporation|co|gmbh|ag|kg|bv|b\.v|nv|n\.v|"
    r"vof|sa|sas|sarl|srl|spa|s\.p\.a|ab|oy|aps|pty|bvba|sl|s\.l|ug)\b\.?", re.I)
_URL = re.compile(r"\b(?:https?://[^\s<>\"')\]]+|www\.[^\s<>\"')\]]+)", re.I)
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_COUNTRY_NAMES = {
    "netherlands": "NL", "the netherlands": "NL", "nederland": "NL", "holland": "NL",
    "belgium": "BE", "belgië": "BE", "belgie": "BE", "belgique": "BE", "germany": "DE",
    "deutschland": "DE", "allemagne": "DE", "duitsland": "DE", "france": "FR", "frankrijk": "FR",
    "frankreich": "FR", "united kingdom": "GB", "uk": "GB", "england": "GB", "great britain": "GB",
    "united states": "US", "usa": "US", "u.s.a.": "US", "us": "US", "spain": "ES", "españa": "ES",
    "italy": "IT", "italia": "IT", "austria": "AT", "österreich": "AT", "switzerland": "CH",
    "schweiz": "CH", "suisse": "CH", "luxembourg": "LU", "ireland": "IE", "denmark": "DK",
    "sweden": "SE", "norway": "NO", "finland": "FI", "poland": "PL", "portugal": "PT",
    "canada": "CA", "australia": "AU",
}


def _field(value, source, confidence):
    return {"value": value, "source": source, "confidence": round(confidence, 2)}


def _key_field(line):
    """(field, value) of a ``Key: value`` line with a label we know, else None."""
    match = _KEY_LINE.match(line)
    if not match:
        return None
    label = match.group("label").strip().strip("*").strip()
    if len(label) > 30:
        return None
    for field, matcher in _KEY_MATCHERS:
        if matcher.match(label):
            return field, match.group("value").strip().strip("*").strip()
    return None


def key_values(text):
    """``{field: value}`` from ``Key: value`` lines (first occurrence wins).

    A message field goes on over the following lines up to the next known label
    (form notifications put the visitor's message last, over several lines).
    """
    found = {}
    lines = (text or "").split("\n")[:400]
    for index, line in enumerate(lines):
        known = _key_field(line)
        if not known:
            continue
        field, value = known
        if field == "message" and "message" not in found:
            more = []
            for following in lines[index + 1:]:
                if _key_field(following):
                    break
                more.append(following)
            value = "\n".join([value, *more]).strip()
        if value:
            found.setdefault(field, value)
    if "name" not in found and ("first_name" in found or "last_name" in found):
        found["name"] = " ".join(v for v in (found.get("first_name"), found.get("last_name")) if v)
    return found


def clean_name(name):
    """A display name as people write it: ``"Doe, John"`` -> ``John Doe``; None if it is no name."""
    if not name:
        return None
    name = " ".join(str(name).replace('"', " ").split()).strip(" '.,;:-")
    if not name or "@" in name or len(name) > 80 or not re.search(r"[^\W\d_]", name):
        return None
    if name.isupper() or name.islower():
        name = " ".join(part.capitalize() for part in name.split())
    return name


def _looks_like_name(line):
    words = line.split()
    return 1 < len(words) <= 4 and all(re.fullmatch(r"[A-ZÀ-ÖØ-Þ][\w'’.-]*|van|de|der|den|von|da|di|le|la|du|"
                                                    r"ten|ter|het|'t", w) for w in words) \
        and not TITLE_WORDS.search(line) and not LEGAL_FORMS.search(line)


def parse_signature(signature, region="NL"):
    """``{name, title, company, phone, website}`` read from a signature block (values may be missing)."""
    result = {}
    lines = [l.strip() for l in (signature or "").split("\n") if l.strip()]
    lines = [l for l in lines if not CLOSINGS.match(l) and not _SENT_FROM.match(l)
             and l not in ("--", "-- ")]
    for index, line in enumerate(lines[:12]):
        plain = re.sub(r"^[\w. ]{1,12}:\s*", "", line) if re.match(r"^(?:t|m|tel|phone|mob|mobile|e|w|web|"
                                                                     r"email|e-mail|telefoon|telefon)\s*[.:]",
                                                                     line, re.I) else line
        if "name" not in result and index <= 1 and _looks_like_name(line):
            result["name"] = line
            continue
        if _URL.search(line) and "website" not in result:
            result["website"] = _URL.search(line).group(0).rstrip(".,;")
        if _EMAIL.search(line) or re.search(r"\d{5,}|\d[\d ()./-]{7,}\d", line):
            continue
        parts = [p.strip() for p in re.split(r"\s+[|•·–-]\s+|\s+at\s+|\s+bij\s+|\s+bei\s+|\s+chez\s+|,\s+",
                                             plain) if p.strip()]
        for part in parts:
            if "title" not in result and TITLE_WORDS.search(part) and len(part) <= 60 and \
                    not LEGAL_FORMS.search(part):
                result["title"] = part
            elif "company" not in result and LEGAL_FORMS.search(part) and len(part) <= 60 and \
                    not _URL.search(part):
                result["company"] = part
        if "company" not in result and "title" in result and len(parts) == 1 and \
                result["title"] != parts[0] and len(line) <= 50 and not _URL.search(line) and \
                index > 0 and re.match(r"^[A-Z0-9]", line) and not _looks_like_name(line):
            result["company"] = line
    phone = first_phone(signature, region)
    if phone:
        result["phone"] = phone
    return result


_PHONE_CANDIDATE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d \t().\-/]{5,20}\d(?![\w@])")


def first_phone(text, region="NL"):
    """The first valid phone number in ``text``, in E.164, or None.

    Digit runs that look like a phone number are checked with phonenumbers; its own
    PhoneNumberMatcher finds the same numbers in mail text but costs several times more.
    """
    if not text:
        return None
    for match in _PHONE_CANDIDATE.finditer(text[:20000]):
        candidate = match.group(0).strip()
        if re.fullmatch(r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2}", candidate):
            continue   # a date
        try:
            number = phonenumbers.parse(candidate, region or "NL")
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _country(value):
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[A-Za-z]{2}", value):
        return value.upper()
    return _COUNTRY_NAMES.get(value.lower().strip(". "))


def _country_of_domain(address):
    """``NL`` for an address at a ``.nl`` domain; None for generic and vanity suffixes."""
    if not address or "@" not in address:
        return None
    suffix = address.rsplit(".", 1)[-1].upper()
    if len(suffix) != 2 or suffix in ("IO", "AI", "CO", "ME", "TV", "CC", "EU", "FM", "LY", "TO", "GG"):
        return None
    return "GB" if suffix == "UK" else suffix


def extract_fields(text, signature=None, *, name=None, email=None, region="NL", internal_domains=(),
                   source="body", sender_source="header"):
    """``{field: {"value", "source", "confidence"}}`` for the person who wrote ``text``.

    ``name``/``email`` are what the headers (or a forward's header block, with
    ``sender_source="forward"``) say about the sender; ``source`` names where
    ``Key: value`` lines come from (``body``, or ``form`` for web forms).
    """
    fields = {}
    keys = key_values(text)
    sig = parse_signature(signature, region) if signature else {}

    def put(field, value, src, confidence):
        """Set ``field`` unless set; ``value`` may be a callable, called only when needed."""
        if field in fields:
            return
        if callable(value):
            value = value()
        if value:
            fields[field] = _field(value, src, confidence)

    # email
    put("email", lambda: normalise_email(email) if email else None, sender_source, 1.0)
    put("email", lambda: normalise_email(keys.get("email")) if keys.get("email") else None, source, 0.9)
    address = fields.get("email", {}).get("value")
    # name
    put("name", lambda: clean_name(name), sender_source, 0.9)
    put("name", lambda: clean_name(keys.get("name")), source, 0.9)
    put("name", lambda: clean_name(sig.get("name")), "signature", 0.7)
    put("name", lambda: display_name_from_email(address), "domain", 0.4)
    # phone
    put("phone", lambda: normalise_phone(keys.get("phone"), region), source, 0.9)
    put("phone", sig.get("phone"), "signature", 0.8)
    put("phone", lambda: first_phone(text, region), "body", 0.5)
    # company
    domain = company_domain(address, internal_domains) if address else None
    put("company", (keys.get("company") or "").strip(), source, 0.9)
    put("company", sig.get("company"), "signature", 0.7)
    put("company", domain, "domain", 0.4)
    # title
    put("title", keys.get("title"), source, 0.9)
    put("title", sig.get("title"), "signature", 0.7)
    # website
    put("website", (keys.get("website") or "").strip(), source, 0.9)
    put("website", sig.get("website"), "signature", 0.7)
    put("website", domain, "domain", 0.4)
    # country
    put("country", lambda: _country(keys.get("country")), source, 0.9)
    phone = fields.get("phone", {}).get("value")
    phone_source = fields.get("phone", {}).get("source")
    put("country", lambda: phone_country(phone) if phone else None, phone_source, 0.6)
    put("country", lambda: _country_of_domain(address), "domain", 0.3)
    return fields


# ---------------------------------------------------------------------------
# Buying signals.

_NUMBER_WORDS = {
    # English
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "couple of": 2, "few": 3,
    # Dutch
    "een": 1, "één": 1, "twee": 2, "drie": 3, "vier": 4, "vijf": 5, "zes": 6, "zeven": 7, "acht": 8,
    "negen": 9, "tien": 10, "elf": 11, "twaalf": 12, "paar": 2,
    # German
    "ein": 1, "einem": 1, "einer": 1, "eins": 1, "zwei": 2, "drei": 3, "vier ": 4, "fünf": 5, "sechs": 6,
    "sieben": 7, "neun": 9, "zehn": 10, "zwölf": 12,
    # French / Spanish
    "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "huit": 8, "dix": 10, "douze": 12,
    "uno": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6, "doce": 12,
}
_NUM = r"(?P<n>\d{1,3}|%s)" % "|".join(sorted((re.escape(k.strip()) for k in _NUMBER_WORDS), key=len,
                                             reverse=True))
_UNITS = {
    "day": "days", "days": "days", "dag": "days", "dagen": "days", "tag": "days", "tagen": "days",
    "tage": "days", "jour": "days", "jours": "days", "día": "days", "días": "days",
    "week": "weeks", "weeks": "weeks", "weken": "weeks", "woche": "weeks", "wochen": "weeks",
    "semaine": "weeks", "semaines": "weeks", "semana": "weeks", "semanas": "weeks",
    "month": "months", "months": "months", "maand": "months", "maanden": "months", "monat": "months",
    "monaten": "months", "monate": "months", "mois": "months", "mes": "months", "meses": "months",
    "year": "years", "years": "years", "jaar": "years", "jaren": "years", "jahr": "years",
    "jahren": "years", "jahre": "years", "an": "years", "ans": "years", "année": "years",
    "années": "years", "año": "years", "años": "years",
}
_UNIT = r"(?P<unit>%s)" % "|".join(sorted(_UNITS, key=len, reverse=True))
_WITHIN = (r"(?:within(?: the next)?|in(?: the next)?|over the next|the next|next|"
           r"binnen(?: nu en)?|binnen de komende|de komende|in de komende|over|"
           r"innerhalb(?: von| der nächsten)?|in den nächsten|in|"
           r"d'ici|dans(?: les)?|sous|en(?: los próximos| las próximas)?|dentro de(?: los próximos)?)")
class _Pattern:
    """A case-insensitive pattern, run on lower-cased text without re.I when it can (5x faster).

    ``text.lower()`` keeps every position when it keeps the length (it never shortens), so the
    spans of a match on the lower-cased text are the spans in the original text.
    """

    def __init__(self, pattern, triggers=()):
        self.triggers = triggers    # one of these must occur in the lower-cased text for any match
        assert not re.search(r"\\[SWDBAZ]", pattern), "upper-case escapes change meaning when lowered"
        self.folded = re.compile(pattern, re.I)
        self.lower = re.compile(pattern.lower().replace("(?p<", "(?P<").replace("(?p=", "(?P="))

    def _possible(self, text, lower):
        if not self.triggers:
            return True
        lower = text.lower() if lower is None else lower
        return any(trigger in lower for trigger in self.triggers)

    def finditer(self, text, lower=None):
        if not self._possible(text, lower):
            return iter(())
        if lower is not None and len(lower) == len(text):
            return self.lower.finditer(lower)
        return self.folded.finditer(text)

    def search(self, text, lower=None):
        if not self._possible(text, lower):
            return None
        if lower is not None and len(lower) == len(text):
            return self.lower.search(lower)
        return self.folded.search(text)


_RELATIVE = _Pattern(r"\b%s\s+%s\s+%s\b" % (_WITHIN, _NUM, _UNIT), triggers=(
    "day", "dag", "tag", "jour", "día", "dia", "week", "wek", "woch", "semain", "seman", "month", "maand",
    "monat", "mois", "mes", "year", "jaar", "jahr", " an", "año", "anno"))
_NEXT = _Pattern(
    r"\b(?P<text>next (?P<en>week|month|quarter|year)|"
    r"volgende? (?P<nl>week|maand|kwartaal|jaar)|"
    r"nächste[nms]? (?P<de>woche|monat|quartal|jahr)|"
    r"(?:la semaine|le mois|le trimestre|l'année) prochaine?|"
    r"(?:el|la) (?:próximo|próxima) (?P<es>semana|mes|trimestre|año))\b",
    triggers=("next", "volgend", "nächst", "prochain", "próxim"))
_FR_NEXT = re.compile(
    r"\b(?:la (?P<w>semaine)|le (?P<m>mois)|le (?P<q>trimestre)|l'(?P<y>année)) prochaine?\b", re.I)
_QUARTER = _Pattern(
    r"\b(?:Q(?P<q>[1-4])|(?P<qw>first|second|third|fourth|1st|2nd|3rd|4th|eerste|tweede|derde|vierde) "
    r"(?:quarter|kwartaal))(?:\s*(?:of\s*)?[''`]?(?P<y>(?:20)?\d{2}))?\b",
    triggers=("q1", "q2", "q3", "q4", "quarter", "kwartaal"))
_ASAP = _Pattern(
    r"\b(?:asap|as soon as possible|urgently|zo snel mogelijk|zsm|z\.s\.m\.|so schnell wie möglich|"
    r"schnellstmöglich|dès que possible|au plus vite|lo antes posible|cuanto antes|immediately|"
    r"right away|per direct|sofort)\b",
    triggers=("asap", "soon", "urgent", "snel", "zsm", "z.s.m", "schnell", "dès que", "plus vite",
              "antes posible", "cuanto antes", "immediately", "right away", "per direct", "sofort"))
_END_OF_YEAR = _Pattern(
    r"\b(?:(?:before |by )?(?:the )?end of (?:the |this )?year|eind dit jaar|voor het einde van het jaar|"
    r"ende des jahres|bis jahresende|fin d'année|d'ici la fin de l'année|finales de año|this year|"
    r"dit jaar|dieses jahr|cette année|este año)\b",
    triggers=("year", "jaar", "jahr", "année", "año"))
_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7, "august": 8,
    "september": 9, "october": 10, "november": 11, "december": 12,
    "januari": 1, "februari": 2, "maart": 3, "mei": 5, "juni": 6, "juli": 7, "augustus": 8,
    "oktober": 10, "januar": 1, "februar": 2, "märz": 3, "dezember": 12,
    "janvier": 1, "février": 2, "mars": 3, "avril": 4, "juin": 6, "juillet": 7, "août": 8,
    "septembre": 9, "octobre": 10, "novembre": 11, "décembre": 12,
}
_BY_MONTH = _Pattern(
    r"\b(?:by|in|before|until|voor|in|vóór|bis|im|avant|en|d'ici) (?P<m>%s)\b(?:\s+(?P<y>20\d\d))?"
    % "|".join(_MONTHS), triggers=tuple(_MONTHS))

_CURRENCY_SIGNS = {"€": "EUR", "$": "USD", "£": "GBP", "eur": "EUR", "euro": "EUR", "euros": "EUR",
                   "usd": "USD", "dollar": "USD", "dollars": "USD", "gbp": "GBP", "pound": "GBP",
                   "pounds": "GBP", "chf": "CHF", "k€": "EUR"}
_AMOUNT = (r"(?P<amount>\d{1,3}(?:[.,' ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d+)?)\s*"
           r"(?P<mult>k|m|mln|million|miljoen|millionen|millions|thousand|duizend|tausend|mille)?\b")
_BUDGET = _Pattern(
    r"(?:(?P<sign1>€|\$|£|eur\b|usd\b|gbp\b|chf\b)\s*%s|"
    r"%s\s*(?P<sign2>€|\$|£|(?:eur|euros?|usd|dollars?|gbp|pounds?|chf)\b))"
    % (_AMOUNT, _AMOUNT.replace("amount", "amount2").replace("mult", "mult2")),
    triggers=("€", "$", "£", "eur", "usd", "gbp", "chf", "dollar", "pound"))
_BUDGET_BARE = _Pattern(
    r"\b(?:budget|begroting|presupuesto)\w*\s*(?:(?:is|of|van|von|de|du|is about|is around|around|about|"
    r"ca\.?|circa|ongeveer|ungefähr|environ|approx\.?|approximately|roughly|max\.?|maximum|tot|up to|"
    r":|=|-)\s*)*" + _AMOUNT,
    triggers=("budget", "begroting", "presupuesto"))
_BUDGET_WORD = re.compile(r"budget|begroting|budgets?|presupuesto|prix|price|spend|investering|investment|"
                          r"kosten|cost", re.I)
_SIZE = _Pattern(
    r"\b(?P<n>\d{1,3}(?:[.,]\d{3})*|\d+)\s*\+?\s*(?:(?:active|named|concurrent|full[- ]time|fte)\s+)?"
    r"(?P<unit>users?|seats?|licen[cs]es?|employees?|staff|people|persons|members|workers|fte|"
    r"gebruikers|medewerkers|werknemers|mensen|personen|licenties|"
    r"benutzer|nutzer|mitarbeiter(?:innen)?|lizenzen|personen|"
    r"utilisateurs|employés|salariés|personnes|licences|"
    r"usuarios|empleados|personas|licencias)\b",
    triggers=("user", "seat", "licen", "employ", "staff", "people", "person", "member", "worker", "fte",
              "gebruiker", "medewerker", "werknemer", "mensen", "benutzer", "nutzer", "mitarbeiter", "lizenz",
              "utilisateur", "salarié", "usuario", "empleado"))
_TEAM = _Pattern(
    r"\b(?:team|teams|company|office|organisation|organization|bedrijf|firma) of (?P<n>\d{1,6})\b",
    triggers=(" of ",))
_SIZE_UNITS = {"user": "users", "gebruiker": "users", "benutzer": "users", "nutzer": "users",
               "utilisateur": "users", "usuario": "users", "seat": "seats", "licence": "seats",
               "license": "seats", "licentie": "seats", "lizenz": "seats", "licencia": "seats"}
_PRODUCT = _Pattern(
    r"\b(?:interested in|interest in|looking for|in need of|need(?:s)?|require|requirements for|"
    r"information (?:about|on)|info (?:about|on)|quote for|quotation for|a demo of|demo of|"
    r"pricing (?:for|of)|offer for|proposal for|want to buy|would like to buy|plan to buy|evaluating|"
    r"interesse in|geïnteresseerd in|op zoek naar|offerte voor|informatie over|"
    r"interessiert an|interesse an|suchen|angebot für|informationen über|"
    r"intéressés? par|à la recherche d[e']|cherchons|devis pour|"
    r"interesados? en|buscamos|presupuesto para)\s+(?P<what>[^.,;:!?\n]{3,80})",
    triggers=("interest", "interess", "looking for", "need", "require", "information", "info ", "quot",
              "demo", "pricing", "offer", "proposal", "buy", "evaluating", "geïnteresseerd", "op zoek",
              "offerte", "informatie", "suchen", "angebot", "informationen", "intéress", "recherche",
              "cherchons", "devis", "interesad", "buscamos", "presupuesto"))
_PRODUCT_STOP = re.compile(r"\s+(?:for|to|with|because|since|and|so|as|that|which|within|in|by|before|asap|"
                           r"voor|om|met|omdat|en|binnen|für|mit|weil|und|innerhalb|pour|avec|parce|et|dans|"
                           r"para|con|porque|y|en)\b.*$", re.I)
_PRODUCT_LEAD = re.compile(r"^(?:your|a|an|the|some|more|new|uw|jullie|een|de|het|nieuwe|ihre?n?|eine?n?|"
                           r"die|der|das|neue|votre|vos|un|une|le|la|les|des|du|su|sus|una?|el|los|las|"
                           r"buying|purchasing|kopen|to buy)\s+", re.I)


_BUY_WORDS = re.compile(
    r"\b(?:buy|purchase|order|sign|decide|decision|implement|roll out|go live|start|launch|deploy|"
    r"kopen|aanschaffen|bestellen|beslissen|invoeren|starten|kaufen|bestellen|anschaffen|entscheiden|"
    r"einführen|acheter|commander|décider|déployer|comprar|contratar|implementar|acquistare)", re.I)


def _add_months(day, months):
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _reference(reference_date):
    if isinstance(reference_date, datetime):
        return reference_date.date()
    if isinstance(reference_date, date):
        return reference_date
    return datetime.now(timezone.utc).date()


def _timeline(text, today, lower=None):
    """(expected date, matched text) of the earliest timeline statement, or None."""
    found = []
    for match in _RELATIVE.finditer(text, lower):
        word = match.group("n").lower()
        count = int(word) if word.isdigit() else _NUMBER_WORDS.get(word)
        unit = _UNITS[match.group("unit").lower()]
        if not count or count > 120:
            continue
        if unit == "days":
            when = today + timedelta(days=count)
        elif unit == "weeks":
            when = today + timedelta(weeks=count)
        elif unit == "months":
            when = _add_months(today, count)
        else:
            when = _add_months(today, 12 * count)
        found.append((match.start(), when, text[match.start():match.end()]))
    for match in _NEXT.finditer(text, lower):
        word = next((match.group(g) for g in ("en", "nl", "de", "es") if match.group(g)), "").lower()
        french = _FR_NEXT.search(text[match.start():match.end()])
        if french:
            word = "week" if french.group("w") else "month" if french.group("m") else \
                "quarter" if french.group("q") else "year"
        if word in ("week", "woche", "semana"):
            when = today + timedelta(weeks=1)
        elif word in ("month", "maand", "monat", "mes"):
            when = _add_months(today, 1)
        elif word in ("quarter", "kwartaal", "quartal", "trimestre"):
            when = _add_months(today, 3)
        else:
            when = _add_months(today, 12)
        found.append((match.start(), when, text[match.start():match.end()]))
    for match in _QUARTER.finditer(text, lower):
        quarter = match.group("q")
        if not quarter:
            quarter = {"first": 1, "1st": 1, "eerste": 1, "second": 2, "2nd": 2, "tweede": 2, "third": 3,
                       "3rd": 3, "derde": 3, "fourth": 4, "4th": 4, "vierde": 4}[match.group("qw").lower()]
        quarter = int(quarter)
        year = match.group("y")
        year = (2000 + int(year) if len(year) == 2 else int(year)) if year else today.year
        end_month = quarter * 3
        when = date(year, end_month, calendar.monthrange(year, end_month)[1])
        if not match.group("y") and when < today:
            when = date(year + 1, end_month, calendar.monthrange(year + 1, end_month)[1])
        found.append((match.start(), when, text[match.start():match.end()]))
    for match in _BY_MONTH.finditer(text, lower):
        month = _MONTHS[match.group("m").lower()]
        phrase = text[match.start():match.end()].lower()
        if match.group("m").lower() == "may" and not phrase.startswith(("by", "before", "until")):
            continue  # "in may" is too often the verb
        year = int(match.group("y")) if match.group("y") else today.year
        when = date(year, month, calendar.monthrange(year, month)[1])
        if not match.group("y") and when < today:
            when = date(year + 1, month, calendar.monthrange(year + 1, month)[1])
        found.append((match.start(), when, text[match.start():match.end()]))
    for match in _END_OF_YEAR.finditer(text, lower):
        found.append((match.start(), date(today.year, 12, 31), text[match.start():match.end()]))
    for match in _ASAP.finditer(text, lower):
        found.append((match.start(), today + timedelta(days=14), text[match.start():match.end()]))
    if not found:
        return None
    # A statement next to a buying verb ("we want to buy within three months") wins over
    # one that merely comes first ("growing to 60 next year").
    found.sort(key=lambda item: (0 if _BUY_WORDS.search(text[max(0, item[0] - 40): item[0] + 20]) else 1,
                                 item[0]))
    _, when, phrase = found[0]
    return when, phrase


def _amount(text, mult):
    text = text.replace("'", "").replace(" ", "")
    if re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+", text):
        value = float(re.sub(r"[.,]", "", text))
    elif re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+[.,]\d{1,2}", text):
        value = float(re.sub(r"[.,]", "", text[:-3]) + "." + text[-2:]) if text[-3] in ".," else \
            float(re.sub(r"[.,]", "", text))
    else:
        value = float(text.replace(",", "."))
    mult = (mult or "").lower()
    if mult in ("k", "thousand", "duizend", "tausend", "mille"):
        value *= 1000
    elif mult in ("m", "mln", "million", "miljoen", "millionen", "millions"):
        value *= 1_000_000
    return int(value) if value == int(value) else round(value, 2)


def _budget(text, lower=None):
    best = None
    for match in _BUDGET.finditer(text, lower):
        sign = (match.group("sign1") or match.group("sign2") or "").lower()
        amount_text = match.group("amount") or match.group("amount2")
        mult = match.group("mult") or match.group("mult2")
        try:
            amount = _amount(amount_text, mult)
        except ValueError:
            continue
        if amount <= 0:
            continue
        window = text[max(0, match.start() - 60): match.end() + 20]
        near = bool(_BUDGET_WORD.search(window))
        candidate = (0 if near else 1, match.start(),
                     {"amount": amount, "currency": _CURRENCY_SIGNS.get(sign, sign.upper()),
                      "text": text[match.start():match.end()].strip()})
        if best is None or candidate[:2] < best[:2]:
            best = candidate
        if near:
            break  # matches come in order: no later one can beat the first near a budget word
    if best:
        return best[2]
    match = _BUDGET_BARE.search(text, lower)   # "budget of 50k": an amount without a currency
    if match:
        try:
            amount = _amount(match.group("amount"), match.group("mult"))
        except ValueError:
            return None
        if amount > 0:
            return {"amount": amount, "currency": None, "text": text[match.start():match.end()].strip()}
    return None


def _size(text, lower=None):
    match = _SIZE.search(text, lower)
    if match:
        value = int(re.sub(r"[.,]", "", match.group("n")))
        unit = match.group("unit").lower()
        stem = re.sub(r"s$", "", unit)
        if stem in _SIZE_UNITS or unit in _SIZE_UNITS:
            kind = _SIZE_UNITS.get(stem, _SIZE_UNITS.get(unit))
        elif unit.startswith(("licen", "lizenz")):
            kind = "seats"
        else:
            kind = "employees"
        if value > 0:
            return {"value": value, "unit": kind, "text": text[match.start():match.end()].strip()}
    match = _TEAM.search(text, lower)
    if match and int(match.group("n")) > 0:
        return {"value": int(match.group("n")), "unit": "employees", "text": text[match.start():match.end()]}
    return None


def _products(text, lower=None):
    products = []
    for match in _PRODUCT.finditer(text, lower):
        what = _PRODUCT_STOP.sub("", text[match.start("what"):match.end("what")].strip())
        for _ in range(3):
            what = _PRODUCT_LEAD.sub("", what).strip()
        what = what.strip(" \"'()")
        words = what.split()
        if not words or len(words) > 8 or what.lower() in ("it", "this", "that", "you", "us", "more",
                                                             "information", "help", "info"):
            continue
        if re.fullmatch(r"(?:to|a|an|the|some|any|your|our|my|we|i|it|this|that)", words[0], re.I):
            continue
        if what.lower() not in (p.lower() for p in products):
            products.append(what)
    return products[:5]


def extract_signals(text, reference_date=None):
    """Buying signals in ``text``: ``budget``, ``timeline``, ``size``, ``product`` (only those found).

    ``reference_date`` (the message date) anchors relative timelines; the result is
    JSON-serialisable.
    """
    signals = {}
    if not text:
        return signals
    text = text[:50000]
    today = _reference(reference_date)
    lower = text.lower()
    budget = _budget(text, lower)
    if budget:
        signals["budget"] = budget
    timeline = _timeline(text, today, lower)
    if timeline:
        when, phrase = timeline
        signals["timeline"] = {"date": when.isoformat(), "days": (when - today).days, "text": phrase.strip()}
    size = _size(text, lower)
    if size:
        signals["size"] = size
    products = _products(text, lower)
    if products:
        signals["product"] = products
    return signals
