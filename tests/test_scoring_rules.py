"""Rules: validation naming the part, points, group caps, disqualify precedence, the starter set."""

import datetime

import pytest

from leadflow.scoring.conditions import parse_condition
from leadflow.scoring.rules import Rule, RuleError, RuleSet, validate_rule
from leadflow.scoring.starter import starter_ruleset
from leadflow.store.models import Lead, Organisation

INQUIRY = datetime.datetime(2026, 11, 27, 9, 30)


def rule(name, when, points=0, verdict=None, group=None, match="all", rule_id=None, enabled=True):
    whens = [when] if isinstance(when, str) else when
    return validate_rule({"name": name, "conditions": [parse_condition(w) for w in whens],
                          "points": points, "verdict": verdict, "group": group, "match": match,
                          "enabled": enabled, "id": rule_id})


def lead(**values):
    base = dict(domain_class="company", last_inquiry_at=INQUIRY, inquiry_count=1)
    base.update(values)
    return Lead(**base)


def sarah():
    """DESIGN.md section 1: Sarah, IT manager at Tech Innovators Inc., forwarded by marketing."""
    result = lead(name="Sarah Jones", email="sarah.jones@techinnovators.com", phone="+31201234567",
                  email_domain="techinnovators.com", title="IT Manager",
                  company="Tech Innovators Inc.", subject="Project management software",
                  message="We saw you at the fair. We want to buy within three months; "
                          "we are about 40 users.",
                  submitted_by="marketing@ourco.example",
                  signals={"timeline": {"date": "2027-02-25", "text": "within three months"},
                           "size": {"value": 40, "unit": "users"},
                           "product": {"text": "project-management software"}})
    result.organisation = Organisation(name="Tech Innovators Inc.", domain="techinnovators.com")
    return result


def test_points_add_up_and_reasons_show_the_points():
    """Each rule that fires adds its points; its reason ends with the points."""
    rs = RuleSet([rule("phone", "phone exists", 10, rule_id=1),
                  rule("timeline", "signals.timeline within 90d", 20, rule_id=2),
                  rule("free", "domain_class = free", -10, rule_id=3)], threshold=25)
    result = rs.score(lead(phone="+31201234567", signals={"timeline": {"date": "2027-02-01"}}))
    assert result.score == 30 and result.qualified and result.hits == [1, 2]
    assert result.breakdown == [
        {"rule_id": 1, "rule": "phone", "points": 10, "reason": "phone is given: +10"},
        {"rule_id": 2, "rule": "timeline", "points": 20,
         "reason": "timeline 2027-02-01 is within 90 days: +20"},
    ]


def test_negative_points_and_the_threshold():
    """Negative points lower the score; below the threshold the lead is not qualified."""
    rs = RuleSet([rule("phone", "phone exists", 10), rule("free", "domain_class = free", -15)],
                 threshold=10)
    result = rs.score(lead(phone="+31201234567", domain_class="free"))
    assert result.score == -5 and not result.qualified


@pytest.mark.parametrize("caps, expected_score, cut", [
    ({"fit": 50}, 50, -10),
    ({"fit": 60}, 60, None),
    ({}, 60, None),
])
def test_group_caps(caps, expected_score, cut):
    """A group's points are cut to its cap; the cut is its own breakdown entry."""
    rs = RuleSet([rule("a", "phone exists", 30, group="fit"),
                  rule("b", "title exists", 30, group="fit"),
                  rule("c", "name exists", 5, group="intent")], caps={**caps, "intent": 3})
    result = rs.score(lead(phone="+31201234567", title="CTO", name="Ann"))
    assert result.score == expected_score + 3
    assert sum(e.get("points", 0) for e in result.breakdown) == result.score
    cap_entries = [e for e in result.breakdown if e["rule"] == "cap:fit"]
    assert [e["points"] for e in cap_entries] == ([cut] if cut else [])


