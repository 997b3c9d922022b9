"""`leadflow rules ...` and `leadflow rescore` against a real database, through click's runner."""

import json

import pytest

from leadflow.scoring import engine
from leadflow.scoring import ruleset as rulesets
from leadflow.store.database import db
from leadflow.store.models import Lead, RuleSetVersion

CONFIG = '[intake]\ninternal_domains = ["ourco.example"]\n'


@pytest.fixture
def rules_cli(cli, database, tmp_path):
    """The CLI with the starter rules installed and a config naming the internal domain."""
    (tmp_path / "leadflow.toml").write_text(CONFIG)
    rulesets.install_starter_rules("init")

    def invoke(*args, **kwargs):
        try:
            return cli(*args, **kwargs)
        finally:
            # the command opened (and closed) its own database handle; the test's
            # own queries go through the fixture's handle again, closed at teardown
            db.initialize(database)
    return invoke


def data(result):
    return json.loads(result.output)


def test_list_shows_the_rules(rules_cli):
    """`rules list` shows id, name, conditions, points, enabled and hits; --json the same as data."""
    out = rules_cli("rules", "list").output
    assert "timeline-3-months" in out and "signals.timeline within 3m" in out
    assert "threshold 50; groups: fit at most 50, intent at most 50; rule set version 1" in out
    listed = data(rules_cli("rules", "list", "--json"))
    assert listed["version"] == 1 and len(listed["rules"]) == 10
    assert listed["rules"][0] == {
        "id": 1, "name": "disposable-address", "description": listed["rules"][0]["description"],
        "group": None, "match": "all", "points": 0, "verdict": "disqualify", "enabled": True,
        "conditions": [{"field": "domain_class", "op": "eq", "value": "disposable"}],
        "when": ["domain_class = disposable"], "hits_30d": 0}


def test_add_show_edit_disable_enable_remove(rules_cli):
    """A rule's whole life from the CLI; each change is a version."""
    out = rules_cli("rules", "add", "fast-buyer", "--when", "signals.timeline within 90d",
                    "--points", "20", "--group", "intent").output
    assert "added rule #11 'fast-buyer'" in out and "rule set version 2" in out
    assert "leadflow rescore" in out
    shown = data(rules_cli("rules", "show", "11", "--json"))
    assert shown["when"] == ["signals.timeline within 90d"] and shown["points"] == 20
    rules_cli("rules", "edit", "fast-buyer", "--when", "title contains cto", "--when",
              "phone exists", "--any", "--points", "5")
    assert "title contains cto" in rules_cli("rules", "show", "fast-buyer").output
    assert "when (any of)" in rules_cli("rules", "show", "fast-buyer").output
    rules_cli("rules", "disable", "11")
    assert "nothing changed" in rules_cli("rules", "disable", "11").output
    rules_cli("rules", "enable", "11")
    rules_cli("rules", "edit", "11", "--disqualify")
    assert data(rules_cli("rules", "show", "11", "--json"))["verdict"] == "disqualify"
    rules_cli("rules", "remove", "fast-buyer")
    history = data(rules_cli("rules", "history", "--json"))
    assert [h["action"] for h in history] == ["remove", "edit", "enable", "disable", "edit",
                                              "add", "init"]
    rules_cli("rules", "show", "11", expect=1)


@pytest.mark.parametrize("args, words", [
    (["--when", "signals.timeline wihtin 90d", "--points", "5"], "did you mean 'within'"),
    (["--when", "titel = cto", "--points", "5"], "did you mean 'title'"),
    (["--when", "subject matches (a+)+", "--points", "5"], "nested quantifiers"),
    (["--when", "phone exists"], "--points N or --disqualify"),
    (["--points", "5"], "at least one --when"),
    (["--when", "phone exists", "--points", "0"], "points: a rule needs points"),
    (["--when", "phone exists", "--points", "5", "--group", "Big Group"], "group"),
])
def test_invalid_rules_are_refused_pointing_at_the_part(rules_cli, args, words):
    """Bad input gets a clear error (no traceback) and no new version."""
    result = rules_cli("rules", "add", "x", *args, expect=None)
    assert result.exit_code in (1, 2) and words in result.output
    assert "Traceback" not in result.output
    assert RuleSetVersion.select().count() == 1


def test_caret_under_the_wrong_word(rules_cli):
    result = rules_cli("rules", "add", "x", "--when", "signals.timeline wihtin 90d",
                       "--points", "5", expect=2)
    lines = result.output.rstrip().splitlines()
    assert lines[-2].strip() == "signals.timeline wihtin 90d"
    assert lines[-1].index("^") == lines[-2].index("wihtin")


def test_threshold_and_caps(rules_cli):
    assert rules_cli("rules", "threshold").output.strip() == "50"
    rules_cli("rules", "threshold", "60")
    assert rules_cli("rules", "threshold").output.strip() == "60"
    rules_cli("rules", "threshold", "-3", expect=2)
    rules_cli("rules", "cap", "fit", "40")
    assert rules_cli("rules", "cap", "fit").output.strip() == "40"
    rules_cli("rules", "cap", "fit", "--remove")
    assert rules_cli("rules", "cap", "fit").output.strip() == "no cap"


def test_export_import_round_trip(rules_cli, tmp_path):
    """Export then import: no changes and no new version."""
    path = tmp_path / "rules.toml"
    rules_cli("rules", "export", path)
    assert path.read_text() == rules_cli("rules", "export").output
    out = rules_cli("rules", "import", path).output
    assert "no changes" in out and RuleSetVersion.select().count() == 1


