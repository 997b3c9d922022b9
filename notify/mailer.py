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
import socket
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


def _connect(relay):
    """An open, greeted (and, as configured, encrypted and logged-in) SMTP session."""
    if relay.security == "tls":
        session = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout,
                                   context=ssl.create_default_context())
    else:
        session = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
    try:
        session.ehlo()
        if relay.security == "starttls":
            session.starttls(context=ssl.create_default_context())
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
    its ``From`` (``notify.from`` when the message has none).
    """
    notify = getattr(config, "notify", config)
    relay = notify.relay
    if message["From"] is None:
        message["From"] = notify.from_
    recipients = [a for h in ("To", "Cc", "Bcc") for a in message.get_all(h, [])]
    label = message["Message-ID"] or "(no Message-ID)"
    try:
        session = _connect(relay)
        try:
            refused = session.send_message(message)
        finally:
            try:
                session.quit()
            except (smtplib.SMTPException, OSError):
                session.close()
    except SendError as exc:
        exc.recipients = exc.recipients or recipients
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        code, reason = min(exc.recipients.values())  # a 4xx wins: worth a retry
        raise _classify(code, reason, recipients) from None
    except smtplib.SMTPResponseException as exc:  # sender refused, DATA refused, AUTH failed
        raise _classify(exc.smtp_code, exc.smtp_error, recipients) from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentSendError(recipients, f"TLS certificate of {relay.host} does not verify: "
                                 f"{exc.verify_message}") from None
    except ssl.SSLError as exc:  # e.g. security = "tls" against a plain port: a setup mistake
        raise PermanentSendError(recipients, f"TLS with {relay.host}:{relay.port} failed: "
                                 f"{exc.reason or exc}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentSendError(recipients, f"relay {relay.host}: {exc}") from None
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, socket.timeout,
            ConnectionError, OSError) as exc:
        reason = f"relay {relay.host}:{relay.port}: {exc.__class__.__name__}: {exc}".rstrip(": ")
        raise TemporarySendError(recipients, reason) from None
    except smtplib.SMTPException as exc:
        raise TemporarySendError(recipients, f"relay {relay.host}: {exc}") from None
    if refused:
        # Accepted for some recipients: a retry would send the others a second
        # copy, so the refusals are reported and the message counts as sent.
        log.warning("%s: relay refused %s", label,
                    ", ".join(f"{a} ({c})" for a, (c, _) in refused.items()))
    log.info("%s: sent to %s via %s:%s", label, ", ".join(recipients), relay.host, relay.port)
