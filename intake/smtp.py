"""The SMTP listener: refuse unknown recipients, store the raw message, then say 250.

The handler is thin: ``handle_RCPT`` refuses every recipient that is not in
``smtp.accept`` (full addresses or ``@domain``) with ``550 5.1.1`` — leadflow
is never an open relay. With ``smtp.accept`` empty, only addresses at
``smtp.hostname`` (``anything@leadflow.localhost``) are accepted.
``handle_DATA`` stores the message exactly as received, with the peer address
and the envelope, and answers ``250`` only after the commit; when the database
does not take it, ``451 4.3.0`` (the sending server tries again later) —
never a ``5xx`` for our own fault, never the error text. A message delivered
again (same Message-ID, or the same bytes) is answered ``250`` and recorded as
a duplicate of the first (``store/inbound.py``).

**Commit batching.** With ``synchronous=FULL`` every commit waits for the
disk. :class:`CommitBatcher` lets the messages of concurrent sessions share
one: messages that arrive while a commit is running are stored together by
the next ``store_many`` call (in the database thread pool), and each session
gets its answer when its batch is committed. An idle server adds no delay.

**Limits.** ``smtp.max_message_size`` (552), ``smtp.max_recipients`` per
message (452), ``smtp.max_commands`` per session (421, then closed),
``smtp.idle_timeout``, ``smtp.max_connections_per_client`` (421 at connect).
SMTPUTF8 is offered. The greeting uses ``smtp.hostname`` (no DNS lookup).
STARTTLS with ``smtp.tls_cert``/``smtp.tls_key`` (``smtp.require_tls``), AUTH
PLAIN/LOGIN from ``smtp.auth_users_file`` (only after STARTTLS;
``smtp.require_auth``); both off by default.
"""

import asyncio
import hmac
import logging
import ssl
from collections import Counter

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from leadflow.errors import ConfigError
from leadflow.store.database import run_sync
from leadflow.store.inbound import Inquiry, store_many

log = logging.getLogger("leadflow.intake")

OK_250 = "250 2.0.0 OK: queued as inbound #{id}"
OK_250_DUPLICATE = "250 2.0.0 OK: already have it (inbound #{id})"
OK_RCPT = "250 2.1.5 OK"
ERR_421_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address, try again later"
ERR_421_SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
ERR_421_TOO_MANY_COMMANDS = "421 4.7.0 Too many commands in one session, goodbye"
ERR_451 = "451 4.3.0 Could not store the message, please try again later"
ERR_452_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
ERR_550_NO_SUCH_USER = "550 5.1.1 No such recipient here"
ERR_554_NO_RECIPIENTS = "554 5.5.1 No valid recipients"


def accepts(address, accept, hostname):
    """Whether ``address`` is one of ours: in ``accept``, or ``@hostname`` when it is empty."""
    address = (address or "").strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return False
    entries = [a.lower() for a in accept] if accept else [f"@{hostname.lower()}"]
    return address in entries or f"@{domain}" in entries


