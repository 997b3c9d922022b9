"""Web forms: their definitions, the field presets, and reading a stored submission.

A form is declared either in the configuration (``[forms.NAME]``) or in the
database (``leadflow forms add``, the ``Form`` model); both give a
:class:`FormDef`. The configuration wins when a name is in both.

``[forms.NAME]`` keys (all optional except that a form needs a way to
authenticate: ``public_key`` and/or ``secret``)::

    preset     = "plain"            # plain | salesforce | typeform | webflow
    public_key = "pk_..."           # browser posts: the key in the form (or ?key=)
    secret     = "..."              # server-to-server posts: HMAC-SHA256 key
    secret_env = "CONTACT_SECRET"   # ... or the environment variable holding it
    origins    = ["https://www.example.com"]   # allowed browser origins (CORS)
    return_url = "https://www.example.com/thanks"
    mapping    = { "firma" = "company" }       # incoming field -> our field
    required   = ["email"]          # our fields a submission must have
    honeypot   = "_homepage"        # hidden field; filled -> stored as spam

Presets map the field names a form builder sends to ours (``name``,
``first_name``, ``last_name``, ``email``, ``phone``, ``company``, ``title``,
``website``, ``country``, ``subject``, ``message``):

- ``salesforce``: the Web-to-Lead names (``first_name``, ``last_name``,
  ``email``, ``company``, ``description``, ``URL``...); ``00N...`` custom
  fields and ``lead_source`` are kept as custom attributes; ``retURL`` is the
  page to return to (only to an allowed host);
- ``plain``: the usual names and their synonyms (``name``, ``email``,
  ``company``/``organisation``, ``phone``/``telephone``, ``message``...);
- ``typeform``: the ``form_response`` webhook (answers by type, then by the
  question's ref or title); the delivery id is ``event_id``;
- ``webflow``: the ``form_submission`` webhook (``payload.data``); the delivery
  id is the submission id.

Fields no mapping knows are kept, in ``custom``; nothing a prospect typed is
dropped.

A submission is stored raw by the webhook (``store/inbound.py``) as JSON:
``{"form", "preset", "content_type", "payload", "query"}`` where ``payload``
is the JSON body, or the urlencoded/multipart fields as ``{name: value}``.
:func:`parse_inbound` (the pipeline's parser for channel ``form``) reads it
back into a ``ParsedMessage``.
"""

import datetime
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from leadflow.errors import ConfigError

PRESETS = ("plain", "salesforce", "typeform", "webflow")
OUR_FIELDS = ("name", "first_name", "last_name", "email", "phone", "company", "title", "website",
              "country", "subject", "message")
DEFAULT_HONEYPOT = "_homepage"
KEY_FIELD = "_form_key"
IGNORE = "ignore"
FORM_KEYS = ("preset", "public_key", "secret", "secret_env", "origins", "return_url", "mapping",
             "required", "honeypot")

# Synonyms of our fields, compared after folding a name to lower_snake_case.
SYNONYMS = {
    "name": ("name", "full_name", "fullname", "your_name", "naam", "contact_name", "contact_person"),
    "first_name": ("first_name", "firstname", "first", "given_name", "fname", "voornaam", "vorname"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name", "lname", "achternaam",
                  "nachname"),
    "email": ("email", "e_mail", "email_address", "your_email", "mail", "emailadres", "work_email",
              "business_email"),
    "phone": ("phone", "telephone", "phone_number", "tel", "telefoon", "telefon", "mobile",
              "mobile_phone", "your_phone"),
    "company": ("company", "company_name", "organisation", "organization", "organisation_name",
                "organization_name", "bedrijf", "bedrijfsnaam", "firma", "business", "your_company"),
    "title": ("title", "job_title", "jobtitle", "role", "position", "function", "functie"),
    "website": ("website", "url", "web", "homepage_url", "company_website", "site"),
    "country": ("country", "land", "country_name"),
    "subject": ("subject", "topic", "onderwerp", "betreff"),
    "message": ("message", "comments", "comment", "description", "question", "your_message",
                "how_can_we_help", "how_can_we_help_you", "details", "bericht", "vraag",
                "nachricht", "inquiry", "enquiry", "notes", "body", "text"),
}
_SYNONYM_INDEX = {alias: ours for ours, aliases in SYNONYMS.items() for alias in aliases}

