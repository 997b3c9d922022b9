"""The condition language: every operator, missing values, accents, dates, unsafe regexes, the text form."""

import datetime
import time

import pytest

from leadflow.scoring.conditions import (
    MAX_MATCH_INPUT,
    ConditionError,
    ConditionSyntaxError,
    LeadView,
    compile_pattern,
    evaluate,
    format_condition,
    normalise_condition,
    parse_condition,
    parse_duration,
    required_text,
    round_trips,
    to_date,
    to_number,
)
from leadflow.store.models import Contact, Lead, Organisation

INQUIRY = datetime.datetime(2026, 11, 27, 9, 30)


def sarah(**changes):
    """The worked example as an unsaved Lead, with its organisation and contact."""
    values = dict(
        name="Sarah Jones", email="sarah.jones@techinnovators.com", email_domain="techinnovators.com",
        domain_class="company", phone="+31201234567", title="IT Manager",
        company="Tech Innovators Inc.", country="NL", subject="Project management software",
        message="Hi, we want to buy within three months. We are about 40 users. Déjà vu, café!",
        channel="email", submitted_by="marketing@ourco.example", inquiry_count=1,
        signals={"timeline": {"date": "2027-02-20", "text": "within three months"},
                 "size": {"value": 40, "unit": "users"},
                 "budget": {"amount": 12000, "currency": "EUR"},
                 "product": ["project management", "time tracking"]},
        custom={"seats": "40", "referrer": "fair"},
        last_inquiry_at=INQUIRY, created_at=INQUIRY,
    )
    values.update(changes)
    lead = Lead(**values)
    lead.organisation = Organisation(name="Tech Innovators Inc.", domain="techinnovators.com",
                                     employees=120, sector="Software", size="120 employees")
    lead.contact = Contact(name="Sarah Jones", email=values["email"], title="IT Manager")
    return lead


def holds(text, lead=None):
    hit, reasons = evaluate([parse_condition(text)], "all", lead if lead is not None else sarah())
    assert reasons, "a reason is always given"
    return hit


@pytest.mark.parametrize("text, expected", [
    # eq / ne: case- and accent-insensitive, numbers as numbers
    ("domain_class = company", True),
    ("domain_class = COMPANY", True),
    ("domain_class = free", False),
    ("title = 'it manager'", True),
    ("inquiry_count = 1", True),
    ("inquiry_count = 1.0", True),
    ("custom.seats = 40", True),
    ("country != NL", False),
    ("country != DE", True),
    ("website != example.com", True),          # missing satisfies ne
    ("website = example.com", False),
    # in / not_in
    ("country in NL, BE, LU", True),
    ("country in de, at", False),
    ("country not in de, at", True),
    ("website not in a.com", True),            # missing satisfies not_in
    ("website in a.com", False),
    ("signals.product in time tracking, crm", True),   # any element of a list
    # contains: whole words, case- and accent-insensitive, phrases
    ("title contains cto, manager", True),
    ("title contains MANAGER", True),
    ("title contains manag", False),           # whole words only
    ("text contains cafe", True),              # accent folded on the text
    ("text contains déjà vu", True),           # phrase, accent folded on the word
    ("text contains pricing, demo", False),
    ("website contains shop", False),          # missing
    ("signals.product contains management", True),
    # matches: case-insensitive, searched anywhere
    ("subject matches ^project", True),
    ("subject matches /software$/", True),
    (r"email matches @\w+\.com$", True),
    ("subject matches ^software", False),
    ("website matches .", False),               # missing
    # numbers
    ("signals.size >= 40", True),
    ("signals.size > 40", False),
    ("signals.size < 41", True),
    ("signals.size <= 39", False),
    ("signals.budget.amount > 10000", True),
    ("signals.budget > 20000", False),          # a table compares by its amount
    ("organisation.employees >= 100", True),
    ("organisation.size >= 100", True),         # "120 employees" reads as 120
    ("custom.seats > 30", True),
    ("signals.missing > 1", False),
    ("title > 3", False),                      # not a number
    # dates: absolute and relative to the lead's latest inquiry (2026-11-27)
    ("signals.timeline within 90d", True),
    ("signals.timeline within 60d", False),
    ("signals.timeline within 3m", True),
    ("signals.timeline within 2m", False),
    ("signals.timeline within 13w", True),
    ("signals.timeline within 12w", False),
    ("signals.timeline < 2027-03-01", True),
    ("signals.timeline before 2027-02", False),
    ("signals.timeline after 2027-02-19", True),
    ("signals.timeline >= 2027-02-20", True),
    ("created_at within -30d", True),
    ("created_at < -1d", False),
    ("title within 90d", False),               # not a date
    # exists / missing
    ("phone exists", True),
    ("website exists", False),
    ("website missing", True),
    ("phone missing", False),
    ("organisation.sector exists", True),
    ("contact.title = it manager", True),
    ("custom.referrer exists", True),
    ("custom.nothing missing", True),
    ("signals.product exists", True),
])
def test_operators(text, expected):
    """Each operator answers as documented, including for missing values."""
    assert holds(text) is expected


