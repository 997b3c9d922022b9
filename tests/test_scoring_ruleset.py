"""Versioned rule sets, TOML round trips, scoring stored leads, rescore resuming, simulate writing nothing."""

import datetime
import hashlib
import json

import pytest
from playhouse.test_utils import count_queries

from leadflow.errors import NotFoundError
from leadflow.intake.pipeline import PipelineItem, process_pending
from leadflow.scoring import engine
from leadflow.scoring import ruleset as rulesets
from leadflow.scoring.conditions import parse_condition
from leadflow.scoring.report import outcome_report, rule_hits
from leadflow.scoring.rules import RuleError, RuleSet, validate_rule
from leadflow.scoring.simulate import histogram_lines, simulate
from leadflow.scoring.starter import starter_ruleset
from leadflow.store.inbound import store_inbound
from leadflow.store.models import Lead, Opportunity, Organisation, RuleSetVersion, ScoringRule

INQUIRY = datetime.datetime(2026, 11, 27, 9, 30)


def rule(name, when, points=0, verdict=None, group=None):
    return validate_rule({"name": name, "conditions": [parse_condition(w) for w in [when]],
                          "points": points, "verdict": verdict, "group": group})


def make_lead(**values):
    base = dict(status="new", domain_class="company", last_inquiry_at=INQUIRY, created_at=INQUIRY)
    base.update(values)
    if base["status"] in ("new", "working", "qualified") and base.get("email"):
        base.setdefault("open_email", base["email"])
    return Lead.create(**base)


def current_rows():
    return [(r.id, r.name, r.points, r.enabled, r.position)
            for r in ScoringRule.select().order_by(ScoringRule.position)]


def test_starter_rules_install_once(database):
    """install_starter_rules installs version 1 once; later calls change nothing."""
    assert rulesets.install_starter_rules("init") == 1
    assert rulesets.install_starter_rules("init") is None
    assert RuleSetVersion.select().count() == 1
    assert [r[1] for r in current_rows()] == [r.name for r in starter_ruleset().rules]
    assert rulesets.history()[0]["action"] == "init"


def test_every_change_is_a_new_version_with_who_and_what(database):
    """add, edit, disable, enable, threshold, cap, remove each make one version."""
    rulesets.install_starter_rules("init")
    version, rule_id = rulesets.add_rule(rule("cto", "title contains cto", 5), "ann")
    assert version == 2
    assert rulesets.edit_rule("cto", {"points": 7}, "bob") == 3
    assert rulesets.set_enabled(rule_id, False, "ann") == 4
    assert rulesets.set_enabled(rule_id, False, "ann") is None   # no change, no version
    assert rulesets.set_enabled(rule_id, True, "ann") == 5
    assert rulesets.set_threshold(60, "ann") == 6
    assert rulesets.set_cap("fit", 40, "ann") == 7
    assert rulesets.remove_rule("cto", "bob") == 8
    rows = rulesets.history()
    assert [(r["version"], r["action"], r["author"]) for r in rows] == [
        (8, "remove", "bob"), (7, "cap", "ann"), (6, "threshold", "ann"), (5, "enable", "ann"),
        (4, "disable", "ann"), (3, "edit", "bob"), (2, "add", "ann"), (1, "init", "init")]
    assert rows[5]["summary"] == "edit 'cto': points 5 -> 7"
    current = rulesets.load_ruleset()
    assert (current.version, current.threshold, current.caps["fit"]) == (8, 60, 40)
    assert current.find("cto") is None and len(current_rows()) == 10


def test_rule_ids_are_kept_and_never_reused(database):
    """An edit keeps a rule's id; a removed rule's id is not given to a new rule."""
    rulesets.install_starter_rules("init")
    _, first = rulesets.add_rule(rule("a", "phone exists", 1))
    rulesets.edit_rule(first, {"name": "a2", "points": 2})
    assert rulesets.load_ruleset().find("a2").id == first
    rulesets.remove_rule(first)
    _, second = rulesets.add_rule(rule("b", "phone exists", 1))
    assert second == first + 1


