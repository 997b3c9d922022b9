"""Converting a lead into an Opportunity with its Contact and Organisation.

:func:`convert_lead` runs in ONE transaction: the contact, the organisation,
the opportunity, its first StageChange, the lead's new status and links, the
activity and the audit event are all written, or none of them is.

Matching (:func:`plan_conversion`, which writes nothing):

- **Contact**: the contact the lead is already linked to; else the one with
  the lead's (normalised) email; else the one with its phone (E.164); else a
  new one. Several contacts with the phone -> :class:`AmbiguousMatchError`.
- **Organisation**: the one the lead is linked to (intake links it by company
  domain); else the one with the company domain of the lead's email or
  website; else the ones whose normalised name equals the lead's company
  ("Tech Innovators Inc." == "tech innovators, inc"); else the matched
  contact's organisation; else a new one with size, sector and needs from the
  lead. Several by name -> :class:`AmbiguousMatchError`.
- The caller may choose instead: ``contact=ID`` / ``org=ID`` or
  ``new_contact`` / ``new_org``.

The **Opportunity** is named "<Organisation> — <interest>" (interest: the
product the lead asked about, else its subject), starts at the first stage of
``sales.stages``, belongs to the lead's owner, and takes amount and expected
close date from the budget and timeline signals when they are known.

Converting twice is refused with the existing opportunity named
(:class:`AlreadyConvertedError`). Under concurrency the lead's row is locked
first (PostgreSQL ``FOR UPDATE``; SQLite transactions begin ``IMMEDIATE``),
and the unique ``Opportunity.lead`` column is the last word: two processes
converting the same lead at the same moment make one opportunity.
"""

import datetime
import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from peewee import IntegrityError

from leadflow.errors import LeadflowError
from leadflow.intake import normalise
from leadflow.store import crm
from leadflow.store.database import db, utcnow
from leadflow.store.models import (
    Activity,
    Contact,
    Lead,
    Opportunity,
    Organisation,
)

log = logging.getLogger("leadflow.sales")

CONVERTIBLE = ("new", "working", "qualified")


class ConversionError(LeadflowError):
    """A lead cannot be converted as asked."""

    def __init__(self, lead_id, problem):
        super().__init__(lead_id, problem)
        self.lead_id = lead_id
        self.problem = problem

    def __str__(self):
        return f"cannot convert lead {self.lead_id}: {self.problem}"


class AlreadyConvertedError(ConversionError):
    """The lead has an opportunity already."""

    def __init__(self, lead_id, opportunity_id, opportunity_name):
        super().__init__(lead_id, "already converted")
        self.opportunity_id = opportunity_id
        self.opportunity_name = opportunity_name

    def __str__(self):
        return (f"lead {self.lead_id} is already converted: opportunity {self.opportunity_id} "
                f"({self.opportunity_name})")


class AmbiguousMatchError(ConversionError):
    """Several contacts or organisations fit; the user chooses."""

    def __init__(self, lead_id, kind, by, candidates):
        super().__init__(lead_id, f"several {kind}s match")
        self.kind = kind  # contact | organisation
        self.by = by
        self.candidates = candidates  # [{"id", "name", ...}]

    @property
    def option(self):
        return "contact" if self.kind == "contact" else "org"

    def __str__(self):
        lines = [f"lead {self.lead_id}: {len(self.candidates)} {self.kind}s match by {self.by}; "
                 f"choose one with --{self.option} ID or make a new one with --new-{self.option}:"]
        for c in self.candidates:
            extra = ", ".join(str(v) for k, v in c.items() if k not in ("id", "name") and v)
            lines.append(f"  {c['id']}  {c['name'] or '-'}" + (f"  ({extra})" if extra else ""))
        return "\n".join(lines)


