"""Configuration: one TOML file, every key with a default.

Where the file is: ``--config PATH``, else ``$LEADFLOW_CONFIG``, else
``./leadflow.toml``; with none of them leadflow runs on its defaults (SQLite in
the current folder, SMTP on 127.0.0.1:8025, HTTP on 127.0.0.1:8080).
``$LEADFLOW_DATABASE_URL`` overrides ``database.url``.

The schema is the dataclasses below. Each field's ``metadata`` holds its help
text and, where the type alone is not enough, a ``check`` that returns an error
text or ``None``. An unknown key or a bad value stops with one message naming
the key and what is allowed (:class:`ConfigError`).

To add a key: add a field with a default to its section's dataclass. Nothing
else needs to change; ``leadflow config show`` and the starter file list it.
"""

import dataclasses
import os
import re
import tomllib
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

from leadflow.errors import ConfigError

DEFAULT_PATH = "leadflow.toml"
ENV_CONFIG = "LEADFLOW_CONFIG"
ENV_DATABASE_URL = "LEADFLOW_DATABASE_URL"
SECRET_MASK = "********"


def _opt(default, help, check=None, secret=False):
    """A config field: a default, a help line, an optional check."""
    meta = {"help": help, "check": check, "secret": secret}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls, help):
    return field(default_factory=cls, metadata={"help": help, "check": None, "secret": False})


# -- checks: each returns None when the value is fine, else what is allowed --

def _port(value):
    return None if 0 <= value <= 65535 else "a port number from 0 to 65535"


def _positive(value):
    return None if value > 0 else "a number greater than 0"


def _non_negative(value):
    return None if value >= 0 else "a number of 0 or more"


def _one_of(*allowed):
    def check(value):
        return None if value in allowed else "one of " + ", ".join(repr(a) for a in allowed)
    return check


def _hour(value):
    return None if 0 <= value <= 23 else "an hour from 0 to 23"


def _database_url(value):
    if value.startswith(("sqlite:///", "postgresql://", "postgres://")) or value == "sqlite://:memory:":
        return None
    return "a URL starting with sqlite:/// or postgresql://"


def _region(value):
    import phonenumbers

    if value.upper() in phonenumbers.SUPPORTED_REGIONS:
        return None
    return "a two-letter region code such as 'NL', 'DE' or 'US'"


def _domains(value):
    bad = [d for d in value if not re.fullmatch(r"@?[a-z0-9.-]+\.[a-z]{2,}", d.lower())]
    return f"domain names such as 'example.com' (not {bad[0]!r})" if bad else None


def _addresses(value):
    bad = [a for a in value if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a)]
    return f"email addresses (not {bad[0]!r})" if bad else None


def _recipients(value):
    bad = [a for a in value if not re.fullmatch(r"([^@\s]+)?@[^@\s]+\.[^@\s]+", a)]
    return f"addresses or '@domain' entries (not {bad[0]!r})" if bad else None


def _timezone(value):
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "an IANA time zone such as 'Europe/Amsterdam'"
    return None


# -- the schema --

@dataclass
class DatabaseConfig:
    url: str = _opt("sqlite:///leadflow.db",
                    "sqlite:///PATH (relative to the working folder) or postgresql://user@host/db",
                    _database_url, secret=True)
    pool_size: int = _opt(10, "PostgreSQL: connections kept open per process", _positive)


@dataclass
class IntakeConfig:
    internal_domains: list[str] = _opt(
        [], "senders at these domains forward inquiries; they are never the prospect", _domains)
    forwarders: list[str] = _opt(
        [], "more addresses whose mail is forwarded inquiries (e.g. a partner's)", _addresses)
    default_region: str = _opt("NL", "region for phone numbers written without a country code", _region)
    max_message_size: int = _opt(10 * 1024 * 1024, "largest accepted inquiry in bytes", _positive)