@pytest.mark.parametrize("text", [
    "name = x", "website = x", "signals.timeline within 90d", "organisation.employees > 1",
    "contact.name exists", "title contains cto", "subject matches x",
])
def test_missing_everything_matches_nothing_but_missing(text):
    """On an empty lead only 'missing', 'ne' and 'not_in' can hold."""
    empty = Lead(last_inquiry_at=INQUIRY, domain_class="unknown")
    assert holds(text, empty) is False


def test_empty_text_counts_as_missing():
    """An empty string or list is no value: 'missing' holds, 'exists' does not."""
    lead = sarah(phone="", signals={"product": []})
    assert holds("phone missing", lead) and not holds("phone exists", lead)
    assert holds("signals.product missing", lead)


def test_a_dict_row_works_as_a_lead():
    """A batch row (a dict of columns) reads like a Lead; related rows can be passed in."""
    row = {"title": "CTO", "signals": {"size": {"value": 5}}, "last_inquiry_at": INQUIRY}
    view = LeadView(row, organisation={"employees": 300}, contact=None)
    assert evaluate([parse_condition("title contains cto")], "all", view)[0]
    assert evaluate([parse_condition("organisation.employees > 200")], "all", view)[0]
    assert not evaluate([parse_condition("contact.name exists")], "all", view)[0]


@pytest.mark.parametrize("match, whens, expected", [
    ("all", ["phone exists", "title contains manager"], True),
    ("all", ["phone exists", "website exists"], False),
    ("any", ["website exists", "title contains manager"], True),
    ("any", ["website exists", "country = DE"], False),
])
def test_all_and_any(match, whens, expected):
    """'all' needs every condition, 'any' one of them."""
    hit, reasons = evaluate([parse_condition(w) for w in whens], match, sarah())
    assert hit is expected and reasons


def test_reasons_are_readable():
    """Reasons say what was found, e.g. the timeline date and the window."""
    checks = {
        "signals.timeline within 90d": "timeline 2027-02-20 is within 90 days",
        "domain_class = free": "domain_class is 'company', not 'free'",
        "title contains cto, manager": "title contains 'manager'",
        "website exists": "website is missing",
        "signals.size >= 50": "size 40 < 50",
        "created_at within -30d": "created_at 2026-11-27 is within the last 30 days",
    }
    for text, reason in checks.items():
        assert evaluate([parse_condition(text)], "all", sarah())[1] == [reason]


def test_any_reports_only_the_conditions_that_hit():
    """For an 'any' hit, the reasons are those of the conditions that held."""
    conds = [parse_condition("website exists"), parse_condition("phone exists")]
    assert evaluate(conds, "any", sarah()) == (True, ["phone is given"])


@pytest.mark.parametrize("pattern, words", [
    ("(a+)+$", "nested"),
    (r"(\w*)*x", "nested"),
    ("(x+x+)+y", "nested"),
    ("(a|ab)*c", "overlap"),
    ("(a|a)+", "overlap"),
    (".*x.*y", "same text"),
    (r"\d+\d+", "same text"),
    (r"\s*\s*$", "same text"),
    (r"(\w+)\s\1", "back-reference"),
    ("[unclosed", "not a valid"),
    ("a" * 300, "longer than"),
])
def test_unsafe_patterns_are_refused(pattern, words):
    """Patterns that can backtrack without bound are refused when saved."""
    with pytest.raises(ConditionError) as info:
        compile_pattern(pattern)
    assert words in str(info.value)