@dataclass
class ConversionPlan:
    """What a conversion does (or did): each part existing or new, and why."""

    lead: Lead
    contact: Contact | None = None
    contact_how: str = ""  # "linked", "email", "phone", "chosen", "new"
    contact_values: dict = field(default_factory=dict)
    organisation: Organisation | None = None
    organisation_how: str = ""  # "linked", "domain", "name", "contact", "chosen", "new", "none"
    organisation_values: dict = field(default_factory=dict)
    opportunity: Opportunity | None = None
    opportunity_values: dict = field(default_factory=dict)
    dry_run: bool = False

    def as_dict(self):
        def part(row, how, values, keys):
            data = {k: values.get(k) for k in keys if values.get(k) is not None}
            if row is not None and row.id is not None:
                data = {"id": row.id, **{k: getattr(row, k) for k in keys}}
            return {"action": how, **data}

        opp = self.opportunity_values
        return {
            "lead_id": self.lead.id,
            "dry_run": self.dry_run,
            "contact": part(self.contact, self.contact_how, self.contact_values,
                            ("name", "email", "phone", "title")),
            "organisation": (None if self.organisation_how == "none" else
                             part(self.organisation, self.organisation_how,
                                  self.organisation_values, ("name", "domain", "size", "sector"))),
            "opportunity": {
                "id": self.opportunity.id if self.opportunity else None,
                "name": opp.get("name"), "stage": opp.get("stage"),
                "owner_id": opp.get("owner"),
                "amount": str(opp["amount"]) if opp.get("amount") is not None else None,
                "currency": opp.get("currency"),
                "expected_close": opp["expected_close"].isoformat()
                if opp.get("expected_close") else None,
            },
        }


# -- reading the lead's signals ----------------------------------------------------

def _main_value(value, keys=("value", "name", "text", "product")):
    if isinstance(value, dict):
        for key in keys:
            if value.get(key) not in (None, ""):
                return value[key]
        return None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value if v) or None
    return value


_SUBJECT_PREFIX = re.compile(r"^\s*((re|fwd?|fw|aw|wg|tr|sv|vs)\s*:\s*)+", re.IGNORECASE)


def interest_of(lead):
    """What the lead is interested in: the product signal, else the subject."""
    product = _main_value((lead.signals or {}).get("product"))
    if product:
        return str(product).strip()
    subject = _SUBJECT_PREFIX.sub("", lead.subject or "").strip()
    return subject or "inquiry"