def test_import_dry_run_then_apply(rules_cli, tmp_path):
    path = tmp_path / "rules.toml"
    text = rules_cli("rules", "export").output.replace("threshold = 50", "threshold = 45")
    path.write_text(text + '\n[[rules]]\nname = "cto"\npoints = 5\nwhen = ["title contains cto"]\n')
    out = rules_cli("rules", "import", path, "--dry-run").output
    assert "~ threshold: 50 -> 45" in out and "+ cto: title contains cto -> +5" in out
    assert "dry run" in out and RuleSetVersion.select().count() == 1
    applied = data(rules_cli("rules", "import", path, "--json"))
    assert applied["version"] == 2 and len(applied["changes"]) == 2


def test_importing_a_file_with_one_broken_rule_changes_nothing(rules_cli, tmp_path):
    """The error names the rule and the field; the rule set stays as it was."""
    path = tmp_path / "rules.toml"
    path.write_text('threshold = 10\n[[rules]]\nname = "fine"\npoints = 5\nwhen = ["phone exists"]\n'
                    '[[rules]]\nname = "broken"\npoints = 5\nwhen = ["signals.budget > lots"]\n')
    result = rules_cli("rules", "import", path, expect=1)
    assert "rule 'broken': when[0]" in result.output and "nothing was changed" in result.output
    assert RuleSetVersion.select().count() == 1
    assert rulesets.load_ruleset().threshold == 50


def test_rules_test_explains_the_worked_example(rules_cli, mail_fixture):
    """`rules test FILE.eml` shows every rule with hit or miss and the total: Sarah qualifies."""
    out = rules_cli("rules", "test", mail_fixture("worked_example_sarah.eml")).output
    assert "Sarah Mitchell <sarah.mitchell@techinnovators.com>" in out
    assert "HIT" in out and "timeline-3-months: timeline 2027-02-26 is within 3 months" in out
    assert "miss" in out and "budget-mentioned: budget is missing" in out
    assert "QUALIFIED" in out.splitlines()[-1]
    result = data(rules_cli("rules", "test", mail_fixture("worked_example_sarah.eml"), "--json"))
    assert result["qualified"] and result["score"] >= 50 and len(result["rules"]) == 10


def test_rules_test_on_a_stored_lead(rules_cli):
    lead = Lead.create(email="x@mailinator.com", domain_class="disposable")
    out = rules_cli("rules", "test", lead.id).output
    assert "DISQUALIFIED by disposable-address" in out
    assert Lead.get_by_id(lead.id).score_breakdown == []   # testing stores nothing
    rules_cli("rules", "test", "999", expect=1)
    assert "give a lead id or a mail file" in rules_cli("rules", "test", "nope.eml", expect=1).output


def test_simulate_and_rescore(rules_cli, tmp_path):
    """simulate counts without writing; rescore applies; a second rescore has nothing to do."""
    Lead.insert_many([{"email": f"p{i}@c{i}.example", "domain_class": "company",
                       "title": "CTO" if i % 2 else "Intern"} for i in range(6)]).execute()
    first = data(rules_cli("rescore", "--json"))
    assert first == {"scored": 6, "qualified": 0, "disqualified": 0, "version": 1}
    path = tmp_path / "proposed.toml"
    path.write_text(rules_cli("rules", "export").output.replace("threshold = 50", "threshold = 30"))
    sim = data(rules_cli("rules", "simulate", "--file", path, "--json"))
    assert sim["newly_qualified"] == 3 and sim["leads"] == 6
    text = rules_cli("rules", "simulate", "--file", path).output
    assert "would newly qualify:    3" in text and "nothing was written" in text
    assert Lead.select().where(Lead.status == "qualified").count() == 0
    assert data(rules_cli("rescore", "--json"))["scored"] == 0
    rules_cli("rules", "import", path, "--rescore")
    assert Lead.select().where(Lead.status == "qualified").count() == 3
    assert data(rules_cli("rescore", "--all", "--json"))["scored"] == 6
    assert "is not a date" in rules_cli("rescore", "--since", "yesterday", expect=2).output


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_rescore_jobs(rules_cli, jobs):
    """--jobs 2 scores in worker processes, with the progress bar as with one."""
    Lead.insert_many([{"email": f"p{i}@c{i}.example", "domain_class": "company",
                       "phone": "+31201234567", "title": "CTO" if i % 2 else "Intern",
                       "inquiry_count": 1 + i % 3} for i in range(9)]).execute()
    result = rules_cli("rescore", "--batch-size", "2", "--jobs", jobs)
    assert "rescored 9 lead(s) with rule set version 1: 3 newly qualified" in result.output
    assert result.stderr.startswith("rescoring")
    assert Lead.select().where(Lead.ruleset_version == 1).count() == 9
    assert "0 is not in the range" in rules_cli("rescore", "--jobs", "0", expect=2).output


def test_rollback_from_the_cli(rules_cli):
    rules_cli("rules", "remove", "free-mail")
    rules_cli("rules", "rollback", "1")
    assert rulesets.load_ruleset().find("free-mail").id == 3
    assert "no rule set version 7" in rules_cli("rules", "rollback", "7", expect=1).output


def test_report_from_the_cli(rules_cli):
    lead = Lead.create(email="a@b.example", domain_class="company", status="converted")
    engine.score_lead(lead)
    report = data(rules_cli("rules", "report", "--json"))
    assert report["leads"] == 1 and report["good"] == 1 and report["recall"] == 0.0
    assert "precision" in rules_cli("rules", "report").output
