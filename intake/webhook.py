"""The web-form webhook: ``POST /forms/{form}``, plus ``/healthz`` and ``/metrics``.

The view is thin: it authenticates the post, reads the body into fields,
stores the submission raw (``store/inbound.py``) and answers. Mapping the
fields to a lead happens later, in the pipeline (``intake/forms.py``).

Bodies: ``application/x-www-form-urlencoded``, ``multipart/form-data`` (files
are ignored) and JSON. A post is authenticated one of two ways:

- **signed** (server to server): ``X-Leadflow-Timestamp: <unix seconds>`` and
  ``X-Leadflow-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw
  body)>``; Webflow's ``X-Webflow-Timestamp``/``X-Webflow-Signature`` and
  Typeform's ``Typeform-Signature`` are understood too. Compared in constant
  time; a timestamp further than ``http.max_timestamp_skew`` from now is
  refused (401).
- **public key** (browser forms): the form's public key in the field
  ``_form_key``, the header ``X-Leadflow-Form-Key`` or the query ``?key=``;
  when the form lists ``origins``, the browser's ``Origin`` (or ``Referer``)
  must be one of them (403 otherwise). Allowed origins get CORS headers, and
  ``OPTIONS`` preflights are answered.

Answers: ``202 {"id": N, "status": "received"}`` to API clients (a JSON body
or ``Accept: application/json``); browsers get ``303`` to the form's return
URL (the ``retURL`` field or the form's ``return_url``) when its host is the
form's own or one of its origins, else a small thank-you page. The answer is
sent only after the commit. A retried post (same ``Idempotency-Key``, same
delivery id of Typeform/Webflow, or the same content) gets the same answer
and is stored once. Errors: 400 unreadable body, 401/403 authentication, 404
unknown form, 413 too large, 415 other body types, 422 missing required fields
(``{"error": ..., "missing": [...]}``), 429 too many posts from one client,
503 the database did not take it (try again).

A filled honeypot field is answered like a success and stored; the pipeline
marks it spam.
"""

import asyncio
import email.parser
import email.policy
import hashlib
import hmac
import json
import logging
import time
from collections import defaultdict
from urllib.parse import parse_qsl, urlsplit

import jinja2
from aiohttp import web

from leadflow.intake import forms as forms_module
from leadflow.intake.smtp import CommitBatcher
from leadflow.store.database import run_sync, utcnow
from leadflow.store.inbound import Inquiry, store_many

log = logging.getLogger("leadflow.intake")

THANK_YOU = jinja2.Environment(autoescape=True).from_string(
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Thank you</title></head>"
    "<body><h1>Thank you{% if name %}, {{ name }}{% endif %}.</h1>"
    "<p>We received your message and will get back to you soon.</p></body></html>")

SIGNATURE_HEADERS = ("X-Leadflow-Signature", "X-Webflow-Signature", "Typeform-Signature")
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class Metrics:
    """Counters for ``/metrics``, shared by the SMTP listener, the webhook and the worker."""

    def __init__(self):
        self.received = defaultdict(int)  # channel -> n
        self.stored = defaultdict(int)  # channel -> n
        self.duplicates = defaultdict(int)
        self.refused = defaultdict(int)  # (channel, reason) -> n
        self.processed = defaultdict(int)  # outcome -> n
        self.processing_seconds = 0.0
        self.processing_count = 0

    def refuse(self, channel, reason):
        self.refused[(channel, reason)] += 1

    def render(self, queue_depth, oldest_age):
        lines = []

        def metric(name, kind, help, samples):
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")

        metric("leadflow_received_total", "counter", "Inquiries received, by channel.",
               [({"channel": c}, n) for c, n in sorted(self.received.items())])
        metric("leadflow_stored_total", "counter", "Inquiries committed to the database, by channel.",
               [({"channel": c}, n) for c, n in sorted(self.stored.items())])
        metric("leadflow_duplicates_total", "counter", "Deliveries recognised as already stored.",
               [({"channel": c}, n) for c, n in sorted(self.duplicates.items())])
        metric("leadflow_refused_total", "counter", "Deliveries refused, by channel and reason.",
               [({"channel": c, "reason": r}, n) for (c, r), n in sorted(self.refused.items())])
        metric("leadflow_processed_total", "counter", "Inquiries run through the pipeline, by outcome.",
               [({"outcome": o}, n) for o, n in sorted(self.processed.items())])
        metric("leadflow_processing_seconds", "summary", "Time the pipeline took per inquiry.",
               [({}, f"{self.processing_seconds:.6f}")])
        lines[-1] = lines[-1].replace("leadflow_processing_seconds ", "leadflow_processing_seconds_sum ")
        lines.append(f"leadflow_processing_seconds_count {self.processing_count}")
        metric("leadflow_queue_depth", "gauge", "Stored inquiries waiting to be processed.",
               [({}, queue_depth)])
        metric("leadflow_oldest_unprocessed_seconds", "gauge",
               "Age of the oldest inquiry waiting to be processed.", [({}, f"{oldest_age:.3f}")])
        return "\n".join(lines) + "\n"


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def queue_state():
    """(waiting rows, age in seconds of the oldest): blocking, call through run_sync."""
    from peewee import fn

    from leadflow.store.models import InboundMessage

    waiting = InboundMessage.status.in_(("new", "processing"))
    row = (InboundMessage.select(fn.COUNT(InboundMessage.id).alias("n"),
                                 fn.MIN(InboundMessage.received_at).alias("oldest"))
           .where(waiting).dicts().get())
    oldest = row["oldest"]
    if isinstance(oldest, str):  # SQLite aggregate: text
        import datetime

        oldest = datetime.datetime.fromisoformat(oldest)
    age = (utcnow() - oldest).total_seconds() if oldest else 0.0
    return row["n"] or 0, max(age, 0.0)


