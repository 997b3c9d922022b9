"""Fields and buying signals are read from mail bodies and form text, with source and confidence."""

from datetime import date, datetime

import pytest

from leadflow.intake.extract import clean_name, extract_fields, extract_signals, key_values, split_body

REFERENCE = date(2026, 11, 27)   # a Friday


@pytest.mark.parametrize("text, key, expected", [
    ("We want to buy within three months.", "timeline", {"date": "2027-02-27", "days": 92, "text": "within three months"}),
    ("Wij willen binnen drie maanden beslissen.", "timeline", {"date": "2027-02-27", "days": 92, "text": "binnen drie maanden"}),
    ("Wir möchten innerhalb von 6 Wochen starten.", "timeline", {"date": "2027-01-08", "days": 42, "text": "innerhalb von 6 Wochen"}),
    ("Nous voulons acheter d'ici deux mois.", "timeline", {"date": "2027-01-27", "days": 61, "text": "d'ici deux mois"}),
    ("Queremos comprar en los próximos 3 meses.", "timeline", {"date": "2027-02-27", "days": 92, "text": "en los próximos 3 meses"}),
    ("We plan the purchase in Q3.", "timeline", {"date": "2027-09-30", "days": 307, "text": "Q3"}),
    ("Budget approved for Q4 2026.", "timeline", {"date": "2026-12-31", "days": 34, "text": "Q4 2026"}),
    ("Can we start next month?", "timeline", {"date": "2026-12-27", "days": 30, "text": "next month"}),
    ("We willen volgende maand starten.", "timeline", {"date": "2026-12-27", "days": 30, "text": "volgende maand"}),
    ("We need it asap!", "timeline", {"date": "2026-12-11", "days": 14, "text": "asap"}),
    ("We would like to order by March.", "timeline", {"date": "2027-03-31", "days": 124, "text": "by March"}),
    ("Our budget is €50,000.", "budget", {"amount": 50000, "currency": "EUR", "text": "€50,000"}),
    ("Budget: 50.000 euro", "budget", {"amount": 50000, "currency": "EUR", "text": "50.000 euro"}),
    ("around $1.5m in total", "budget", {"amount": 1500000, "currency": "USD", "text": "$1.5m"}),
    ("we have £20k to spend", "budget", {"amount": 20000, "currency": "GBP", "text": "£20k"}),
    ("Budget ca. 10.000 EUR", "budget", {"amount": 10000, "currency": "EUR", "text": "10.000 EUR"}),
    ("USD 7,500.50 per year", "budget", {"amount": 7500.5, "currency": "USD", "text": "USD 7,500.50"}),
    ("budget 30 000 €.", "budget", {"amount": 30000, "currency": "EUR", "text": "30 000 €"}),
    ("Our budget is around 50k.", "budget", {"amount": 50000, "currency": None, "text": "budget is around 50k"}),
    ("Budget van 1,5 miljoen", "budget", {"amount": 1500000, "currency": None, "text": "Budget van 1,5 miljoen"}),
    ("We are 200 employees.", "size", {"value": 200, "unit": "employees", "text": "200 employees"}),
    ("for 40 users", "size", {"value": 40, "unit": "users", "text": "40 users"}),
    ("we need 25 seats", "size", {"value": 25, "unit": "seats", "text": "25 seats"}),
    ("wij hebben 35 medewerkers", "size", {"value": 35, "unit": "employees", "text": "35 medewerkers"}),
    ("für 12 Benutzer", "size", {"value": 12, "unit": "users", "text": "12 Benutzer"}),
    ("a team of 15", "size", {"value": 15, "unit": "employees", "text": "team of 15"}),
    ("We are interested in your project management software for our team.", "product",
     ["project management software"]),
    ("Wij zijn op zoek naar een planningstool voor 10 mensen.", "product", ["planningstool"]),
    ("Could you send a quote for the CRM module?", "product", ["CRM module"]),
])
def test_signals(text, key, expected):
    """Each buying signal is read in several languages; timelines are relative to the message date."""
    assert extract_signals(text, REFERENCE)[key] == expected


def test_no_signals_in_plain_chatter():
    """A message without buying statements has no signals."""
    assert extract_signals("Thanks for the nice chat yesterday.", REFERENCE) == {}


def test_reference_datetime_is_accepted():
    """The message date may be a datetime."""
    signals = extract_signals("within 2 weeks", datetime(2026, 11, 27, 23, 59))
    assert signals["timeline"]["date"] == "2026-12-11"


def test_buying_statement_wins_over_an_earlier_mention():
    """A timeline next to a buying verb is preferred to one that merely comes first."""
    text = "We grow to 60 people next year, and we want to buy within three months."
    assert extract_signals(text, REFERENCE)["timeline"]["text"] == "within three months"


