"""The sales CLI: reps, routing, leads, opportunities, activities, contacts, orgs, import/export."""

import csv
import io
import json

import pytest

from leadflow.intake.normalise import normalise_org_name
from leadflow.store.database import db, utcnow
from leadflow.store.models import (
    Activity,
    Contact,
    Lead,
    Opportunity,
    Organisation,
    Rep,
)


@pytest.fixture
def sales(cli, database):
    """Two reps in team Sales and a routing rule sending every lead to that team.

    Each command binds (and at its end closes) a database handle of its own;
    afterwards the models are bound to the test's handle again, so that the
    test's own queries never reopen a command's closed pool.
    """
    def run(*args, **kwargs):
        try:
            return cli(*args, **kwargs)
        finally:
            db.initialize(database)

    run("reps", "add", "Sam Peters", "Sam@OurCo.example", "--team", "Sales", "--capacity", "5")
    run("reps", "add", "Kim Lee", "kim@ourco.example", "--team", "Sales", "--digest-hour", "7")
    run("routing", "add", "everyone", "--team", "Sales")
    return run


def make_lead(email="sarah@techinnovators.com", **values):
    values.setdefault("status", "qualified")
    values.setdefault("company", "Tech Innovators Inc.")
    return Lead.create(email=email, open_email=email, domain_class="company", **values)


def org(name, domain):
    return Organisation.create(name=name, normalised_name=normalise_org_name(name), domain=domain)


def test_reps_add_list_edit_away_back(sales):
    """Reps are added, listed with availability, edited, sent away and brought back."""
    reps = json.loads(sales("reps", "list", "--json").output)
    assert [(r["email"], r["team"], r["capacity"], r["digest_hour"]) for r in reps] == [
        ("kim@ourco.example", "Sales", None, 7), ("sam@ourco.example", "Sales", 5, 8)]
    sales("reps", "edit", "sam@ourco.example", "--capacity", "0", "--team", "Enterprise")
    sam = Rep.get(Rep.email == "sam@ourco.example")
    assert (sam.capacity, sam.team) == (None, "Enterprise")
    assert "away until" in sales("reps", "away", "Kim Lee", "--until", "+3d").output
    assert "away until" in sales("reps", "list").output
    sales("reps", "back", "kim@ourco.example")
    assert Rep.get(Rep.email == "kim@ourco.example").away_until is None
    assert "sam@ourco.example" in sales("reps", "show", "sam@ourco.example").output


@pytest.mark.parametrize("args, message", [
    (["reps", "add", "X", "not-an-address"], "not an email address"),
    (["reps", "add", "X", "sam@ourco.example"], "exists already"),
    (["reps", "add", "X", "x@ourco.example", "--timezone", "Mars/Base"], "IANA time zone"),
    (["reps", "away", "nobody@ourco.example", "--until", "2030-01-01"], "no rep"),
    (["reps", "away", "sam@ourco.example", "--until", "soon"], "is not a date"),
    (["routing", "add", "x", "--team", "Sales", "--when", "colour = red"], "unknown field"),
    (["routing", "add", "everyone", "--team", "Sales"], "exists already"),
    (["routing", "remove", "nope"], "no routing rule"),
    (["leads", "convert", "999"], "no lead 999"),
    (["leads", "disqualify", "999", "--reason", "x"], "no lead 999"),
    (["opps", "show", "999"], "no opportunity 999"),
    (["opps", "move", "999", "proposal"], "no opportunity 999"),
    (["activity", "log", "hello"], "exactly one"),
    (["activity", "done", "999"], "no activity 999"),
    (["contacts", "merge", "1", "1"], "into itself"),
    (["orgs", "show", "999"], "no organisation 999"),
])
def test_bad_input_gets_a_clear_error(sales, args, message):
    """Bad input ends as 'Error: ...' with a non-zero exit, never a traceback."""
    result = sales(*args, expect=None)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_routing_list_and_remove(sales):
    """Rules list in order with their conditions; removing one renumbers the rest."""
    sales("routing", "add", "benelux", "--when", "country in NL, BE", "--rep", "kim@ourco.example",
          "--position", "1")
    rules = json.loads(sales("routing", "list", "--json").output)
    assert [(r["position"], r["name"]) for r in rules] == [(1, "benelux"), (2, "everyone")]
    assert "country in NL, BE → rep Kim Lee" in sales("routing", "list").output
    sales("routing", "remove", "benelux")
    assert [r["position"] for r in json.loads(sales("routing", "list", "--json").output)] == [1]


