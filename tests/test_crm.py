"""The lead lifecycle, opportunity stages and activities, recorded as they happen."""

import datetime

import pytest

from leadflow.store import crm
from leadflow.store.crm import ActivityError, LifecycleError, StageError
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


def lead(email="ann@acme.example", status="new", **values):
    open_email = email if status in ("new", "working", "qualified") else None
    return Lead.create(email=email, status=status, open_email=open_email, **values)


def opp(**values):
    values.setdefault("name", "Acme — tool")
    return Opportunity.create(**values)


@pytest.mark.parametrize("close", [
    lambda row: crm.disqualify(row.id, "student project"),
    lambda row: crm.mark_spam(row.id),
])
def test_closing_a_lead_frees_its_address_and_is_recorded(database, close):
    """Disqualified or spam: open_email is cleared, an activity and an audit event are written."""
    row = lead()
    close(row)
    row = Lead.get_by_id(row.id)
    assert row.status in ("disqualified", "spam") and row.open_email is None
    assert Activity.get(Activity.kind == "status").text.startswith(f"status new → {row.status}")
    event = AuditEvent.get(AuditEvent.action == "lead.status")
    assert (event.object_id, event.details["from"], event.details["to"]) == (row.id, "new",
                                                                            row.status)


def test_disqualify_needs_a_reason(database):
    """A disqualification without a reason is refused."""
    with pytest.raises(LifecycleError, match="a reason is required"):
        crm.disqualify(lead().id, "  ")


@pytest.mark.parametrize("qualified_at, back_to", [(None, "working"),
                                                   (datetime.datetime(2026, 1, 1), "qualified")])
def test_reopen_restores_the_open_address(database, qualified_at, back_to):
    """A reopened lead holds its address again and returns to working (or qualified)."""
    row = lead(qualified_at=qualified_at)
    crm.disqualify(row.id, "wrong country")
    reopened = crm.reopen(row.id)
    assert (reopened.status, reopened.open_email, reopened.disqualified_reason) == (
        back_to, "ann@acme.example", None)


def test_reopen_is_refused_while_another_lead_is_open_for_the_address(database):
    """One open lead per person: reopening waits until the other one is closed."""
    old = lead()
    crm.disqualify(old.id, "duplicate")
    newer = lead()
    with pytest.raises(LifecycleError, match=f"lead {newer.id} is open for ann@acme.example"):
        crm.reopen(old.id)
    assert Lead.get_by_id(old.id).status == "disqualified"


@pytest.mark.parametrize("status, problem", [("converted", "it was converted"),
                                             ("working", "already open")])
def test_reopen_refuses_converted_and_open_leads(database, status, problem):
    """Converted leads carry on as opportunities; open leads need no reopening."""
    row = lead(status=status)
    with pytest.raises(LifecycleError, match=problem):
        crm.reopen(row.id)


def test_logging_an_interaction_starts_work_on_a_new_lead(database):
    """A call on a new lead moves it to working; a note does not."""
    row = lead()
    crm.log_activity("note", "looked them up", lead=row.id)
    assert Lead.get_by_id(row.id).status == "new"
    crm.log_activity("call", "introduced ourselves", lead=row.id)
    assert Lead.get_by_id(row.id).status == "working"


def test_activity_on_an_opportunity_links_everything_and_its_owner(database):
    """An activity on an opportunity also names its lead, contact, organisation and owner."""
    rep = Rep.create(name="Sam", email="sam@ourco.example")
    org = Organisation.create(name="Acme", normalised_name="acme")
    contact = Contact.create(name="Ann", organisation=org)
    row = opp(lead=lead(status="converted"), contact=contact, organisation=org, owner=rep)
    act = crm.log_activity("meeting", "demo", opportunity=row.id, due=datetime.date(2026, 12, 1))
    assert (act.lead_id, act.contact_id, act.organisation_id, act.rep_id) == (
        row.lead_id, contact.id, org.id, rep.id)
    assert [a.id for a in crm.organisation_activities(org)] == [act.id]