def test_rollback_restores_a_version_exactly(database):
    """Rolling back makes an old version's rules, ids, threshold and caps current again."""
    rulesets.install_starter_rules("init")
    original = rulesets.load_ruleset()
    rulesets.add_rule(rule("x", "phone exists", 3))
    rulesets.remove_rule("company-domain")
    rulesets.set_threshold(70)
    assert rulesets.rollback(1, "ann") == 5
    back = rulesets.load_ruleset()
    assert rulesets.same_rules(back, original)
    assert [r.id for r in back.rules] == [r.id for r in original.rules]
    assert current_rows() == [(r.id, r.name, r.points, r.enabled, i)
                              for i, r in enumerate(original.rules)]
    assert rulesets.history()[0]["summary"] == "rollback to version 1"
    with pytest.raises(NotFoundError):
        rulesets.rollback(99)


def test_invalid_changes_are_refused_and_change_nothing(database):
    """A rule that fails validation, or a duplicate name, leaves the set as it was."""
    rulesets.install_starter_rules("init")
    with pytest.raises(RuleError, match="two rules have this name"):
        rulesets.add_rule(rule("Phone-Given", "phone exists", 1))
    with pytest.raises(RuleError, match="points"):
        rulesets.edit_rule("phone-given", {"points": 0})
    with pytest.raises(NotFoundError):
        rulesets.remove_rule("nope")
    assert RuleSetVersion.select().count() == 1


def test_changes_do_not_rewrite_stored_scores(database):
    """Changing the rules leaves stored scores as they are until a rescore."""
    rulesets.install_starter_rules("init")
    lead = make_lead(email="a@b.example", phone="+31201234567")
    engine.score_lead(lead)
    stored = Lead.get_by_id(lead.id)
    rulesets.edit_rule("phone-given", {"points": 20})
    again = Lead.get_by_id(lead.id)
    assert (again.score, again.ruleset_version, again.score_breakdown) == \
        (stored.score, 1, stored.score_breakdown)
    counts = engine.rescore()
    assert counts.scored == 1 and Lead.get_by_id(lead.id).score == stored.score + 10


# -- TOML ------------------------------------------------------------------------

def test_export_then_import_gives_an_identical_set(database):
    """Exporting and importing changes nothing; importing into a fresh set reproduces it."""
    rulesets.install_starter_rules("init")
    rulesets.add_rule(validate_rule({"name": "odd", "points": 1, "match": "any", "enabled": False,
                                     "conditions": [{"field": "custom.x", "op": "eq", "value": 1e20},
                                                    {"field": "phone", "op": "exists"}]}))
    current = rulesets.load_ruleset()
    text = rulesets.export_toml(current)
    assert "conditions" in text and 'when = [\n    "domain_class = disposable",\n]' in text
    parsed = rulesets.parse_toml(text)
    assert rulesets.same_rules(parsed, current)
    assert rulesets.import_ruleset(parsed, "ann") == ([], None)
    assert RuleSetVersion.select().count() == 2
    # into an empty database: the same rules come out again, text for text
    RuleSetVersion.delete().execute()
    ScoringRule.delete().execute()
    changes, version = rulesets.import_ruleset(rulesets.parse_toml(text), "ann")
    assert version == 1 and rulesets.export_toml(rulesets.load_ruleset()) == text