@dataclass
class SmtpConfig:
    host: str = _opt("127.0.0.1", "address the SMTP listener binds to")
    port: int = _opt(8025, "SMTP port (0 picks a free one)", _port)
    hostname: str = _opt("leadflow.localhost", "name used in the greeting (no DNS lookup)")
    accept: list[str] = _opt(
        [], "recipients accepted: full addresses or '@domain'; any other gets 550 (no open relay); "
        "empty: only addresses @hostname", _recipients)
    max_message_size: int = _opt(0, "largest message in bytes (552 above it); 0: intake.max_message_size",
                                 _non_negative)
    max_recipients: int = _opt(100, "recipients per message (452 above it)", _positive)
    max_commands: int = _opt(1000, "commands in one session (421 and closed above it)", _positive)
    idle_timeout: float = _opt(60.0, "seconds a session may stay silent before it is closed", _positive)
    max_connections_per_client: int = _opt(20, "open sessions per client address (421 above it)",
                                           _positive)
    tls_cert: str = _opt("", "PEM certificate file: offer STARTTLS (empty: no STARTTLS)")
    tls_key: str = _opt("", "PEM private key file of tls_cert")
    require_tls: bool = _opt(False, "refuse MAIL before STARTTLS (needs tls_cert)")
    auth_users_file: str = _opt("", "file of 'user:password' lines: offer AUTH PLAIN/LOGIN "
                                "(after STARTTLS) to partners that submit mail; empty: no AUTH")
    require_auth: bool = _opt(False, "refuse mail from clients that did not log in (needs auth_users_file)")
    acknowledge_forwarder: bool = _opt(False, "mail the internal forwarder 'lead #N created: ...' "
                                       "(never the prospect, never an auto-reply)")


@dataclass
class HttpConfig:
    host: str = _opt("127.0.0.1", "address the web-form webhook binds to")
    port: int = _opt(8080, "HTTP port (0 picks a free one)", _port)
    public_url: str = _opt("", "URL at which browsers reach leadflow, for form snippets")
    max_body_size: int = _opt(1024 * 1024, "largest form post in bytes (413 above it)", _positive)
    rate_limit_per_minute: int = _opt(30, "form posts per client address per minute (429 above it)",
                                      _positive)
    max_timestamp_skew: int = _opt(300, "seconds a signed post's timestamp may differ from now",
                                   _positive)
    trust_forwarded_for: bool = _opt(False, "take the client address from X-Forwarded-For "
                                     "(only behind your own reverse proxy)")


@dataclass
class WorkerConfig:
    batch_size: int = _opt(50, "inbound rows a worker claims at once", _positive)
    sweep_seconds: float = _opt(5.0, "how often the worker looks for unclaimed rows", _positive)
    claim_timeout_seconds: float = _opt(
        300.0, "a row claimed longer ago than this by a worker that died is claimed again", _positive)
    max_attempts: int = _opt(5, "attempts before a failing row waits for `inbox retry`", _positive)
    parse_processes: int = _opt(
        1, "processes that parse claimed mail ahead of the pipeline, on another CPU "
           "(0: parse in the worker's own thread)", _non_negative)


@dataclass
class ScoringConfig:
    hot_score: int = _opt(80, "a lead at or above this score may alert its owner at once", _non_negative)


@dataclass
class AssignmentConfig:
    auto_convert: bool = _opt(False, "convert qualified leads without a rep (off: a rep converts)")


def _stages(value):
    if len(value) != len(set(value)) or not all(re.fullmatch(r"[a-z][a-z0-9_-]*", s) for s in value):
        return "distinct lower-case stage names such as 'qualification'"
    if "won" not in value or "lost" not in value or len(value) < 3:
        return "a list of open stages followed by 'won' and 'lost'"
    return None


@dataclass
class SalesConfig:
    stages: list[str] = _opt(["qualification", "proposal", "negotiation", "won", "lost"],
                             "opportunity stages in order; new ones start at the first; "
                             "'won' and 'lost' close them", _stages)


