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


# Forwarded inquiries of each client family and language: (fixture, prospect email, name,
# subject, submitted_by, company).
FORWARDS = [
    ("worked_example_sarah.eml", "sarah.mitchell@techinnovators.com", "Sarah Mitchell",
     "Project management software for our IT team", "marketing@ourco.example", "Tech Innovators Inc."),
    ("outlook_desktop_nl.eml", "annelies.degroot@groothandel-degroot.nl", "Annelies de Groot",
     "Offerteaanvraag voorraadbeheer", "p.bakker@ourco.example", "Groothandel De Groot B.V."),
    ("outlook365_de.eml", "k.mueller@maschinenbau-mueller.de", "Klaus Müller", "Anfrage Projektsoftware",
     "vertrieb@ourco.example", "Maschinenbau Müller GmbH"),
    ("new_outlook_fr.eml", "claire.dubois@agence-lumiere.fr", "Claire Dubois", "Demande de devis",
     "commercial@ourco.example", "Agence Lumière SARL"),
    ("apple_mail_en.eml", "olivia.chen@brightpath.co.uk", "Olivia Chen", "Quote request",
     "tom@ourco.example", "BrightPath Logistics Ltd"),
    ("thunderbird_es.eml", "jortega@construcciones-ortega.es", "Javier Ortega", "Solicitud de información",
     "ventas@ourco.example", "Construcciones Ortega S.L."),
    ("yahoo_en.eml", "mike.rowe@yahoo.com", "Mike Rowe", "Pricing for 20 users",
     "salesdesk@ourco.example", None),
    ("hubspot_en.eml", "raj.patel@nimbus-analytics.io", "Raj Patel", "Demo request",
     "sophie@ourco.example", "Nimbus Analytics Inc."),
    ("missive_en.eml", "hannah@fernweh-reisen.de", "Hannah Weber", "Enterprise plan",
     "support@ourco.example", "fernweh-reisen.de"),
    ("mailmate_en.eml", "ingrid.holm@fjordtech.no", "Ingrid Holm", "Integration question",
     "erik@ourco.example", "fjordtech.no"),
    ("gmail_de_html_only.eml", "j.wagner@wagner-logistik.de", "Jonas Wagner", "Angebot gewünscht",
     "lena.schmidt@ourco.example", "Wagner Logistik GmbH"),
    ("forward_as_attachment.eml", "david.okafor@sunrise-energy.com", "David Okafor", "Partnership inquiry",
     "marketing@ourco.example", "Sunrise Energy Inc."),
    ("nested_internal_forward.eml", "bram.peeters@peeters-it.be", "Bram Peeters", "Question about licences",
     "router@ourco.example", "Peeters IT BV"),
    ("partner_forwarder.eml", "nora@lindqvist-design.se", "Nora Lindqvist", "Request",
     "partner@reseller.example", "lindqvist-design.se"),
    ("outlook365_html_only_en.eml", "anna@kowalski-logistics.pl", "Anna Kowalski", "Request for proposal",
     "sales@ourco.example", "Kowalski Logistics Sp. z o.o."),
]


@pytest.mark.parametrize("name, email, person, subject, submitted_by, company", FORWARDS,
                         ids=[f[0] for f in FORWARDS])
def test_forwarded_inquiry_is_filed_under_the_original_sender(name, email, person, subject, submitted_by,
                                                               company):
    """Each client's forward gives the original sender as prospect and the forwarder as submitted_by."""
    parsed = parse(name)
    assert (parsed.classification, parsed.forwarded, parsed.needs_review) == ("lead", True, False)
    assert parsed.prospect.email == email
    assert parsed.prospect.name == person
    assert parsed.subject == subject
    assert parsed.submitted_by == submitted_by
    assert parsed.prospect.company == company
    assert parsed.body and "Forwarded" not in parsed.body and "@ourco.example" not in parsed.body