def test_import_shows_the_diff_and_applies_one_version(database):
    """An import reports added, removed and changed rules and makes exactly one version."""
    rulesets.install_starter_rules("init")
    data = rulesets.ruleset_to_data(rulesets.load_ruleset())
    data["threshold"] = 45
    data["rules"] = [r for r in data["rules"] if r["name"] != "free-mail"]
    data["rules"][1]["points"] = 25
    data["rules"].append({"name": "cto", "points": 5, "when": ["title contains cto"]})
    proposed = rulesets.ruleset_from_data(data)
    changes, version = rulesets.import_ruleset(proposed, "ann", dry_run=True)
    assert version is None and RuleSetVersion.select().count() == 1
    lines = rulesets.format_diff(changes)
    assert "~ threshold: 50 -> 45" in lines
    assert "- free-mail: domain_class = free -> -10" in lines
    assert "~ company-domain: points: 15 -> 25" in lines
    assert "+ cto: title contains cto -> +5" in lines
    changes, version = rulesets.import_ruleset(proposed, "ann", source="rules.toml")
    assert version == 2 and RuleSetVersion.select().count() == 2
    assert rulesets.history()[0]["summary"] == \
        "import rules.toml: 1 added, 1 changed, 1 removed, threshold 50 -> 45"
    assert rulesets.load_ruleset().find("company-domain").id == 2   # kept by name


@pytest.mark.parametrize("toml, rule_name, field", [
    ('[[rules]]\nname = "ok"\npoints = 5\nwhen = ["phone exists"]\n'
     '[[rules]]\nname = "broken"\npoints = 5\nwhen = ["signals.timeline wihtin 90d"]\n',
     "broken", "when[0]"),
    ('[[rules]]\nname = "pts"\npoints = "many"\nwhen = ["phone exists"]\n', "pts", "points"),
    ('[[rules]]\nname = "re"\npoints = 1\nwhen = ["subject matches (a+)+"]\n', "re", "when[0]"),
    ('[[rules]]\nname = "data"\npoints = 1\nconditions = [{field = "phone", op = "exist"}]\n',
     "data", "conditions[0].op"),
    ('[[rules]]\nname = "grp"\npoints = 1\ngroup = "Fit!"\nwhen = ["phone exists"]\n', "grp", "group"),
    ('[[rules]]\nname = "x"\npoints = 1\nwhen = ["phone exists"]\ncolour = "red"\n', "x", "colour"),
])
def test_a_broken_rule_refuses_the_whole_file(toml, rule_name, field):
    """One broken rule refuses the file; the error names the rule and the field."""
    with pytest.raises(RuleError) as info:
        rulesets.parse_toml("threshold = 40\n" + toml)
    assert (info.value.rule, info.value.where) == (rule_name, field)
    assert f"rule {rule_name!r}: {field}" in str(info.value)


# -- scoring stored leads -----------------------------------------------------------

def test_crossing_the_threshold_qualifies_a_new_lead(database):
    """A lead reaching the threshold becomes qualified, with the time and the version."""
    rulesets.install_starter_rules("init")
    org = Organisation.create(name="Tech Innovators Inc.", normalised_name="tech innovators",
                              domain="techinnovators.com", employees=40)
    lead = make_lead(email="sarah@techinnovators.com", phone="+31201234567", title="IT Manager",
                     organisation=org, signals={"timeline": {"date": "2027-02-26"}})
    result = engine.score_lead(lead)
    stored = Lead.get_by_id(lead.id)
    assert result.qualified and stored.status == "qualified" and stored.qualified_at
    assert stored.score == 70 and stored.ruleset_version == 1 and stored.scored_at
    assert [e["rule"] for e in stored.score_breakdown] == [
        "company-domain", "phone-given", "decision-maker", "team-size", "timeline-3-months"]


@pytest.mark.parametrize("status, expected", [
    ("new", "qualified"), ("working", "qualified"), ("qualified", "qualified"),
    ("converted", "converted"), ("disqualified", "disqualified"), ("spam", "spam"),
])
def test_qualifying_moves_only_new_and_working_leads(database, status, expected):
    rulesets.install_starter_rules("init")
    rulesets.set_threshold(10)
    lead = make_lead(status=status, email="a@b.example", phone="+31201234567")
    engine.score_lead(lead)
    assert Lead.get_by_id(lead.id).status == expected