def test_follow_ups_are_due_until_done(database):
    """A follow-up shows as due from its date until it is marked done (once)."""
    rep = Rep.create(name="Sam", email="sam@ourco.example")
    row = lead(owner=rep)
    act = crm.log_activity("call", "call back", lead=row.id, due=datetime.date(2026, 12, 1))
    assert crm.due_followups(rep.id, on=datetime.date(2026, 11, 30)) == []
    assert [a.id for a in crm.due_followups(rep.id, on=datetime.date(2026, 12, 2))] == [act.id]
    first = crm.complete_activity(act.id).done_at
    assert crm.complete_activity(act.id).done_at == first
    assert crm.due_followups(rep.id, on=datetime.date(2026, 12, 2)) == []


@pytest.mark.parametrize("kwargs, problem", [
    ({"kind": "fax", "text": "x", "lead": 1}, "unknown activity type"),
    ({"kind": "call", "text": "x"}, "exactly one"),
    ({"kind": "call", "text": "x", "lead": 1, "contact": 1}, "exactly one"),
    ({"kind": "call", "text": " ", "lead": 1}, "needs a text"),
])
def test_bad_activities_are_refused(database, kwargs, problem):
    """An unknown type, no target or two, or no text is refused."""
    with pytest.raises(ActivityError, match=problem):
        crm.log_activity(**kwargs)


def test_stage_moves_are_recorded_with_times(database):
    """Each move writes a StageChange; won and lost close the opportunity, lost with a reason."""
    row = opp()
    crm.move_opportunity(row.id, "proposal", actor="sam")
    crm.move_opportunity(row.id, "lost", actor="sam", reason="went with a competitor")
    closed = Opportunity.get_by_id(row.id)
    assert (closed.stage, closed.lost_reason) == ("lost", "went with a competitor")
    assert closed.closed_at is not None
    history = [(c.from_stage, c.to_stage, c.actor) for c in
               StageChange.select().where(StageChange.opportunity == row.id).order_by(StageChange.id)]
    assert history == [("qualification", "proposal", "sam"), ("proposal", "lost", "sam")]
    crm.move_opportunity(row.id, "negotiation")  # reopened
    assert Opportunity.get_by_id(row.id).closed_at is None


@pytest.mark.parametrize("stage, reason, problem", [
    ("signed", None, "unknown stage"),
    ("lost", None, "a reason is required"),
    ("qualification", None, "already there"),
])
def test_bad_stage_moves_are_refused(database, stage, reason, problem):
    """Unknown stages, lost without a reason and no-op moves are refused."""
    row = opp()
    with pytest.raises(StageError, match=problem):
        crm.move_opportunity(row.id, stage, reason=reason)
    assert StageChange.select().count() == 0


def test_stale_opportunities(database):
    """Stale: open, no stage change and no activity for N days."""
    old = utcnow_minus(days=20)
    quiet = opp(name="quiet", stage_changed_at=old)
    busy = opp(name="busy", stage_changed_at=old)
    opp(name="won long ago", stage="won", stage_changed_at=old)
    opp(name="fresh")
    Activity.create(kind="call", opportunity=busy)
    assert [o.name for o in crm.list_opportunities(stale_days=14)] == [quiet.name]


def utcnow_minus(days):
    from leadflow.store.database import utcnow

    return utcnow() - datetime.timedelta(days=days)


def test_listing_opportunities_is_one_query(database):
    """opps list reads organisations and owners in the same query (no query per row)."""
    from playhouse.test_utils import count_queries

    for i in range(5):
        org = Organisation.create(name=f"Org {i}", normalised_name=f"org {i}")
        rep = Rep.create(name=f"Rep {i}", email=f"rep{i}@ourco.example")
        opp(name=f"deal {i}", organisation=org, owner=rep)
    with count_queries() as counter:
        rows = crm.list_opportunities(stale_days=None)
        names = [(o.organisation.name, o.owner.email) for o in rows]
    assert len(names) == 5 and counter.count == 1
