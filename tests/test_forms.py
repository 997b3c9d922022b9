"""Web forms: definitions, presets, reading stored submissions into leads, and the CLI."""

import json
import re

import pytest

from leadflow.errors import ConfigError
from leadflow.intake import forms, pipeline
from leadflow.store.inbound import store_inbound
from leadflow.store.models import InboundMessage, Lead

SALESFORCE_POST = {
    "oid": "00D000000000001", "retURL": "https://www.example.com/thanks", "first_name": "Sarah",
    "last_name": "Jones", "email": "sarah@techinnovators.example", "company": "Tech Innovators Inc.",
    "title": "IT Manager", "phone": "+31 20 123 4567", "lead_source": "Trade fair",
    "description": "We want project-management software within three months.",
    "00N5g00000ABCDE": "50 seats", "URL": "https://techinnovators.example",
}
TYPEFORM_POST = {
    "event_id": "01HXYZ", "event_type": "form_response",
    "form_response": {
        "form_id": "abc", "token": "tok1",
        "definition": {"fields": [
            {"id": "f1", "title": "What is your name?", "type": "short_text", "ref": "r1"},
            {"id": "f2", "title": "Work email", "type": "email", "ref": "r2"},
            {"id": "f3", "title": "Company", "type": "short_text", "ref": "r3"},
            {"id": "f4", "title": "How can we help?", "type": "long_text", "ref": "r4"},
            {"id": "f5", "title": "Team size", "type": "multiple_choice", "ref": "r5"},
        ]},
        "answers": [
            {"type": "text", "text": "Sarah Jones", "field": {"id": "f1", "type": "short_text"}},
            {"type": "email", "email": "sarah@techinnovators.example", "field": {"id": "f2", "type": "email"}},
            {"type": "text", "text": "Tech Innovators Inc.", "field": {"id": "f3", "type": "short_text"}},
            {"type": "text", "text": "A demo please.", "field": {"id": "f4", "type": "long_text"}},
            {"type": "choice", "choice": {"label": "11-50"}, "field": {"id": "f5", "type": "multiple_choice"}},
        ],
    },
}
WEBFLOW_POST = {
    "triggerType": "form_submission",
    "payload": {"name": "Contact", "siteId": "s1", "id": "sub-42", "submittedAt": "2026-11-27T10:00:00Z",
                "data": {"Name": "Sarah Jones", "Email": "sarah@techinnovators.example",
                         "Company Name": "Tech Innovators Inc.", "Message": "Call me.",
                         "Favourite colour": "blue"}},
}
PLAIN_POST = {"name": "Sarah Jones", "e-mail": "sarah@techinnovators.example",
              "Organisation": "Tech Innovators Inc.", "telephone": "020 1234567",
              "message": "Hello", "newsletter": "yes"}


@pytest.mark.parametrize("preset, payload, values, custom", [
    ("salesforce", SALESFORCE_POST,
     {"name": "Sarah Jones", "email": "sarah@techinnovators.example", "company": "Tech Innovators Inc.",
      "title": "IT Manager", "website": "https://techinnovators.example",
      "message": "We want project-management software within three months."},
     {"lead_source": "Trade fair", "00N5g00000ABCDE": "50 seats"}),
    ("typeform", TYPEFORM_POST,
     {"name": "Sarah Jones", "email": "sarah@techinnovators.example", "company": "Tech Innovators Inc.",
      "message": "A demo please."},
     {"Team size": "11-50"}),
    ("webflow", WEBFLOW_POST,
     {"name": "Sarah Jones", "email": "sarah@techinnovators.example", "company": "Tech Innovators Inc.",
      "message": "Call me."},
     {"Favourite colour": "blue"}),
    ("plain", PLAIN_POST,
     {"name": "Sarah Jones", "email": "sarah@techinnovators.example", "company": "Tech Innovators Inc.",
      "phone": "020 1234567", "message": "Hello"},
     {"newsletter": "yes"}),
])
def test_presets_map_fields_and_keep_unknown_ones(preset, payload, values, custom):
    """Each preset maps its builder's names to ours; everything else is kept in custom."""
    submission = forms.read_submission(forms.FormDef("f", preset=preset), payload)
    assert {k: v for k, v in submission.values.items() if k in values} == values
    assert submission.custom == custom
    assert not submission.honeypot


def test_salesforce_return_url_and_mapping_override():
    """retURL is read as the return page; a form's own mapping wins over the preset."""
    form = forms.FormDef("f", preset="salesforce", mapping={"lead_source": "subject"})
    submission = forms.read_submission(form, SALESFORCE_POST)
    assert submission.return_url == "https://www.example.com/thanks"
    assert submission.values["subject"] == "Trade fair"