def test_assign_by_hand_and_rerun_routing(sales):
    """leads assign gives a lead to a rep; assign --unassigned routes the rest."""
    first, second = make_lead("a@x.example"), make_lead("b@y.example")
    sales("leads", "assign", first.id, "kim@ourco.example")
    lead = Lead.get_by_id(first.id)
    assert lead.owner.email == "kim@ourco.example" and "by hand" in lead.assignment_reason
    out = json.loads(sales("assign", "--unassigned", "--json").output)
    assert sum(out["assigned"].values()) == 1 and out["unassigned"] == 0
    assert Lead.get_by_id(second.id).owner_id is not None


def test_convert_lists_candidates_and_the_user_chooses(sales):
    """An uncertain organisation match lists the candidates; --org picks one; --dry-run first."""
    a, b = org("Tech Innovators Inc.", "ti.de"), org("Tech Innovators, Inc", "ti.us")
    lead = make_lead("sarah@gmail.com", company="tech innovators")
    Lead.update(domain_class="free").where(Lead.id == lead.id).execute()
    result = sales("leads", "convert", lead.id, expect=1)
    assert "2 organisations match" in result.output
    assert f"{a.id}  Tech Innovators Inc.  (ti.de)" in result.output
    assert f"{b.id}  Tech Innovators, Inc  (ti.us)" in result.output
    dry = json.loads(sales("leads", "convert", lead.id, "--org", b.id, "--dry-run", "--json").output)
    assert dry["dry_run"] and dry["organisation"]["id"] == b.id
    assert Opportunity.select().count() == 0
    done = json.loads(sales("leads", "convert", lead.id, "--org", b.id, "--json").output)
    assert done["organisation"]["id"] == b.id and done["opportunity"]["id"] is not None
    assert Contact.get_by_id(done["contact"]["id"]).organisation_id == b.id


def test_disqualify_and_reopen(sales):
    """leads disqualify needs a reason; reopen brings the lead back."""
    lead = make_lead()
    assert sales("leads", "disqualify", lead.id, expect=2).exit_code == 2  # --reason missing
    sales("leads", "disqualify", lead.id, "--reason", "competitor")
    assert Lead.get_by_id(lead.id).status == "disqualified"
    assert "reopened: working" in sales("leads", "reopen", lead.id).output
    assert Lead.get_by_id(lead.id).status == "working"
    assert Lead.get_by_id(lead.id).open_email == lead.email


def test_opportunity_pipeline_and_activities(sales):
    """Convert, move, log a follow-up, finish it, win: all visible in opps show."""
    lead = make_lead(owner=Rep.get(Rep.email == "sam@ourco.example"))
    sales("leads", "convert", lead.id)
    opp = Opportunity.get()
    sales("opps", "move", opp.id, "proposal")
    assert "unknown stage" in sales("opps", "move", opp.id, "signed", expect=1).output
    assert "opps lost" in sales("opps", "move", opp.id, "lost", expect=2).output
    out = sales("activity", "log", "--opp", opp.id, "--type", "call", "send the quote",
                "--due", "tomorrow").output
    act = Activity.get(Activity.text == "send the quote")
    assert f"activity {act.id}: call" in out and act.rep.email == "sam@ourco.example"
    due = json.loads(sales("activity", "list", "--due", "--by", "+2d", "--json").output)
    assert [a["id"] for a in due] == [act.id]
    sales("activity", "done", act.id)
    assert json.loads(sales("activity", "list", "--due", "--by", "+2d", "--json").output) == []
    sales("opps", "won", opp.id)
    shown = json.loads(sales("opps", "show", opp.id, "--json").output)
    assert [(c["from"], c["to"]) for c in shown["stage_history"]] == [
        (None, "qualification"), ("qualification", "proposal"), ("proposal", "won")]
    assert act.id in [a["id"] for a in shown["activities"]]
    assert [o["id"] for o in json.loads(sales("opps", "list", "--stage", "won", "--json").output)] \
        == [opp.id]
    assert json.loads(sales("opps", "list", "--stage", "open", "--json").output) == []