@pytest.mark.parametrize("name, note", [
    ("worked_example_sarah.eml", "Hot lead from the Utrecht trade fair"),
    ("outlook_desktop_nl.eml", "Kan iemand van sales deze oppakken?"),
    ("outlook365_de.eml", "Bitte übernehmen, Messe-Kontakt aus Köln."),
    ("forward_as_attachment.eml", "See attached, looks like a big one."),
    ("nested_internal_forward.eml", "For the Benelux team."),
    ("yahoo_en.eml", None),
])
def test_forwarder_note_is_kept(name, note):
    """The forwarder's own words above the forward are kept apart from the prospect's words."""
    parsed = parse(name)
    if note is None:
        assert parsed.forwarder_note is None
    else:
        assert parsed.forwarder_note.startswith(note)
        assert note not in parsed.body


def test_phone_in_the_forwarders_note():
    """A number the forwarder wrote ("call her on ...") is the prospect's phone when she gave none."""
    raw = (b"From: m@ourco.example\nSubject: Fwd: hi\n\nCall her today on 06 12345678!\n\n"
           b"---------- Forwarded message ---------\nFrom: Eva <eva@evabv.nl>\nSubject: hi\n\nA question.\n")
    parsed = parse_message(raw, SETTINGS)
    assert parsed.prospect.phone == "+31612345678"
    assert parsed.fields["phone"] == {"value": "+31612345678", "source": "forward", "confidence": 0.5}


def test_forward_as_attachment_lists_attachments_and_uses_the_original_date():
    """A message/rfc822 forward is read from the attachment; the original's date is the message date."""
    parsed = parse("forward_as_attachment.eml")
    assert parsed.forward_via == "attachment"
    assert parsed.date.isoformat() == "2026-11-16T22:45:00"
    assert parsed.attachments[0]["content_type"] == "message/rfc822"
    assert parsed.attachments[0]["filename"] == "Partnership inquiry.eml"
    assert parsed.attachments[0]["size"] > 300
    assert parsed.signals["timeline"]["date"] == "2027-06-30"


@pytest.mark.parametrize("name, signal, value", [
    ("outlook_desktop_nl.eml", "budget", {"amount": 25000, "currency": "EUR", "text": "€25.000"}),
    ("outlook_desktop_nl.eml", "timeline", {"date": "2027-02-03", "days": 92, "text": "binnen drie maanden"}),
    ("outlook365_de.eml", "budget", {"amount": 40000, "currency": "EUR", "text": "40.000 EUR"}),
    ("outlook365_de.eml", "timeline", {"date": "2027-01-03", "days": 61,
                                       "text": "innerhalb von zwei Monaten"}),
    ("new_outlook_fr.eml", "timeline", {"date": "2026-12-04", "days": 30, "text": "le mois prochain"}),
    ("apple_mail_en.eml", "budget", {"amount": 18000, "currency": "GBP", "text": "GBP 18,000"}),
    ("apple_mail_en.eml", "timeline", {"date": "2027-03-31", "days": 146, "text": "Q1 2027"}),
    ("apple_mail_en.eml", "size", {"value": 35, "unit": "seats", "text": "35 seats"}),
    ("thunderbird_es.eml", "timeline", {"date": "2027-01-08", "days": 61, "text": "dentro de dos meses"}),
    ("hubspot_en.eml", "budget", {"amount": 30000, "currency": "USD", "text": "$30k"}),
    ("hubspot_en.eml", "size", {"value": 200, "unit": "employees", "text": "200 employees"}),
    ("missive_en.eml", "timeline", {"date": "2026-12-31", "days": 50, "text": "before the end of the year"}),
    ("webform_noreply.eml", "budget", {"amount": 10000, "currency": "EUR", "text": "10.000 EUR"}),
])
def test_buying_signals_of_fixtures(name, signal, value):
    """Budget, timeline and size are read from the prospect's words, relative to their message date."""
    assert parse(name).signals[signal] == value