@dataclass
class RelayConfig:
    host: str = _opt("localhost", "SMTP relay that sends digests")
    port: int = _opt(25, "relay port", _port)
    security: str = _opt("none", "none | starttls | tls", _one_of("none", "starttls", "tls"))
    ca_file: str = _opt("", "PEM file of the CA that signed the relay's certificate, for a relay "
                            "with a private CA (empty: the system's CAs)")
    username: str = _opt("", "relay user name (empty: no AUTH)")
    password_env: str = _opt("LEADFLOW_RELAY_PASSWORD",
                             "environment variable that holds the relay password")
    timeout: float = _opt(30.0, "seconds to wait for the relay", _positive)


@dataclass
class NotifyConfig:
    from_: str = _opt("leadflow@example.com", "sender address of digests and alerts")
    relay: RelayConfig = _section(RelayConfig, "the SMTP relay")
    timezone: str = _opt("UTC", "time zone of reps who set none, and of the admin digest", _timezone)
    digest_hour: int = _opt(8, "default local hour of a rep's digest", _hour)
    cutoff_hour: int = _opt(
        20, "a digest missed (leadflow was down) is sent on the next tick before this local hour, "
        "else not that day; 0: until midnight", _hour)
    send_empty: bool = _opt(False, "send a digest even when it lists nothing (off: record 'skipped')")
    stale_days: dict[str, int] = _opt(
        {"qualification": 7, "proposal": 5, "negotiation": 3, "default": 7},
        "an open opportunity without activity for this many days is listed as stale, per stage",
        lambda v: None if all(isinstance(n, int) and n > 0 for n in v.values())
        else "whole numbers of days greater than 0, by stage name")
    max_attempts: int = _opt(6, "send attempts before a digest is marked failed", _positive)
    retry_seconds: float = _opt(
        60.0, "wait before the first retry of a temporary send failure; doubles each time", _positive)
    hot_alerts: bool = _opt(True, "mail a lead's owner at once when it reaches scoring.hot_score")
    hot_alert_per_hour: int = _opt(5, "at most this many hot-lead alerts per rep per hour",
                                   _non_negative)


@dataclass
class Config:
    database: DatabaseConfig = _section(DatabaseConfig, "where leads are stored")
    intake: IntakeConfig = _section(IntakeConfig, "reading inquiries")
    smtp: SmtpConfig = _section(SmtpConfig, "the SMTP listener of `leadflow serve`")
    http: HttpConfig = _section(HttpConfig, "the web-form webhook of `leadflow serve`")
    worker: WorkerConfig = _section(WorkerConfig, "processing stored inquiries")
    scoring: ScoringConfig = _section(ScoringConfig, "scoring")
    assignment: AssignmentConfig = _section(AssignmentConfig, "assignment and conversion")
    sales: SalesConfig = _section(SalesConfig, "opportunities and their pipeline stages")
    notify: NotifyConfig = _section(NotifyConfig, "digests and alerts")
    forms: dict[str, dict] = _opt({}, "web forms, one [forms.NAME] table each")

    source: str | None = field(default=None, compare=False, metadata={"internal": True})


def _toml_name(f):
    return f.name.rstrip("_")


