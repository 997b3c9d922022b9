"""Assignment: ordered routing rules, round-robin in a team, away and capacity, sticky owners."""

import collections
import datetime

import pytest

from leadflow.intake.normalise import normalise_org_name
from leadflow.scoring import routing
from leadflow.scoring.routing import RoutingError, add_rule, assign_lead, assign_unassigned
from leadflow.store.models import Activity, Lead, Organisation, Rep, RoutingRule

TODAY = datetime.date(2026, 11, 27)
NOW = datetime.datetime(2026, 11, 27, 10, 0)


def rep(name, team="Benelux", **values):
    return Rep.create(name=name, email=f"{name.lower()}@ourco.example", team=team, **values)


def lead(n=0, **values):
    values.setdefault("email", f"p{n}@prospect{n}.example")
    values.setdefault("open_email", values["email"])
    values.setdefault("status", "new")
    return Lead.create(**values)


def cond(text):
    from leadflow.scoring.conditions import parse_condition

    return parse_condition(text)


def assign(row, minutes=0):
    return assign_lead(row, now=NOW + datetime.timedelta(minutes=minutes))


def test_rules_apply_in_order_and_the_first_match_wins(database):
    """The first rule (by position) whose conditions hold decides, and the reason names it."""
    sam, kim = rep("Sam"), rep("Kim", team="DACH")
    add_rule("dach", [cond("country in DE, AT, CH")], team="DACH")
    add_rule("benelux", [cond("country in NL, BE, LU")], team="Benelux")
    add_rule("catch-all", [], rep=sam, position=1)  # inserted first: would win everything
    assert [r.name for r in routing.list_rules()] == ["catch-all", "dach", "benelux"]
    routing.remove_rule("catch-all")
    dutch, german, french = lead(1, country="NL"), lead(2, country="DE"), lead(3, country="FR")
    assert assign(dutch) == sam and assign(german, 1) == kim and assign(french, 2) is None
    assert Lead.get_by_id(dutch.id).assignment_reason == \
        "rule 'benelux' → team Benelux → round-robin → Sam"
    assert Lead.get_by_id(french.id).assignment_reason == "unassigned: no routing rule matched"
    act = Activity.get(Activity.kind == "assignment", Activity.lead == dutch.id)
    assert (act.rep_id, act.text) == (sam.id, "rule 'benelux' → team Benelux → round-robin → Sam")


def test_round_robin_is_fair(database):
    """Nine leads for a team of three: three each, in turn."""
    reps = [rep(n) for n in ("Ann", "Bob", "Cat")]
    add_rule("all", [], team="Benelux")
    owners = [assign(lead(i), i).name for i in range(9)]
    assert owners == ["Ann", "Bob", "Cat"] * 3
    assert collections.Counter(owners) == {r.name: 3 for r in reps}


@pytest.mark.parametrize("ann, reason", [
    ({"away_until": TODAY}, "Ann away until 2026-11-27"),
    ({"capacity": 1}, "Ann at capacity (1/1)"),
    ({"active": False}, "Ann inactive"),
])
def test_away_capacity_and_inactive_reps_are_skipped(database, ann, reason):
    """A rep who is away, full or inactive is skipped, and the reason says so."""
    first = rep("Ann", last_assigned_at=NOW - datetime.timedelta(days=9), **ann)
    rep("Bob", last_assigned_at=NOW - datetime.timedelta(days=1))
    lead(99, owner=first)  # one open lead for Ann
    add_rule("all", [], team="Benelux")
    row = lead(1)
    assert assign(row).name == "Bob"
    assert Lead.get_by_id(row.id).assignment_reason == \
        f"rule 'all' → team Benelux → round-robin (skipped {reason}) → Bob"


def test_away_ends_after_the_date(database):
    """Away until yesterday means available today."""
    rep("Ann", away_until=TODAY - datetime.timedelta(days=1))
    add_rule("all", [], team="Benelux")
    assert assign(lead(1)).name == "Ann"


def test_nobody_available_falls_through_to_the_next_rule(database):
    """A rule whose team is all away lets the next rule place the lead."""
    rep("Ann", away_until=TODAY + datetime.timedelta(days=3))
    backup = rep("Zed", team="Backup")
    add_rule("benelux", [cond("country = NL")], team="Benelux")
    add_rule("backup", [], rep=backup)
    row = lead(1, country="NL")
    assert assign(row) == backup
    assert Lead.get_by_id(row.id).assignment_reason == (
        "rule 'benelux' → team Benelux → round-robin (skipped Ann away until 2026-11-30) → "
        "nobody available; rule 'backup' → Zed")


def test_organisation_owner_is_sticky(database):
    """A lead of an organisation with an owner goes to that owner, ahead of every rule."""
    rep("Ann")
    owner = rep("Olga", team="Enterprise")
    org = Organisation.create(name="Tech Innovators", normalised_name=normalise_org_name(
        "Tech Innovators"), domain="techinnovators.com", owner=owner)
    add_rule("all", [], team="Benelux")
    row = lead(1, organisation=org)
    assert assign(row) == owner
    assert Lead.get_by_id(row.id).assignment_reason == \
        "organisation 'Tech Innovators' is owned by Olga"


