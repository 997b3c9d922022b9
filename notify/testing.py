"""A capturing SMTP sink: a real aiosmtpd server on 127.0.0.1, port 0.

Used by the tests as the configured relay (and by ``benchmarks/digest.py`` as a
do-nothing relay). It runs its own event loop in a thread, records every
message it accepts, and can be told how to answer::

    with SmtpSink(data_replies=["451 4.3.0 try later"]) as sink:
        config.notify.relay.port = sink.port
        ...                       # first DATA gets 451, the next ones 250
        sink.messages             # [email.message.EmailMessage, ...]

``rcpt_replies`` maps a recipient address to the reply its RCPT gets (e.g.
``"550 5.1.1 no such user"``); ``users`` turns on AUTH (LOGIN/PLAIN) with
these user names and passwords.
"""

import asyncio
import datetime
import email
import email.policy
import threading

from aiosmtpd.smtp import SMTP, AuthResult


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.sink.lock:
            if self.sink.data_replies:
                return self.sink.data_replies.pop(0)
            if self.sink.store:
                message = email.message_from_bytes(envelope.original_content or envelope.content,
                                                   policy=email.policy.default)
                self.sink.messages.append(message)
                self.sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.sink.count += 1
        return "250 OK"


class SmtpSink:
    """An SMTP server in a thread that keeps what it receives."""

    def __init__(self, data_replies=(), rcpt_replies=None, users=None, store=True, tls=None,
                 starttls=None):
        self.data_replies = list(data_replies)
        self.rcpt_replies = {k.lower(): v for k, v in (rcpt_replies or {}).items()}
        self.users = users
        self.store = store
        self.tls = tls            # an ssl.SSLContext: TLS from the first byte
        self.starttls = starttls  # an ssl.SSLContext: offer STARTTLS
        self.messages = []
        self.envelopes = []
        self.logins = []
        self.count = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.host = "127.0.0.1"
        self.port = None
        self._loop = None
        self._server = None
        self._thread = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        login = auth_data.login.decode()
        ok = self.users.get(login) == auth_data.password.decode()
        self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False)

    def _factory(self):
        self.connections += 1
        kwargs = {}
        if self.users is not None:
            kwargs = dict(authenticator=self._authenticate, auth_require_tls=False)
        if self.starttls is not None:
            kwargs["tls_context"] = self.starttls
        return SMTP(_Handler(self), hostname="sink.localhost", **kwargs)

    def start(self):
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                self._loop.create_server(self._factory, self.host, 0, ssl=self.tls))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="smtp-sink", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self):
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def to(self, address):
        """The messages whose envelope went to ``address``."""
        return [m for m, (_, rcpts) in zip(self.messages, self.envelopes) if address in rcpts]


# -- factories for tests: rows with sensible defaults ------------------------------

def make_rep(name="Sam", email=None, **fields):
    from leadflow.store.models import Rep

    fields.setdefault("timezone", "UTC")
    fields.setdefault("digest_hour", 8)
    fields.setdefault("working_days", "1,2,3,4,5,6,7")
    fields.setdefault("created_at", datetime.datetime(2020, 1, 1))  # every assignment is "new"
    return Rep.create(name=name, email=email or f"{name.lower().replace(' ', '.')}@ourco.example",
                      **fields)


def make_lead(owner=None, name="Sarah Connor", **fields):
    from leadflow.store.models import Lead

    email = fields.pop("email", f"{name.lower().replace(' ', '.')}@prospect.example")
    fields.setdefault("assigned_at", fields.get("created_at"))
    return Lead.create(owner=owner, name=name, email=email, **fields)