@pytest.mark.parametrize("pattern", [
    r"\w+@\w+\.\w+", "^re:", "(foo|bar)+", r"(\d{3}-)+\d{4}", "foo.*bar", "price|pricing|quote",
    r"\bdemo\b", r"(?i)urgent", "[a-z]+[0-9]+", "x*+y", "(?>a+)+b",
])
def test_safe_patterns_are_accepted(pattern):
    """Ordinary patterns pass the check."""
    compile_pattern(pattern)


def test_matching_cost_is_bounded():
    """The input is cut to MAX_MATCH_INPUT characters, so an accepted pattern stays fast."""
    lead = sarah(message="a" * 500_000 + " demo")
    started = time.perf_counter()
    assert not holds(r"text matches a\d+demo", lead)
    assert not holds("text matches demo", lead)  # beyond the bound: not read
    assert time.perf_counter() - started < 1.0
    assert MAX_MATCH_INPUT < 500_000


@pytest.mark.parametrize("pattern, needs, matching", [
    (r"\d{2,} (users|seats)", ("seats", "users"), ["40 USERS", "we are 12 seats"]),
    ("(?:call|phone) me", ("call", "phone"), ["please Call Me", "phone me"]),
    ("^re:", ("re:",), ["RE: hi"]),
    ("ab?c", ("a",), ["ac", "xABC"]),
    ("(ab)*cd", ("cd",), ["cd", "ababCD"]),
    ("x{0,3}yz", ("yz",), ["YZ", "xxyz"]),
    ("caf\u00e9 x", ("caf",), ["Caf\u00e9 X"]),
    ("a|b", None, ["b"]),
    (".", None, ["x"]),
    (r"\w+@\w+", ("@",), ["a@b"]),
])
def test_a_pattern_names_text_every_match_holds(pattern, needs, matching):
    """required_text: strings one of which any match contains (case aside), so plain ASCII
    text without them is not searched; None when nothing is certain."""
    assert required_text(pattern) == needs
    regex = compile_pattern(pattern)
    for text in matching:
        assert regex.search(text)
        assert needs is None or any(n in text.lower() for n in needs)


@pytest.mark.parametrize("text, column, words", [
    ("signals.timeline wihtin 90d", 17, "did you mean 'within'"),
    ("titel = cto", 0, "did you mean 'title'"),
    ("title", 5, "operator is missing"),
    ("title =", 7, "value is missing"),
    ("title = 'cto", 8, "never closed"),
    ("signals.timeline within soon", 24, "duration"),
    ("inquiry_count > many", 16, "not a number"),
    ("phone exists now", 13, "takes no value"),
    ("subject matches (a+)+", 16, "nested"),
    ("organisation.colour = red", 0, "organisation has"),
    ("", 0, "empty"),
    ("title in 'a' 'b'", 13, "unexpected text"),
])
def test_text_form_errors_point_at_the_wrong_part(text, column, words):
    """A syntax error names the problem and puts a caret under the wrong part."""
    with pytest.raises(ConditionSyntaxError) as info:
        parse_condition(text)
    assert info.value.column == column and words in str(info.value)
    assert str(info.value).splitlines()[-1] == "  " + " " * column + "^"


@pytest.mark.parametrize("text, data", [
    ("signals.timeline within 90d", {"field": "signals.timeline", "op": "lte", "value": "90d"}),
    ("created_at within -30d", {"field": "created_at", "op": "gte", "value": "-30d"}),
    ("domain_class = free", {"field": "domain_class", "op": "eq", "value": "free"}),
    ("title contains cto,ceo, head", {"field": "title", "op": "contains",
                                      "value": ["cto", "ceo", "head"]}),
    ("country not in NL, BE", {"field": "country", "op": "not_in", "value": ["NL", "BE"]}),
    ("inquiry_count >= 2", {"field": "inquiry_count", "op": "gte", "value": 2}),
    ("signals.budget.amount > 1e3x", {"field": "signals.budget.amount", "op": "gt",
                                      "value": "1e3x"}),
    ("custom.plan = '42'", {"field": "custom.plan", "op": "eq", "value": "42"}),
    ("needs_review = true", {"field": "needs_review", "op": "eq", "value": True}),
    ("subject ~ ^re:", {"field": "subject", "op": "matches", "value": "^re:"}),
    ("phone exists", {"field": "phone", "op": "exists"}),
    ("title is not cto", {"field": "title", "op": "ne", "value": "cto"}),
])
def test_text_form_parses_into_data(text, data):
    """The compact syntax becomes plain condition data."""
    if data["op"] == "gt" and data["value"] == "1e3x":
        with pytest.raises(ConditionSyntaxError):
            parse_condition(text)
        return
    assert parse_condition(text) == data