def test_opps_lost_needs_a_reason_and_records_it(sales):
    """opps lost --reason closes the opportunity with the reason."""
    sales("leads", "convert", make_lead().id)
    opp = Opportunity.get()
    sales("opps", "lost", opp.id, "--reason", "no budget")
    assert Opportunity.get_by_id(opp.id).lost_reason == "no budget"


def test_contacts_and_orgs_show_edit_merge(sales):
    """Contacts and organisations list, show, edit and merge from the CLI."""
    sales("leads", "convert", make_lead().id)
    dup_org = org("Tech Innovators", "techinnovators.io")
    dup = Contact.create(name="Sarah M.", email="sarah.m@techinnovators.io", organisation=dup_org,
                         title="IT Manager")
    kept_org = Organisation.get(Organisation.domain == "techinnovators.com")
    kept = Contact.get(Contact.email == "sarah@techinnovators.com")
    out = sales("orgs", "merge", kept_org.id, dup_org.id).output
    assert "1 contact.organisation" in out
    out = json.loads(sales("contacts", "merge", kept.id, dup.id, "--json").output)
    assert out == {"kept": kept.id, "merged": dup.id, "moved": {}}
    contacts = json.loads(sales("contacts", "list", "--json").output)
    assert [c["id"] for c in contacts] == [kept.id]
    assert "was also sarah.m@techinnovators.io" in sales("contacts", "show", kept.id).output
    sales("orgs", "edit", kept_org.id, "--sector", "software", "--owner", "kim@ourco.example")
    shown = json.loads(sales("orgs", "show", kept_org.id, "--json").output)
    assert (shown["sector"], shown["provenance"]["sector"]["source"]) == ("software", "edit")
    assert Organisation.get_by_id(kept_org.id).owner.email == "kim@ourco.example"
    assert [a["kind"] for a in shown["activities"]] == ["status"]
    assert "Tech Innovators Inc." in sales("orgs", "list").output


def test_export_csv_and_json(sales):
    """export writes CSV with a header row or a JSON list."""
    make_lead()
    rows = list(csv.DictReader(io.StringIO(sales("export", "leads", "--csv").output)))
    assert [r["email"] for r in rows] == ["sarah@techinnovators.com"]
    assert json.loads(sales("export", "leads", "--json").output)[0]["email"] == rows[0]["email"]


def test_import_reports_bad_lines_and_exits_1(sales, tmp_path):
    """import leads imports good rows, names bad lines, and exits 1 when some were bad."""
    path = tmp_path / "sheet.csv"
    path.write_text("Name,Email\nAnn,ann@acme.example\nBob,bob-at-acme\n", encoding="utf-8")
    result = sales("import", "leads", path, expect=1)
    assert "line 3: bad: 'bob-at-acme' is not a valid email address" in result.output
    assert "1 created" in result.output
    assert Lead.get(Lead.email == "ann@acme.example").owner_id is not None  # routed
    dry = json.loads(sales("import", "leads", path, "--dry-run", "--json", expect=1).output)
    assert dry["counts"] == {"ok": 1, "bad": 1}


def test_stale_filter(sales):
    """opps list --stale N shows open opportunities untouched for N days."""
    sales("leads", "convert", make_lead().id)
    assert json.loads(sales("opps", "list", "--stale", "3", "--json").output) == []
    Opportunity.update(stage_changed_at=utcnow().replace(year=2020)).execute()
    assert json.loads(sales("opps", "list", "--stale", "3", "--json").output) == []  # activity
    Activity.update(created_at=utcnow().replace(year=2020)).execute()
    assert len(json.loads(sales("opps", "list", "--stale", "3", "--json").output)) == 1