# Salesforce Web-to-Lead: https://help.salesforce.com (Web-to-Lead field names).
SALESFORCE_MAPPING = {
    "first_name": "first_name", "last_name": "last_name", "email": "email", "company": "company",
    "phone": "phone", "title": "title", "description": "message", "URL": "website",
    "country": "country", "retURL": IGNORE, "oid": IGNORE, "orgid": IGNORE, "debug": IGNORE,
    "debugEmail": IGNORE, "encoding": IGNORE, "submit": IGNORE, "captcha_settings": IGNORE,
    "g-recaptcha-response": IGNORE,
}
CONTROL_FIELDS = {KEY_FIELD, "retURL", "submit", "g-recaptcha-response", "captcha_settings"}
_CUSTOM_FIELD_RE = re.compile(r"^00N[0-9A-Za-z]{12}(?:[0-9A-Za-z]{3})?$")


# When no synonym matches exactly: words in the question ("What is your work email?").
_KEYWORDS = [
    ({"email", "mail"}, "email"),
    ({"company", "organisation", "organization", "bedrijf", "firma"}, "company"),
    ({"first", "voornaam", "vorname"}, "first_name"),
    ({"last", "surname", "achternaam", "nachname"}, "last_name"),
    ({"name", "naam"}, "name"),
    ({"phone", "telephone", "mobile", "telefoon", "telefon"}, "phone"),
    ({"website", "url"}, "website"),
    ({"country"}, "country"),
    ({"job", "title", "role", "position"}, "title"),
    ({"message", "help", "question", "comments", "comment", "describe", "details"}, "message"),
]


def guess_field(name):
    """Our field for a builder's field name or question, or None."""
    folded = fold_key(name)
    if folded in _SYNONYM_INDEX:
        return _SYNONYM_INDEX[folded]
    words = set(folded.split("_"))
    for keywords, ours in _KEYWORDS:
        if words & keywords:
            if ours in ("first_name", "last_name") and not words & {"name", "naam", "voornaam",
                                                                   "achternaam", "vorname",
                                                                   "nachname", "surname"}:
                continue
            return ours
    return None


