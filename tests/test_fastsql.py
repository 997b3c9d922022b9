"""The worker's cached statements write and read exactly what peewee would (both backends)."""

import datetime

import pytest
from peewee import IntegrityError

from leadflow.store import fastsql
from leadflow.store.database import db
from leadflow.store.models import Activity, Lead, Organisation, Rep


def _lead_values(**extra):
    when = datetime.datetime(2026, 11, 27, 9, 42, 5)
    values = dict(status="new", name="Sarah Mitchell", email="sarah@techinnovators.example",
                  open_email="sarah@techinnovators.example", email_domain="techinnovators.example",
                  domain_class="company", subject="Pricing", message="Hello — ünïcode",
                  signals={"budget": {"amount": 20000, "currency": "EUR"}, "product": ["pm"]},
                  fields={"Phone": "+31 20"}, custom={}, channel="email", needs_review=False,
                  first_inquiry_at=when, last_inquiry_at=when, created_at=when, updated_at=when,
                  status_changed_at=when)
    values.update(extra)
    return values


def _row(model, pk):
    return model.select().where(model.id == pk).dicts().get()


def test_create_stores_what_peewee_create_stores(database):
    org = Organisation.create(name="Tech Innovators", normalised_name="tech innovators",
                              domain="techinnovators.example")
    ours = fastsql.create(Lead, **_lead_values(organisation=org))
    theirs = Lead.create(**_lead_values(organisation=org, open_email=None))
    assert isinstance(ours.id, int) and ours.id != theirs.id
    assert not ours.dirty_fields
    mine, reference = _row(Lead, ours.id), _row(Lead, theirs.id)
    for row in (mine, reference):
        row.pop("id")
    reference["open_email"] = mine["open_email"]
    assert mine == reference
    assert mine["signals"] == {"budget": {"amount": 20000, "currency": "EUR"}, "product": ["pm"]}
    assert mine["organisation"] == org.id
    assert mine["inquiry_count"] == 1  # the model's default, applied as peewee applies it


def test_create_raises_integrity_error_and_leaves_nothing(database):
    fastsql.create(Lead, **_lead_values())
    with pytest.raises(IntegrityError):
        with db.atomic():
            fastsql.create(Lead, **_lead_values())  # the same open_email
    assert Lead.select().count() == 1


def test_get_reads_instances_with_python_values(database):
    lead = fastsql.create(Lead, **_lead_values())
    found = fastsql.get(Lead, "open_email", "sarah@techinnovators.example", for_update=True)
    reference = Lead.get_by_id(lead.id)
    assert found.__data__ == reference.__data__
    assert found.last_inquiry_at == datetime.datetime(2026, 11, 27, 9, 42, 5)
    assert not found.dirty_fields
    narrow = fastsql.get(Lead, "email", "sarah@techinnovators.example", fields=("id",))
    assert narrow.id == lead.id and "name" not in narrow.__data__
    assert fastsql.get(Lead, "email", "nobody@example.com") is None


def test_save_writes_only_the_named_or_dirty_fields(database):
    lead = fastsql.create(Lead, **_lead_values())
    Lead.update(name="Changed elsewhere").where(Lead.id == lead.id).execute()
    lead.score = 85
    lead.score_breakdown = [{"rule": "budget", "points": 85}]
    assert fastsql.save_dirty(lead) == 1
    assert not lead.dirty_fields
    row = _row(Lead, lead.id)
    assert row["score"] == 85 and row["score_breakdown"] == [{"rule": "budget", "points": 85}]
    assert row["name"] == "Changed elsewhere"  # not rewritten from the stale instance
    assert fastsql.save_dirty(lead) == 0


def test_update_unowned_changes_only_a_row_without_owner(database):
    rep = Rep.create(name="Sam", email="sam@ourco.example")
    lead = fastsql.create(Lead, **_lead_values())
    assert fastsql.update(Lead, lead.id, {"owner": rep.id}, unowned="owner") == 1
    assert fastsql.update(Lead, lead.id, {"owner": None}, unowned="owner") == 0
    assert Lead.get_by_id(lead.id).owner_id == rep.id
    activity = fastsql.create(Activity, kind="assignment", text="x", lead=lead, rep=rep)
    assert Activity.get_by_id(activity.id).lead_id == lead.id
