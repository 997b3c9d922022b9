"""Digests as mail: a text and an HTML part, hostile lead fields escaped, bars without images."""

import datetime
import re

import markupsafe
import pytest

from leadflow import config as config_module
from leadflow.notify import render
from leadflow.notify.digest import AdminDigest, Item, RepDigest, pipeline_bars
from leadflow.store.models import Rep

DAY = datetime.date(2026, 6, 10)
HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "<a href='javascript:alert(1)'>click</a>",
    "Robert'); DROP TABLE lead;--",
]


@pytest.fixture
def config():
    return config_module.parse({"notify": {"from": "leadflow@ourco.example"}})


def _rep(**fields):
    return Rep(id=7, name=fields.pop("name", "Sam"), email="sam@ourco.example",
               timezone="Europe/Amsterdam", digest_hour=8, **fields)


def _item(title="Sarah Connor", **fields):
    values = dict(ref="lead 42", title=title, organisation="Tech Innovators Inc.", score=85,
                  reasons=["Buying within 3 months (+30)"], source="email:sales@ourco.example",
                  age="4 h", detail="Project management", next_action="Convert it",
                  command="leadflow leads convert 42")
    values.update(fields)
    return Item(**values)


def _digest(items=None, rep=None, pipeline=()):
    items = items if items is not None else [_item()]
    return RepDigest(rep=rep or _rep(), local_date=DAY, as_of=datetime.datetime(2026, 6, 10, 6),
                     since=None, new_leads=items, to_convert=[], followups=[], stale=[],
                     totals={"new": len(items), "convert": 0, "followups": 0, "stale": 0},
                     pipeline=pipeline_bars(list(pipeline)))


def _parts(message):
    return (message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content())


def test_digest_is_multipart_alternative_text_then_html(config):
    """One message, multipart/alternative, a text/plain part first and a text/html part second."""
    message = render.digest_message(_digest(), config, "<digest-7-2026-06-10-rep@ourco.example>")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Message-ID"] == "<digest-7-2026-06-10-rep@ourco.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["To"] == "Sam <sam@ourco.example>"
    assert message["Subject"] == "Your leads for Wed 10 Jun: 1 new, 0 to convert, 0 follow-ups, 0 stale"
    text, html = _parts(message)
    for part in (text, html):
        for expected in ("Sarah Connor", "Tech Innovators Inc.", "score 85",
                         "Buying within 3 months (+30)", "email:sales@ourco.example",
                         "leadflow leads convert 42", "Convert it", "Wednesday 10 June 2026"):
            assert expected in part, expected


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("where", ["title", "organisation", "detail", "reasons", "source", "rep"])
def test_hostile_values_arrive_as_text_in_html(config, hostile, where):
    """A lead field full of markup is escaped in the HTML part and kept verbatim in the text part."""
    if where == "rep":
        digest = _digest(rep=_rep(name=hostile))
    else:
        digest = _digest([_item(**{where: [hostile] if where == "reasons" else hostile})])
    text, html = _parts(render.digest_message(digest, config, "<x@ourco.example>"))
    assert hostile in text
    body = html.split("<body", 1)[1]
    assert not re.search(r"<(script|img|a)\b", body)
    assert str(markupsafe.escape(hostile)) in html


def test_header_injection_in_a_name_stays_on_one_line(config):
    """A newline in a rep's or lead's name cannot add mail headers."""
    digest = _digest(rep=_rep(name="Sam\r\nBcc: victim@example.com"))
    message = render.digest_message(digest, config, "<x@ourco.example>")
    assert message["Bcc"] is None
    assert "\n" not in message["To"]


def test_pipeline_is_a_css_bar_chart_without_images(config):
    """The pipeline by stage is drawn with widths in percent, in stage order, no images."""
    rows = [("won", 2, 5000), ("proposal", 4, 12000), ("qualification", 8, None)]
    text, html = _parts(render.digest_message(_digest(pipeline=rows), config, "<x@ourco.example>"))
    assert "<img" not in html
    widths = re.findall(r"width:(\d+)%;height:14px", html)
    assert widths == ["100", "50", "25"]
    assert [line.split()[0] for line in text.splitlines() if "####" in line] == [
        "qualification", "proposal", "won"]
    assert "12,000" in text and "12,000" in html


def test_long_sections_say_how_many_more(config):
    """A list capped at its first items says how many are left out."""
    digest = _digest([_item(f"Lead {i}") for i in range(3)])
    digest.totals["new"] = 40
    text, html = _parts(render.digest_message(digest, config, "<x@ourco.example>"))
    assert "... and 37 more" in text and "and 37 more" in html


def test_admin_digest_renders_rate_and_failures(config):
    """The admin digest shows intake by channel, the qualification rate and what failed."""
    digest = AdminDigest(rep=_rep(role="admin"), local_date=DAY, day=DAY - datetime.timedelta(days=1),
                         as_of=datetime.datetime(2026, 6, 10, 6), inbound_total=12,
                         by_channel=[("email", "", 9), ("form", "contact", 3)],
                         by_status={"done": 10, "ignored": 2}, ignored=[("auto_reply", 2)],
                         leads_created=8, leads_qualified=2,
                         failed=[_item("<b>mallory</b>", ref="inbound 5",
                                       command="leadflow inbox retry 5")], failed_total=1)
    message = render.digest_message(digest, config, "<digest-7-2026-06-10-admin@ourco.example>")
    assert message["Subject"] == "leadflow intake for Tue 9 Jun: 12 inquiries, 8 leads (25% qualified), 1 failed"
    text, html = _parts(message)
    for part in (text, html):
        assert "25%" in part and "auto_reply" in part and "leadflow inbox retry 5" in part
    assert "&lt;b&gt;mallory&lt;/b&gt;" in html


def test_templates_are_named_by_audience_and_purpose():
    """Every digest and alert template exists under its audience_purpose name."""
    names = set(render.env.list_templates())
    assert {"rep_digest.txt", "rep_digest.html", "admin_digest.txt", "admin_digest.html",
            "hot_alert.txt"} <= names
