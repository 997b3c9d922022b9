"""The web-form webhook: real HTTP requests against the server on 127.0.0.1, port 0."""

import http.client
import json
import time
import urllib.parse
import uuid

import pytest

from leadflow.intake import forms
from leadflow.intake.server import BackgroundServer
from leadflow.intake.webhook import RateLimiter, sign
from leadflow.store.models import Form, InboundMessage, Lead

pytestmark = pytest.mark.timeout(60)

ORIGIN = "https://www.techinnovators.example"
KEY = "pk_test_contact"
SECRET = "whsec_test_secret"
SARAH = {"name": "Sarah Jones", "email": "sarah@techinnovators.example",
         "company": "Tech Innovators Inc.", "message": "We want to buy within three months."}


@pytest.fixture
def server(config, database):
    config.forms = {
        "contact": {"preset": "plain", "public_key": KEY, "secret": SECRET, "origins": [ORIGIN],
                    "return_url": f"{ORIGIN}/thanks"},
        "open": {"preset": "plain", "public_key": "pk_open"},
        "signed": {"preset": "plain", "secret": SECRET},
        "sf": {"preset": "salesforce", "public_key": "pk_sf", "origins": [ORIGIN]},
        "tf": {"preset": "typeform", "secret": SECRET},
        "wf": {"preset": "webflow", "secret": SECRET},
    }
    config.http.rate_limit_per_minute = 1000
    with BackgroundServer(config) as running:
        yield running


class Client:
    def __init__(self, server):
        self.host, self.port = server.http_address

    def request(self, method, path, body=b"", headers=None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            connection.close()

    def form(self, path, fields, headers=None):
        body = urllib.parse.urlencode(fields).encode()
        return self.request("POST", path, body, {
            "Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN, **(headers or {})})

    def json(self, path, payload, headers=None):
        body = json.dumps(payload).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})


@pytest.fixture
def client(server):
    return Client(server)


def stored():
    return [json.loads(bytes(r.raw)) for r in InboundMessage.select().where(
        InboundMessage.status != "duplicate").order_by(InboundMessage.id)]


def multipart(fields, files):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    for name, (filename, content) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n{content}\r\n')
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


def test_urlencoded_post_with_key_and_origin_stored_then_202(client):
    """A browser-style post with the form key from an allowed origin is stored, then 202 JSON."""
    status, headers, body = client.form("/forms/contact", {**SARAH, "_form_key": KEY})
    assert status == 202
    answer = json.loads(body)
    assert answer["status"] == "received"
    assert InboundMessage.get_by_id(answer["id"]).form == "contact"
    assert headers["access-control-allow-origin"] == ORIGIN
    assert stored()[0]["payload"]["email"] == SARAH["email"]


def test_multipart_post_files_ignored(client):
    """A multipart post is read field by field; file parts are not kept."""
    body, content_type = multipart({**SARAH, "_form_key": KEY}, {"cv": ("cv.pdf", "%PDF-1.4 secret")})
    status, _, _ = client.request("POST", "/forms/contact", body,
                                  {"Content-Type": content_type, "Origin": ORIGIN})
    assert status == 202
    payload = stored()[0]["payload"]
    assert payload["company"] == "Tech Innovators Inc." and "cv" not in payload


def test_json_post_with_key_header(client):
    """A JSON body with the key in a header is accepted."""
    status, _, body = client.json("/forms/open", SARAH, {"X-Leadflow-Form-Key": "pk_open"})
    assert status == 202 and json.loads(body)["status"] == "received"


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-Leadflow-Form-Key": "pk_wrong"}, 401),
])
def test_key_required(client, headers, status):
    """Without the form's key (or a signature) a post is refused and nothing is stored."""
    assert client.json("/forms/open", SARAH, headers)[0] == status
    assert InboundMessage.select().count() == 0