def test_negative_points_count_against_a_capped_group():
    """The cap limits a group's sum, not each rule: a penalty still counts."""
    rs = RuleSet([rule("a", "phone exists", 40, group="fit"), rule("b", "title exists", 30, group="fit"),
                  rule("c", "name exists", -25, group="fit")], caps={"fit": 50})
    assert rs.score(lead(phone="1", title="CTO", name="Ann")).score == 45


def test_disqualify_wins_over_any_points():
    """A disqualify verdict makes the lead disqualified whatever its score."""
    rs = RuleSet([rule("big", "phone exists", 500, rule_id=1),
                  rule("throwaway", "domain_class = disposable", verdict="disqualify", rule_id=2),
                  rule("student", "title contains student", verdict="disqualify", rule_id=3)])
    result = rs.score(lead(phone="1", domain_class="disposable", title="Student"))
    assert result.score == 500 and result.disqualified and not result.qualified
    assert result.disqualified_by["rule"] == "throwaway"
    assert result.disqualified_by["reason"] == "domain_class is 'disposable': disqualify"
    assert [e.get("verdict") for e in result.breakdown] == [None, "disqualify", "disqualify"]


def test_disabled_rules_do_not_fire():
    """A disabled rule is skipped when scoring, and shown as a miss by explain."""
    rs = RuleSet([rule("off", "phone exists", 10, enabled=False)])
    assert rs.score(lead(phone="1")).score == 0
    [(r, hit, reasons)] = rs.explain(lead(phone="1"))
    assert r.name == "off" and hit is False


def test_scoring_is_deterministic():
    """The same lead and rules give the same result, every time."""
    rs = starter_ruleset()
    first = rs.score(sarah())
    for _ in range(3):
        again = rs.score(sarah())
        assert (again.score, again.breakdown) == (first.score, first.breakdown)


def test_worked_example_qualifies_under_the_starter_rules():
    """Sarah (company domain, phone, IT manager, ~40 users, buy within three months) qualifies."""
    result = starter_ruleset().score(sarah())
    fired = {e["rule"]: e for e in result.breakdown}
    assert result.qualified and result.score >= 50
    assert {"company-domain", "phone-given", "decision-maker", "team-size",
            "timeline-3-months"} <= set(fired)
    assert fired["timeline-3-months"]["reason"] == "timeline 2027-02-25 is within 3 months: +20"


@pytest.mark.parametrize("domain_class, qualified, disqualified", [
    ("disposable", False, True),
    ("free", False, False),   # Sarah on Gmail: fit 25 (no company domain, -10), intent 20
    ("company", True, False),
])
def test_starter_rules_domain_class(domain_class, qualified, disqualified):
    """A disposable address disqualifies; free-mail costs points."""
    prospect = sarah()
    prospect.domain_class = domain_class
    result = starter_ruleset().score(prospect)
    assert (result.qualified, result.disqualified) == (qualified, disqualified)


def test_a_plain_free_mail_question_does_not_qualify():
    """A free-mail address asking a vague question stays below the threshold."""
    result = starter_ruleset().score(lead(domain_class="free", email="x@gmail.com",
                                          message="What do you sell?"))
    assert not result.qualified and result.score < 0


@pytest.mark.parametrize("data, where", [
    ({"name": "", "conditions": [{"field": "phone", "op": "exists"}], "points": 1}, "name"),
    ({"name": "12", "conditions": [{"field": "phone", "op": "exists"}], "points": 1}, "name"),
    ({"name": "x", "conditions": [], "points": 1}, "conditions"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exits"}], "points": 1},
     "conditions[0].op"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"},
                                  {"field": "titel", "op": "eq", "value": 1}], "points": 1},
     "conditions[1].field"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 0}, "points"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": "5"}, "points"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 5000}, "points"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 5,
      "verdict": "disqualify"}, "points"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "verdict": "ban"}, "verdict"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 1,
      "group": "Fit Group"}, "group"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 1,
      "match": "most"}, "match"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 1,
      "enabled": "yes"}, "enabled"),
    ({"name": "x", "conditions": [{"field": "phone", "op": "exists"}], "points": 1,
      "colour": "red"}, "colour"),
])
def test_invalid_rules_name_the_rule_and_part(data, where):
    """A broken rule is refused with the rule's name and the wrong part."""
    with pytest.raises(RuleError) as info:
        validate_rule(data)
    assert info.value.where == where
    if data["name"] and not data["name"].isdigit():
        assert str(info.value).startswith(f"rule {data['name']!r}: {where}")


