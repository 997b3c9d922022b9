"""Schema migrations: from empty to head, idempotent, concurrent-safe on PostgreSQL."""

import os
import subprocess
import sys

import pytest
from playhouse.schema_diff import diff_models

from leadflow.store import migrate
from leadflow.store.database import make_database
from leadflow.store.models import MODELS


def test_migrated_schema_matches_the_models(database):
    """A database migrated from scratch has exactly the schema the models describe."""
    assert not diff_models(database, MODELS)


def test_upgrade_twice_changes_nothing(database):
    """`db upgrade` on an up-to-date database applies nothing and changes no table."""
    before = sorted(database.get_tables())
    assert migrate.upgrade(database) == []
    assert sorted(database.get_tables()) == before
    assert migrate.pending(database) == []


def test_fresh_sqlite_file(tmp_path):
    """An empty SQLite file reaches the head in one upgrade and reports every migration applied."""
    database = make_database(f"sqlite:///{tmp_path / 'new.db'}")
    applied = migrate.upgrade(database)
    assert applied == [name for name, _ in migrate.status(database)]
    assert migrate.pending(database) == []


@pytest.mark.postgres
def test_three_concurrent_upgrades_on_postgres(empty_postgres_url, tmp_path):
    """Three `leadflow db upgrade` started at once all succeed; each migration runs once."""
    env = {**os.environ, "LEADFLOW_DATABASE_URL": empty_postgres_url}
    procs = [subprocess.Popen([sys.executable, "-m", "leadflow.cli", "db", "upgrade"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [code for _, _, code in results] == [0, 0, 0], results
    outputs = [out for out, _, _ in results]
    assert sum("applied 0001_initial" in out for out in outputs) == 1
    assert sum("up to date" in out for out in outputs) == 2
    database = make_database(empty_postgres_url, pool_size=0)
    with database.connection_context():
        assert not diff_models(database, MODELS)
        assert migrate.pending(database) == []