@pytest.mark.parametrize("preset, payload, expected", [
    ("typeform", TYPEFORM_POST, "01HXYZ"),
    ("webflow", WEBFLOW_POST, "sub-42"),
    ("plain", PLAIN_POST, None),
])
def test_delivery_id(preset, payload, expected):
    """Typeform and Webflow deliveries carry an id that makes retries idempotent."""
    assert forms.delivery_id(preset, payload) == expected


@pytest.mark.parametrize("table, key", [
    ({"preset": "hubspot", "public_key": "k"}, "forms.web.preset"),
    ({"public_key": "k", "colour": "red"}, "forms.web.colour"),
    ({"preset": "plain"}, "forms.web"),
    ({"public_key": "k", "origins": ["not a url"]}, "forms.web.origins"),
    ({"public_key": "k", "origins": "https://a.example"}, "forms.web.origins"),
    ({"public_key": "k", "required": ["shoe_size"]}, "forms.web.required"),
    ({"public_key": "k", "return_url": "ftp://x.example"}, "forms.web.return_url"),
    ({"secret_env": "LEADFLOW_TEST_UNSET_SECRET"}, "forms.web.secret_env"),
    ({"public_key": 5}, "forms.web.public_key"),
])
def test_config_form_errors_name_the_key(table, key):
    """A wrong [forms.NAME] table stops with an error naming forms.NAME.key."""
    with pytest.raises(ConfigError) as error:
        forms.form_from_config("web", table, environ={})
    assert error.value.key == key and key in str(error.value)


def test_config_form_secret_from_environment():
    """secret_env reads the signing secret from the environment."""
    form = forms.form_from_config("web", {"secret_env": "S", "origins": ["https://A.example/"]},
                                  environ={"S": "abc"})
    assert (form.secret, form.origins) == ("abc", ["https://a.example"])


def _store_post(form_name, preset, payload):
    form = forms.FormDef(form_name, preset=preset)
    raw = forms.stored_document(form, "application/json", payload)
    return store_inbound("form", raw, form=form_name, content_type="application/json").id


@pytest.mark.parametrize("preset, payload", [
    ("salesforce", SALESFORCE_POST), ("typeform", TYPEFORM_POST), ("webflow", WEBFLOW_POST),
])
def test_stored_submission_becomes_lead(database, config, preset, payload):
    """The pipeline reads a stored submission of each preset into a lead with form provenance."""
    config.forms = {"site": {"preset": preset, "public_key": "pk"}}
    inbound_id = _store_post("site", preset, payload)
    assert pipeline.process_inbound(inbound_id, config) == "created"
    lead = Lead.get()
    assert (lead.name, lead.email, lead.company) == (
        "Sarah Jones", "sarah@techinnovators.example", "Tech Innovators Inc.")
    assert (lead.channel, lead.form, lead.source) == ("form", "site", "form:site")
    assert lead.fields["email"]["source"] == "form"
    assert InboundMessage.get_by_id(inbound_id).classification == "lead"


def test_salesforce_custom_fields_and_signals_on_lead(database, config):
    """Salesforce custom 00N fields land in Lead.custom; the message's buying signals are read."""
    config.forms = {"sf": {"preset": "salesforce", "public_key": "pk"}}
    inbound_id = _store_post("sf", "salesforce", SALESFORCE_POST)
    pipeline.process_inbound(inbound_id, config)
    lead = Lead.get()
    assert lead.custom["00N5g00000ABCDE"] == "50 seats"
    assert lead.title == "IT Manager"
    assert "timeline" in lead.signals


def test_honeypot_submission_is_spam(database, config):
    """A submission whose honeypot is filled is ignored as spam, never a lead."""
    config.forms = {"site": {"public_key": "pk"}}
    inbound_id = _store_post("site", "plain", {**PLAIN_POST, forms.DEFAULT_HONEYPOT: "x"})
    assert pipeline.process_inbound(inbound_id, config) == "ignored"
    row = InboundMessage.get_by_id(inbound_id)
    assert (row.status, row.classification) == ("ignored", "spam")
    assert Lead.select().count() == 0


def test_form_deleted_since_is_read_with_stored_preset(database, config):
    """A submission whose form is gone is still read, with the preset it was stored under."""
    inbound_id = _store_post("gone", "webflow", WEBFLOW_POST)
    assert pipeline.process_inbound(inbound_id, config) == "created"
    assert Lead.get().email == "sarah@techinnovators.example"


def test_form_cache_sees_new_forms_at_once(database, config):
    """A form added to the database is found on the first lookup after it exists."""
    cache = forms.FormCache(config, ttl=60)
    assert cache.get("late") is None
    forms.add_form("late", "plain")
    assert cache.get("late").preset == "plain"


