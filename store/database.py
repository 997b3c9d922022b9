"""The one database handle and how it is opened.

Every model binds to :data:`db`, a proxy that :func:`open_database` points at a
real database chosen by URL:

- ``sqlite:///PATH``: one file, zero configuration, one host. WAL journal,
  ``synchronous=FULL`` (a commit survives a power cut), foreign keys on, and
  every transaction begins ``IMMEDIATE`` so that writers queue for the lock at
  BEGIN instead of failing halfway with ``database is locked``.
- ``postgresql://...``: several instances and hosts share one database;
  psycopg 3 through peewee's connection pool.

The data layer is synchronous. Code on the asyncio loop calls it through
:func:`run_sync` (a thread executor), never directly.

Times are stored as naive UTC datetimes (:func:`utcnow`); conversion to a
person's time zone happens at the edges (CLI output, digests).
"""

import asyncio
import datetime
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, unquote, urlparse

from peewee import DatabaseProxy, OperationalError, PostgresqlDatabase, SqliteDatabase
from playhouse.pool import PooledPostgresqlDatabase

from leadflow.errors import ConfigError

db = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "foreign_keys": 1,
    "busy_timeout": 30000,
    "cache_size": -16000,
}


def utcnow():
    """Now, as a naive UTC datetime: the form every stored time takes."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def open_database(url, pool_size=10):
    """Open the database named by ``url`` and bind every model to it."""
    database = make_database(url, pool_size=pool_size)
    close_database()  # whatever the proxy pointed at before
    db.initialize(database)
    database.connect(reuse_if_open=True)
    return database


def make_database(url, pool_size=10):
    """A peewee Database for ``url``, not yet bound or connected."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ":memory:"
        path = unquote(path) or ":memory:"
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise ConfigError("database.url", f"folder {folder} does not exist")
        return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE",
                              check_same_thread=False, timeout=30)
    if url.startswith(("postgresql://", "postgres://")):
        parsed = urlparse(url)
        params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        kwargs = dict(
            host=parsed.hostname or None,
            port=parsed.port or None,
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            prefer_psycopg3=True,
            **params,
        )
        name = parsed.path.lstrip("/") or "postgres"
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if pool_size <= 0:
            return PostgresqlDatabase(name, **kwargs)
        return PooledPostgresqlDatabase(name, max_connections=pool_size, stale_timeout=300,
                                        timeout=30, **kwargs)
    raise ConfigError("database.url", f"unsupported URL {url!r}")


def is_postgres(database=None):
    database = database or db.obj
    return isinstance(database, PostgresqlDatabase)


def close_database():
    """Close this thread's connection (and, pooled, the pool)."""
    database = db.obj
    if database is None:
        return
    if not database.is_closed():
        database.close()
    if isinstance(database, PooledPostgresqlDatabase):
        database.close_all()


def is_transient(exc):
    """True for a database error that a retry may cure (lock, lost connection)."""
    text = str(exc).lower()
    return isinstance(exc, OperationalError) and any(
        word in text for word in ("locked", "busy", "connection", "terminat", "timeout", "serializ"))


_executor = None
_executor_lock = threading.Lock()


def executor():
    """The thread pool the asyncio side uses for every database call."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="leadflow-db")
        return _executor


def shutdown_executor():
    global _executor
    with _executor_lock:
        if _executor is not None:
            _executor.shutdown(wait=True)
            _executor = None


async def run_sync(fn, *args, **kwargs):
    """Run blocking ``fn`` in the database thread pool; await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(fn, *args, **kwargs))
