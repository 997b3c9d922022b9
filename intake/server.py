"""``leadflow serve``: the SMTP listener, the web-form webhook, the worker and the
digest scheduler on one asyncio loop.

Blocking work (database, parsing) runs in the database thread pool
(``store.database.run_sync``), never on the loop. On SIGTERM or SIGINT the
server stops accepting, lets mail transactions and requests in progress
finish (at most ``grace`` seconds), hands unstarted claimed rows back to the
queue, and exits 0.

On a brand-new database (no tables) ``serve`` creates the schema at the
latest version (``store.migrate.upgrade``: on PostgreSQL under an advisory
lock, so instances starting together are safe); on an existing database
whose schema is behind it refuses to start (run ``leadflow db upgrade``).
"""

import asyncio
import logging
import signal
import sys

from aiohttp import web

from leadflow.errors import LeadflowError
from leadflow.intake.smtp import SmtpServer
from leadflow.intake.webhook import Metrics, WebhookApp
from leadflow.intake.worker import Worker
from leadflow.store import migrate

log = logging.getLogger("leadflow.intake")


class SchemaBehindError(LeadflowError):
    def __init__(self, pending):
        super().__init__(pending)
        self.pending = pending

    def __str__(self):
        return (f"the database schema is behind ({len(self.pending)} migration(s) pending: "
                f"{', '.join(self.pending)}); run `leadflow db upgrade`")


def prepare_database(database):
    """Create the schema on an empty database; refuse one that is behind."""
    tables = [t for t in database.get_tables() if t != migrate.HISTORY_TABLE]
    if not tables:
        applied = migrate.upgrade(database)
        if applied:
            log.info("created the database schema (%s)", ", ".join(applied))
        return
    waiting = migrate.pending(database)
    if waiting:
        raise SchemaBehindError(waiting)


def _scheduler(config):
    try:
        from leadflow.notify.scheduler import create_scheduler
    except ModuleNotFoundError as exc:
        if exc.name == "leadflow.notify.scheduler":
            return None
        raise
    return create_scheduler(config)


class Server:
    """Everything ``leadflow serve`` runs; ``await start()``, ``await stop()``."""

    def __init__(self, config, smtp_port=None, http_port=None, scheduler=True):
        self.config = config
        self.smtp_port = config.smtp.port if smtp_port is None else smtp_port
        self.http_port = config.http.port if http_port is None else http_port
        self.metrics = Metrics()
        self.worker = Worker(config, self.metrics)
        self.smtp = SmtpServer(config, self.metrics, on_stored=self.worker.notify)
        self.webhook = WebhookApp(config, self.metrics, on_stored=self.worker.notify)
        self.runner = None
        self.scheduler = None
        self.use_scheduler = scheduler
        self.smtp_address = self.http_address = None

    async def start(self, grace=10.0):
        self.smtp_address = await self.smtp.start(self.config.smtp.host, self.smtp_port)
        self.runner = web.AppRunner(self.webhook.make_app(), access_log=None,
                                    handle_signals=False, shutdown_timeout=grace)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.http.host, self.http_port)
        await site.start()
        self.http_address = self.runner.addresses[0][:2]
        self.worker.start()
        self.worker.notify()  # a backlog from before the start
        if self.use_scheduler:
            self.scheduler = _scheduler(self.config)
            if self.scheduler is not None:
                self.scheduler.start()

    async def stop(self, grace=10.0):
        """Stop accepting, finish what is in flight (bounded), stop the worker."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        jobs = [self.smtp.stop(grace)]
        if self.runner is not None:
            jobs.append(self.runner.cleanup())
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.worker.stop(grace)


def serve(config, smtp_port=None, http_port=None, grace=10.0, out=None):
    """Run until SIGTERM/SIGINT (blocking); print the listening addresses to ``out``."""
    out = out or sys.stdout

    async def main():
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        server = Server(config, smtp_port, http_port)
        await server.start()
        host, port = server.smtp_address
        print(f"smtp listening on {host}:{port}", file=out, flush=True)
        host, port = server.http_address
        print(f"http listening on {host}:{port}", file=out, flush=True)
        await stopping.wait()
        log.info("stopping: finishing sessions in flight (at most %.0f s)", grace)
        await server.stop(grace)
        print("stopped", file=out, flush=True)

    asyncio.run(main())


class BackgroundServer:
    """A :class:`Server` on its own loop in a thread: for tests and benchmarks.

    ``with BackgroundServer(config) as server:`` starts it on free ports
    (``server.smtp_address``, ``server.http_address``) and stops it on exit.
    """

    def __init__(self, config, smtp_port=0, http_port=0, scheduler=False, grace=5.0):
        import threading

        self.server = Server(config, smtp_port, http_port, scheduler=scheduler)
        self.grace = grace
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="leadflow-serve",
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        self.call(self.server.start())
        return self

    def call(self, coroutine, timeout=30):
        """Run ``coroutine`` on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc):
        try:
            self.call(self.server.stop(self.grace), timeout=self.grace + 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def __getattr__(self, name):
        return getattr(self.server, name)