def _describe(tp):
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list of " + _describe(typing.get_args(tp)[0]) + "s"
    if origin is dict:
        return "a table"
    return {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _coerce(key, value, tp, source):
    """Check ``value`` against the annotated type; return it in that type."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be {_describe(tp)}, not {value!r}", source)
        return [_coerce(f"{key}[{i}]", v, item, source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a table, not {value!r}", source)
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(key, f"must be {_describe(tp)}, not {value!r}", source)
    return value


def _build(cls, data, prefix, source):
    hints = typing.get_type_hints(cls)
    fields = {_toml_name(f): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        allowed = ", ".join(sorted(fields))
        raise ConfigError(key, f"unknown key; allowed here: {allowed}", source)
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key = f"{prefix}{name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(data[name], dict):
                raise ConfigError(key, "must be a table", source)
            values[f.name] = _build(tp, data[name], key + ".", source)
            continue
        value = _coerce(key, data[name], tp, source)
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(key, f"{value!r} is not allowed; expected {problem}", source)
        values[f.name] = value
    return cls(**values)


def parse(data, source=None):
    """Build a :class:`Config` from a dict as read from TOML."""
    config = _build(Config, data, "", source)
    config.source = source
    return config


def load(path=None, environ=None):
    """Load the configuration the way every command does.

    ``path`` is ``--config``; without it ``$LEADFLOW_CONFIG``, else
    ``./leadflow.toml`` if it exists, else the defaults.
    """
    environ = os.environ if environ is None else environ
    explicit = path or environ.get(ENV_CONFIG)
    candidate = Path(explicit) if explicit else Path(DEFAULT_PATH)
    data = {}
    source = None
    if candidate.exists():
        source = str(candidate)
        try:
            with open(candidate, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", f"not valid TOML: {exc}", source) from None
        except OSError as exc:
            raise ConfigError("(file)", f"cannot be read: {exc.strerror}", source) from None
    elif explicit:
        raise ConfigError("(file)", "does not exist", str(candidate))
    config = parse(data, source)
    url = environ.get(ENV_DATABASE_URL)
    if url:
        problem = _database_url(url)
        if problem:
            raise ConfigError(ENV_DATABASE_URL, f"{url!r} is not allowed; expected {problem}")
        config.database.url = url
    return config


def as_dict(config, mask_secrets=True):
    """The effective configuration as nested dicts, secrets masked."""
    def walk(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                out[_toml_name(f)] = walk(value)
            elif mask_secrets and f.metadata.get("secret"):
                out[_toml_name(f)] = mask_url(value) if "url" in f.name else (SECRET_MASK if value else "")
            elif f.name == "forms" and mask_secrets:
                out["forms"] = {n: {k: (SECRET_MASK if "secret" in k and v else v) for k, v in form.items()}
                                for n, form in value.items()}
            else:
                out[_toml_name(f)] = value
        return out
    return walk(config)


def mask_url(url):
    """Hide the password in a database URL: postgresql://u:********@host/db."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1" + SECRET_MASK + "@", url)


def starter_toml():
    """A commented starter leadflow.toml listing every key with its default."""
    lines = ["# leadflow configuration. Every key is optional; the values shown are the defaults.",
             "# Reference: README.md, section Configuration.", ""]

    def emit(cls, prefix):
        scalars, tables = [], []
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = typing.get_type_hints(cls)[f.name]
            (tables if dataclasses.is_dataclass(tp) else scalars).append((f, tp))
        if prefix:
            lines.append(f"[{prefix}]")
        for f, tp in scalars:
            if typing.get_origin(tp) is dict:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"# {f.metadata['help']}")
            lines.append(f"{_toml_name(f)} = {_toml_value(default)}")
        if prefix:
            lines.append("")
        for f, tp in tables:
            emit(tp, f"{prefix}.{_toml_name(f)}" if prefix else _toml_name(f))

    emit(Config, "")
    lines += ["# Web forms: see `leadflow forms add --help`. Example:",
              "# [forms.contact]",
              "# preset = \"plain\"", ""]
    return "\n".join(lines)


def _toml_value(value):
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def reference_markdown():
    """The configuration reference as a Markdown table (README.md embeds it)."""
    rows = ["| section | key | default | meaning |", "| --- | --- | --- | --- |"]

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{_toml_name(f)}.")
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            shown = "{}" if isinstance(default, dict) else " ".join(_toml_value(default).split())
            shown = shown.replace("[ ", "[").replace(", ]", "]").replace("|", "\\|")
            section = f"`[{prefix.rstrip('.')}]`" if prefix else ""
            meaning = f.metadata["help"].replace("|", "\\|")
            rows.append(f"| {section} | `{_toml_name(f)}` | `{shown}` | {meaning} |")

    walk(Config, "")
    return "\n".join(rows)
