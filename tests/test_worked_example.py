"""The worked example of DESIGN.md §1, typed at the CLI: Sarah's forwarded email to an opportunity."""

import json
from pathlib import Path


def test_sarahs_forwarded_email_becomes_an_opportunity(cli, mail_fixture, tmp_path):
    """Forwarded mail → qualified lead for Sarah, assigned → converted → opps show shows it all."""
    cli("init")
    toml = Path(tmp_path / "leadflow.toml")
    toml.write_text(toml.read_text().replace("internal_domains = []",
                                             'internal_domains = ["ourco.example"]'))
    cli("reps", "add", "Sam Peters", "sam@ourco.example", "--team", "Sales",
        "--timezone", "Europe/Amsterdam")
    cli("routing", "add", "everyone", "--team", "Sales")
    assert "1 created" in cli("ingest", mail_fixture("worked_example_sarah.eml")).output

    (lead,) = json.loads(cli("leads", "list", "--json").output)
    assert (lead["name"], lead["email"], lead["status"]) == (
        "Sarah Mitchell", "sarah.mitchell@techinnovators.com", "qualified")
    assert lead["submitted_by"] == "marketing@ourco.example"  # the forwarder, not the prospect
    assert lead["organisation"]["name"] == "Tech Innovators Inc."
    assert lead["owner"]["email"] == "sam@ourco.example"

    out = cli("leads", "convert", lead["id"]).output
    assert "Tech Innovators Inc. — project management software" in out

    (opp,) = json.loads(cli("opps", "list", "--json").output)
    shown = json.loads(cli("opps", "show", opp["id"], "--json").output)
    assert shown["name"] == "Tech Innovators Inc. — project management software"
    assert (shown["stage"], shown["owner"]["email"]) == ("qualification", "sam@ourco.example")
    assert (shown["contact"]["name"], shown["contact"]["email"], shown["contact"]["title"]) == (
        "Sarah Mitchell", "sarah.mitchell@techinnovators.com", "IT Manager")
    assert (shown["organisation"]["name"], shown["organisation"]["domain"]) == (
        "Tech Innovators Inc.", "techinnovators.com")
    assert shown["lead"]["status"] == "converted" and shown["expected_close"] == "2027-02-26"
    assert [(c["from"], c["to"]) for c in shown["stage_history"]] == [(None, "qualification")]
    assert [a["kind"] for a in shown["activities"]] == ["inquiry", "assignment", "status"]

    text = cli("opps", "show", opp["id"]).output
    for expected in ("Opportunity #1: Tech Innovators Inc. — project management software",
                     "owner:          Sam Peters <sam@ourco.example>",
                     "Contact #1: Sarah Mitchell <sarah.mitchell@techinnovators.com>",
                     "Organisation #1: Tech Innovators Inc. [techinnovators.com]",
                     "forwarded by marketing@ourco.example",
                     "(new) → qualification"):
        assert expected in text

    again = cli("leads", "convert", lead["id"], expect=1)
    assert "already converted: opportunity 1" in again.output