class CommitBatcher:
    """Stores inquiries of concurrent sessions together: one transaction per batch.

    ``await submit(inquiry)`` returns its :class:`StoreResult` once committed,
    or raises when it could not be stored. A batch that fails is retried one
    message at a time, so that one bad message never refuses the others.
    """

    def __init__(self, store=store_many, max_batch=200, on_stored=None, gate=None):
        self.store = store
        self.gate = gate  # worker.WriteGate on SQLite: our commits go first
        self.max_batch = max_batch
        self.on_stored = on_stored
        self._queue = []
        self._task = None
        self.batches = 0

    async def submit(self, inquiry):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((inquiry, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self):
        await asyncio.sleep(0)  # sessions that became ready in this tick join the first batch
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                results = await run_sync(self._store_batch, [inquiry for inquiry, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - the pool itself failed
                results = [exc] * len(batch)
            self.batches += 1
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
                    if self.on_stored and not result.duplicate:
                        self.on_stored(result.id)

    def _store_batch(self, inquiries):
        if self.gate is None:
            return self._store_each(inquiries)
        with self.gate.intake():
            return self._store_each(inquiries)

    def _store_each(self, inquiries):
        try:
            return self.store(inquiries)
        except Exception:  # noqa: BLE001 - find which one the database refuses
            if len(inquiries) == 1:
                raise
        results = []
        for inquiry in inquiries:
            try:
                results.append(self.store([inquiry])[0])
            except Exception as exc:  # noqa: BLE001
                results.append(exc)
        return results

    async def drain(self):
        """Wait until everything submitted is committed (or failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


class LeadflowHandler:
    """aiosmtpd handler: RCPT refuses strangers, DATA stores and then acknowledges."""

    def __init__(self, config, batcher, metrics=None):
        self.config = config
        self.batcher = batcher
        self.metrics = metrics
        self.in_flight = 0

    def _refuse(self, reason):
        if self.metrics is not None:
            self.metrics.refuse("smtp", reason)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            self._refuse("too_many_recipients")
            return ERR_452_TOO_MANY_RECIPIENTS
        if not accepts(address, self.config.smtp.accept, self.config.smtp.hostname):
            self._refuse("recipient")
            log.info("smtp %s: recipient %s refused", _peer(session), address)
            return ERR_550_NO_SUCH_USER
        envelope.rcpt_tos.append(address)
        return OK_RCPT

    async def handle_DATA(self, server, session, envelope):
        if not envelope.rcpt_tos:
            return ERR_554_NO_RECIPIENTS
        if self.metrics is not None:
            self.metrics.received["email"] += 1
        raw = envelope.original_content or envelope.content
        inquiry = Inquiry("email", raw, mail_from=envelope.mail_from or "",
                          rcpt_to=list(envelope.rcpt_tos), peer=_peer(session))
        self.in_flight += 1
        try:
            result = await self.batcher.submit(inquiry)
        except Exception as exc:  # noqa: BLE001 - any storage failure: the sender retries
            self._refuse("storage")
            log.error("smtp %s: could not store a message from %s: %s: %s", _peer(session),
                      envelope.mail_from, type(exc).__name__, exc)
            return ERR_451
        finally:
            self.in_flight -= 1
        if result.duplicate:
            if self.metrics is not None:
                self.metrics.duplicates["email"] += 1
            log.info("inbound #%s: duplicate of #%s from %s", result.id, result.duplicate_of,
                     _peer(session))
            return OK_250_DUPLICATE.format(id=result.duplicate_of)
        if self.metrics is not None:
            self.metrics.stored["email"] += 1
        log.info("inbound #%s: stored, from %s for %s", result.id, envelope.mail_from,
                 ",".join(envelope.rcpt_tos))
        return OK_250.format(id=result.id)

    async def handle_exception(self, error):
        log.error("smtp: session error: %s: %s", type(error).__name__, error)
        return "451 4.3.0 Temporary error, please try again later"


def _peer(session):
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer) if peer else "unknown"


class LeadflowSMTP(SMTP):
    """aiosmtpd's SMTP protocol, plus a limit on sessions per client address."""

    def __init__(self, handler, sessions, max_commands=None, **kwargs):
        super().__init__(handler, **kwargs)
        self._sessions = sessions
        self._refused = False
        self._client = None
        if max_commands:
            self._commands_left = max_commands
            self._smtp_methods = {name: self._counted(method)
                                  for name, method in self._smtp_methods.items()}

    def _counted(self, method):
        async def counted(arg):
            self._commands_left -= 1
            if self._commands_left < 0:
                log.warning("smtp %s: too many commands, session closed", _peer(self.session))
                await self.push(ERR_421_TOO_MANY_COMMANDS)
                self.transport.close()
                return
            await method(arg)
        return counted

    def connection_made(self, transport):
        if self.transport is None and self._original_transport is None:  # not a STARTTLS upgrade
            peer = transport.get_extra_info("peername")
            client = peer[0] if isinstance(peer, tuple) else str(peer)
            reply = self._sessions.admit(self, client)
            if reply:
                self._refused = True
                transport.write(reply.encode("ascii") + b"\r\n")
                transport.close()
                return
            self._client = client
        super().connection_made(transport)

    def connection_lost(self, error):
        if self._refused:
            return
        self._sessions.leave(self)
        super().connection_lost(error)

    def eof_received(self):
        if self._refused:
            return False
        return super().eof_received()

    def data_received(self, data):
        if self._refused:
            return
        super().data_received(data)

    @property
    def idle(self):
        """No mail transaction in progress: safe to close at shutdown."""
        return self.envelope is None or (self.envelope.mail_from is None
                                         and not self.envelope.rcpt_tos)


class Sessions:
    """Open sessions, counted per client address; refuses new ones while stopping."""

    def __init__(self, per_client):
        self.per_client = per_client
        self.open = {}
        self.counts = Counter()
        self.stopping = False

    def admit(self, protocol, client):
        if self.stopping:
            return ERR_421_SHUTTING_DOWN
        if self.counts[client] >= self.per_client:
            log.warning("smtp %s: too many connections, refused", client)
            return ERR_421_TOO_MANY_CONNECTIONS
        self.open[protocol] = client
        self.counts[client] += 1
        return None

    def leave(self, protocol):
        client = self.open.pop(protocol, None)
        if client is not None:
            self.counts[client] -= 1
            if self.counts[client] <= 0:
                del self.counts[client]


def load_auth_users(path):
    """``user:password`` lines (``#`` comments) -> {user: password}."""
    users = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                user, sep, password = line.partition(":")
                if not sep or not user or not password:
                    raise ConfigError("smtp.auth_users_file", f"line {number} is not user:password",
                                      path)
                users[user] = password
    except OSError as exc:
        raise ConfigError("smtp.auth_users_file", f"cannot be read: {exc.strerror}", path) from None
    return users


class Authenticator:
    """AUTH PLAIN/LOGIN against the users file; passwords compared in constant time."""

    def __init__(self, users):
        self.users = users

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        expected = self.users.get(user, "")
        given = auth_data.password.decode("utf-8", "replace")
        ok = bool(expected) & hmac.compare_digest(expected.encode(), given.encode())
        log.info("smtp %s: AUTH %s for %s", _peer(session), "ok" if ok else "refused", user)
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


def tls_context(config):
    smtp = config.smtp
    if not smtp.tls_cert:
        if smtp.require_tls:
            raise ConfigError("smtp.require_tls", "needs smtp.tls_cert and smtp.tls_key", config.source)
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(smtp.tls_cert, smtp.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("smtp.tls_cert", f"cannot load the certificate/key: {exc}",
                          config.source) from None
    return context


def max_message_size(config):
    return config.smtp.max_message_size or config.intake.max_message_size


class SmtpServer:
    """The listener on the running loop: ``await start()``, ``await stop(grace)``."""

    def __init__(self, config, metrics=None, on_stored=None, batcher=None, gate=None):
        self.config = config
        self.batcher = batcher or CommitBatcher(on_stored=on_stored, gate=gate)
        self.handler = LeadflowHandler(config, self.batcher, metrics)
        self.sessions = Sessions(config.smtp.max_connections_per_client)
        self.server = None
        self._tls = tls_context(config)
        self._authenticator = None
        if config.smtp.auth_users_file:
            self._authenticator = Authenticator(load_auth_users(config.smtp.auth_users_file))
        elif config.smtp.require_auth:
            raise ConfigError("smtp.require_auth", "needs smtp.auth_users_file", config.source)

    def protocol(self):
        smtp = self.config.smtp
        kwargs = dict(
            data_size_limit=max_message_size(self.config), enable_SMTPUTF8=True,
            hostname=smtp.hostname, ident="leadflow", timeout=smtp.idle_timeout,
            max_commands=smtp.max_commands, tls_context=self._tls,
            require_starttls=bool(self._tls and smtp.require_tls),
            loop=asyncio.get_running_loop(),
        )
        if self._authenticator is not None:
            kwargs.update(authenticator=self._authenticator, auth_required=smtp.require_auth,
                          auth_require_tls=True)
        else:
            kwargs.update(auth_exclude_mechanism=["LOGIN", "PLAIN"])
        return LeadflowSMTP(self.handler, self.sessions, **kwargs)

    async def start(self, host=None, port=None, sock=None):
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(self.protocol, sock=sock)
        else:
            host = self.config.smtp.host if host is None else host
            port = self.config.smtp.port if port is None else port
            self.server = await loop.create_server(self.protocol, host=host, port=port)
        return self.address

    @property
    def address(self):
        return self.server.sockets[0].getsockname()[:2] if self.server else None

    async def stop(self, grace=10.0):
        """Stop accepting; let transactions in progress finish (at most ``grace`` s); close."""
        self.sessions.stopping = True
        if self.server is not None:
            self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.sessions.open and loop.time() < deadline:
            for protocol in list(self.sessions.open):
                if protocol.idle or protocol.transport is None:
                    _close(protocol, ERR_421_SHUTTING_DOWN)
            await asyncio.sleep(0.02)
        for protocol in list(self.sessions.open):
            _close(protocol, ERR_421_SHUTTING_DOWN)
        await self.batcher.drain()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), timeout=2)
            except asyncio.TimeoutError:
                pass


def _close(protocol, reply):
    transport = protocol.transport
    if transport is not None and not transport.is_closing():
        try:
            transport.write(reply.encode("ascii") + b"\r\n")
        except Exception:  # noqa: BLE001 - the peer is gone already
            pass
        transport.close()
    protocol._sessions.leave(protocol)