def test_cli_forms_add_list_show_snippet(cli):
    """`forms add` makes a form with key and secret; show masks the secret; snippet has key and honeypot."""
    out = cli("forms", "add", "contact", "--preset", "salesforce", "--origin",
              "https://www.example.com", "--return-url", "https://www.example.com/thanks").output
    public_key = re.search(r"public key:\s+(pk_\S+)", out).group(1)
    secret = re.search(r"secret:\s+(whsec_\S+)", out).group(1)  # shown once, at creation
    assert "contact" in cli("forms", "list").output
    shown = json.loads(cli("forms", "show", "contact", "--json").output)
    assert shown["public_key"] == public_key and secret not in json.dumps(shown)
    assert shown["origins"] == ["https://www.example.com"]
    assert shown["mapping"]["description"] == "message"
    snippet = cli("forms", "snippet", "contact").output
    assert f'value="{public_key}"' in snippet and f'name="{forms.DEFAULT_HONEYPOT}"' in snippet
    assert 'action="http://127.0.0.1:8080/forms/contact"' in snippet
    assert 'name="first_name"' in snippet


@pytest.mark.parametrize("args, message", [
    (["forms", "add", "bad name!"], "forms.bad name!"),
    (["forms", "add", "x", "--origin", "nope"], "forms.x.origins"),
    (["forms", "show", "missing"], "no form 'missing'"),
])
def test_cli_forms_errors(cli, args, message):
    """Bad form input ends with a clear Error: line, no traceback."""
    result = cli(*args, expect=1)
    assert "Error:" in result.output and message in result.output


def test_cli_forms_add_twice(cli):
    """Adding a form whose name exists is refused."""
    cli("forms", "add", "dup")
    assert "exists already" in cli("forms", "add", "dup", expect=1).output


def test_cli_forms_rotate_replaces_the_secret(cli):
    """`forms rotate` shows a new secret once; with --public-key the key changes too."""
    from leadflow.store.models import Form

    out = cli("forms", "add", "contact").output
    old_key = re.search(r"public key:\s+(pk_\S+)", out).group(1)
    old_secret = re.search(r"secret:\s+(whsec_\S+)", out).group(1)
    out = cli("forms", "rotate", "contact").output
    new_secret = re.search(r"secret:\s+(whsec_\S+)", out).group(1)
    row = Form.get(Form.name == "contact")
    assert new_secret != old_secret and row.secret == new_secret and row.public_key == old_key
    out = cli("forms", "rotate", "contact", "--public-key").output
    row = Form.get(Form.name == "contact")
    assert row.public_key != old_key and row.public_key in out and row.secret in out
    assert new_secret not in cli("forms", "show", "contact").output


def test_cli_forms_remove(cli):
    """`forms remove --yes` deletes a database form; without --yes it asks."""
    from leadflow.store.models import Form

    cli("forms", "add", "old")
    assert "Aborted" in cli("forms", "remove", "old", input="n\n", expect=1).output
    assert Form.select().where(Form.name == "old").exists()
    assert "removed" in cli("forms", "remove", "old", "--yes").output
    assert not Form.select().where(Form.name == "old").exists()
    assert "no form 'old'" in cli("forms", "remove", "old", "--yes", expect=1).output
    assert "no form 'old'" in cli("forms", "rotate", "old", expect=1).output


def test_cli_forms_of_the_config_file_are_changed_there(cli, tmp_path):
    """A form declared in the configuration file is not rotated or removed by the CLI."""
    (tmp_path / "leadflow.toml").write_text('[forms.site]\npublic_key = "pk_site"\n')
    for verb in ("rotate", "remove"):
        result = cli("forms", verb, "site", "--yes" if verb == "remove" else "--public-key",
                     expect=1)
        assert "declared in the configuration file" in result.output


def test_cli_forms_add_with_own_honeypot(cli):
    """`forms add --honeypot` sets the spam-trap field the snippet and the webhook use."""
    cli("forms", "add", "contact", "--honeypot", "fax_number_2")
    assert json.loads(cli("forms", "show", "contact", "--json").output)["honeypot"] == "fax_number_2"
    assert 'name="fax_number_2"' in cli("forms", "snippet", "contact").output
    from leadflow.store.models import Form

    form = forms.form_from_row(Form.get())
    submission = forms.read_submission(form, {"email": "a@b.example", "fax_number_2": "spam"})
    assert submission.honeypot and "fax_number_2" not in submission.custom


@pytest.mark.parametrize("honeypot", ["email", "website_url", "bad name", "_form_key"])
def test_honeypot_that_is_a_real_field_is_refused(cli, honeypot):
    """A honeypot that a real field would fill (or not a field name) is refused, naming it."""
    result = cli("forms", "add", "contact", "--honeypot", honeypot, expect=1)
    assert "forms.contact.honeypot" in result.output
