"""Sending mail through the configured relay (``[notify.relay]``).

:func:`send` hands one :class:`email.message.EmailMessage` to the relay and
either returns (the relay accepted it for every recipient) or raises:

- :class:`TemporarySendError` — worth trying again later: a ``4xx`` reply, a
  refused or timed-out connection, a dropped session;
- :class:`PermanentSendError` — trying again will not help: a ``5xx`` reply
  (unknown recipient, rejected sender, failed AUTH), a TLS handshake or
  certificate that fails, a password variable that is not set.

``security`` is ``none`` (plain SMTP), ``starttls`` (plain, then STARTTLS, which
must succeed) or ``tls`` (TLS from the first byte, usually port 465). With a
``username``, leadflow logs in with the password read from the environment
variable named by ``password_env``; the password never sits in the file and
is never logged.

The call blocks (smtplib); code on the asyncio loop calls it through
``leadflow.store.database.run_sync``.
"""

import logging
import os
import smtplib
import ssl

from leadflow.errors import LeadflowError

log = logging.getLogger("leadflow.notify")


class SendError(LeadflowError):
    """The relay did not take a message."""

    def __init__(self, recipients, reason, code=None):
        super().__init__(recipients, reason, code)
        self.recipients = list(recipients)
        self.reason = reason
        self.code = code

    def __str__(self):
        code = f"{self.code} " if self.code else ""
        return f"mail to {', '.join(self.recipients)}: {code}{self.reason}"


class TemporarySendError(SendError):
    """The relay may take the message later (4xx, connection trouble)."""


class PermanentSendError(SendError):
    """The relay will not take the message (5xx, bad credentials, bad TLS)."""


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _classify(code, reason, recipients):
    cls = TemporarySendError if 400 <= code < 500 else PermanentSendError
    return cls(recipients, _text(reason).strip(), code)


def _tls_context(relay):
    """Certificate and host name checked, against ``relay.ca_file`` or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=relay.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentSendError([], f"notify.relay.ca_file {relay.ca_file!r} cannot be loaded: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None


def _connect(relay):
    """An open, greeted (and, as configured, encrypted and logged-in) SMTP session."""
    if relay.security == "tls":
        session = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout,
                                   context=_tls_context(relay))
    else:
        session = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
    try:
        session.ehlo()
        if relay.security == "starttls":
            session.starttls(context=_tls_context(relay))
            session.ehlo()
        if relay.username:
            password = os.environ.get(relay.password_env)
            if password is None:
                raise PermanentSendError(
                    [], f"relay user {relay.username!r} is set but the environment variable "
                    f"{relay.password_env} (notify.relay.password_env) is not")
            session.login(relay.username, password)
    except BaseException:
        session.close()
        raise
    return session


def send(config, message):
    """Send ``message`` through the relay of ``config``; raise a :class:`SendError` if not taken.

    ``config`` is the whole :class:`leadflow.config.Config` (or its ``notify``
    section). Recipients are the message's To/Cc/Bcc; the envelope sender is
    its ``From`` (``notify.from`` when the message has none). One connection
    per call; to send many, use :class:`Relay`.
    """
    with Relay(config) as relay:
        relay.send(message)


class Relay:
    """One relay session reused for several messages (e.g. a tick's digests).

    ``with Relay(config) as relay: relay.send(message)``. After any failure the
    session is dropped and the next message opens a new one.
    """

    def __init__(self, config):
        self.notify = getattr(config, "notify", config)
        self.relay = self.notify.relay
        self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        session, self._session = self._session, None
        if session is not None:
            try:
                session.quit()
            except (smtplib.SMTPException, OSError):
                session.close()

    def _drop(self):
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def send(self, message):
        """Send one message; raise :class:`TemporarySendError` or :class:`PermanentSendError`."""
        if message["From"] is None:
            message["From"] = self.notify.from_
        recipients = [a for h in ("To", "Cc", "Bcc") for a in message.get_all(h, [])]
        while True:
            reused = self._session is not None
            try:
                if self._session is None:
                    self._session = _connect(self.relay)
                refused = self._session.send_message(message)
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if reused:
                    continue  # an idle session the relay closed: once more on a fresh one
                raise _translate(exc, recipients, self.relay) from None
            except Exception as exc:
                self._drop()
                raise _translate(exc, recipients, self.relay) from None
            self._report(message, recipients, refused)
            return

    def _report(self, message, recipients, refused):
        label = message["Message-ID"] or "(no Message-ID)"
        if refused:
            # Accepted for some recipients: a retry would send the others a second
            # copy, so the refusals are reported and the message counts as sent.
            log.warning("%s: relay refused %s", label,
                        ", ".join(f"{a} ({c})" for a, (c, _) in refused.items()))
        log.info("%s: sent to %s via %s:%s", label, ", ".join(recipients), self.relay.host,
                 self.relay.port)


def _translate(exc, recipients, relay):
    """A :class:`SendError` for whatever smtplib, ssl or the socket raised."""
    if isinstance(exc, SendError):
        exc.recipients = exc.recipients or recipients
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reason = min(exc.recipients.values())  # a 4xx wins: worth a retry
        return _classify(code, reason, recipients)
    if isinstance(exc, smtplib.SMTPResponseException):  # sender, DATA or AUTH refused
        return _classify(exc.smtp_code, exc.smtp_error, recipients)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentSendError(recipients, f"TLS certificate of {relay.host} does not verify: "
                                  f"{exc.verify_message}")
    if isinstance(exc, ssl.SSLError):  # e.g. security = "tls" against a plain port: a setup mistake
        return PermanentSendError(recipients, f"TLS with {relay.host}:{relay.port} failed: "
                                  f"{exc.reason or exc}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentSendError(recipients, f"relay {relay.host}: {exc}")
    if isinstance(exc, OSError):  # includes SMTPServerDisconnected, timeouts, refused connections
        reason = f"relay {relay.host}:{relay.port}: {exc.__class__.__name__}: {exc}".rstrip(": ")
        return TemporarySendError(recipients, reason)
    raise exc
