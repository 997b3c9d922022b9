"""Merging duplicate contacts and organisations moves every link and keeps every value."""

import pytest

from leadflow.intake.normalise import normalise_org_name
from leadflow.store.merge import MergeError, merge_contacts, merge_organisations
from leadflow.store.models import (
    Activity,
    AuditEvent,
    Contact,
    Lead,
    Opportunity,
    Organisation,
    Rep,
)


def org(name, domain=None, **values):
    return Organisation.create(name=name, normalised_name=normalise_org_name(name), domain=domain,
                               **values)


def test_contact_merge_moves_every_link(database):
    """Leads, opportunities, activities and earlier merges of B all point at A afterwards."""
    a = Contact.create(name="Sarah Jones", email="sarah@tech.example",
                       provenance={"name": {"source": "lead #1"}})
    b = Contact.create(name="S. Jones", email="sjones@tech.example", phone="+31201234567",
                       title="IT manager", provenance={"phone": {"source": "signature"}})
    c = Contact.create(name="old dup", merged_into=b)
    lead = Lead.create(email="sjones@tech.example", contact=b)
    opp = Opportunity.create(name="x", contact=b, lead=lead)
    act = Activity.create(kind="call", contact=b)
    kept, moved = merge_contacts(a.id, b.id, actor="test")
    assert moved == {"lead.contact": 1, "opportunity.contact": 1, "activity.contact": 1,
                     "contact.merged_into": 1}
    assert {Lead.get_by_id(lead.id).contact_id, Opportunity.get_by_id(opp.id).contact_id,
            Activity.get_by_id(act.id).contact_id, Contact.get_by_id(c.id).merged_into_id} == {a.id}
    # empty fields come from B with B's provenance; both names are kept
    assert (kept.name, kept.email, kept.phone, kept.title) == (
        "Sarah Jones", "sarah@tech.example", "+31201234567", "IT manager")
    assert kept.provenance["phone"] == {"source": "signature", "merged_from": b.id}
    assert kept.provenance["name"]["alternatives"] == [{"value": "S. Jones", "merged_from": b.id}]
    assert kept.provenance["email"]["alternatives"][0]["value"] == "sjones@tech.example"
    dropped = Contact.get_by_id(b.id)
    assert (dropped.merged_into_id, dropped.email) == (a.id, None)
    event = AuditEvent.get(AuditEvent.action == "contact.merge")
    assert (event.object_id, event.details["merged"], event.details["dropped"]["email"]) == (
        a.id, b.id, "sjones@tech.example")


def test_contact_merge_takes_the_unique_email_when_the_kept_has_none(database):
    """The dropped contact's address moves to the kept one (released first, so no clash)."""
    a = Contact.create(name="Sarah", phone="+31201234567")
    b = Contact.create(name="Sarah", email="sarah@tech.example")
    kept, _ = merge_contacts(a.id, b.id)
    assert kept.email == "sarah@tech.example"
    assert Contact.get(Contact.email == "sarah@tech.example").id == a.id


def test_organisation_merge_moves_every_link(database):
    """Contacts, leads, opportunities and activities of B move to A; owner and domain too."""
    rep = Rep.create(name="Sam", email="sam@ourco.example")
    a = org("Tech Innovators Inc.", sector="software")
    b = org("tech innovators, inc", "techinnovators.com", owner=rep, size="50 employees")
    contact = Contact.create(name="Sarah", organisation=b)
    lead = Lead.create(email="x@techinnovators.com", organisation=b)
    opp = Opportunity.create(name="x", organisation=b)
    act = Activity.create(kind="note", organisation=b)
    kept, moved = merge_organisations(a.id, b.id)
    assert moved == {"contact.organisation": 1, "lead.organisation": 1,
                     "opportunity.organisation": 1, "activity.organisation": 1}
    for model, row in ((Contact, contact), (Lead, lead), (Opportunity, opp), (Activity, act)):
        assert model.get_by_id(row.id).organisation_id == a.id
    assert (kept.domain, kept.owner_id, kept.size, kept.sector) == (
        "techinnovators.com", rep.id, "50 employees", "software")
    assert Organisation.get_by_id(b.id).merged_into_id == a.id


@pytest.mark.parametrize("pair, problem", [
    ("same", "into itself"),
    ("missing", "no contact 999"),
    ("merged", "already merged"),
])
def test_merge_refuses_bad_pairs(database, pair, problem):
    """Merging a row into itself, a missing row or an already merged row is refused."""
    a = Contact.create(name="A")
    b = Contact.create(name="B", merged_into=a if pair == "merged" else None)
    other = {"same": a.id, "missing": 999, "merged": b.id}[pair]
    with pytest.raises(MergeError, match=problem):
        merge_contacts(a.id, other)
    assert AuditEvent.select().count() == 0
