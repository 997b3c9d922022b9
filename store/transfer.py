"""Import and export: spreadsheets in, CSV or JSON out.

**Export** (:func:`export_rows`): leads, contacts, organisations or
opportunities as flat dicts, the same keys for CSV and JSON (nested values
become JSON text in CSV cells).

**Import** (:func:`import_leads`): a CSV file with a header row. Columns are
mapped to lead fields by their header (case, spaces and dashes ignored;
common spellings such as "E-mail", "Company name", "Job title",
"First name"/"Last name" are known); ``--map column=field`` maps others or
overrides (``field`` is a lead field, ``custom.KEY`` or ``signals.KEY``;
``column=`` skips a column). Unmapped columns are kept as ``custom.<column>``.

Each good row is stored like any inquiry: an InboundMessage of channel
``import`` whose raw payload is the row as JSON (dedup key: a hash of the
row, so importing the same file twice stores nothing new), then run through
the same pipeline as mail (:func:`parse_import_row` is the ``import`` parser):
dedup into the prospect's open lead, scoring, assignment. A bad row (no valid
email address, a value that cannot be read) is reported with its line number
and skipped; the good rows are imported. ``dry_run`` checks every row and
stores nothing.
"""

import csv
import datetime
import io
import json
import re
from dataclasses import dataclass, field

from peewee import JOIN

from leadflow.errors import LeadflowError
from leadflow.intake import normalise
from leadflow.store import crm
from leadflow.store.models import Contact, Lead, Opportunity, Organisation, Rep
from leadflow.store.serialize import lead_dict

LEAD_FIELDS = ("name", "first_name", "last_name", "email", "phone", "company", "title", "website",
               "country", "subject", "message", "date")
ALIASES = {
    "name": "name", "full_name": "name", "contact": "name", "contact_name": "name",
    "first_name": "first_name", "firstname": "first_name", "given_name": "first_name",
    "last_name": "last_name", "lastname": "last_name", "surname": "last_name",
    "family_name": "last_name",
    "email": "email", "e_mail": "email", "email_address": "email", "mail": "email",
    "phone": "phone", "telephone": "phone", "phone_number": "phone", "tel": "phone",
    "mobile": "phone",
    "company": "company", "company_name": "company", "organisation": "company",
    "organization": "company", "account": "company", "account_name": "company",
    "title": "title", "job_title": "title", "position": "title", "role": "title",
    "website": "website", "web": "website", "url": "website", "site": "website",
    "country": "country",
    "subject": "subject", "topic": "subject", "interest": "subject",
    "message": "message", "notes": "message", "note": "message", "comments": "message",
    "comment": "message", "description": "message",
    "date": "date", "created": "date", "created_at": "date",
    "budget": "signals.budget", "timeline": "signals.timeline", "product": "signals.product",
    "sector": "signals.sector", "industry": "signals.sector",
}
EXPORT_KINDS = ("leads", "contacts", "orgs", "opps")


class ImportFileError(LeadflowError):
    """The file as a whole cannot be imported (unreadable, no header, bad mapping)."""

    def __init__(self, path, problem):
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self):
        return f"{self.path}: {self.problem}"


@dataclass
class RowResult:
    line: int
    outcome: str  # created, updated, duplicate, ignored, failed, bad, ok (dry run)
    problem: str | None = None
    email: str | None = None
    lead_id: int | None = None
    inbound_id: int | None = None


@dataclass
class ImportReport:
    path: str
    mapping: dict
    rows: list = field(default_factory=list)
    dry_run: bool = False

    def counts(self):
        out = {}
        for row in self.rows:
            out[row.outcome] = out.get(row.outcome, 0) + 1
        return out

    @property
    def bad(self):
        return [r for r in self.rows if r.outcome in ("bad", "failed")]

    def as_dict(self):
        return {"path": self.path, "dry_run": self.dry_run, "mapping": self.mapping,
                "counts": self.counts(),
                "rows": [{"line": r.line, "outcome": r.outcome, "problem": r.problem,
                          "email": r.email, "lead_id": r.lead_id, "inbound_id": r.inbound_id}
                         for r in self.rows]}


def _key(header):
    return re.sub(r"[^a-z0-9]+", "_", normalise.fold(header)).strip("_")