def fold_key(name):
    """``"How can we help?"`` -> ``"how_can_we_help"``."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


@dataclass
class FormDef:
    """One web form, from the configuration or the database."""

    name: str
    preset: str = "plain"
    public_key: str | None = None
    secret: str | None = None
    origins: list = field(default_factory=list)
    return_url: str | None = None
    mapping: dict = field(default_factory=dict)
    required: list = field(default_factory=lambda: ["email"])
    honeypot: str = DEFAULT_HONEYPOT
    source: str = "config"  # config | database


class FormError(ConfigError):
    """A ``[forms.NAME]`` table is wrong; names the key."""


# -- definitions ---------------------------------------------------------------

def _normalise_origin(origin):
    from urllib.parse import urlsplit

    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


def form_from_config(name, table, source=None, environ=None):
    """Validate one ``[forms.NAME]`` table into a :class:`FormDef`."""
    environ = os.environ if environ is None else environ
    prefix = f"forms.{name}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise FormError(prefix, "a form name is letters, digits, '-' and '_' (at most 64)", source)
    if not isinstance(table, dict):
        raise FormError(prefix, "must be a table", source)
    unknown = sorted(set(table) - set(FORM_KEYS))
    if unknown:
        raise FormError(f"{prefix}.{unknown[0]}", "unknown key; allowed here: " + ", ".join(FORM_KEYS),
                        source)

    def text(key, default=None):
        value = table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise FormError(f"{prefix}.{key}", f"must be a string, not {value!r}", source)
        return value

    def strings(key, default):
        value = table.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FormError(f"{prefix}.{key}", f"must be a list of strings, not {value!r}", source)
        return list(value)

    preset = text("preset", "plain")
    if preset not in PRESETS:
        raise FormError(f"{prefix}.preset", f"{preset!r} is not allowed; expected one of "
                        + ", ".join(PRESETS), source)
    secret = text("secret")
    secret_env = text("secret_env")
    if secret_env:
        secret = environ.get(secret_env) or None
        if secret is None:
            raise FormError(f"{prefix}.secret_env", f"environment variable {secret_env} is not set",
                            source)
    public_key = text("public_key")
    if not public_key and not secret:
        raise FormError(prefix, "needs public_key (browser posts) and/or secret or secret_env "
                        "(signed server-to-server posts)", source)
    origins = []
    for origin in strings("origins", []):
        normal = _normalise_origin(origin)
        if normal is None:
            raise FormError(f"{prefix}.origins", f"{origin!r} is not an origin such as "
                            "'https://www.example.com'", source)
        origins.append(normal)
    return_url = text("return_url")
    if return_url and not re.match(r"^https?://[^/\s]+", return_url):
        raise FormError(f"{prefix}.return_url", f"{return_url!r} is not an http(s) URL", source)
    mapping = table.get("mapping", {})
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise FormError(f"{prefix}.mapping", "must be a table of incoming name = our field name",
                        source)
    required = strings("required", ["email"])
    bad = [r for r in required if r not in OUR_FIELDS]
    if bad:
        raise FormError(f"{prefix}.required", f"{bad[0]!r} is not one of " + ", ".join(OUR_FIELDS),
                        source)
    honeypot = text("honeypot", DEFAULT_HONEYPOT) or DEFAULT_HONEYPOT
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", honeypot) or guess_field(honeypot) or \
            honeypot in mapping or honeypot in CONTROL_FIELDS:
        raise FormError(f"{prefix}.honeypot", f"{honeypot!r} must be a field name (letters, digits, "
                        "_ . -) that no real field of the form uses, such as '_homepage'", source)
    return FormDef(name=name, preset=preset, public_key=public_key, secret=secret, origins=origins,
                   return_url=return_url, mapping=dict(mapping), required=required,
                   honeypot=honeypot, source="config")


def config_forms(config):
    """Every ``[forms.NAME]`` of the configuration, validated; by name."""
    return {name: form_from_config(name, table, config.source)
            for name, table in (config.forms or {}).items()}


def form_from_row(row):
    return FormDef(name=row.name, preset=row.preset, public_key=row.public_key,
                   secret=row.secret or None, origins=list(row.origins or []),
                   return_url=row.return_url, mapping=dict(row.mapping or {}),
                   required=list(row.required or ["email"]) or [],
                   honeypot=row.honeypot or DEFAULT_HONEYPOT,
                   source="database")


def get_form(name, config):
    """The form called ``name`` (configuration first, then database), or None."""
    forms = config_forms(config)
    if name in forms:
        return forms[name]
    from leadflow.store.models import Form

    row = Form.get_or_none(Form.name == name)
    return form_from_row(row) if row else None


def all_forms(config):
    from leadflow.store.models import Form

    forms = {row.name: form_from_row(row) for row in Form.select().order_by(Form.name)}
    forms.update(config_forms(config))
    return dict(sorted(forms.items()))


class FormCache:
    """Form definitions for the webhook, read from the database at most every ``ttl`` seconds.

    A form added with ``leadflow forms add`` is seen by a running server
    within ``ttl``; an unknown name is looked up again at once (no negative
    cache), so a new form works on its first post.
    """

    def __init__(self, config, ttl=2.0):
        self.config = config
        self.ttl = ttl
        self._static = config_forms(config)
        self._cache = {}
        self._lock = threading.Lock()

    def cached(self, name):
        """The form if known without the database (config, or fresh in the cache), else None."""
        if name in self._static:
            return self._static[name]
        hit = self._cache.get(name)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def get(self, name):
        """Blocking (database): call through ``run_sync``."""
        if name in self._static:
            return self._static[name]
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(name)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        from leadflow.store.models import Form

        row = Form.get_or_none(Form.name == name)
        form = form_from_row(row) if row else None
        with self._lock:
            if form is not None:
                self._cache[name] = (now, form)
            else:
                self._cache.pop(name, None)
        return form


def new_public_key():
    return "pk_" + secrets.token_urlsafe(18)


def new_secret():
    return "whsec_" + secrets.token_urlsafe(32)


def add_form(name, preset="plain", origins=(), return_url=None, mapping=None, required=None,
             honeypot=None):
    """Create a form in the database; return its row (with fresh key and secret)."""
    from leadflow.store.models import Form

    table = {"preset": preset, "public_key": "x", "origins": list(origins),
             "mapping": mapping or {}, "required": required if required is not None else ["email"]}
    if return_url:
        table["return_url"] = return_url
    if honeypot:
        table["honeypot"] = honeypot
    checked = form_from_config(name, table)  # the same validation as a config table
    return Form.create(name=name, preset=checked.preset, public_key=new_public_key(),
                       secret=new_secret(), origins=checked.origins, return_url=checked.return_url,
                       mapping=checked.mapping, required=checked.required,
                       honeypot=checked.honeypot if honeypot else None)


def rotate_form(name, public_key=False):
    """Give the database form ``name`` a new signing secret (and, with ``public_key``, a new
    public key); its row, or None when there is no such form. The old ones stop working
    as soon as running servers reread the form (``FormCache.ttl``)."""
    from leadflow.store.models import Form

    row = Form.get_or_none(Form.name == name)
    if row is None:
        return None
    row.secret = new_secret()
    if public_key:
        row.public_key = new_public_key()
    row.save()
    return row


def remove_form(name):
    """Delete the database form ``name``; whether there was one. Stored posts keep its name."""
    from leadflow.store.models import Form

    return Form.delete().where(Form.name == name).execute() > 0


# -- reading a submission ------------------------------------------------------

def _text(value):
    if value is None:
        return None
    if isinstance(value, list):
        return ", ".join(t for t in (_text(v) for v in value) if t) or None
    if isinstance(value, dict):
        for key in ("label", "value", "text"):
            if key in value:
                return _text(value[key])
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).replace("\x00", "").strip()  # NUL is never text (and PostgreSQL refuses it)
    return text or None


def _typeform_fields(payload):
    """Typeform ``form_response``: answers keyed by ref (or question title), typed answers first."""
    response = payload.get("form_response") or {}
    titles = {f.get("id"): f.get("title") for f in (response.get("definition") or {}).get("fields", [])
              if isinstance(f, dict)}
    fields, typed = {}, {}
    for answer in response.get("answers") or []:
        if not isinstance(answer, dict):
            continue
        kind = answer.get("type")
        question = answer.get("field") or {}
        value = answer.get(kind)
        if kind == "choices":
            value = (value or {}).get("labels")
        elif kind == "choice":
            value = (value or {}).get("label")
        key = titles.get(question.get("id")) or question.get("ref") or question.get("id") or kind
        fields[str(key)] = value
        our = {"email": "email", "phone_number": "phone", "url": "website"}.get(kind)
        if our and our not in typed:
            typed[our] = str(key)
    hidden = response.get("hidden") or {}
    for key, value in hidden.items():
        fields.setdefault(f"hidden.{key}", value)
    return fields, typed


def _webflow_fields(payload):
    inner = payload.get("payload") if isinstance(payload.get("payload"), dict) else payload
    data = inner.get("data") or {}
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}


def submitted_fields(preset, payload):
    """The fields a submission carries, by their own names; plus Typeform's typed answers."""
    if not isinstance(payload, dict):
        return {}, {}
    if preset == "typeform" and "form_response" in payload:
        return _typeform_fields(payload)
    if preset == "webflow" and ("payload" in payload or "data" in payload):
        return _webflow_fields(payload), {}
    return {str(k): v for k, v in payload.items()}, {}


