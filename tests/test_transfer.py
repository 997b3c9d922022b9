"""CSV import through the intake pipeline (bad rows reported by line) and CSV/JSON export."""

import csv
import io
import json

import pytest

from leadflow.store.models import InboundMessage, Lead, Rep, RoutingRule
from leadflow.store.transfer import (
    ImportFileError,
    export_rows,
    import_leads,
    parse_mapping,
    write_csv,
)

SHEET = """\
First name,Last name,E-mail,Company name,Phone,Notes,Region
Anna,de Boer,anna@boer-bouw.nl,Boer Bouw BV,020 123 4567,"We want a demo
for 25 people",north
Bad,Row,not-an-email,X,,,
Carl,Nobody,,Y,,,
Dirk,Jansen,dirk@jansen.example,Jansen,999,,
Fay,Ok,FAY@FayCo.example,FayCo,,,south,extra
Gus,Good,gus@gusco.example,GusCo,,,west
"""


def write(tmp_path, text, name="leads.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_reports_bad_rows_by_line_and_imports_the_good(database, config, tmp_path):
    """Good rows become leads through the pipeline; each bad row is named by its line."""
    report = import_leads(write(tmp_path, SHEET), config)
    outcomes = [(r.line, r.outcome) for r in report.rows]
    assert outcomes == [(2, "created"), (4, "bad"), (5, "bad"), (6, "bad"), (7, "bad"),
                        (8, "created")]
    problems = {r.line: r.problem for r in report.bad}
    assert problems == {4: "'not-an-email' is not a valid email address",
                        5: "no email address", 6: "'999' is not a valid phone number",
                        7: "8 cells for 7 columns"}
    anna = Lead.get(Lead.email == "anna@boer-bouw.nl")
    assert (anna.name, anna.phone, anna.company, anna.channel, anna.custom) == (
        "Anna de Boer", "+31201234567", "Boer Bouw BV", "import", {"region": "north"})
    assert anna.message.startswith("We want a demo\nfor 25 people")
    assert anna.organisation.domain == "boer-bouw.nl"
    assert InboundMessage.select().where(InboundMessage.channel == "import").count() == 2


def test_importing_twice_stores_nothing_new(database, config, tmp_path):
    """The same rows again are duplicates: no second lead, no second processing."""
    path = write(tmp_path, SHEET)
    import_leads(path, config)
    again = import_leads(path, config)
    assert again.counts() == {"duplicate": 2, "bad": 4}
    assert Lead.select().count() == 2


def test_import_joins_the_prospects_open_lead(database, config, tmp_path):
    """A row for someone with an open lead adds an inquiry to it (the pipeline's dedup)."""
    import_leads(write(tmp_path, "email,message\nann@acme.example,first\n", "a.csv"), config)
    report = import_leads(write(tmp_path, "email,message\nann@acme.example,second\n", "b.csv"),
                          config)
    assert [r.outcome for r in report.rows] == ["updated"]
    assert Lead.get(Lead.email == "ann@acme.example").inquiry_count == 2


def test_imported_leads_are_assigned(database, config, tmp_path):
    """Imported rows run the whole pipeline, assignment included."""
    rep = Rep.create(name="Sam", email="sam@ourco.example", team="Sales")
    RoutingRule.create(name="all", team="Sales", conditions=[], position=1)
    import_leads(write(tmp_path, "email\nann@acme.example\n"), config)
    assert Lead.get(Lead.email == "ann@acme.example").owner_id == rep.id


def test_dry_run_stores_nothing(database, config, tmp_path):
    """A dry run checks every row and stores nothing."""
    report = import_leads(write(tmp_path, SHEET), config, dry_run=True)
    assert report.counts() == {"ok": 2, "bad": 4}
    assert InboundMessage.select().count() == 0 and Lead.select().count() == 0


def test_map_option_maps_and_skips_columns(database, config, tmp_path):
    """--map COLUMN=FIELD maps an unknown column; COLUMN= skips one."""
    path = write(tmp_path, "Who,Addr,Secret\nAnn Lee,ann@acme.example,xyz\n")
    import_leads(path, config, ["Who=name", "Addr=email", "Secret="])
    lead = Lead.get(Lead.email == "ann@acme.example")
    assert (lead.name, lead.custom) == ("Ann Lee", {})


@pytest.mark.parametrize("text, mapping, problem", [
    ("", [], "empty file"),
    ("name,company\nAnn,Acme\n", [], "no column maps to email"),
    ("email,mail\na@b.example,c@d.example\n", [], "all map to email"),
    ("email\na@b.example\n", ["Nope=name"], "no column 'Nope'"),
])
def test_unusable_files_are_refused(database, config, tmp_path, text, mapping, problem):
    """A file without a header or an email column, or a bad --map, stops before any row."""
    with pytest.raises(ImportFileError, match=problem):
        import_leads(write(tmp_path, text), config, mapping)
    assert InboundMessage.select().count() == 0


@pytest.mark.parametrize("item, problem", [("nofield", "is not COLUMN=FIELD"),
                                           ("a=colour", "unknown field 'colour'")])
def test_bad_map_items(item, problem):
    """--map items are checked before the file is read."""
    with pytest.raises(ImportFileError, match=problem):
        parse_mapping([item])


@pytest.mark.parametrize("kind", ["leads", "contacts", "orgs", "opps"])
def test_export_round_trips_through_csv_and_json(database, config, tmp_path, kind):
    """Export gives the same rows as CSV (with a header) and as JSON."""
    from leadflow.store.conversion import convert_lead

    import_leads(write(tmp_path, SHEET), config)
    convert_lead(Lead.get(Lead.email == "anna@boer-bouw.nl"))
    rows = export_rows(kind)
    assert len(rows) == {"leads": 2, "contacts": 1, "orgs": 1, "opps": 1}[kind]
    out = io.StringIO()
    write_csv(rows, out)
    back = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["id"] for r in back] == [str(r["id"]) for r in rows]
    assert json.loads(json.dumps(rows, default=str))[0]["id"] == rows[0]["id"]


def test_export_does_not_query_per_row(database):
    """Exporting leads with organisations and owners takes the same few queries for 2 or 20."""
    from playhouse.test_utils import count_queries

    from leadflow.store.models import Organisation

    def queries_for(n):
        for i in range(n):
            org = Organisation.create(name=f"Org {i}", normalised_name=f"org {i}")
            rep = Rep.create(name=f"Rep {i}", email=f"rep{i}-{n}@ourco.example")
            Lead.create(email=f"p{i}@org{i}.example", organisation=org, owner=rep)
        with count_queries() as counter:
            assert len(export_rows("leads")) >= n
        return counter.count

    assert queries_for(2) == queries_for(20) <= 3