def test_internal_sender_without_original_goes_to_review_not_to_the_forwarder():
    """An internal message with no findable original is flagged for review with no prospect address."""
    parsed = parse("internal_no_original.eml")
    assert parsed.classification == "lead"
    assert parsed.needs_review is True and "p.bakker@ourco.example" in parsed.review_reason
    assert parsed.prospect.email is None and parsed.prospect.name is None
    assert parsed.submitted_by == "p.bakker@ourco.example"
    assert parsed.forwarded is False


def test_colleague_signature_is_never_the_prospect():
    """Without an original, the colleague's signature (name, title, company, phone) is not read."""
    parsed = parse("internal_signed_no_original.eml")
    assert parsed.needs_review
    assert parsed.prospect == Prospect()
    assert parsed.submitted_by == "p.bakker@ourco.example"


def test_internal_sender_with_typed_contact_details():
    """Contact lines a colleague typed ("Email: ...") name the prospect; the colleague is submitted_by."""
    parsed = parse("internal_contact_lines.eml")
    assert not parsed.needs_review
    assert parsed.prospect == Prospect(name="Ellen Vos", email="ellen.vos@vostransport.nl",
                                       phone="+31107654321", company="Vos Transport B.V.",
                                       title="Fleet Manager", website="vostransport.nl", country="NL")
    assert parsed.submitted_by == "p.bakker@ourco.example"
    assert parsed.fields["company"]["source"] == "body"


def test_web_form_notification_uses_reply_to():
    """A form notification sent by noreply@ with the visitor in Reply-To is the visitor's lead."""
    parsed = parse("webform_noreply.eml")
    assert parsed.classification == "lead"
    assert parsed.prospect.email == "ahmed@yilmaz-bau.de"
    assert parsed.prospect.company == "Yilmaz Bau GmbH"
    assert parsed.prospect.phone == "+49301234567"


def test_web_form_notification_without_reply_to_uses_the_labelled_address():
    """A form robot's mail (wordpress@) without Reply-To is the visitor's lead, read from its Email: line."""
    parsed = parse("webform_wordpress.eml")
    assert parsed.classification == "lead"
    assert parsed.prospect.email == "lucas.fontaine@fontaine-industrie.fr"
    assert parsed.prospect.name == "Lucas Fontaine"
    assert parsed.submitted_by == "wordpress@ourco-partner.example"
    assert parsed.fields["company"] == {"value": "Fontaine Industrie SAS", "source": "form", "confidence": 0.9}
    assert parsed.signals["budget"] == {"amount": 30000, "currency": "EUR", "text": "30 000 €"}


def test_forwarded_form_notification_is_the_visitors_lead():
    """A form notification a colleague forwarded names the visitor, not the form robot."""
    parsed = parse("forwarded_form_notification.eml")
    assert (parsed.classification, parsed.forwarded, parsed.needs_review) == ("lead", True, False)
    assert parsed.prospect == Prospect(name="Femke Hendriks", email="femke@hendriks-zorg.nl",
                                       phone="+31612345678", company="Hendriks Zorg B.V.",
                                       website="hendriks-zorg.nl", country="NL")
    assert parsed.submitted_by == "marketing@ourco.example"
    assert parsed.body.startswith("We zoeken een planningssysteem")
    assert parsed.signals["timeline"]["text"] == "binnen twee maanden"
    assert parsed.fields["email"]["source"] == "form"


def test_reply_reports_thread_ids_and_drops_quoted_history():
    """A reply carries In-Reply-To and References; its body is the new text only."""
    parsed = parse("reply_in_thread.eml")
    assert parsed.in_reply_to == "quote-123@ourco.example"
    assert parsed.references == ["CAF3x9Qw7TbLzN2pK4mXvR8s@mail.gmail.com", "quote-123@ourco.example"]
    assert parsed.body == "Thanks, the quote looks good. Can we schedule a call on Thursday?"
    assert parsed.prospect.email == "sarah.mitchell@techinnovators.com"
    assert parsed.forwarded is False