def delivery_id(preset, payload):
    """The id the form service gives a delivery (used as idempotency key), or None."""
    if not isinstance(payload, dict):
        return None
    if preset == "typeform":
        value = payload.get("event_id") or (payload.get("form_response") or {}).get("token")
    elif preset == "webflow":
        inner = payload.get("payload") if isinstance(payload.get("payload"), dict) else payload
        value = inner.get("id") or inner.get("_id")
    else:
        return None
    return str(value)[:200] if value else None


@dataclass
class Submission:
    """A submission read through its form's mapping."""

    values: dict  # our field -> text
    custom: dict  # other fields, by their own names
    honeypot: bool
    return_url: str | None

    def missing(self, required):
        have = dict(self.values)
        if have.get("first_name") or have.get("last_name"):
            have.setdefault("name", "x")
        return [name for name in required if not have.get(name)]


def read_submission(form, payload):
    """Apply the form's preset and mapping to a payload: a :class:`Submission`."""
    fields, typed = submitted_fields(form.preset, payload)
    mapping = dict(SALESFORCE_MAPPING) if form.preset == "salesforce" else {}
    for ours, key in typed.items():
        mapping.setdefault(key, ours)
    mapping.update(form.mapping or {})
    folded_mapping = {fold_key(k): v for k, v in mapping.items()}
    values, custom = {}, {}
    honeypot = bool(_text(fields.get(form.honeypot)))
    return_url = _text(fields.get("retURL")) if isinstance(fields.get("retURL"), str) else None
    for key, raw in fields.items():
        if key == form.honeypot or key in CONTROL_FIELDS:
            continue
        value = _text(raw)
        target = mapping.get(key) or folded_mapping.get(fold_key(key))
        if target is None and form.preset != "salesforce":
            target = guess_field(key)
        if target is None and form.preset == "salesforce" and _CUSTOM_FIELD_RE.match(key):
            target = key  # a Salesforce custom field: kept by its id
        if target == IGNORE:
            continue
        if value is None:
            continue
        if target in OUR_FIELDS and target not in values:
            values[target] = value
        else:
            custom[target if target and target not in OUR_FIELDS else key] = value
    if not values.get("name") and (values.get("first_name") or values.get("last_name")):
        values["name"] = " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v)
    return Submission(values=values, custom=custom, honeypot=honeypot, return_url=return_url)


