"""What every CLI command shares: the configuration and the database.

Commands receive an :class:`App` through ``pass_app`` (click's context object),
never through module globals.
"""

import click
from peewee import OperationalError

from leadflow import config as config_module
from leadflow.errors import LeadflowError
from leadflow.store import migrate
from leadflow.store.database import close_database, db, open_database


class App:
    """The state of one CLI invocation."""

    def __init__(self, config_path=None):
        self.config_path = config_path
        self._config = None
        self._database = None

    @property
    def config(self):
        if self._config is None:
            try:
                self._config = config_module.load(self.config_path)
            except LeadflowError as exc:
                raise click.ClickException(str(exc)) from None
        return self._config

    def open_db(self, migrate_check=True):
        """Open the configured database; refuse when its schema is behind."""
        if self._database is not None:
            return self._database
        url = self.config.database.url
        try:
            database = open_database(url, pool_size=self.config.database.pool_size)
        except LeadflowError as exc:
            raise click.ClickException(str(exc)) from None
        except OperationalError as exc:
            raise click.ClickException(
                f"cannot open the database {config_module.mask_url(url)}: {exc}".strip()) from None
        if migrate_check:
            try:
                waiting = migrate.pending(database)
            except OperationalError as exc:
                raise click.ClickException(
                    f"cannot read the database {config_module.mask_url(url)}: {exc}") from None
            if waiting:
                raise click.ClickException(
                    f"the database schema is behind ({len(waiting)} migration(s) pending: "
                    f"{', '.join(waiting)}); run `leadflow db upgrade` (or `leadflow init`)")
        self._database = database
        return database

    def close(self):
        if self._database is not None:
            close_database()
            self._database = None


pass_app = click.make_pass_decorator(App)

__all__ = ["App", "pass_app", "db"]


# -- output helpers shared by every command module -----------------------------

def echo_json(data):
    """Print ``data`` as JSON: the stable interface for scripts."""
    import json

    click.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str))


def echo_table(headers, rows, empty="(none)"):
    """Print rows as a plain aligned text table."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if not rows:
        click.echo(empty)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    widths = [min(w, 48) for w in widths]

    def fmt(cells):
        out = []
        for cell, width in zip(cells, widths):
            cell = cell.replace("\n", " ")
            out.append(cell if len(cell) <= width else cell[: width - 1] + "…")
        return "  ".join(c.ljust(w) for c, w in zip(out, widths)).rstrip()

    click.echo(fmt(headers))
    click.echo(fmt(["-" * w for w in widths]))
    for row in rows:
        click.echo(fmt(row))
