"""parse_message finds the prospect behind every inquiry and never raises."""

from pathlib import Path

import pytest

from leadflow.config import IntakeConfig
from leadflow.intake.message import ParsedMessage, Prospect, parse_message

MAIL = Path(__file__).resolve().parent / "fixtures" / "mail"
SETTINGS = IntakeConfig(internal_domains=["ourco.example"], forwarders=["partner@reseller.example"],
                        default_region="NL")


def parse(name, settings=SETTINGS):
    return parse_message((MAIL / name).read_bytes(), settings)


def test_worked_example_is_a_lead_for_sarah_not_the_forwarder():
    """Sarah's inquiry forwarded by marketing becomes Sarah's, with the forwarder as submitted_by."""
    parsed = parse("worked_example_sarah.eml")
    assert isinstance(parsed, ParsedMessage) and isinstance(parsed.prospect, Prospect)
    assert parsed.classification == "lead"
    assert parsed.forwarded is True
    assert parsed.submitted_by == "marketing@ourco.example"
    assert parsed.prospect.email == "sarah.mitchell@techinnovators.com"
    assert parsed.prospect.name == "Sarah Mitchell"
    assert parsed.prospect.company == "Tech Innovators Inc."
    assert parsed.prospect.title == "IT Manager"
    assert parsed.prospect.phone == "+14155550132"
    assert parsed.subject == "Project management software for our IT team"
    assert "Please call her" in parsed.forwarder_note
    assert "Please call her" not in parsed.body and "IT Manager" not in parsed.body
    assert "within three months" in parsed.body.replace("\n", " ")


def test_worked_example_timeline_is_three_months_after_the_message():
    """'we want to buy within three months' gives an expected date three months after Sarah wrote."""
    parsed = parse("worked_example_sarah.eml")
    assert parsed.date.date().isoformat() == "2026-11-26"
    timeline = parsed.signals["timeline"]
    assert timeline["date"] == "2027-02-26"
    assert 89 <= timeline["days"] <= 92
    assert parsed.signals["size"] == {"value": 40, "unit": "users", "text": "40 users"}
    assert parsed.signals["product"] == ["project management software"]


def test_to_dict_has_the_documented_keys():
    """The JSON of `leadflow parse --json` carries every documented key and is serialisable."""
    import json
    data = parse("worked_example_sarah.eml").to_dict()
    for key in ("classification", "forwarded", "submitted_by", "prospect", "subject", "body", "signals",
                "fields", "date", "message_id", "attachments", "needs_review", "forwarder_note"):
        assert key in data
    assert set(data["prospect"]) == {"name", "email", "phone", "company", "title", "website", "country"}
    assert data["fields"]["name"] == {"value": "Sarah Mitchell", "source": "forward", "confidence": 0.9}
    json.dumps(data)


@pytest.mark.parametrize("raw, classification", [
    (b"", "empty"),
    (b"   \r\n\t ", "empty"),
    (b"\x00\x01\x02\xff" * 100, "unreadable"),
    (b"just some words without headers", "unreadable"),
    (b"From: nobody\n\nno address here", "unreadable"),
])
def test_input_that_is_no_message_gets_a_classification_and_reason(raw, classification):
    """Empty and unreadable input is classified with a reason instead of raising."""
    parsed = parse_message(raw, SETTINGS)
    assert parsed.classification == classification
    assert parsed.reason


def test_plain_direct_inquiry():
    """A prospect writing directly is the prospect; nothing is forwarded."""
    raw = (b"From: Jan Jansen <jan@bouwbedrijf-jansen.nl>\nTo: sales@ourco.example\n"
           b"Subject: Offerte aanvraag\nDate: Mon, 2 Nov 2026 10:00:00 +0100\nMessage-ID: <a1@x>\n\n"
           b"Goedemiddag,\n\nWij willen binnen drie maanden overstappen. We zijn met 25 medewerkers.\n\n"
           b"Met vriendelijke groet,\nJan Jansen\nDirecteur\nBouwbedrijf Jansen B.V.\n06 12345678\n")
    parsed = parse_message(raw, SETTINGS)
    assert parsed.classification == "lead" and not parsed.forwarded and parsed.submitted_by is None
    assert parsed.prospect.email == "jan@bouwbedrijf-jansen.nl"
    assert parsed.prospect.phone == "+31612345678"
    assert parsed.prospect.company == "Bouwbedrijf Jansen B.V."
    assert parsed.prospect.title == "Directeur"
    assert parsed.signals["timeline"]["date"] == "2027-02-02"
    assert parsed.signals["size"]["value"] == 25
    assert parsed.message_id == "a1@x"
    assert "Directeur" not in parsed.body