def parse_mapping(items):
    """``["Col=field", ...]`` -> {column: field or None}; checks the fields."""
    mapping = {}
    for item in items or ():
        column, sep, target = item.partition("=")
        if not sep or not column.strip():
            raise ImportFileError("--map", f"{item!r} is not COLUMN=FIELD")
        target = target.strip()
        if target and not (target in LEAD_FIELDS or re.fullmatch(r"(custom|signals)\.[\w-]+",
                                                                 target)):
            raise ImportFileError("--map", f"unknown field {target!r}; use one of "
                               + ", ".join(LEAD_FIELDS) + ", custom.KEY or signals.KEY")
        mapping[column.strip()] = target or None
    return mapping


def resolve_mapping(headers, overrides):
    """{column: field or None} for every header of the file."""
    unknown = [c for c in overrides if c not in headers]
    if unknown:
        raise ImportFileError("--map", f"no column {unknown[0]!r} in the file (columns: "
                           + ", ".join(headers) + ")")
    mapping = {}
    for header in headers:
        if header in overrides:
            mapping[header] = overrides[header]
        else:
            mapping[header] = ALIASES.get(_key(header)) or (f"custom.{_key(header)}"
                                                            if _key(header) else None)
    targets = [t for t in mapping.values() if t and not t.startswith("custom.")]
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    if doubled:
        columns = [c for c, t in mapping.items() if t == doubled[0]]
        raise ImportFileError("--map", f"columns {', '.join(columns)} all map to {doubled[0]}; "
                           f"skip one with --map '{columns[-1]}='")
    if "email" not in mapping.values():
        raise ImportFileError("header", "no column maps to email (use --map COLUMN=email)")
    return mapping


def row_to_record(row, mapping, region):
    """One CSV row -> the import payload (a dict), or raise ValueError with the problem."""
    values, custom, signals = {}, {}, {}
    for column, target in mapping.items():
        value = (row.get(column) or "").strip()
        if not target or not value:
            continue
        if target.startswith("custom."):
            custom[target[7:]] = value
        elif target.startswith("signals."):
            signals[target[8:]] = value
        else:
            values[target] = value
    first, last = values.pop("first_name", None), values.pop("last_name", None)
    if not values.get("name") and (first or last):
        values["name"] = " ".join(p for p in (first, last) if p)
    written = values.get("email")
    email = normalise.normalise_email(written)
    if not email:
        raise ValueError(f"{written!r} is not a valid email address" if written
                         else "no email address")
    values["email"] = email
    if values.get("phone"):
        phone = normalise.normalise_phone(values["phone"], region)
        if phone is None:
            raise ValueError(f"{values['phone']!r} is not a valid phone number")
        values["phone"] = phone
    if values.get("date"):
        try:
            datetime.date.fromisoformat(values["date"][:10])
        except ValueError:
            raise ValueError(f"{values['date']!r} is not a date (YYYY-MM-DD)") from None
    if "budget" in signals:
        from leadflow.store.conversion import _number

        amount = _number(signals["budget"])
        if amount is None:
            raise ValueError(f"budget {signals['budget']!r} is not an amount")
        signals["budget"] = {"amount": float(amount), "text": signals["budget"]}
    return {"values": values, "custom": custom, "signals": signals}


