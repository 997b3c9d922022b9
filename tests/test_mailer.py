"""Sending through the configured relay: a real aiosmtpd server on 127.0.0.1 port 0."""

import logging
import socket
from email.message import EmailMessage

import pytest

from leadflow import config as config_module
from leadflow.errors import LeadflowError
from leadflow.notify import mailer
from leadflow.notify.testing import SmtpSink

PASSWORD = "s3cret-relay-pass"


def _config(port, **relay):
    return config_module.parse({"notify": {"from": "leadflow@ourco.example",
                                           "relay": {"host": "127.0.0.1", "port": port, **relay}}})


def _message(to="sam@ourco.example"):
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = "Your leads"
    message["Message-ID"] = "<digest-1-2026-06-10-rep@ourco.example>"
    message.set_content("hello")
    return message


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_send_delivers_to_the_relay_with_the_configured_sender():
    """A message reaches the relay from notify.from to its To address, unchanged."""
    with SmtpSink() as sink:
        mailer.send(_config(sink.port), _message())
    assert sink.envelopes == [("leadflow@ourco.example", ["sam@ourco.example"])]
    assert sink.messages[0]["Message-ID"] == "<digest-1-2026-06-10-rep@ourco.example>"
    assert sink.messages[0].get_content().strip() == "hello"


@pytest.mark.parametrize("data_reply, error", [
    ("451 4.3.0 try again later", mailer.TemporarySendError),
    ("421 4.7.0 closing", mailer.TemporarySendError),
    ("452 4.3.1 out of space", mailer.TemporarySendError),
    ("550 5.7.1 refused", mailer.PermanentSendError),
    ("554 5.6.0 bad content", mailer.PermanentSendError),
])
def test_data_replies_are_classified(data_reply, error):
    """A 4xx answer to DATA is temporary, a 5xx one permanent; the code is kept."""
    with SmtpSink(data_replies=[data_reply]) as sink:
        with pytest.raises(error) as caught:
            mailer.send(_config(sink.port), _message())
    assert caught.value.code == int(data_reply[:3])
    assert isinstance(caught.value, LeadflowError)
    assert data_reply[4:] in str(caught.value)


@pytest.mark.parametrize("rcpt_reply, error", [
    ("550 5.1.1 no such user", mailer.PermanentSendError),
    ("450 4.2.1 mailbox busy", mailer.TemporarySendError),
])
def test_recipient_refusals_are_classified(rcpt_reply, error):
    """A refused recipient is permanent for 5xx and temporary for 4xx."""
    with SmtpSink(rcpt_replies={"sam@ourco.example": rcpt_reply}) as sink:
        with pytest.raises(error, match=rcpt_reply[:3]):
            mailer.send(_config(sink.port), _message())
    assert sink.messages == []


def test_connection_refused_is_temporary():
    """A relay that is down is a temporary failure: the digest is retried later."""
    with pytest.raises(mailer.TemporarySendError, match="refused"):
        mailer.send(_config(_free_port()), _message())


def test_tls_against_a_plain_relay_is_permanent():
    """security = "tls" against a plain SMTP port fails the handshake: a setup mistake."""
    with SmtpSink() as sink:
        with pytest.raises(mailer.PermanentSendError, match="TLS"):
            mailer.send(_config(sink.port, security="tls", timeout=5.0), _message())


def test_starttls_required_but_not_offered_is_permanent():
    """security = "starttls" never falls back to plain text."""
    with SmtpSink() as sink:
        with pytest.raises(mailer.PermanentSendError, match="STARTTLS"):
            mailer.send(_config(sink.port, security="starttls"), _message())
    assert sink.messages == []


def test_auth_reads_the_password_from_the_environment(monkeypatch):
    """With a username, leadflow logs in with the password from password_env."""
    monkeypatch.setenv("RELAY_PW", PASSWORD)
    with SmtpSink(users={"digest": PASSWORD}) as sink:
        mailer.send(_config(sink.port, username="digest", password_env="RELAY_PW"), _message())
    assert sink.logins[-1] == ("digest", True)
    assert len(sink.messages) == 1


def test_missing_password_variable_is_permanent_and_named(monkeypatch):
    """A username without its password variable says which variable to set."""
    monkeypatch.delenv("RELAY_PW", raising=False)
    with SmtpSink(users={"digest": PASSWORD}) as sink:
        with pytest.raises(mailer.PermanentSendError, match="RELAY_PW"):
            mailer.send(_config(sink.port, username="digest", password_env="RELAY_PW"), _message())
    assert sink.messages == []


def test_wrong_password_is_permanent_and_never_logged(monkeypatch, caplog):
    """A rejected login is a permanent failure; the password appears in no log or error."""
    monkeypatch.setenv("RELAY_PW", "wrong-" + PASSWORD)
    caplog.set_level(logging.DEBUG)
    with SmtpSink(users={"digest": PASSWORD}) as sink:
        with pytest.raises(mailer.PermanentSendError) as caught:
            mailer.send(_config(sink.port, username="digest", password_env="RELAY_PW"), _message())
    assert caught.value.code == 535
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in caplog.text


def test_relay_session_is_reused_for_several_messages():
    """A Relay sends a tick's messages over one connection."""
    with SmtpSink() as sink:
        with mailer.Relay(_config(sink.port)) as relay:
            for n in range(3):
                relay.send(_message(f"rep{n}@ourco.example"))
    assert sink.connections == 1
    assert [rcpts for _, rcpts in sink.envelopes] == [[f"rep{n}@ourco.example"] for n in range(3)]


def test_relay_session_recovers_after_a_failure():
    """After a refused message the next one still goes out (on a fresh session)."""
    with SmtpSink(rcpt_replies={"gone@ourco.example": "550 5.1.1 no such user"}) as sink:
        with mailer.Relay(_config(sink.port)) as relay:
            with pytest.raises(mailer.PermanentSendError):
                relay.send(_message("gone@ourco.example"))
            relay.send(_message("sam@ourco.example"))
    assert [rcpts for _, rcpts in sink.envelopes] == [["sam@ourco.example"]]


def _server_context(certificate):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_relay_with_its_ca_delivers(certificate, security):
    """STARTTLS and TLS from the first byte: the relay's certificate, checked against
    notify.relay.ca_file, is accepted and the message delivered encrypted."""
    context = _server_context(certificate)
    kwargs = {"starttls": context} if security == "starttls" else {"tls": context}
    with SmtpSink(**kwargs) as sink:
        mailer.send(_config(sink.port, security=security, ca_file=certificate[0], timeout=5.0),
                    _message())
    assert sink.envelopes == [("leadflow@ourco.example", ["sam@ourco.example"])]


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_relay_with_an_unknown_certificate_is_refused(certificate, security):
    """A certificate no trusted CA signed is a permanent failure: nothing is sent in clear."""
    context = _server_context(certificate)
    kwargs = {"starttls": context} if security == "starttls" else {"tls": context}
    with SmtpSink(**kwargs) as sink:
        with pytest.raises(mailer.PermanentSendError, match="certificate"):
            mailer.send(_config(sink.port, security=security, timeout=5.0), _message())
    assert sink.messages == []


def test_unreadable_ca_file_is_a_clear_permanent_error(tmp_path):
    """A ca_file that cannot be read names the setting."""
    with SmtpSink() as sink:
        with pytest.raises(mailer.PermanentSendError, match="notify.relay.ca_file"):
            mailer.send(_config(sink.port, security="tls", ca_file=str(tmp_path / "none.pem")),
                        _message())
