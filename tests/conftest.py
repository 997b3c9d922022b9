"""Fixtures shared by the whole suite.

``database`` gives each test an empty database at the latest schema, once on
SQLite (a file in tmp_path) and once on PostgreSQL. For PostgreSQL each test
session creates its own throw-away database on the server named by
``LEADFLOW_TEST_POSTGRES_URL`` (default: the local server) and drops it at the
end, so several runs on one server never collide.

Without a reachable server the PostgreSQL cases skip, unless ``CI`` is set:
then they fail, so that a CI run can never go green without PostgreSQL.
"""

import os
import shutil
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from leadflow import config as config_module
from leadflow.store import migrate
from leadflow.store.database import close_database, db, make_database, open_database

POSTGRES_ADMIN_URL = os.environ.get("LEADFLOW_TEST_POSTGRES_URL",
                                    "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _postgres_unavailable(reason):
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away database on the PostgreSQL server, for this session; its URL."""
    try:
        import psycopg
    except ImportError as exc:  # the [postgres] extra is missing
        _postgres_unavailable(str(exc))
    name = f"leadflow_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _postgres_unavailable(str(exc).strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    scratch = make_database(url, pool_size=0)
    migrate.upgrade(scratch)
    scratch.close()
    yield url
    close_database()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_postgres_url():
    """A brand-new, empty PostgreSQL database (not migrated)."""
    psycopg = pytest.importorskip("psycopg")
    name = f"leadflow_mig_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _postgres_unavailable(str(exc).strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    scratch = make_database(f"sqlite:///{path}")
    migrate.upgrade(scratch)
    scratch.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    scratch.close()
    return path


def _truncate_all(database):
    tables = [t for t in database.get_tables() if t != migrate.HISTORY_TABLE]
    if tables:
        database.execute_sql("TRUNCATE %s RESTART IDENTITY CASCADE"
                             % ", ".join(f'"{t}"' for t in tables))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """The URL of an empty database at the latest schema, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "leadflow.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_server")
    scratch = make_database(url, pool_size=0)
    with scratch.connection_context():
        _truncate_all(scratch)
    return url


@pytest.fixture
def database(database_url, monkeypatch):
    """An opened, empty database bound to every model (SQLite and PostgreSQL)."""
    monkeypatch.setenv(config_module.ENV_DATABASE_URL, database_url)
    database = open_database(database_url, pool_size=4)
    yield database
    close_database()  # whatever the proxy points at now (a CLI command may have rebound it)
    for opened in (database,):
        if not opened.is_closed():
            opened.close()
        if hasattr(opened, "close_all"):
            opened.close_all()
    db.initialize(None)


@pytest.fixture
def config(database_url, tmp_path, monkeypatch):
    """Default configuration pointing at the test database, with an internal domain."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config_module.ENV_CONFIG, raising=False)
    monkeypatch.setenv(config_module.ENV_DATABASE_URL, database_url)
    cfg = config_module.parse({"intake": {"internal_domains": ["ourco.example"]}})
    cfg.database.url = database_url
    return cfg


@pytest.fixture
def cli(database_url, tmp_path, monkeypatch):
    """Invoke ``leadflow ARGS...`` in-process against the test database.

    Returns click's Result; ``result.output`` holds stdout (and stderr).
    """
    from leadflow.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(config_module.ENV_DATABASE_URL, database_url)
    monkeypatch.delenv(config_module.ENV_CONFIG, raising=False)
    runner = CliRunner()

    def invoke(*args, input=None, expect=0):
        result = runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=True)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        if expect is not None:
            assert result.exit_code == expect, result.output
        return result

    return invoke


@pytest.fixture
def refuse_inbound_writes(database):
    """A context manager in which the database itself refuses inbound inserts (a trigger).

    A real refusal by the database, not a mock: for the 451/503 storage-failure tests.
    """
    from contextlib import contextmanager

    from leadflow.store.database import is_postgres

    @contextmanager
    def refusing():
        if is_postgres(database):
            database.execute_sql(
                "CREATE OR REPLACE FUNCTION refuse_inbound() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'refused by test'; END $$ LANGUAGE plpgsql")
            database.execute_sql("CREATE TRIGGER refuse_inbound BEFORE INSERT ON inbound_message "
                                 "FOR EACH ROW EXECUTE FUNCTION refuse_inbound()")
        else:
            database.execute_sql("CREATE TRIGGER refuse_inbound BEFORE INSERT ON inbound_message "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
        try:
            yield
        finally:
            database.execute_sql("DROP TRIGGER IF EXISTS refuse_inbound"
                                 + (" ON inbound_message" if is_postgres(database) else ""))

    return refusing


@pytest.fixture
def mail_fixture():
    """Path of a mail fixture under tests/fixtures/mail/ by file name."""
    def get(name):
        return FIXTURES / "mail" / name
    return get


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (made with the openssl command): (cert, key)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("the openssl command is required under CI (TLS tests)", pytrace=False)
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=leadflow.localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)