def test_rule_names_are_unique_in_a_set():
    """Two rules with one name (ignoring case) cannot share a set."""
    with pytest.raises(RuleError, match="two rules have this name"):
        RuleSet([rule("Phone", "phone exists", 1), rule("phone", "title exists", 1)])


@pytest.mark.parametrize("caps", [{"fit": 0}, {"Fit": 10}, {"fit": "50"}, ["fit"]])
def test_invalid_caps_are_refused(caps):
    with pytest.raises(RuleError):
        RuleSet([], caps=caps)


def test_rule_data_round_trips():
    """A rule's data builds the same rule again."""
    original = rule("t", ["signals.timeline within 90d", "phone exists"], 20, group="intent",
                    match="any", rule_id=7)
    again = Rule.from_dict(original.to_dict())
    assert again == original and again.outcome == "+20"


def test_find_by_id_or_name():
    rs = RuleSet([rule("Phone given", "phone exists", 1, rule_id=4)])
    assert rs.find(4).name == rs.find("4").name == rs.find("phone GIVEN").name == "Phone given"
    assert rs.find("5") is None and rs.find("nope") is None


def test_scoring_many_at_once_gives_the_same_results():
    """score_many (column-wise, memoised) equals score on each lead, entry for entry."""
    from leadflow.scoring.conditions import LeadView

    rs = starter_ruleset()
    leads = [sarah()] + [lead(domain_class=dc, phone=phone, title=title, inquiry_count=n,
                              signals={"timeline": {"date": f"2027-0{m}-10"}})
                         for dc in ("company", "free", "disposable")
                         for phone in (None, "+31201234567")
                         for title in (None, "CTO", "Intern")
                         for n in (1, 3) for m in (1, 6)]
    many = rs.score_many([LeadView(x) for x in leads])
    for one, batch in zip((starter_ruleset().score(x) for x in leads), many):
        assert (one.score, one.breakdown, one.verdict, one.hits) == \
            (batch.score, batch.breakdown, batch.verdict, batch.hits)


# every operator, on fields of every kind; groups with caps, disqualify verdicts,
# durations (within and not), all and any
EVERY_KIND = [
    "domain_class = company", "title = 'it manager'", "inquiry_count = 1", "custom.flag = true",
    "custom.seats = 40", "country != NL", "website != example.com", "country in NL, BE, DE",
    "country not in US, GB", "signals.product in time tracking, crm", "custom.plan not in pro",
    "title contains cto, manager, vice president, geschäftsführer", "text contains cafe, déjà vu, demo",
    "signals.product contains management", "custom.note contains +++", "subject contains quote",
    "subject matches ^re:", r"text matches \d{2,} (users|seats)", "message matches (?:call|phone) me",
    r"email matches @\w+\.com$", "custom.seats matches ^4", "title matches ^(vp|head) ",
    "signals.size >= 40", "signals.budget.amount > 10000", "organisation.employees > 100",
    "custom.seats < 30", "signals.budget > 500", "organisation.size >= 100", "title > 3",
    "signals.timeline within 90d", "signals.timeline within 3m", "signals.timeline > 2027-06-01",
    "signals.timeline before 2027-02", "created_at within -30d", "created_at <= -5d",
    "created_at > 2026-06-01", "signals.timeline >= 10d", "phone exists", "website missing",
    "organisation.sector exists", "contact.title = it manager", "contact.name missing",
    "custom.referrer exists", "signals.product missing", "signals.extra exists",
    ["signals.timeline within 90d", "phone exists"],
    ["signals.size >= 20", "organisation.employees >= 20"],
    ["title contains cto, ceo", "created_at < -10d"],
    ["created_at < -10d", "website exists"],
    ["country = NL", "text contains demo, café"],
]