def test_assignment_is_idempotent_and_only_for_unowned_open_leads(database):
    """A lead with an owner, or a closed one, is left alone; running twice changes nothing."""
    ann = rep("Ann")
    bob = rep("Bob")
    add_rule("all", [], team="Benelux")
    owned = lead(1, owner=bob)
    closed = lead(2, status="disqualified", open_email=None)
    assert assign(owned) is None and assign(closed) is None
    row = lead(3)
    assert assign(row) == ann and assign(Lead.get_by_id(row.id), 1) is None
    assert Lead.get_by_id(owned.id).owner_id == bob.id and Lead.get_by_id(closed.id).owner_id is None
    assert Activity.select().where(Activity.kind == "assignment").count() == 1


def test_assign_unassigned_reruns_routing(database):
    """Leads that found nobody are placed once a rep is back."""
    ann = rep("Ann", away_until=TODAY + datetime.timedelta(days=30))
    add_rule("all", [], team="Benelux")
    rows = [lead(i) for i in range(3)]
    for row in rows:
        assign(row)
    assert Lead.select().where(Lead.owner.is_null()).count() == 3
    Rep.update(away_until=None).where(Rep.id == ann.id).execute()
    assert assign_unassigned() == {"ann@ourco.example": 3}


def test_lost_turn_is_read_again(database):
    """When another worker took a rep's turn since we read it, the next rep is picked."""
    ann, bob = rep("Ann"), rep("Bob")
    stale = Rep.get_by_id(ann.id)
    assert routing._claim(stale, NOW)  # we take Ann's turn
    assert not routing._claim(stale, NOW + datetime.timedelta(seconds=1))  # stale read: refused
    picked, _ = routing.pick_from_team("Benelux", NOW + datetime.timedelta(seconds=2))
    assert picked == bob


@pytest.mark.parametrize("kwargs, problem", [
    ({"name": "x"}, "a rep or a team"),
    ({"name": "x", "team": "Nowhere"}, "no rep is in team"),
    ({"name": "x", "team": "Benelux", "conditions": [{"field": "nope", "op": "eq", "value": 1}]},
     "unknown field"),
    ({"name": "dup", "team": "Benelux"}, "exists already"),
])
def test_bad_rules_are_refused(database, kwargs, problem):
    """A rule without a target, with an empty team, a bad condition or a taken name is refused."""
    rep("Ann")
    add_rule("dup", [], team="Benelux")
    with pytest.raises(RoutingError, match=problem):
        add_rule(**kwargs)
    assert RoutingRule.select().count() == 1


def _assign_in_process(url, lead_ids, barrier, results):
    from leadflow.store.database import close_database, open_database

    open_database(url, pool_size=0)
    barrier.wait(timeout=30)
    try:
        for lead_id in lead_ids:
            picked = assign_lead(Lead.get_by_id(lead_id))
            results.put((lead_id, picked.name if picked else None))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put((None, repr(exc)))
    finally:
        close_database()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_round_robin_stays_fair_with_two_workers(database_url, database):
    """Two processes assigning at once on PostgreSQL still give each rep the same share."""
    import multiprocessing

    for name in ("Ann", "Bob", "Cat", "Dan"):
        rep(name)
    add_rule("all", [], team="Benelux")
    ids = [lead(i).id for i in range(24)]
    database.close()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_assign_in_process, args=(database_url, ids[i::2], barrier, results))
             for i in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in ids]
    for p in procs:
        p.join(timeout=30)
    assert None not in [o[0] for o in outcomes], outcomes
    assert collections.Counter(o[1] for o in outcomes) == {"Ann": 6, "Bob": 6, "Cat": 6, "Dan": 6}


def test_pipeline_assigns_and_keeps_the_organisations_owner(database, config, mail_fixture):
    """Through the intake pipeline a lead of an owned organisation goes to its owner, with why."""
    from leadflow.intake.pipeline import process_inbound
    from leadflow.store.inbound import store_inbound

    rep("Ann")
    owner = rep("Olga", team="Enterprise")
    Organisation.create(name="Tech Innovators Inc.", normalised_name="tech innovators",
                        domain="techinnovators.com", owner=owner)
    add_rule("all", [], team="Benelux")
    raw = mail_fixture("worked_example_sarah.eml").read_bytes()
    assert process_inbound(store_inbound("cli", raw).id, config) == "created"
    row = Lead.get()
    assert (row.owner_id, row.assignment_reason) == (
        owner.id, "organisation 'Tech Innovators Inc.' is owned by Olga")
    assert Activity.get(Activity.kind == "assignment").rep_id == owner.id


def test_routing_on_score(database):
    """Routing rules may read the score: hot leads go to the senior rep, the rest to the team."""
    senior, junior = rep("Ada", team="Senior"), rep("Bob", team="Inside")
    add_rule("hot", [cond("score >= 80")], team="Senior")
    add_rule("rest", [], team="Inside")
    hot, warm = lead(1, score=85), lead(2, score=40)
    assert assign(hot) == senior and assign(warm, 1) == junior


def test_scoring_rules_cannot_read_the_score():
    """A scoring rule on `score` is refused, naming the rule and the field."""
    from leadflow.scoring.rules import RuleError, validate_rule

    with pytest.raises(RuleError, match=r"rule 'loop': conditions\[0\]\.field: 'score' cannot be"):
        validate_rule({"name": "loop", "conditions": [cond("score >= 10")], "points": 5})