@pytest.mark.parametrize("text, own, signature, quoted", [
    ("Hello,\n\nwe need a quote.\n\nBest regards,\nAnna Smith\nBuyer", "Hello,\n\nwe need a quote.",
     "Best regards,\nAnna Smith\nBuyer", ""),
    ("Hi\n\nSee below.\n\n-- \nJohn\n+31 20 123 4567", "Hi\n\nSee below.", "-- \nJohn\n+31 20 123 4567", ""),
    ("Yes please.\n\nOn Mon, 2 Nov 2026 at 10:00, Rep <rep@ourco.example> wrote:\n> Shall we?",
     "Yes please.", "", "On Mon, 2 Nov 2026 at 10:00, Rep <rep@ourco.example> wrote:\n> Shall we?"),
    ("Graag.\n\nMet vriendelijke groet,\nJan", "Graag.", "Met vriendelijke groet,\nJan", ""),
    ("Danke.\n\nMit freundlichen Grüßen\nKlaus Müller", "Danke.", "Mit freundlichen Grüßen\nKlaus Müller", ""),
    ("Merci.\n\nCordialement,\nClaire", "Merci.", "Cordialement,\nClaire", ""),
    ("Only words, no signature at all.", "Only words, no signature at all.", "", ""),
])
def test_split_body(text, own, signature, quoted):
    """A body splits into the writer's own words, their signature and quoted history."""
    assert split_body(text) == (own, signature, quoted)


def test_fields_from_a_signature():
    """Name, title, company, phone, website and country come from the signature block."""
    own, signature, _ = split_body("Hello,\nwe need a quote.\n\nKind regards,\nAnna Smith\nHead of Procurement\n"
                                   "Contoso Ltd\nT: +44 20 7946 0958\nhttps://www.contoso.co.uk\n")
    fields = extract_fields(own, signature, email="anna.smith@contoso.co.uk", region="NL")
    values = {k: v["value"] for k, v in fields.items()}
    assert values == {"email": "anna.smith@contoso.co.uk", "name": "Anna Smith", "phone": "+442079460958",
                      "company": "Contoso Ltd", "title": "Head of Procurement",
                      "website": "https://www.contoso.co.uk", "country": "GB"}
    assert fields["email"] == {"value": "anna.smith@contoso.co.uk", "source": "header", "confidence": 1.0}
    assert fields["name"]["source"] == "signature" and fields["phone"]["source"] == "signature"


def test_fields_from_form_lines():
    """Key: value lines of a web form are read in several languages, with source 'form'."""
    text = ("Voornaam: Eva\nAchternaam: de Boer\nE-mailadres: EVA@deboer-bouw.NL\nTelefoonnummer: 06-12345678\n"
            "Bedrijfsnaam: De Boer Bouw\nFunctie: Projectleider\nLand: Nederland\n")
    fields = extract_fields(text, source="form")
    values = {k: v["value"] for k, v in fields.items()}
    assert values == {"email": "eva@deboer-bouw.nl", "name": "Eva de Boer", "phone": "+31612345678",
                      "company": "De Boer Bouw", "title": "Projectleider", "website": "deboer-bouw.nl",
                      "country": "NL"}
    assert {fields[k]["source"] for k in ("email", "name", "phone", "company", "title", "country")} == {"form"}
    assert fields["website"] == {"value": "deboer-bouw.nl", "source": "domain", "confidence": 0.4}


def test_company_from_domain_unless_free_mail():
    """Without a signature the company is the email's company domain; free-mail gives none."""
    assert extract_fields("hi", email="piet@acme-bv.nl")["company"] == {
        "value": "acme-bv.nl", "source": "domain", "confidence": 0.4}
    assert "company" not in extract_fields("hi", email="piet@gmail.com")


def test_name_guessed_from_the_address_with_low_confidence():
    """With no name anywhere, first.last@ gives a guess of low confidence."""
    assert extract_fields("hi", email="sarah.jones@acme.example")["name"] == {
        "value": "Sarah Jones", "source": "domain", "confidence": 0.4}


@pytest.mark.parametrize("raw, name", [
    ('"Sarah Mitchell"', "Sarah Mitchell"), ("JOHN DOE", "John Doe"), ("sales@acme.example", None),
    ("", None), ("12345", None), ("Smith, Anna", "Smith, Anna"),
])
def test_clean_name(raw, name):
    """Display names are tidied; addresses and numbers are no names."""
    assert clean_name(raw) == name


def test_key_values_first_occurrence_wins():
    """The first labelled value of a field is kept."""
    assert key_values("Email: a@b.example\nE-mail: c@d.example\nCompany: X")["email"] == "a@b.example"


def test_key_values_message_spans_lines_up_to_the_next_label():
    """A form's message field goes on over the following lines, up to the next known label."""
    text = "Name: A B\nEmail: a@b.example\nMessage:\nHello there,\nwe need 5 seats.\n\nThanks\nPhone: 0612345678"
    assert key_values(text) == {"name": "A B", "email": "a@b.example", "phone": "0612345678",
                                "message": "Hello there,\nwe need 5 seats.\n\nThanks"}