@pytest.mark.parametrize("status, expected", [
    ("new", "disqualified"), ("working", "disqualified"), ("qualified", "disqualified"),
    ("converted", "converted"),
])
def test_a_disqualify_verdict_closes_an_open_lead(database, status, expected):
    """Disqualified with the rule as the reason, and open_email freed; converted stays."""
    rulesets.install_starter_rules("init")
    lead = make_lead(status=status, email="x@mailinator.com", domain_class="disposable",
                     phone="+31201234567")
    engine.score_lead(lead)
    stored = Lead.get_by_id(lead.id)
    assert stored.status == expected
    if expected == "disqualified":
        assert stored.open_email is None
        assert stored.disqualified_reason == \
            "rule disposable-address: domain_class is 'disposable': disqualify"


def test_a_qualified_lead_is_not_downgraded(database):
    """When the score drops below the threshold a qualified lead stays qualified."""
    rulesets.install_starter_rules("init")
    lead = make_lead(status="qualified", email="a@b.example")
    engine.score_lead(lead)
    assert Lead.get_by_id(lead.id).status == "qualified" and lead.score < 50


def test_the_score_step_skips_items_without_a_lead(database):
    step = engine.ScoreStep()
    assert step.name == "score" and step.description
    assert step.process(PipelineItem(inbound=None, config=None)) is None


def test_the_worked_example_qualifies_through_the_pipeline(database, config, mail_fixture):
    """Sarah's forwarded mail becomes a qualified lead with its breakdown and version."""
    rulesets.install_starter_rules("init")
    store_inbound("email", mail_fixture("worked_example_sarah.eml").read_bytes())
    process_pending(config)
    lead = Lead.get()
    assert lead.email == "sarah.mitchell@techinnovators.com"
    assert lead.status == "qualified" and lead.score >= 50 and lead.ruleset_version == 1
    reasons = [e["reason"] for e in lead.score_breakdown]
    assert "timeline 2027-02-26 is within 3 months: +20" in reasons


# -- rescore, simulate, report ---------------------------------------------------------

def _many(n, **values):
    Lead.insert_many([{"email": f"p{i}@c{i}.example", "domain_class": "company",
                       "last_inquiry_at": INQUIRY, "title": "CTO" if i % 2 else "Intern",
                       **values} for i in range(n)]).execute()


def test_rescore_stopped_halfway_carries_on_where_it_stopped(database):
    """An interrupted rescore keeps its finished batches; the rerun does only the rest."""
    rulesets.install_starter_rules("init")
    _many(35)
    seen = []

    def stop_after_first_batch(n):
        seen.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.rescore(batch_size=10, progress=stop_after_first_batch)
    assert seen == [10]
    assert Lead.select().where(Lead.ruleset_version == 1).count() == 10
    counts = engine.rescore(batch_size=10)
    assert counts.scored == 25
    assert Lead.select().where(Lead.ruleset_version == 1).count() == 35
    assert engine.rescore(batch_size=10).scored == 0
    assert engine.rescore(all_leads=True, batch_size=10).scored == 35


def test_rescore_since_a_date(database):
    rulesets.install_starter_rules("init")
    _many(4)
    _many(3, last_inquiry_at=datetime.datetime(2025, 1, 1))
    assert engine.rescore(since=datetime.datetime(2026, 1, 1)).scored == 4


def test_rescore_reads_related_rows_per_batch_not_per_lead(database):
    """Organisations are fetched once per batch (no N+1)."""
    rulesets.install_starter_rules("init")
    orgs = [Organisation.create(name=f"O{i}", normalised_name=f"o{i}", domain=f"o{i}.example",
                                employees=10 * i) for i in range(20)]
    Lead.insert_many([{"email": f"p{i}@o{i}.example", "organisation": orgs[i].id,
                       "last_inquiry_at": INQUIRY} for i in range(20)]).execute()
    with count_queries() as counter:
        counts = engine.rescore(batch_size=10)
    assert counts.scored == 20
    assert counter.count <= 8   # per batch: the leads, their organisations joined; the rule set
    scored = Lead.get(Lead.email == "p5@o5.example")
    assert any(e["rule"] == "team-size" for e in scored.score_breakdown)


