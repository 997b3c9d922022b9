"""Converting a lead: matching or making its contact and organisation, one transaction, once."""

import datetime
import multiprocessing
from decimal import Decimal

import pytest

from leadflow.store import conversion, crm
from leadflow.store.conversion import (
    AlreadyConvertedError,
    AmbiguousMatchError,
    ConversionError,
    convert_lead,
)
from leadflow.store.models import (
    Activity,
    AuditEvent,
    Contact,
    Lead,
    Opportunity,
    Organisation,
    Rep,
    StageChange,
)


def make_lead(**values):
    values.setdefault("name", "Sarah Jones")
    values.setdefault("email", "sarah@techinnovators.com")
    values.setdefault("status", "qualified")
    values.setdefault("domain_class", "company")
    values.setdefault("open_email", values["email"] if values["status"] in ("new", "working",
                                                                              "qualified") else None)
    return Lead.create(**values)


def make_org(name, domain=None, **values):
    from leadflow.intake.normalise import normalise_org_name

    return Organisation.create(name=name, normalised_name=normalise_org_name(name), domain=domain,
                               **values)


def counts():
    return (Contact.select().count(), Organisation.select().count(), Opportunity.select().count(),
            StageChange.select().count())


def test_new_contact_organisation_and_opportunity(database):
    """A lead with nothing known yet gets a new contact, organisation and opportunity."""
    rep = Rep.create(name="Sam", email="sam@ourco.example")
    lead = make_lead(company="Tech Innovators Inc.", phone="+31201234567", title="IT manager",
                     subject="Fwd: project management software", owner=rep,
                     signals={"budget": {"amount": 25000, "currency": "EUR"},
                              "timeline": {"days": 90}, "size": {"value": 50, "unit": "employees"},
                              "sector": "software"},
                     last_inquiry_at=datetime.datetime(2026, 11, 1, 9, 0))
    plan = convert_lead(lead, actor="test")
    opp = Opportunity.get(Opportunity.lead == lead.id)
    assert opp.name == "Tech Innovators Inc. — project management software"
    assert (opp.stage, opp.owner_id, opp.amount, opp.currency) == ("qualification", rep.id,
                                                                  Decimal("25000.00"), "EUR")
    assert opp.expected_close == datetime.date(2026, 11, 1) + datetime.timedelta(days=90)
    org, contact = opp.organisation, opp.contact
    assert (org.name, org.domain, org.size, org.employees, org.sector, org.owner_id) == (
        "Tech Innovators Inc.", "techinnovators.com", "50 employees", 50, "software", rep.id)
    assert (contact.name, contact.email, contact.phone, contact.title, contact.organisation_id) == (
        "Sarah Jones", "sarah@techinnovators.com", "+31201234567", "IT manager", org.id)
    assert contact.provenance["email"]["source"] == f"lead #{lead.id}"
    lead = Lead.get_by_id(lead.id)
    assert (lead.status, lead.open_email, lead.contact_id, lead.organisation_id) == (
        "converted", None, contact.id, org.id)
    assert lead.converted_at is not None
    assert [(c.from_stage, c.to_stage) for c in opp.stage_changes] == [(None, "qualification")]
    assert (plan.contact_how, plan.organisation_how) == ("new", "new")
    assert AuditEvent.get(AuditEvent.action == "lead.convert").object_id == lead.id


@pytest.mark.parametrize("existing, lead_values, how", [
    ({"email": "sarah@techinnovators.com"}, {}, "email"),
    ({"email": "s.jones@private.example", "phone": "+31201234567"}, {"phone": "+31201234567"},
     "phone"),
])
def test_contact_matched_by_email_or_phone(database, existing, lead_values, how):
    """An existing contact with the lead's email, or else its phone, is reused."""
    contact = Contact.create(name="S. Jones", **existing)
    lead = make_lead(company="Tech Innovators", **lead_values)
    plan = convert_lead(lead)
    assert (plan.contact.id, plan.contact_how) == (contact.id, how)
    assert Contact.select().count() == 1
    assert Contact.get_by_id(contact.id).name == "S. Jones"  # kept; empty fields only are filled