@pytest.mark.parametrize("name, classification, reason", [
    ("ooo_auto_submitted_en.eml", "auto_reply", "out-of-office reply (Auto-Submitted: auto-replied)"),
    ("ooo_subject_nl.eml", "auto_reply", "out-of-office reply (X-Autoreply: yes)"),
    ("ooo_subject_only_de.eml", "auto_reply", "out-of-office reply (subject: Abwesenheitsnotiz: Ihre Anfrage)"),
    ("ooo_subject_only_fr.eml", "auto_reply", "out-of-office reply (subject: Réponse automatique : Votre devis)"),
    ("bounce_dsn.eml", "bounce", "delivery-status report (multipart/report)"),
    ("bounce_postmaster.eml", "bounce", "sent by postmaster@outlook.com"),
    ("mailing_list.eml", "bulk", "mailing-list mail (List-Id: Industry Weekly <weekly.industryweekly.example>)"),
    ("bulk_precedence.eml", "bulk", "bulk mail (Precedence: bulk)"),
    ("noreply_sender.eml", "automated", "sent from a no-reply address (no-reply@acme-billing.example)"),
])
def test_not_a_lead(name, classification, reason):
    """Auto-replies, bounces, bulk mail and no-reply senders are recognised with a readable reason."""
    parsed = parse(name)
    assert (parsed.classification, parsed.reason) == (classification, reason)
    assert not parsed.is_lead


@pytest.mark.parametrize("name, email, subject, text", [
    ("broken_headers_charset.eml", "user@example.com", "Anfrage für Software", "Wir möchten ein Angebot"),
    ("eightbit_headers_no_boundary.eml", "jose@garcia-hermanos.es", "Presupuesto úrgénte",
     "Necesitamos un presupuesto"),
])
def test_broken_mail_is_still_read(name, email, subject, text):
    """Raising headers, unknown charsets, 8-bit headers and a missing boundary still give the inquiry."""
    parsed = parse(name)
    assert parsed.classification == "lead"
    assert parsed.prospect.email == email
    assert parsed.subject == subject
    assert parsed.body.startswith(text)


def test_worked_example_through_the_pipeline(database, config):
    """Stored and processed, Sarah's forwarded inquiry is a lead for Sarah at Tech Innovators Inc."""
    from leadflow.intake.pipeline import process_inbound
    from leadflow.store.inbound import store_inbound
    from leadflow.store.models import Lead

    config.intake.internal_domains = ["ourco.example"]
    stored = store_inbound("email", (MAIL / "worked_example_sarah.eml").read_bytes())
    assert process_inbound(stored.id, config) == "created"
    lead = Lead.get()
    assert (lead.email, lead.name, lead.title, lead.submitted_by) == (
        "sarah.mitchell@techinnovators.com", "Sarah Mitchell", "IT Manager", "marketing@ourco.example")
    assert (lead.organisation.name, lead.organisation.domain) == ("Tech Innovators Inc.", "techinnovators.com")
    assert lead.signals["timeline"]["date"] == "2027-02-26"


def test_not_a_lead_through_the_pipeline(database, config):
    """Auto-replies, bounces, bulk and no-reply mail end as ignored with their reason, and no lead."""
    from leadflow.intake.pipeline import process_inbound
    from leadflow.store.inbound import store_inbound
    from leadflow.store.models import InboundMessage, Lead

    names = ["ooo_auto_submitted_en.eml", "bounce_dsn.eml", "mailing_list.eml", "noreply_sender.eml"]
    ids = [store_inbound("email", (MAIL / name).read_bytes()).id for name in names]
    for inbound_id in ids:
        process_inbound(inbound_id, config)
    rows = [InboundMessage.get_by_id(inbound_id) for inbound_id in ids]
    assert [(row.status, row.classification) for row in rows] == [
        ("ignored", "auto_reply"), ("ignored", "bounce"), ("ignored", "bulk"), ("ignored", "automated")]
    assert all(row.reason for row in rows)
    assert Lead.select().count() == 0