def _varied_leads(n):
    """Leads of every kind the starter rules tell apart, some with an organisation."""
    orgs = [Organisation.create(name=f"O{i}", normalised_name=f"o{i}", domain=f"o{i}.example",
                                employees=(5, 50, 500)[i % 3]) for i in range(7)]
    Lead.insert_many([{
        "email": f"p{i}@c{i}.example", "open_email": f"p{i}@c{i}.example",
        "status": ("new", "working", "qualified", "converted")[i % 4],
        "domain_class": ("company", "free", "disposable", "company", "unknown")[i % 5],
        "phone": "+31201234567" if i % 3 else None,
        "title": ("CTO", "Intern", None, "Head of IT", "Geschäftsführer")[i % 5],
        "subject": ("Demo request", "Question", None)[i % 3],
        "message": ("We need pricing for 40 users", "Déjà vu", "")[i % 3],
        "signals": {"timeline": {"date": f"2027-0{1 + i % 9}-15"}, "size": {"value": i}}
        if i % 2 else {},
        "inquiry_count": 1 + i % 3, "organisation": orgs[i % 7].id if i % 4 else None,
        "last_inquiry_at": INQUIRY - datetime.timedelta(days=i), "created_at": INQUIRY,
    } for i in range(n)]).execute()


_SCORED = ("score", "score_breakdown", "ruleset_version", "status", "disqualified_reason",
           "open_email")


def _scored_rows():
    return [(r["id"], *(r[c] for c in _SCORED), r["scored_at"] is not None,
             r["qualified_at"] is not None)
            for r in Lead.select().order_by(Lead.id).dicts()]


def test_parallel_rescore_stores_what_scoring_each_lead_gives(database):
    """Worker processes (jobs=2) store exactly what one process stores, and that is what
    RuleSet.score gives each lead: score, breakdown text, version, status."""
    rulesets.install_starter_rules("init")
    _varied_leads(57)
    before = list(Lead.select().order_by(Lead.id).dicts())
    counts = engine.rescore(batch_size=10, jobs=1)
    alone = _scored_rows()
    for row in before:  # back to as it was
        Lead.update({c: row[c] for c in (*_SCORED, "scored_at", "qualified_at")}).where(
            Lead.id == row["id"]).execute()
    progress = []
    assert engine.rescore(batch_size=10, jobs=2, progress=progress.append) == counts
    assert _scored_rows() == alone
    assert sorted(progress) == [7, 10, 10, 10, 10, 10]
    assert counts.scored == 57 and counts.qualified and counts.disqualified
    ruleset = rulesets.load_ruleset()
    for lead, old in zip(Lead.select().order_by(Lead.id), before):
        result = ruleset.score(lead)
        assert lead.score == result.score and lead.ruleset_version == ruleset.version
        assert lead.score_breakdown == [dict(e) for e in result.breakdown]
        assert lead.status == (engine._transition(old["status"], result) or old["status"])