@pytest.mark.parametrize("org_name, company, domain, how", [
    ("Tech Innovators Inc.", "tech innovators, inc", None, "name"),
    ("TECH INNOVATORS", "Tech Innovators Inc.", None, "name"),
    ("Anything", "Tech Innovators", "techinnovators.com", "domain"),
])
def test_organisation_matched_by_domain_or_normalised_name(database, org_name, company, domain, how):
    """An organisation with the lead's company domain, or its normalised name, is reused."""
    org = make_org(org_name, domain)
    lead = make_lead(company=company)
    plan = convert_lead(lead)
    assert (plan.organisation.id, plan.organisation_how) == (org.id, how)
    assert Organisation.select().count() == 1
    assert plan.opportunity.name.startswith(f"{org_name} — ")


def test_several_candidates_are_listed_and_the_user_chooses(database):
    """Two organisations with the same normalised name: an error lists both; --org picks one."""
    first = make_org("Tech Innovators Inc.", "techinnovators.de")
    second = make_org("Tech Innovators, Inc", "techinnovators.us")
    lead = make_lead(email="sarah@gmail.com", domain_class="free", company="Tech Innovators")
    with pytest.raises(AmbiguousMatchError) as caught:
        convert_lead(lead)
    assert [c["id"] for c in caught.value.candidates] == [first.id, second.id]
    assert "--org ID" in str(caught.value) and "techinnovators.us" in str(caught.value)
    assert counts() == (0, 2, 0, 0)
    plan = convert_lead(lead, org=second.id)
    assert (plan.organisation.id, plan.organisation_how) == (second.id, "chosen")


def test_several_contacts_by_phone_are_listed(database):
    """Two contacts share the lead's phone: the user must choose or ask for a new one."""
    a = Contact.create(name="A", email="a@x.example", phone="+31201234567")
    Contact.create(name="B", email="b@x.example", phone="+31201234567")
    lead = make_lead(email="c@x.example", phone="+31201234567", company=None, domain_class="unknown")
    with pytest.raises(AmbiguousMatchError, match="--new-contact"):
        convert_lead(lead)
    assert convert_lead(lead, contact=a.id).contact.id == a.id


def test_new_org_and_new_contact_bypass_matching(database):
    """--new-org makes a second organisation even when one matches (the domain stays put)."""
    org = make_org("Tech Innovators", "techinnovators.com")
    Contact.create(name="Other Sarah", phone="+31201234567")
    lead = make_lead(company="Tech Innovators", phone="+31201234567")
    plan = convert_lead(lead, new_org=True, new_contact=True)
    assert plan.organisation.id != org.id and plan.organisation.domain is None
    assert plan.contact_how == "new" and Contact.select().count() == 2


def test_dry_run_writes_nothing(database):
    """--dry-run says what would happen and changes nothing."""
    lead = make_lead(company="Tech Innovators Inc.", subject="pricing")
    plan = convert_lead(lead, dry_run=True)
    data = plan.as_dict()
    assert data["contact"]["action"] == "new" and data["organisation"]["action"] == "new"
    assert data["opportunity"]["name"] == "Tech Innovators Inc. — pricing"
    assert counts() == (0, 0, 0, 0)
    assert Lead.get_by_id(lead.id).status == "qualified"


def test_failure_midway_leaves_nothing(database):
    """A unique-constraint failure after the organisation was made rolls everything back."""
    Contact.create(name="Sarah", email="sarah@techinnovators.com")
    lead = make_lead(company="Tech Innovators Inc.")
    before = counts(), Activity.select().count(), AuditEvent.select().count()
    # --new-contact with an address another contact holds: the organisation is created first,
    # then the contact insert violates Contact.email's unique constraint
    with pytest.raises(ConversionError, match="use --contact"):
        convert_lead(lead, new_contact=True, new_org=True)
    assert (counts(), Activity.select().count(), AuditEvent.select().count()) == before
    lead = Lead.get_by_id(lead.id)
    assert (lead.status, lead.open_email) == ("qualified", "sarah@techinnovators.com")