@pytest.mark.parametrize("condition", [
    {"field": "title", "op": "contains", "value": ["cto", "head of it", "c, o"]},
    {"field": "custom.plan", "op": "eq", "value": "42"},
    {"field": "custom.plan", "op": "eq", "value": 42},
    {"field": "custom.plan", "op": "eq", "value": 4.5},
    {"field": "custom.flag", "op": "eq", "value": "true"},
    {"field": "subject", "op": "matches", "value": "^re: (x|y)"},
    {"field": "title", "op": "eq", "value": ' quoted "and" spaced '},
    {"field": "signals.timeline", "op": "lte", "value": "90d"},
    {"field": "signals.timeline", "op": "gt", "value": "2027-01-01"},
    {"field": "created_at", "op": "gte", "value": "-30d"},
    {"field": "country", "op": "in", "value": ["NL", 31]},
    {"field": "phone", "op": "missing"},
])
def test_text_form_round_trips(condition):
    """format_condition writes what parse_condition reads back identically."""
    assert round_trips(condition), format_condition(condition)


@pytest.mark.parametrize("condition, where", [
    ({"field": "title", "op": "contains", "value": []}, "condition.value"),
    ({"field": "title", "op": "like", "value": "x"}, "condition.op"),
    ({"field": "nope", "op": "eq", "value": "x"}, "condition.field"),
    ({"field": "title", "op": "eq"}, "condition.value"),
    ({"field": "title", "op": "eq", "value": ["a"]}, "condition.value"),
    ({"field": "title", "op": "exists", "value": 1}, "condition.value"),
    ({"field": "title", "op": "gt", "value": "soon"}, "condition.value"),
    ({"field": "title", "op": "gt", "value": True}, "condition.value"),
    ({"field": "title", "op": "eq", "value": "x", "extra": 1}, "condition.extra"),
    ({"field": "title", "op": "contains", "value": ["  "]}, "condition.value[0]"),
    ("title = x", "condition"),
])
def test_invalid_data_names_the_part(condition, where):
    """Validation of condition data names the key that is wrong."""
    with pytest.raises(ConditionError) as info:
        normalise_condition(condition)
    assert info.value.where == where


@pytest.mark.parametrize("value, expected", [
    ("90d", (90, "days")), ("-30 days", (-30, "days")), ("12w", (84, "days")),
    ("3m", (3, "months")), ("2 months", (2, "months")), ("1y", (12, "months")),
    ("90", None), ("soon", None), (90, None),
])
def test_durations(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value, start, expected", [
    ("3m", datetime.date(2026, 11, 26), datetime.date(2027, 2, 26)),
    ("3m", datetime.date(2026, 11, 30), datetime.date(2027, 2, 28)),   # clamped to the month's end
    ("-1m", datetime.date(2026, 3, 31), datetime.date(2026, 2, 28)),
    ("1y", datetime.date(2024, 2, 29), datetime.date(2025, 2, 28)),
    ("-30d", datetime.date(2026, 11, 27), datetime.date(2026, 10, 28)),
])
def test_durations_shift_dates(value, start, expected):
    """Days count as days; months and years follow the calendar."""
    assert parse_duration(value).shift(start) == expected


@pytest.mark.parametrize("value, expected", [
    ("2027-02-15", datetime.date(2027, 2, 15)), ("2027-02", datetime.date(2027, 2, 1)),
    ("2027-02-15T10:00:00", datetime.date(2027, 2, 15)), (INQUIRY, INQUIRY.date()),
    ("next month", None), (None, None), (True, None), ("2027-13-01", None),
])
def test_dates(value, expected):
    assert to_date(value) == expected


@pytest.mark.parametrize("value, expected", [
    (40, 40), ("40", 40), ("40 users", 40), ("12,000", 12000), ("12.000", 12000),
    ("12,5", 12.5), ("€ 1 500", 1500), ("none", None), (True, None), (None, None),
])
def test_numbers(value, expected):
    assert to_number(value) == expected
