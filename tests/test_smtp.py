"""The SMTP listener: real smtplib sessions against the server on 127.0.0.1, port 0."""

import concurrent.futures
import smtplib
import socket

import pytest

from leadflow.intake.server import BackgroundServer
from leadflow.intake.smtp import accepts
from leadflow.store.models import InboundMessage, Lead

pytestmark = pytest.mark.timeout(60)


def mail(n=1, message_id=True, body="We would like a quote for 40 seats.", sender="sarah@techinnovators.example"):
    mid = f"Message-ID: <test-{n}@techinnovators.example>\r\n" if message_id else ""
    return (f"From: Sarah Jones <{sender}>\r\nTo: leads@leadflow.localhost\r\n"
            f"Subject: Inquiry {n}\r\n{mid}\r\n{body}\r\n").encode()


@pytest.fixture
def serve(config, database):
    """Start the server with ``config`` (changed by the test first); yield a connect function."""
    started = []

    def start(**changes):
        for key, value in changes.items():
            setattr(config.smtp, key, value)
        server = BackgroundServer(config).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def connect(server):
    host, port = server.smtp_address
    return smtplib.SMTP(host, port, timeout=10)


@pytest.mark.parametrize("address, accept, ok", [
    ("leads@example.com", ["leads@example.com"], True),
    ("LEADS@Example.com", ["leads@example.com"], True),
    ("sales@example.com", ["leads@example.com"], False),
    ("anyone@example.com", ["@example.com"], True),
    ("anyone@sub.example.com", ["@example.com"], False),
    ("x@leadflow.localhost", [], True),
    ("x@example.com", [], False),
    ("not-an-address", ["@example.com"], False),
])
def test_accepts_only_configured_recipients(address, accept, ok):
    """A recipient is ours only when listed (or at our hostname when nothing is listed)."""
    assert accepts(address, accept, "leadflow.localhost") is ok


def test_stores_message_with_envelope_and_peer_before_250(serve):
    """A message to an accepted recipient is committed with its envelope and peer, then 250."""
    server = serve(accept=["leads@example.com"])
    with connect(server) as client:
        code, reply = client.ehlo()
        assert b"SMTPUTF8" in reply and b"SIZE" in reply
        client.mail("sarah@techinnovators.example")
        assert client.rcpt("leads@example.com")[0] == 250
        code, reply = client.data(mail())
    assert code == 250
    row = InboundMessage.get()
    assert f"inbound #{row.id}".encode() in reply
    assert bytes(row.raw) == mail().replace(b"\r\n", b"\r\n")
    assert row.mail_from == "sarah@techinnovators.example"
    assert row.rcpt_to == ["leads@example.com"]
    assert row.peer.startswith("127.0.0.1:")
    assert row.message_id == "test-1@techinnovators.example"


def test_refuses_other_recipients_never_relays(serve):
    """Any recipient not configured gets 550 5.1.1; with none accepted, DATA is refused."""
    server = serve(accept=["leads@example.com"])
    with connect(server) as client:
        client.ehlo()
        client.mail("spammer@bad.example")
        code, reply = client.rcpt("victim@gmail.com")
        assert (code, reply[:5]) == (550, b"5.1.1")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.data(mail())
        assert refused.value.smtp_code == 503
    assert InboundMessage.select().count() == 0


def test_default_accepts_only_own_hostname(serve):
    """With no smtp.accept, only addresses at smtp.hostname are accepted."""
    server = serve(accept=[], hostname="intake.example.net")
    with connect(server) as client:
        assert client.sendmail("a@b.example", ["leads@intake.example.net"], mail()) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@b.example", ["leads@example.com"], mail(2))


def test_size_limit_552(serve):
    """A message above smtp.max_message_size is refused with 552 and not stored."""
    server = serve(max_message_size=2000)
    with connect(server) as client:
        with pytest.raises(smtplib.SMTPException) as refused:
            client.sendmail("a@b.example", ["x@leadflow.localhost"], mail(body="x" * 5000))
        assert "552" in str(refused.value)
    assert InboundMessage.select().count() == 0


def test_too_many_recipients_452(serve):
    """Recipients beyond smtp.max_recipients get 452 (the sender sends them again later)."""
    server = serve(max_recipients=2)
    with connect(server) as client:
        client.ehlo()
        client.mail("a@b.example")
        assert client.rcpt("one@leadflow.localhost")[0] == 250
        assert client.rcpt("two@leadflow.localhost")[0] == 250
        assert client.rcpt("three@leadflow.localhost")[0] == 452


def test_duplicate_delivery_stored_once(serve):
    """The same message delivered twice (same Message-ID) gets 250 twice and makes one lead."""
    server = serve()
    for _ in range(2):
        with connect(server) as client:
            assert client.sendmail("a@b.example", ["x@leadflow.localhost"], mail(7)) == {}
    rows = list(InboundMessage.select().order_by(InboundMessage.id))
    assert [r.status != "duplicate" for r in rows].count(True) == 1
    assert rows[1].duplicate_of_id == rows[0].id