def test_second_conversion_is_refused_naming_the_opportunity(database):
    """Converting twice names the existing opportunity and makes no second one."""
    lead = make_lead(company="Tech Innovators Inc.", subject="PM tool")
    opp = convert_lead(lead).opportunity
    with pytest.raises(AlreadyConvertedError) as caught:
        convert_lead(lead.id)
    assert caught.value.opportunity_id == opp.id
    assert f"opportunity {opp.id} (Tech Innovators Inc. — PM tool)" in str(caught.value)
    assert Opportunity.select().count() == 1


@pytest.mark.parametrize("status", ["disqualified", "spam"])
def test_closed_leads_are_not_converted(database, status):
    """A disqualified or spam lead must be reopened before it is converted."""
    lead = make_lead(status=status)
    with pytest.raises(ConversionError, match="reopen it first"):
        convert_lead(lead)


@pytest.mark.parametrize("signals, amount, close", [
    ({"budget": "€ 12,500"}, Decimal("12500.00"), None),
    ({"budget": {"value": 3000}}, Decimal("3000.00"), None),
    ({"timeline": {"date": "2027-02-15", "text": "by mid February"}}, None,
     datetime.date(2027, 2, 15)),
    ({"timeline": "next year"}, None, None),
    ({}, None, None),
])
def test_amount_and_close_date_from_signals(database, signals, amount, close):
    """Budget and timeline signals give the amount and expected close, where known."""
    lead = make_lead(signals=signals)
    values = conversion.plan_conversion(lead).opportunity_values
    assert (values["amount"], values["expected_close"]) == (amount, close)


def test_configured_first_stage(database, config):
    """A new opportunity starts at the first configured stage."""
    config.sales.stages = ["discovery", "won", "lost"]
    opp = convert_lead(make_lead(), config=config).opportunity
    assert opp.stage == "discovery" and crm.open_stages(config) == ["discovery"]


def _convert_in_process(url, lead_ids, barrier, results):
    from leadflow.store.database import close_database, open_database

    open_database(url, pool_size=0)
    for lead_id in lead_ids:
        barrier.wait(timeout=30)
        try:
            plan = convert_lead(lead_id, actor="proc")
            results.put((lead_id, "ok", plan.opportunity.id))
        except AlreadyConvertedError as exc:
            results.put((lead_id, "refused", exc.opportunity_id))
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.put((lead_id, "error", repr(exc)))
    close_database()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_converting_at_once_make_one_opportunity(database_url, database):
    """Several OS processes converting one lead at the same moment on PostgreSQL give one opportunity."""
    ids = [make_lead(email=f"p{i}@race{i}.example", company=f"Race {i}").id for i in range(3)]
    database.close()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_convert_in_process, args=(database_url, ids, barrier, results))
             for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=60) for _ in range(len(procs) * len(ids)))
    for p in procs:
        p.join(timeout=30)
    for lead_id in ids:
        mine = [o for o in outcomes if o[0] == lead_id]
        assert sorted(o[1] for o in mine) == ["ok", "refused", "refused"], outcomes
        assert len({o[2] for o in mine}) == 1
    database.connect(reuse_if_open=True)
    assert Opportunity.select().count() == 3
    assert Contact.select().count() == 3 and Organisation.select().count() == 3



@pytest.mark.parametrize("auto_convert, status", [(False, "qualified"), (True, "converted")])
def test_auto_conversion_is_a_config_option(database, config, mail_fixture, auto_convert, status):
    """With assignment.auto_convert on, the pipeline converts a qualified lead; off by default."""
    from leadflow.intake.pipeline import process_inbound
    from leadflow.scoring.ruleset import install_starter_rules
    from leadflow.store.inbound import store_inbound

    install_starter_rules()
    config.assignment.auto_convert = auto_convert
    raw = mail_fixture("worked_example_sarah.eml").read_bytes()
    assert process_inbound(store_inbound("cli", raw).id, config) == "created"
    lead = Lead.get()
    assert lead.status == status
    assert Opportunity.select().count() == int(auto_convert)
    if auto_convert:
        assert Opportunity.get().name == "Tech Innovators Inc. — project management software"
