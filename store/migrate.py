"""Schema migrations: peewee's ``playhouse.migrations`` runner over ``store/migrations/``.

Each migration is a frozen file (``NNNN_name.py`` with ``up(migrator, db)``),
never an import of the live models, so an old migration keeps meaning what it
meant. ``leadflow db upgrade`` applies the pending ones; on PostgreSQL it holds
an advisory lock for the whole run, so several instances starting at once
apply each migration exactly once and the others wait, then find nothing to do.

For developers: after changing ``store/models.py``, ``leadflow db makemigration
NAME`` writes the next migration from the difference between the models and a
database migrated to the current head.
"""

import os
import re
import tempfile
from contextlib import contextmanager

import peewee
from playhouse.migrations import Runner, template
from playhouse.schema_diff import diff_models

from leadflow.store.database import is_postgres, make_database

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
HISTORY_TABLE = "schema_migration"
# pg_advisory_lock key: the bytes "leadflow" read as a signed 64-bit number.
ADVISORY_LOCK_KEY = int.from_bytes(b"leadflow", "big", signed=True)


def runner(database):
    return Runner(database, MIGRATIONS_DIR, table_name=HISTORY_TABLE)


@contextmanager
def _migration_lock(database):
    if not is_postgres(database):
        # SQLite: every migration runs in an IMMEDIATE transaction already.
        yield
        return
    database.execute_sql("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        yield
    finally:
        database.execute_sql("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def upgrade(database):
    """Apply every pending migration; return their names (empty: up to date)."""
    with database.connection_context():
        with _migration_lock(database):
            return runner(database).up()


def status(database):
    """Every migration as (name, applied datetime or None)."""
    with database.connection_context():
        return [(m.name, m.applied) for m in runner(database).status()]


def pending(database):
    return [name for name, applied in status(database) if applied is None]


def make_migration(name, models):
    """Write the next migration file from models vs. the current head; its path or None."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = make_database(f"sqlite:///{tmp}/head.db")
        scratch.connect()
        try:
            runner(scratch).up()
            diff = diff_models(scratch, models)
        finally:
            scratch.close()
    if not diff:
        return None
    body = template(diff)
    # Callable defaults (utcnow, dict, list) are applied by Python, not by the
    # schema: they need nothing in a migration.
    body = "\n".join(line for line in body.splitlines()
                     if not re.match(r"# TODO: \w+: default <function", line)) + "\n"
    # Freeze the JSON columns as what they are in the schema: TEXT.
    body = body.replace("from leadflow.store.models import JSONField\n", "")
    body = re.sub(r"\bJSONField\(", "TextField(", body)
    # Name what the migration uses instead of `from peewee import *`.
    used = sorted(n for n in set(re.findall(r"\b[A-Za-z_]\w*\b", body)) if n in peewee.__all__)
    names = "".join(f"    {n},\n" for n in used)
    body = body.replace("from peewee import *\n", f"from peewee import (\n{names})\n")
    return runner(scratch).create(name, body=body)