def test_foreign_origin_refused(client):
    """A browser post from an origin the form does not list is refused with 403."""
    status, headers, _ = client.form("/forms/contact", {**SARAH, "_form_key": KEY},
                                     {"Origin": "https://evil.example"})
    assert status == 403 and "access-control-allow-origin" not in headers


@pytest.mark.parametrize("age, secret, status", [
    (0, SECRET, 202),
    (0, "whsec_wrong", 401),
    (3600, SECRET, 401),
    (-3600, SECRET, 401),
])
def test_hmac_signature_good_bad_stale(client, age, secret, status):
    """Signed posts: a good signature passes; a wrong one or an old/future timestamp gets 401."""
    body = json.dumps(SARAH).encode()
    headers = {"Content-Type": "application/json", **sign(secret, body, time.time() - age)}
    assert client.request("POST", "/forms/signed", body, headers)[0] == status
    assert InboundMessage.select().count() == (1 if status == 202 else 0)


def test_signature_covers_the_body(client):
    """A signature of another body does not verify."""
    headers = {"Content-Type": "application/json", **sign(SECRET, b'{"email": "x@y.example"}')}
    assert client.request("POST", "/forms/signed", json.dumps(SARAH).encode(), headers)[0] == 401


def test_honeypot_answered_like_success_and_stored_as_spam(server, client, config):
    """A filled honeypot gets the normal answer, is stored, and never becomes a lead."""
    status, _, body = client.json("/forms/open", {**SARAH, forms.DEFAULT_HONEYPOT: "http://spam"},
                                  {"X-Leadflow-Form-Key": "pk_open"})
    assert status == 202
    inbound_id = json.loads(body)["id"]
    _wait(lambda: InboundMessage.get_by_id(inbound_id).status not in ("new", "processing"))
    row = InboundMessage.get_by_id(inbound_id)
    assert (row.status, row.classification) == ("ignored", "spam")
    assert Lead.select().count() == 0


def test_rate_limit_429(server, client):
    """More posts per minute from one address than allowed get 429."""
    server.webhook.limiter = RateLimiter(3)  # as http.rate_limit_per_minute = 3
    codes = [client.json("/forms/open", {**SARAH, "n": i}, {"X-Leadflow-Form-Key": "pk_open"})[0]
             for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]


def test_body_too_large_413(server, client, config):
    """A body above http.max_body_size gets 413 and nothing is stored."""
    big = {**SARAH, "message": "x" * (config.http.max_body_size + 10)}
    assert client.json("/forms/open", big, {"X-Leadflow-Form-Key": "pk_open"})[0] == 413
    assert InboundMessage.select().count() == 0


def test_idempotency_key_same_answer_stored_once(client):
    """A retried post with the same Idempotency-Key gets the same answer; one row is stored."""
    headers = {"X-Leadflow-Form-Key": "pk_open", "Idempotency-Key": "retry-1"}
    first = client.json("/forms/open", SARAH, headers)
    second = client.json("/forms/open", {**SARAH, "message": "changed"}, headers)
    assert first[0] == second[0] == 202 and first[2] == second[2]
    assert InboundMessage.select().count() == 1


def test_missing_required_422_lists_fields(client):
    """A post without a required field gets 422 with the list of what is missing."""
    status, _, body = client.json("/forms/open", {"name": "Sarah"}, {"X-Leadflow-Form-Key": "pk_open"})
    assert status == 422 and json.loads(body)["missing"] == ["email"]
    assert InboundMessage.select().count() == 0


def test_unknown_form_404(client):
    """A post to a form nobody declared gets 404."""
    assert client.json("/forms/nope", SARAH, {"X-Leadflow-Form-Key": KEY})[0] == 404