def _number(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    text = re.sub(r"[^\d.,-]", "", str(value)).replace(",", "")
    try:
        return Decimal(text) if text else None
    except InvalidOperation:
        return None


def budget_of(lead):
    """``(amount, currency)`` from the budget signal, or ``(None, None)``."""
    budget = (lead.signals or {}).get("budget")
    if budget is None:
        return None, None
    if isinstance(budget, dict):
        amount = _number(_main_value(budget, ("amount", "value", "max", "min")))
        currency = budget.get("currency")
    else:
        amount, currency = _number(budget), None
    if amount is None or amount < 0 or amount >= Decimal("1e12"):
        return None, None
    return amount.quantize(Decimal("0.01")), currency


def expected_close_of(lead):
    """The expected close date from the timeline signal: a date, or days from the inquiry."""
    timeline = (lead.signals or {}).get("timeline")
    if timeline is None:
        return None
    values = timeline if isinstance(timeline, dict) else {"value": timeline}
    for key in ("date", "by", "value"):
        value = values.get(key)
        if isinstance(value, datetime.datetime):
            return value.date()
        if isinstance(value, datetime.date):
            return value
        if isinstance(value, str):
            try:
                return datetime.date.fromisoformat(value[:10])
            except ValueError:
                pass
    days = values.get("days")
    if isinstance(days, (int, float)) and not isinstance(days, bool):
        start = (lead.last_inquiry_at or lead.created_at or utcnow()).date()
        return start + datetime.timedelta(days=int(days))
    return None


def _signal_text(lead, *names):
    for name in names:
        for source in (lead.signals or {}, lead.custom or {}):
            value = _main_value(source.get(name))
            if value not in (None, ""):
                return str(value)
    return None


def _size_of(lead):
    size = (lead.signals or {}).get("size")
    if isinstance(size, dict) and size.get("value"):
        unit = size.get("unit") or ""
        employees = size["value"] if unit in ("employees", "people", "staff") else None
        return f"{size['value']} {unit}".strip(), employees if isinstance(employees, int) else None
    if size:
        return str(size), None
    return None, None


# -- matching --------------------------------------------------------------------------

def _candidates(rows, *keys):
    return [{"id": r.id, "name": r.name, **{k: getattr(r, k) for k in keys}} for r in rows]


def _match_contact(lead, plan, contact, new_contact):
    if contact is not None:
        row = contact if isinstance(contact, Contact) else Contact.get_or_none(Contact.id == contact)
        if row is None:
            raise ConversionError(lead.id, f"no contact {contact}")
        plan.contact, plan.contact_how = _follow_merge(row), "chosen"
        return
    if not new_contact:
        if lead.contact_id:
            plan.contact, plan.contact_how = _follow_merge(lead.contact), "linked"
            return
        if lead.email:
            row = Contact.get_or_none(Contact.email == lead.email)
            if row is not None:
                plan.contact, plan.contact_how = _follow_merge(row), "email"
                return
        if lead.phone:
            rows = list(Contact.select().where(Contact.phone == lead.phone,
                                               Contact.merged_into.is_null()).order_by(Contact.id))
            if len(rows) == 1:
                plan.contact, plan.contact_how = rows[0], "phone"
                return
            if len(rows) > 1:
                raise AmbiguousMatchError(lead.id, "contact", f"phone {lead.phone}",
                                          _candidates(rows, "email", "phone"))
    plan.contact_how = "new"
    plan.contact_values = {"name": lead.name, "email": lead.email, "phone": lead.phone,
                           "title": lead.title}


def _follow_merge(row):
    seen = set()
    while row.merged_into_id and row.id not in seen:
        seen.add(row.id)
        row = type(row).get_by_id(row.merged_into_id)
    return row


def _lead_domain(lead):
    if lead.domain_class == "company" and lead.email:
        domain = normalise.registered_domain(normalise.email_domain(lead.email))
        if domain:
            return domain
    if lead.website:
        domain = normalise.registered_domain(lead.website)
        if domain and normalise.domain_class(domain) == "company":
            return domain
    return None


def _match_organisation(lead, plan, org, new_org):
    if org is not None:
        row = org if isinstance(org, Organisation) else Organisation.get_or_none(Organisation.id == org)
        if row is None:
            raise ConversionError(lead.id, f"no organisation {org}")
        plan.organisation, plan.organisation_how = _follow_merge(row), "chosen"
        return
    domain = _lead_domain(lead)
    if not new_org:
        if lead.organisation_id:
            plan.organisation, plan.organisation_how = _follow_merge(lead.organisation), "linked"
            return
        if domain:
            row = Organisation.get_or_none(Organisation.domain == domain)
            if row is not None:
                plan.organisation, plan.organisation_how = _follow_merge(row), "domain"
                return
        name = normalise.normalise_org_name(lead.company) if lead.company else ""
        if name:
            rows = list(Organisation.select()
                        .where(Organisation.normalised_name == name,
                               Organisation.merged_into.is_null()).order_by(Organisation.id))
            if len(rows) == 1:
                plan.organisation, plan.organisation_how = rows[0], "name"
                return
            if len(rows) > 1:
                raise AmbiguousMatchError(lead.id, "organisation", f"name {lead.company!r}",
                                          _candidates(rows, "domain"))
        if plan.contact is not None and plan.contact.organisation_id:
            plan.organisation = _follow_merge(plan.contact.organisation)
            plan.organisation_how = "contact"
            return
    name = lead.company or (_name_from_domain(domain) if domain else None)
    if not name:
        if new_org:
            raise ConversionError(lead.id, "--new-org needs a company name or company domain "
                                           "on the lead")
        plan.organisation_how = "none"
        return
    if domain and Organisation.get_or_none(Organisation.domain == domain) is not None:
        domain = None  # the domain stays with the organisation that has it
    size, employees = _size_of(lead)
    plan.organisation_how = "new"
    plan.organisation_values = {
        "name": name, "normalised_name": normalise.normalise_org_name(name), "domain": domain,
        "website": lead.website, "country": lead.country, "size": size, "employees": employees,
        "sector": _signal_text(lead, "sector", "industry"),
        "needs": _signal_text(lead, "needs", "product") or interest_of(lead),
    }


def _name_from_domain(domain):
    return domain.split(".", 1)[0].replace("-", " ").title()


def _opportunity_values(lead, plan, config):
    org_name = (plan.organisation.name if plan.organisation is not None
                else plan.organisation_values.get("name"))
    who = org_name or lead.name or lead.email or f"lead {lead.id}"
    amount, currency = budget_of(lead)
    return {"name": f"{who} — {interest_of(lead)}"[:255], "stage": crm.stages(config)[0],
            "owner": lead.owner_id, "amount": amount, "currency": currency,
            "expected_close": expected_close_of(lead)}


def _refuse_unconvertible(lead):
    existing = Opportunity.get_or_none(Opportunity.lead == lead.id)
    if existing is not None:
        raise AlreadyConvertedError(lead.id, existing.id, existing.name)
    if lead.status not in CONVERTIBLE:
        raise ConversionError(lead.id, f"it is {lead.status}"
                              + ("; reopen it first" if lead.status in ("disqualified", "spam") else ""))


def plan_conversion(lead, contact=None, org=None, new_contact=False, new_org=False, config=None):
    """What converting ``lead`` would do; writes nothing. Raises as convert would."""
    if contact is not None and new_contact:
        raise ConversionError(lead.id, "give --contact or --new-contact, not both")
    if org is not None and new_org:
        raise ConversionError(lead.id, "give --org or --new-org, not both")
    _refuse_unconvertible(lead)
    plan = ConversionPlan(lead=lead)
    _match_contact(lead, plan, contact, new_contact)
    _match_organisation(lead, plan, org, new_org)
    plan.opportunity_values = _opportunity_values(lead, plan, config)
    return plan


# -- doing it -----------------------------------------------------------------------

def _provenance(lead, values, how):
    source = f"lead #{lead.id}"
    lead_fields = lead.fields or {}
    out = {}
    for key, value in values.items():
        if value is None or key == "normalised_name":
            continue
        entry = {"source": source, "via": how}
        origin = lead_fields.get(key)
        if isinstance(origin, dict) and origin.get("source"):
            entry["origin"] = origin.get("source")
            if origin.get("confidence") is not None:
                entry["confidence"] = origin.get("confidence")
        out[key] = entry
    return out


def _fill_existing(row, values, lead, how):
    """Fill the empty fields of an existing contact/organisation; record where from."""
    filled = {}
    for key, value in values.items():
        if value in (None, "") or key == "normalised_name":
            continue
        if getattr(row, key) in (None, ""):
            if key in ("email", "domain") and type(row).get_or_none(
                    getattr(type(row), key) == value) is not None:
                continue  # unique elsewhere
            setattr(row, key, value)
            filled[key] = value
    if filled:
        row.provenance = {**(row.provenance or {}), **_provenance(lead, filled, how)}
        row.updated_at = utcnow()
        row.save()
    return filled


def _create_contact(lead, plan, org):
    values = dict(plan.contact_values, organisation=org.id if org else None, owner=lead.owner_id)
    try:
        with db.atomic():
            return Contact.create(provenance=_provenance(lead, plan.contact_values, "conversion"),
                                  **values)
    except IntegrityError:
        _refuse_unconvertible(lead)  # a concurrent conversion of this lead won the race
        other = Contact.get_or_none(Contact.email == lead.email) if lead.email else None
        if other is not None:
            raise ConversionError(lead.id, f"contact {other.id} ({other.name or other.email}) "
                                           f"already has {lead.email}; use --contact {other.id}") \
                from None
        raise


def convert_lead(lead, contact=None, org=None, new_contact=False, new_org=False, dry_run=False,
                 actor=None, config=None):
    """Convert ``lead`` (a Lead or an id); return the :class:`ConversionPlan`, done.

    With ``dry_run`` nothing is written and the plan says what would happen.
    """
    lead_id = lead.id if isinstance(lead, Lead) else lead
    if dry_run:
        plan = plan_conversion(crm.get_lead(lead_id), contact, org, new_contact, new_org, config)
        plan.dry_run = True
        return plan
    try:
        with db.atomic():
            return _convert(lead_id, contact, org, new_contact, new_org, actor, config)
    except IntegrityError:
        # a concurrent conversion committed first: its opportunity is the one
        existing = Opportunity.get_or_none(Opportunity.lead == lead_id)
        if existing is not None:
            raise AlreadyConvertedError(lead_id, existing.id, existing.name) from None
        raise


def _convert(lead_id, contact, org, new_contact, new_org, actor, config):
    lead = crm.get_lead(lead_id, for_update=True)
    plan = plan_conversion(lead, contact, org, new_contact, new_org, config)
    now = utcnow()
    # the organisation first, then the contact in it, then the opportunity
    organisation = plan.organisation
    if plan.organisation_how == "new":
        organisation = Organisation.create(
            provenance=_provenance(lead, plan.organisation_values, "conversion"),
            owner=lead.owner_id, **plan.organisation_values)
    elif organisation is not None:
        size, employees = _size_of(lead)
        _fill_existing(organisation, {
            "website": lead.website, "country": lead.country, "size": size,
            "employees": employees, "sector": _signal_text(lead, "sector", "industry"),
            "needs": _signal_text(lead, "needs", "product") or interest_of(lead),
            "owner": lead.owner_id}, lead, "conversion")
    plan.organisation = organisation

    person = plan.contact
    if plan.contact_how == "new":
        person = _create_contact(lead, plan, organisation)
    else:
        _fill_existing(person, {"name": lead.name, "phone": lead.phone, "title": lead.title,
                                "email": lead.email,
                                "organisation": organisation.id if organisation else None,
                                "owner": lead.owner_id}, lead, "conversion")
    plan.contact = person

    opp = Opportunity.create(lead=lead.id, contact=person.id,
                             organisation=organisation.id if organisation else None,
                             stage_changed_at=now, created_at=now, updated_at=now,
                             **plan.opportunity_values)
    plan.opportunity = opp
    crm.record_stage(opp, None, opp.stage, actor, now)

    old = lead.status
    lead.status = "converted"
    lead.open_email = None
    lead.converted_at = now
    lead.status_changed_at = now
    lead.updated_at = now
    lead.contact = person.id
    lead.organisation = organisation.id if organisation else None
    lead.save(only=[Lead.status, Lead.open_email, Lead.converted_at, Lead.status_changed_at,
                    Lead.updated_at, Lead.contact, Lead.organisation])
    # the lead's history now also belongs to the contact and organisation
    (Activity.update(contact=person.id).where(Activity.lead == lead.id, Activity.contact.is_null())
     .execute())
    if organisation is not None:
        (Activity.update(organisation=organisation.id)
         .where(Activity.lead == lead.id, Activity.organisation.is_null()).execute())
    text = (f"status {old} → converted: opportunity {opp.id} ({opp.name}); contact {person.id} "
            f"({plan.contact_how}); organisation "
            + (f"{organisation.id} ({plan.organisation_how})" if organisation else "none"))
    Activity.create(kind="status", text=text, lead=lead.id, contact=person.id,
                    opportunity=opp.id, organisation=organisation.id if organisation else None,
                    rep=lead.owner_id)
    crm.audit("lead.convert", lead, actor, opportunity=opp.id, contact=person.id,
              contact_how=plan.contact_how,
              organisation=organisation.id if organisation else None,
              organisation_how=plan.organisation_how)
    log.info("lead #%s: converted into opportunity #%s (%s)", lead.id, opp.id, opp.name)
    return plan


class AutoConvertStep:
    name = "convert"
    description = "convert qualified leads at once when assignment.auto_convert is on (off by default)"

    def process(self, item):
        lead = item.lead
        if lead is None or not item.config.assignment.auto_convert or lead.status != "qualified":
            return
        try:
            plan = convert_lead(lead, actor="auto-convert", config=item.config)
        except AmbiguousMatchError as exc:  # a person chooses; the lead stays qualified
            item.notes.append(str(exc))
            log.info("lead #%s: not converted automatically: %s", lead.id, exc.problem)
            return
        except ConversionError as exc:
            item.notes.append(str(exc))
            log.info("lead #%s: not converted automatically: %s", lead.id, exc)
            return
        item.lead = Lead.get_by_id(lead.id)
        item.notes.append(f"converted into opportunity {plan.opportunity.id}")