def every_kind_ruleset():
    rules = []
    for i, when in enumerate(EVERY_KIND):
        match = "any" if isinstance(when, list) and i % 2 else "all"
        rules.append(rule(f"r{i}", when, points=(7, -3, 11, 5)[i % 4], group=("fit", "intent",
                                                                          None)[i % 3],
                          match=match, rule_id=i + 1, enabled=i % 17 != 5))
    rules.append(rule("disposable", "domain_class = disposable", verdict="disqualify", rule_id=90))
    rules.append(rule("student", ["title contains student", "custom.flag = 1"], match="any",
                      verdict="disqualify", rule_id=91))
    return RuleSet(rules, threshold=30, caps={"fit": 25, "intent": 18}, version=3)


def varied_rows(n, seed=5):
    """Dict rows (a lead's columns; ``organisation.NAME`` / ``contact.NAME`` for the linked
    rows) with values of every awkward kind: missing, empty, accents, lists, tables,
    numbers as text, booleans, dates as text and as times, several inquiry dates."""
    import random

    rng = random.Random(seed)
    pick = rng.choice
    rows = []
    for i in range(n):
        org = pick([None, {"employees": pick([None, 50, 120, 900]), "sector": pick([None, "", "IT"]),
                           "size": pick([None, "120 employees", "small"])}])
        contact = pick([None, {"title": pick(["IT Manager", "it  manager", None]),
                               "name": pick([None, "", "Ana"])}])
        signals = {}
        for key, choices in (
                ("timeline", [{"date": "2027-02-20", "text": "soon"}, {"date": "2027-02"},
                              "2027-08-01", "2027-01-15", {"text": "soon"}, "not a date",
                              {"date": ""}, {}]),
                ("size", [{"value": 40, "unit": "users"}, 5, "40 users", {"value": 2.0}, "lots"]),
                ("budget", [{"amount": 12000, "currency": "EUR"}, {"amount": "12,000"}, 300,
                            {"currency": "EUR"}, {"foo": 1}]),
                ("product", [["crm"], ["time tracking", "invoicing"], [], "project management",
                             ["Crm", {"x": 1}]]),
                ("extra", [None, "", 0, False, [0]])):
            if rng.random() < 0.7:
                signals[key] = pick(choices)
        custom = {k: pick(v) for k, v in (("seats", ["40", "25", 40, 40.0, "4x", ""]),
                                          ("flag", [True, 1, "true", 1.0, False, None]),
                                          ("plan", ["pro", "Pro", "free", None]),
                                          ("note", ["+++", "a +++ b", "", "x"]),
                                          ("referrer", ["fair", "", None]))
                  if rng.random() < 0.7}
        inquiry = datetime.datetime(2026, pick([6, 11, 12]), pick([1, 27, 30]), 9, 30)
        rows.append({
            "id": i + 1, "status": pick(["new", "working", "qualified", "converted"]),
            "domain_class": pick(["company", "free", "disposable", "unknown", None]),
            "title": pick(["IT Manager", "CTO", "Geschäftsführer", "VP Sales", "vp sales",
                           "Student", "", None, "Vice  President", "co-founder", "42"]),
            "country": pick(["NL", "nl", "DE", "US", "", None]),
            "phone": pick(["+31201234567", "", None]),
            "website": pick([None, "", "example.com", "EXAMPLE.com"]),
            "email": pick(["a@b.com", "x@y.nl", None]),
            "subject": pick(["Re: quote", "Quote please", "Demo request", "", None, "Déjà vu"]),
            "message": pick(["We want a demo for 40 users, call me", "Déjà vu, café!",
                             "plain text here", "", None, "DEMO", "12 seats please",
                             "price: 10 Users", "+++", "phone me maybe", "demonstration",
                             "12 \u017feats"]),  # a long s: the same as s, ignoring case
            "inquiry_count": pick([1, 2, 3]),
            "signals": signals, "custom": custom,
            "created_at": inquiry - datetime.timedelta(days=pick([0, 5, 40])),
            "last_inquiry_at": pick([inquiry, None]),
            "organisation": i if org is not None else None,
            "contact": i if contact is not None else None,
            **{f"organisation.{k}": v for k, v in (org or {}).items()},
            **{f"contact.{k}": v for k, v in (contact or {}).items()},
        })
    return rows