def read_rows(path):
    """Yield ``(first line number, row dict)`` and return the headers first."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImportFileError(path, exc.strerror or str(exc)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", "replace")  # spreadsheets saved on Windows
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    headers = reader.fieldnames
    if not headers:
        raise ImportFileError(path, "empty file: a header row is needed")
    rows = []
    line = reader.line_num + 1
    for row in reader:
        rows.append((line, row))
        line = reader.line_num + 1
    return [h for h in headers if h is not None], rows


def import_leads(path, config, mapping_items=(), dry_run=False):
    """Import a CSV of leads through the intake pipeline; an :class:`ImportReport`."""
    from leadflow.intake import pipeline
    from leadflow.store.inbound import content_key, store_inbound
    from leadflow.store.models import InboundMessage

    headers, rows = read_rows(path)
    mapping = resolve_mapping(headers, parse_mapping(mapping_items))
    report = ImportReport(path=str(path), mapping=mapping, dry_run=dry_run)
    region = config.intake.default_region
    for line, row in rows:
        if None in row:  # more cells than headers
            report.rows.append(RowResult(line, "bad", f"{len(headers) + len(row[None])} cells for "
                                                      f"{len(headers)} columns"))
            continue
        if not any((v or "").strip() for v in row.values()):
            continue  # a blank line
        try:
            record = row_to_record(row, mapping, region)
        except ValueError as exc:
            report.rows.append(RowResult(line, "bad", str(exc), email=row_email(row, mapping)))
            continue
        record["source"] = {"file": str(path), "line": line}
        email = record["values"]["email"]
        if dry_run:
            report.rows.append(RowResult(line, "ok", email=email))
            continue
        raw = json.dumps({k: v for k, v in record.items() if k != "source"}, sort_keys=True,
                         ensure_ascii=False).encode("utf-8")
        payload = json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8")
        stored = store_inbound("import", payload, dedup_key=content_key(raw),
                               content_type="application/json", origin=f"{path}:{line}")
        if stored.duplicate:
            report.rows.append(RowResult(line, "duplicate", "imported before", email,
                                         inbound_id=stored.id,
                                         lead_id=InboundMessage.get_by_id(stored.id).lead_id))
            continue
        outcome = pipeline.process_inbound(stored.id, config)
        inbound = InboundMessage.get_by_id(stored.id)
        problem = inbound.error or inbound.reason if outcome in ("failed", "ignored") else None
        report.rows.append(RowResult(line, outcome, problem, email, inbound.lead_id, stored.id))
    return report


def row_email(row, mapping):
    for column, target in mapping.items():
        if target == "email":
            return (row.get(column) or "").strip() or None
    return None


def parse_import_row(inbound, config):
    """The pipeline's parser for channel ``import``: a stored CSV row -> ParsedMessage."""
    from leadflow.intake.message import ParsedMessage, Prospect

    record = json.loads(bytes(inbound.raw).decode("utf-8"))
    values = record.get("values") or {}
    source = record.get("source") or {}
    date = None
    if values.get("date"):
        date = datetime.datetime.combine(datetime.date.fromisoformat(values["date"][:10]),
                                         datetime.time())
    prospect = Prospect(**{k: values.get(k) for k in ("name", "email", "phone", "company",
                                                       "title", "website", "country")})
    where = f"import {source.get('file', '')}:{source.get('line', '')}".strip(":")
    fields = {k: {"value": v, "source": "import", "confidence": 1.0}
              for k, v in values.items() if k in ("name", "email", "phone", "company", "title",
                                                  "website", "country")}
    signals = dict(record.get("signals") or {})
    message = values.get("message") or ""
    if message:
        try:
            from leadflow.intake.extract import extract_signals
        except ImportError:  # pragma: no cover - written in parallel
            extract_signals = None
        if extract_signals is not None:
            signals = {**(extract_signals(message, date or inbound.received_at) or {}), **signals}
    parsed = ParsedMessage(classification="lead", prospect=prospect,
                           subject=values.get("subject") or f"Imported lead ({where})",
                           body=message, date=date or inbound.received_at, signals=signals,
                           fields=fields)
    parsed.custom = record.get("custom") or {}
    return parsed


# -- export ------------------------------------------------------------------------

def export_rows(kind):
    """Every row of ``kind`` (leads, contacts, orgs, opps) as flat dicts, oldest first."""
    if kind == "leads":
        owners = {r.id: r.email for r in Rep.select()}
        rows = []
        query = (Lead.select(Lead, Organisation, Rep)
                 .join(Organisation, JOIN.LEFT_OUTER, on=(Lead.organisation == Organisation.id))
                 .switch(Lead).join(Rep, JOIN.LEFT_OUTER, on=(Lead.owner == Rep.id))
                 .order_by(Lead.id))
        for lead in query.iterator():
            data = lead_dict(lead, full=True)
            data["organisation"] = data["organisation"]["id"] if data["organisation"] else None
            data["owner"] = owners.get(lead.owner_id)
            rows.append(data)
        return rows
    if kind == "contacts":
        return [crm.contact_dict(c) for c in Contact.select().where(Contact.merged_into.is_null())
                .order_by(Contact.id)]
    if kind == "orgs":
        return [crm.organisation_dict(o) for o in Organisation.select()
                .where(Organisation.merged_into.is_null()).order_by(Organisation.id)]
    if kind == "opps":
        return [crm.opportunity_dict(o) for o in Opportunity.select().order_by(Opportunity.id)]
    raise ValueError(f"unknown export {kind!r}")


def write_csv(rows, out):
    """Write flat dicts as CSV; nested values as JSON text."""
    if not rows:
        return
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
                             if isinstance(v, (dict, list)) else v) for k, v in row.items()})