def stored_document(form, content_type, payload, query=None):
    """The JSON the webhook stores as the raw inquiry."""
    return json.dumps({"form": form.name, "preset": form.preset, "content_type": content_type,
                       "payload": payload, "query": query or {}},
                      ensure_ascii=False, sort_keys=True).encode("utf-8")


def parse_inbound(inbound, config):
    """The pipeline's parser for channel ``form``: a stored submission -> ParsedMessage."""
    from leadflow.intake.message import ParsedMessage, Prospect

    document = json.loads(bytes(inbound.raw).decode("utf-8"))
    name = document.get("form") or inbound.form
    form = None
    try:
        form = get_form(name, config)
    except ConfigError:
        form = None
    if form is None:  # deleted since: read it with the preset it was stored under
        form = FormDef(name=name, preset=document.get("preset") or "plain", required=[])
    submission = read_submission(form, document.get("payload") or {})
    values = submission.values
    message = values.get("message") or ""
    received = inbound.received_at or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    fields = {key: {"value": value, "source": "form", "confidence": 1.0}
              for key, value in values.items() if key in OUR_FIELDS and key not in ("message",)}
    signals = {}
    if message:
        try:
            from leadflow.intake.extract import extract_signals
        except ImportError:  # pragma: no cover - extract.py is written in parallel
            extract_signals = None
        if extract_signals is not None:
            signals = extract_signals(message, received) or {}
    prospect = Prospect(name=values.get("name"), email=values.get("email"), phone=values.get("phone"),
                        company=values.get("company"), title=values.get("title"),
                        website=values.get("website"), country=values.get("country"))
    classification, reason = "lead", None
    if submission.honeypot:
        classification, reason = "spam", f"honeypot field {form.honeypot!r} filled in"
    parsed = ParsedMessage(
        classification=classification, reason=reason, prospect=prospect,
        subject=values.get("subject") or f"Web form {name}", body=message, date=received,
        signals=signals, fields=fields,
    )
    parsed.custom = submission.custom
    return parsed


def verify_key(form, key):
    """Constant-time comparison of a posted public key with the form's."""
    return bool(form.public_key and key) and hmac.compare_digest(
        form.public_key.encode("utf-8"), str(key).encode("utf-8"))