def test_a_stopped_parallel_rescore_carries_on_where_it_stopped(database):
    """Stopping a parallel rescore keeps the batches written, ends the workers; the rerun
    does only the rest."""
    import multiprocessing

    rulesets.install_starter_rules("init")
    _many(35)

    def stop_after_first_batch(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.rescore(batch_size=10, progress=stop_after_first_batch, jobs=2)
    done = Lead.select().where(Lead.ruleset_version == 1).count()
    if engine._connection_spec()[0] == "sqlite":
        assert done == 10  # only this process writes: what it reported, no more
    else:
        assert 10 <= done <= 35  # each worker writes: others may have committed meanwhile
    assert multiprocessing.active_children() == []
    assert engine.rescore(batch_size=10, jobs=2).scored == 35 - done
    assert engine.rescore(batch_size=10, jobs=2).scored == 0


def test_a_lead_changed_while_it_was_scored_is_not_written_over(database):
    """A lead updated between the read and the write keeps what the update wrote."""
    rulesets.install_starter_rules("init")
    _many(3)
    scorer = rulesets.load_ruleset().scorer()
    batch = next(engine.read_batches(scorer.ruleset, None, 10, extra_columns=("updated_at",)))
    scored = engine.score_batch(scorer, batch)
    changed = Lead.select().order_by(Lead.id).first()
    changed.score, changed.updated_at = 77, datetime.datetime(2027, 1, 1)
    changed.save()
    assert engine.write_batch(scored, 1) == (2, 0, 0)
    assert Lead.get_by_id(changed.id).score == 77
    assert Lead.select().where(Lead.ruleset_version == 1).count() == 2


def test_a_failing_worker_is_reported(database):
    """A worker that cannot do its part ends the rescore with its error, not a hang."""
    rulesets.install_starter_rules("init")
    _many(25)
    ruleset = rulesets.load_ruleset()
    kind, *where = engine._connection_spec()
    broken = ("sqlite", "/nonexistent/leadflow.db") if kind == "sqlite" else \
        (kind, "leadflow_no_such_database", where[1])
    batches = engine._parallel_batches(ruleset, None, broken, (True, None), 10, 2)
    with pytest.raises(engine.RescoreError, match="does not exist"):
        list(batches)


def _fingerprint():
    rows = [json.dumps(r, sort_keys=True, default=str) for r in
            Lead.select().order_by(Lead.id).dicts()]
    rows += [json.dumps(r, sort_keys=True, default=str) for r in
             RuleSetVersion.select().order_by(RuleSetVersion.id).dicts()]
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()


def test_simulate_writes_nothing_and_counts_the_changes(database):
    """Simulating counts who would qualify, stop or be disqualified; the database is unchanged."""
    rulesets.install_starter_rules("init")
    _many(10, phone="+31201234567")
    make_lead(email="x@mailinator.com", domain_class="disposable")
    engine.rescore()
    before = _fingerprint()
    proposed = RuleSet(list(starter_ruleset().rules) + [rule("cto", "title contains cto", 40)],
                       threshold=50, caps={"fit": 50})
    sim = simulate(proposed)
    assert _fingerprint() == before
    assert sim.leads == 11 and sim.newly_qualified == 5 and sim.stop_qualifying == 0
    assert sim.newly_disqualified == 0   # the disposable one was disqualified already
    assert {c["change"] for c in sim.changes} == {"qualifies"}
    lines = histogram_lines(sim.to_dict()["histogram"])
    assert lines[0].split() == ["score", "before", "after"] and len(lines) > 2
    harsher = RuleSet([rule("no-ctos", "title contains cto", verdict="disqualify")], threshold=50)
    assert simulate(harsher).newly_disqualified == 5
    assert _fingerprint() == before


def test_report_precision_recall_and_won_rate_per_rule(database):
    """The report compares 'qualified' with known outcomes, and each rule's won rate."""
    rulesets.install_starter_rules("init")
    rulesets.set_threshold(20)   # company domain 15 + decision-maker 15 qualifies
    leads = [make_lead(email=f"w{i}@x.example", title="CTO" if i < 3 else "Intern")
             for i in range(5)]
    engine.rescore()
    outcomes = ["won", "won", "lost", "won", "lost"]  # CTOs (qualified): won, won, lost
    for lead, stage in zip(leads, outcomes):
        Lead.update(status="converted").where(Lead.id == lead.id).execute()
        Opportunity.create(name=f"deal {lead.id}", lead=lead, stage=stage)
    make_lead(email="open@x.example")   # no outcome yet: left out
    data = outcome_report()
    assert (data["leads"], data["good"], data["bad"]) == (5, 3, 2)
    assert (data["true_positive"], data["false_positive"], data["false_negative"]) == (2, 1, 1)
    assert data["precision"] == pytest.approx(0.667, abs=0.001)
    assert data["recall"] == pytest.approx(0.667, abs=0.001)
    decision = next(r for r in data["rules"] if r["rule"] == "decision-maker")
    assert (decision["fired"], decision["won_rate_fired"]) == (3, pytest.approx(0.667, abs=0.001))
    assert (decision["not_fired"], decision["won_rate_not_fired"]) == (2, 0.5)
    assert rule_hits(30, now=datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None))[
        decision["id"]] == 3