@pytest.mark.parametrize("return_url, expected", [
    (f"{ORIGIN}/merci", f"{ORIGIN}/merci"),
    ("https://evil.example/phish", None),
    ("javascript:alert(1)", None),
    ("//evil.example/x", None),
])
def test_browser_redirect_only_to_allowed_hosts(client, return_url, expected):
    """Browsers go to retURL when its host is allowed; else a thank-you page (no open redirect)."""
    status, headers, body = client.form("/forms/contact", {**SARAH, "_form_key": KEY,
                                                           "retURL": return_url},
                                        {"Accept": "text/html,application/xhtml+xml"})
    if expected:
        assert (status, headers["location"]) == (303, expected)
    else:
        assert status == 200 and "location" not in headers
        assert b"Thank you" in body and b"evil" not in body


def test_thank_you_page_escapes_input(client):
    """The thank-you page shows the name autoescaped."""
    status, _, body = client.request("POST", "/forms/open", urllib.parse.urlencode(
        {**SARAH, "name": "<script>x</script>", "_form_key": "pk_open"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"})
    assert status == 200 and b"<script>" not in body and b"&lt;script&gt;" in body


@pytest.mark.parametrize("origin, status", [(ORIGIN, 204), ("https://evil.example", 403)])
def test_cors_preflight(client, origin, status):
    """A preflight from an allowed origin gets the CORS headers; others get 403."""
    code, headers, _ = client.request("OPTIONS", "/forms/contact", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert code == status
    if status == 204:
        assert headers["access-control-allow-origin"] == origin
        assert "POST" in headers["access-control-allow-methods"]
    else:
        assert "access-control-allow-origin" not in headers


def test_storage_failure_503_nothing_written(client, database, refuse_inbound_writes):
    """When the database refuses the write: 503 without the error text; nothing stored."""
    with refuse_inbound_writes():
        status, headers, body = client.json("/forms/open", SARAH, {"X-Leadflow-Form-Key": "pk_open"})
        assert status == 503 and b"refused by test" not in body and "retry-after" in headers
        assert InboundMessage.select().count() == 0
    assert client.json("/forms/open", SARAH, {"X-Leadflow-Form-Key": "pk_open"})[0] == 202


def test_form_added_in_database_works_at_once(client):
    """A form created while the server runs (as `forms add` does) takes posts at once."""
    row = forms.add_form("fresh", "plain")
    assert client.json("/forms/fresh", SARAH, {"X-Leadflow-Form-Key": row.public_key})[0] == 202
    assert Form.select().count() == 1


def test_rotated_secret_and_removed_form_refused_by_the_running_server(server, client):
    """After `forms rotate` the old secret is refused, the new one works; after `forms remove`
    the endpoint answers 404 (within the form cache's few seconds)."""
    row = forms.add_form("partner", "plain")
    body = json.dumps(SARAH).encode()

    def post(secret):
        headers = {"Content-Type": "application/json", **sign(secret, body)}
        return client.request("POST", "/forms/partner", body, headers)[0]

    assert post(row.secret) == 202
    new = forms.rotate_form("partner")
    ttl = server.server.webhook.forms.ttl
    _wait(lambda: post(row.secret) == 401, timeout=ttl + 5)
    assert post(new.secret) == 202
    assert forms.remove_form("partner")
    _wait(lambda: post(new.secret) == 404, timeout=ttl + 5)


def test_post_with_nul_characters_becomes_a_lead(server, client):
    """NUL characters in a post's values (PostgreSQL text refuses them) do not stop its lead."""
    status, _, body = client.json("/forms/open", {**SARAH, "message": "Call\u0000 me", "x\u0000": "y"},
                                  {"X-Leadflow-Form-Key": "pk_open"})
    assert status == 202
    inbound_id = json.loads(body)["id"]
    _wait(lambda: InboundMessage.get_by_id(inbound_id).status not in ("new", "processing"))
    row = InboundMessage.get_by_id(inbound_id)
    assert row.status == "done", row.error
    assert row.lead.message == "Call me"


def test_post_becomes_lead_with_custom_fields(server, client):
    """A stored post is processed at once into a lead; unknown fields land in custom."""
    status, _, body = client.json("/forms/open", {**SARAH, "budget_range": "10-50k"},
                                  {"X-Leadflow-Form-Key": "pk_open"})
    inbound_id = json.loads(body)["id"]
    _wait(lambda: InboundMessage.get_by_id(inbound_id).lead_id is not None)
    lead = InboundMessage.get_by_id(inbound_id).lead
    assert (lead.name, lead.company, lead.channel, lead.form) == (
        "Sarah Jones", "Tech Innovators Inc.", "form", "open")
    assert lead.custom == {"budget_range": "10-50k"}


def test_healthz_and_metrics(client):
    """/healthz reports the database and queue; /metrics is Prometheus text with the counters."""
    client.json("/forms/open", SARAH, {"X-Leadflow-Form-Key": "pk_open"})
    client.json("/forms/open", {}, {"X-Leadflow-Form-Key": "pk_open"})
    status, _, body = client.request("GET", "/healthz")
    health = json.loads(body)
    assert status == 200 and health["database"] == "ok" and "queue_depth" in health
    status, headers, body = client.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'leadflow_received_total{channel="form"} 2' in text
    assert 'leadflow_stored_total{channel="form"} 1' in text
    assert 'leadflow_refused_total{channel="form",reason="missing_fields"} 1' in text
    assert "leadflow_queue_depth " in text and "leadflow_processing_seconds_count" in text


def _wait(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_salesforce_form_works_by_changing_only_its_action(client):
    """A Web-to-Lead form posting to /forms/NAME?key=... is stored and sent on to its retURL."""
    fields = {"oid": "00D000000000001", "retURL": f"{ORIGIN}/danke", "first_name": "Sarah",
              "last_name": "Jones", "email": "sarah@techinnovators.example",
              "company": "Tech Innovators Inc.", "00N5g00000ABCDE": "50 seats"}
    status, headers, _ = client.form("/forms/sf?key=pk_sf", fields,
                                     {"Accept": "text/html,*/*;q=0.8"})
    assert (status, headers["location"]) == (303, f"{ORIGIN}/danke")
    stored_post = stored()[0]
    assert stored_post["preset"] == "salesforce" and stored_post["query"] == {}
    assert stored_post["payload"]["00N5g00000ABCDE"] == "50 seats"


def test_typeform_signed_delivery_idempotent(client):
    """A Typeform delivery (Typeform-Signature) is stored once even when Typeform retries it."""
    import base64
    import hashlib
    import hmac

    body = json.dumps({"event_id": "ev-1", "event_type": "form_response", "form_response": {
        "answers": [{"type": "email", "email": "sarah@techinnovators.example",
                     "field": {"id": "a", "type": "email", "ref": "email"}}]}}).encode()
    signature = "sha256=" + base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    headers = {"Content-Type": "application/json", "Typeform-Signature": signature}
    first = client.request("POST", "/forms/tf", body, headers)
    again = client.request("POST", "/forms/tf", body, headers)
    assert first[0] == again[0] == 202 and first[2] == again[2]
    assert client.request("POST", "/forms/tf", body, {**headers, "Typeform-Signature": "sha256=AAAA"})[0] == 401
    assert InboundMessage.get().dedup_key == "form:tf:idem:ev-1"


@pytest.mark.parametrize("age_ms, status", [(0, 202), (3_600_000, 401)])
def test_webflow_signed_delivery(client, age_ms, status):
    """A Webflow delivery verifies with X-Webflow-Timestamp/-Signature; an old one is refused."""
    import hashlib
    import hmac

    body = json.dumps({"triggerType": "form_submission", "payload": {
        "id": "wf-9", "data": {"Name": "Sarah", "Email": "sarah@techinnovators.example"}}}).encode()
    timestamp = str(int(time.time() * 1000) - age_ms)
    signature = hmac.new(SECRET.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    assert client.request("POST", "/forms/wf", body, {
        "Content-Type": "application/json", "X-Webflow-Timestamp": timestamp,
        "X-Webflow-Signature": signature})[0] == status