def _view(row):
    from leadflow.scoring.conditions import LeadView

    own = {k: v for k, v in row.items() if "." not in k}
    org = {k[13:]: v for k, v in row.items() if k.startswith("organisation.")} \
        if row["organisation"] is not None else None
    contact = {k[8:]: v for k, v in row.items() if k.startswith("contact.")} \
        if row["contact"] is not None else None
    return LeadView(own, organisation=org, contact=contact)


@pytest.mark.parametrize("trial, few", [(8192, 16), (10, 0), (10, 10**6), (10**9, 0)])
def test_batches_score_every_kind_of_rule_as_one_lead_at_a_time(monkeypatch, trial, few):
    """Scoring batches column by column (memoised or not, reasons per view or per column)
    gives each lead the score, breakdown (and its JSON text) and verdict of score()."""
    import json

    from leadflow.scoring import rules as rules_module
    from leadflow.scoring.rules import breakdown_json

    monkeypatch.setattr(rules_module, "_BATCH_TRIAL", trial)
    monkeypatch.setattr(rules_module, "_FEW_MISSES", few)
    rows = varied_rows(900)
    scorer = every_kind_ruleset().scorer()
    results = []
    for start, size in ((0, 7), (7, 300), (307, 593)):
        chunk = rows[start:start + size]
        results += scorer.score(scorer.columns(lambda name, chunk=chunk: [r.get(name)
                                                                          for r in chunk]))
    reference = every_kind_ruleset()
    fired = set()
    for row, got in zip(rows, results):
        want = reference.score(_view(row))
        assert (got.score, got.verdict, got.hits, got.breakdown) == \
            (want.score, want.verdict, want.hits, want.breakdown), row
        assert breakdown_json(got.breakdown) == json.dumps(
            [dict(e) for e in want.breakdown], ensure_ascii=False, sort_keys=True)
        fired.update(got.hits)
    assert fired >= {r.id for r in reference.rules if r.enabled}, "every rule fires somewhere"


def test_score_many_over_lead_objects_equals_score():
    """The same through score_many on views of unsaved Lead objects (their own types)."""
    from leadflow.scoring.conditions import LeadView

    leads = []
    for row in varied_rows(120, seed=9):
        own = {k: v for k, v in row.items() if "." not in k and k not in ("organisation", "contact")}
        one = Lead(**own)
        if row["organisation"] is not None:
            one.organisation = Organisation(name="o", employees=row.get("organisation.employees"),
                                            sector=row.get("organisation.sector"),
                                            size=row.get("organisation.size"))
        leads.append(one)
    got = every_kind_ruleset().score_many([LeadView(x) for x in leads])
    reference = every_kind_ruleset()
    for one, result in zip(leads, got):
        want = reference.score(one)
        assert (result.score, result.verdict, result.breakdown) == \
            (want.score, want.verdict, want.breakdown)


def test_memoised_answers_follow_the_reference_date():
    """The same timeline from different inquiry dates: hit or miss per lead, reasons right."""
    from leadflow.scoring.conditions import LeadView

    rs = RuleSet([rule("soon", "signals.timeline within 90d", 20, rule_id=1),
                  rule("soon-or-phone", ["signals.timeline within 90d", "phone exists"], 5,
                       match="any", rule_id=2)])
    leads = [lead(signals={"timeline": {"date": "2027-01-15"}}, phone="1",
                  last_inquiry_at=datetime.datetime(2026, month, 1)) for month in (11, 6, 11, 6)]
    for results in (rs.score_many([LeadView(x) for x in leads]), [rs.score(x) for x in leads]):
        assert [r.score for r in results] == [25, 5, 25, 5]
        assert [e["reason"] for e in results[1].breakdown] == ["phone is given: +5"]
        assert results[0].breakdown[1]["reason"] == \
            "timeline 2027-01-15 is within 90 days; phone is given: +5"