def test_storage_failure_451_nothing_written(serve, database, refuse_inbound_writes):
    """When the database refuses the write: 451 4.3.0, no error text, nothing stored; a retry works."""
    server = serve()
    with refuse_inbound_writes():
        with connect(server) as client:
            client.ehlo()
            client.mail("a@b.example")
            client.rcpt("x@leadflow.localhost")
            code, reply = client.data(mail(3))
        assert code == 451 and reply.startswith(b"4.3.0")
        assert b"refused by test" not in reply
        assert InboundMessage.select().count() == 0
    with connect(server) as client:
        assert client.sendmail("a@b.example", ["x@leadflow.localhost"], mail(3)) == {}
    assert InboundMessage.select().count() == 1


def test_connections_per_client_limited(serve):
    """More open sessions from one address than allowed get 421 at connect."""
    server = serve(max_connections_per_client=2)
    first, second = connect(server), connect(server)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        connect(server)
    assert refused.value.smtp_code == 421
    first.quit()
    second.quit()


def test_commands_per_session_limited(serve):
    """A command sent more often than smtp.max_commands closes the session with 421."""
    server = serve(max_commands=3)
    with connect(server) as client:
        codes = [client.noop()[0] for _ in range(3)]
        assert codes == [250, 250, 250]
        assert client.noop()[0] == 421


def test_idle_session_closed(serve):
    """A silent session is closed after smtp.idle_timeout."""
    server = serve(idle_timeout=0.3)
    host, port = server.smtp_address
    with socket.create_connection((host, port), timeout=5) as sock:
        assert sock.recv(100).startswith(b"220 ")
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed by the server


def test_smtputf8_address(serve):
    """SMTPUTF8: an internationalised sender address is accepted and kept."""
    server = serve()
    with connect(server) as client:
        client.ehlo()
        client.mail("jürgen@bücher.example", ["SMTPUTF8"])
        assert client.rcpt("x@leadflow.localhost")[0] == 250
        assert client.data(mail(9))[0] == 250
    assert InboundMessage.get().mail_from == "jürgen@bücher.example"


def test_concurrent_sessions_share_commits_and_become_leads(serve):
    """Messages of concurrent sessions are committed in shared batches; each becomes a lead."""
    server = serve()

    def send(n):
        with connect(server) as client:
            return client.sendmail(f"p{n}@corp{n}.example", ["x@leadflow.localhost"],
                                   mail(n, sender=f"p{n}@corp{n}.example"))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert list(pool.map(send, range(40))) == [{}] * 40
    assert InboundMessage.select().count() == 40
    assert server.smtp.batcher.batches < 40
    server.call(_until_idle(server))
    assert Lead.select().count() == 40


async def _until_idle(server, timeout=20):
    import asyncio

    from leadflow.intake.webhook import queue_state
    from leadflow.store.database import run_sync

    for _ in range(int(timeout / 0.05)):
        depth, _ = await run_sync(queue_state)
        if depth == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the queue did not drain")


def tls_client(server, cert):
    import ssl

    client = connect(server)
    client.starttls(context=ssl.create_default_context(cafile=cert))
    return client


def test_starttls_required_before_mail(serve, certificate):
    """With smtp.require_tls, MAIL before STARTTLS gets 530; after STARTTLS the message is stored."""
    cert, key = certificate
    server = serve(tls_cert=cert, tls_key=key, require_tls=True)
    with connect(server) as client:
        assert b"STARTTLS" in client.ehlo()[1]
        assert client.mail("a@b.example")[0] == 530
    with tls_client(server, cert) as client:
        assert client.sendmail("a@b.example", ["x@leadflow.localhost"], mail(20)) == {}
    assert InboundMessage.select().count() == 1


@pytest.mark.parametrize("password, ok", [("s3cret", True), ("wrong", False)])
def test_auth_after_starttls(serve, certificate, tmp_path, password, ok):
    """AUTH (from smtp.auth_users_file) works after STARTTLS; with require_auth, no login, no mail."""
    cert, key = certificate
    users = tmp_path / "users"
    users.write_text("# partners\npartner:s3cret\n")
    server = serve(tls_cert=cert, tls_key=key, auth_users_file=str(users), require_auth=True)
    with connect(server) as client:
        assert b"AUTH" not in client.ehlo()[1]  # never offered in the clear
    with tls_client(server, cert) as client:
        if ok:
            client.login("partner", password)
            assert client.sendmail("a@b.example", ["x@leadflow.localhost"], mail(21)) == {}
        else:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("partner", password)
            assert client.mail("a@b.example")[0] == 530
    assert InboundMessage.select().count() == (1 if ok else 0)


@pytest.mark.parametrize("changes, key", [
    ({"require_tls": True}, "smtp.require_tls"),
    ({"require_auth": True}, "smtp.require_auth"),
    ({"tls_cert": "/nonexistent/cert.pem"}, "smtp.tls_cert"),
    ({"auth_users_file": "/nonexistent/users"}, "smtp.auth_users_file"),
])
def test_tls_and_auth_settings_checked(changes, key):
    """Inconsistent TLS/AUTH settings stop the server with an error naming the key."""
    from leadflow import config as config_module
    from leadflow.errors import ConfigError
    from leadflow.intake.smtp import SmtpServer

    config = config_module.parse({})
    for name, value in changes.items():
        setattr(config.smtp, name, value)
    with pytest.raises(ConfigError) as error:
        SmtpServer(config)
    assert error.value.key == key