class RateLimiter:
    """A token bucket per client address: ``per_minute`` posts, refilled evenly."""

    def __init__(self, per_minute, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.buckets = {}

    def allow(self, client):
        now = self.clock()
        tokens, last = self.buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if len(self.buckets) > 50000:  # forget the idle ones
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 120}
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - 1.0, now)
        return True


class BodyError(Exception):
    def __init__(self, status, reason):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def read_body(content_type, body, charset="utf-8", header=None):
    """The fields of a body: a dict (JSON object, or name -> value / list of values)."""
    if content_type in JSON_TYPES or content_type.endswith("+json"):
        try:
            payload = json.loads(body.decode(charset or "utf-8"))
        except (UnicodeDecodeError, ValueError, LookupError):
            raise BodyError(400, "the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise BodyError(400, "the JSON body must be an object")
        return payload
    if content_type == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True,
                          encoding=charset or "utf-8", errors="replace")
        return _collect(pairs)
    if content_type == "multipart/form-data":
        return _collect(_multipart(header or content_type, body))
    raise BodyError(415, "send application/x-www-form-urlencoded, multipart/form-data or JSON")


def _collect(pairs):
    fields = {}
    for name, value in pairs:
        if name in fields:
            fields[name] = (fields[name] if isinstance(fields[name], list) else [fields[name]]) + [value]
        else:
            fields[name] = value
    return fields


def _multipart(content_type_header, body):
    """Text fields of a multipart/form-data body; file parts are skipped."""
    head = f"Content-Type: {content_type_header}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BodyError(400, "the multipart body has no parts (boundary missing?)")
    pairs = []
    for part in message.iter_parts():
        if part.get_content_disposition() != "form-data":
            continue
        name = part.get_param("name", header="content-disposition")
        if name is None or part.get_filename() is not None:
            continue  # unnamed parts and files are ignored
        payload = part.get_payload(decode=True) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, "replace")
        except LookupError:
            text = payload.decode("utf-8", "replace")
        pairs.append((str(name), text))
    return pairs


def signature_problem(form, headers, body, max_skew, now=None):
    """None when a signed post verifies; else why not. Constant-time comparison."""
    if not form.secret:
        return "this form takes no signed posts"
    secret = form.secret.encode("utf-8")
    now = time.time() if now is None else now
    if "X-Leadflow-Signature" in headers or "X-Webflow-Signature" in headers:
        leadflow = "X-Leadflow-Signature" in headers
        timestamp = headers.get("X-Leadflow-Timestamp" if leadflow else "X-Webflow-Timestamp", "")
        given = headers.get("X-Leadflow-Signature" if leadflow else "X-Webflow-Signature", "")
        try:
            seconds = float(timestamp) / (1 if leadflow else 1000.0)
        except ValueError:
            return "the signature needs a numeric timestamp header"
        if abs(now - seconds) > max_skew:
            return "the signature's timestamp is too old (or in the future)"
        joiner = b"." if leadflow else b":"
        expected = hmac.new(secret, timestamp.encode("ascii") + joiner + body, hashlib.sha256).hexdigest()
        given = given.split("=", 1)[1] if given.startswith("sha256=") else given
        return None if hmac.compare_digest(expected.encode(), given.strip().encode()) \
            else "the signature does not match"
    import base64

    given = headers.get("Typeform-Signature", "")
    expected = "sha256=" + base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
    return None if hmac.compare_digest(expected.encode(), given.strip().encode()) \
        else "the signature does not match"


def sign(secret, body, timestamp=None):
    """The headers of a signed post (for clients and tests)."""
    timestamp = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                      hashlib.sha256).hexdigest()
    return {"X-Leadflow-Timestamp": timestamp, "X-Leadflow-Signature": f"sha256={digest}"}


def _origin_of(request):
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return forms_module._normalise_origin(origin)
    referer = request.headers.get("Referer")
    return forms_module._normalise_origin(referer) if referer else None


def _host_allowed(form, url):
    """A return URL may only lead to the form's own return host or one of its origins."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    hosts = {urlsplit(o).hostname for o in form.origins}
    if form.return_url:
        hosts.add(urlsplit(form.return_url).hostname)
    return parts.hostname.lower() in {h.lower() for h in hosts if h}


class WebhookApp:
    """The aiohttp application; ``on_stored(id)`` is called after each new commit."""

    def __init__(self, config, metrics=None, on_stored=None, form_cache_ttl=2.0, gate=None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.on_stored = on_stored
        self.batcher = CommitBatcher(store=store_submissions, on_stored=on_stored, gate=gate)
        self.forms = forms_module.FormCache(config, ttl=form_cache_ttl)
        self.limiter = RateLimiter(config.http.rate_limit_per_minute)

    def make_app(self):
        app = web.Application(client_max_size=self.config.http.max_body_size)
        app.router.add_post("/forms/{form}", self.post_form)
        app.router.add_route("OPTIONS", "/forms/{form}", self.preflight)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_view)
        return app

    # -- helpers ----------------------------------------------------------------

    def client(self, request):
        if self.config.http.trust_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-For", "")
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            if hops:
                return hops[-1]
        return request.remote or "unknown"

    def refuse(self, status, reason, error, **extra):
        self.metrics.refuse("form", reason)
        headers = {}
        if status == 429:
            headers["Retry-After"] = "60"
        if status == 503:
            headers["Retry-After"] = "30"
        return web.json_response({"error": error, **extra}, status=status, headers=headers)

    async def _form(self, name):
        """The form definition (raises when the database cannot be read)."""
        form = self.forms.cached(name)
        return form if form is not None else await run_sync(self.forms.get, name)

    @staticmethod
    def _cors(form, origin):
        if origin and origin in form.origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    # -- views ------------------------------------------------------------------

    async def preflight(self, request):
        try:
            form = await self._form(request.match_info["form"])
        except Exception:  # noqa: BLE001 - the database is away: try again later
            log.exception("form %s: could not read its definition", request.match_info["form"])
            return self.refuse(503, "storage", "the database is not reachable; try again")
        if form is None:
            return self.refuse(404, "unknown_form", "no such form")
        origin = _origin_of(request)
        if not origin or origin not in form.origins:
            return web.Response(status=403, text="origin not allowed")
        return web.Response(status=204, headers={
            **self._cors(form, origin),
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type, Idempotency-Key, X-Leadflow-Form-Key",
            "Access-Control-Max-Age": "600",
        })

    async def post_form(self, request):
        self.metrics.received["form"] += 1
        name = request.match_info["form"]
        client = self.client(request)
        if not self.limiter.allow(client):
            return self.refuse(429, "rate_limit", "too many posts from your address; try later")
        try:
            form = await self._form(name)
        except forms_module.ConfigError as exc:
            log.error("form %s: %s", name, exc)
            return self.refuse(404, "unknown_form", "no such form")
        except Exception:  # noqa: BLE001 - the database is away: try again later
            log.exception("form %s: could not read its definition", name)
            return self.refuse(503, "storage", "the database is not reachable; try again")
        if form is None:
            return self.refuse(404, "unknown_form", "no such form")
        if request.content_length is not None and request.content_length > self.config.http.max_body_size:
            return self.refuse(413, "too_large", "the body is too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self.refuse(413, "too_large", "the body is too large")
        try:
            payload = read_body(request.content_type, body, request.charset,
                                request.headers.get("Content-Type"))
        except BodyError as exc:
            return self.refuse(exc.status, "bad_body", exc.reason)

        origin = _origin_of(request)
        if any(h in request.headers for h in SIGNATURE_HEADERS):
            problem = signature_problem(form, request.headers, body,
                                        self.config.http.max_timestamp_skew)
            if problem:
                log.warning("form %s: signed post from %s refused: %s", name, client, problem)
                return self.refuse(401, "signature", problem)
        else:
            key = (request.headers.get("X-Leadflow-Form-Key") or request.query.get("key")
                   or (payload.get(forms_module.KEY_FIELD) if isinstance(
                       payload.get(forms_module.KEY_FIELD), str) else None))
            if not forms_module.verify_key(form, key):
                return self.refuse(401, "key", "a valid form key or signature is required")
            if form.origins and origin not in form.origins:
                log.warning("form %s: post from origin %s refused", name, origin)
                return self.refuse(403, "origin", "this origin may not post to this form")
        cors = self._cors(form, origin)

        submission = forms_module.read_submission(form, payload)
        if not submission.honeypot:
            missing = submission.missing(form.required)
            if missing:
                response = self.refuse(422, "missing_fields", "required fields are missing",
                                       missing=missing)
                response.headers.update(cors)
                return response

        idem = request.headers.get("Idempotency-Key") or forms_module.delivery_id(form.preset, payload)
        if idem:
            dedup = f"form:{name}:idem:{idem[:200]}"
        else:
            canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
            dedup = f"form:{name}:sha256:{hashlib.sha256(canonical).hexdigest()}"
        raw = forms_module.stored_document(form, request.content_type, payload,
                                           {k: v for k, v in request.query.items() if k != "key"})
        inquiry = Inquiry("form", raw, dedup_key=dedup, content_type="application/json", form=name,
                          peer=client, origin=origin)
        try:
            result = await self.batcher.submit(inquiry)
        except Exception as exc:  # noqa: BLE001 - never a 2xx (nor the error text) for a failed store
            log.error("form %s: could not store a post from %s: %s", name, client,
                      type(exc).__name__)
            response = self.refuse(503, "storage", "the submission could not be stored; try again")
            response.headers.update(cors)
            return response
        if result.duplicate:
            inbound_id = result.duplicate_of
            self.metrics.duplicates["form"] += 1
            log.info("inbound #%s: form %s: repeated post, answered again", inbound_id, name)
        else:
            inbound_id = result.id
            self.metrics.stored["form"] += 1
            log.info("inbound #%s: form %s: stored%s", inbound_id, name,
                     " (honeypot filled)" if submission.honeypot else "")
        return self._answer(request, form, submission, inbound_id, cors)

    def _answer(self, request, form, submission, inbound_id, cors):
        accept = request.headers.get("Accept", "")
        browser = ("text/html" in accept and request.content_type in FORM_TYPES
                   and "application/json" not in accept.split(",")[0])
        if not browser:
            return web.json_response({"id": inbound_id, "status": "received"}, status=202,
                                     headers=cors)
        target = submission.return_url or form.return_url
        if target and _host_allowed(form, target):
            raise web.HTTPSeeOther(location=target, headers=cors)
        if target:
            log.warning("inbound #%s: form %s: return URL to a foreign host not followed: %s",
                        inbound_id, form.name, target[:200])
        return web.Response(text=THANK_YOU.render(name=submission.values.get("first_name")
                                                  or submission.values.get("name")),
                            content_type="text/html", status=200, headers=cors)

    async def healthz(self, request):
        try:
            depth, age = await asyncio.wait_for(run_sync(queue_state), timeout=5)
        except Exception as exc:  # noqa: BLE001
            return web.json_response({"status": "error", "database": type(exc).__name__}, status=503)
        return web.json_response({"status": "ok", "database": "ok", "queue_depth": depth,
                                  "oldest_unprocessed_seconds": round(age, 3)})

    async def metrics_view(self, request):
        try:
            depth, age = await asyncio.wait_for(run_sync(queue_state), timeout=5)
        except Exception:  # noqa: BLE001
            depth, age = -1, 0.0
        return web.Response(text=self.metrics.render(depth, age),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})


def store_submissions(inquiries):
    """Store form posts in one transaction, each unless its dedup key is taken already.

    A post whose key is stored answers as the first (``StoreResult(first,
    duplicate=True)``) and adds no row: a retried post is stored once.
    """
    return store_many(inquiries, record_duplicates=False)
