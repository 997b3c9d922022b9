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
from leadflow.intake.worker import Worker, WriteGate
from leadflow.store import migrate
from leadflow.store.database import is_postgres

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
        # A brand-new database gets what `leadflow init` gives it: the starter rules.
        from leadflow.scoring.ruleset import install_starter_rules

        version = install_starter_rules(actor="leadflow serve")
        if version is not None:
            log.info("installed the starter scoring rules (rule set version %s)", version)
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

    def __init__(self, config, smtp_port=None, http_port=None, scheduler=True, worker=True):
        self.config = config
        self.smtp_port = config.smtp.port if smtp_port is None else smtp_port
        self.http_port = config.http.port if http_port is None else http_port
        self.metrics = Metrics()
        gate = None if is_postgres() else WriteGate()  # SQLite: one writer; intake goes first
        self.worker = Worker(config, self.metrics, gate=gate)
        self.smtp = SmtpServer(config, self.metrics, on_stored=self.worker.notify, gate=gate)
        self.webhook = WebhookApp(config, self.metrics, on_stored=self.worker.notify, gate=gate)
        self.runner = None
        self.scheduler = None
        self.use_scheduler = scheduler
        self.use_worker = worker
        self.smtp_address = self.http_address = None

    async def start(self, grace=10.0):
        self.smtp_address = await self.smtp.start(self.config.smtp.host, self.smtp_port)
        self.runner = web.AppRunner(self.webhook.make_app(), access_log=None,
                                    handle_signals=False, shutdown_timeout=grace)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.http.host, self.http_port)
        await site.start()
        self.http_address = self.runner.addresses[0][:2]
        if self.use_worker:
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


def serve(config, smtp_port=None, http_port=None, grace=10.0, out=None, worker=True):
    """Run until SIGTERM/SIGINT (blocking); print the listening addresses to ``out``."""
    out = out or sys.stdout

    async def main():
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        server = Server(config, smtp_port, http_port, worker=worker)
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
        if name == "server":  # not built: Server() raised
            raise AttributeError(name)
        return getattr(self.server, name)


class ServeProcess:
    """``leadflow serve`` as a child process on free ports: for tests and benchmarks.

    ``with ServeProcess(env={...}, cwd=...) as proc:`` waits for the printed
    ``smtp listening on HOST:PORT`` / ``http listening on HOST:PORT`` lines
    (``proc.smtp_address``, ``proc.http_address``); on exit it sends SIGTERM
    and waits. ``proc.kill()`` is SIGKILL.
    """

    def __init__(self, env=None, cwd=None, args=(), log_path=None, timeout=30):
        import os

        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.args = list(args)
        self.log_path = log_path
        self.timeout = timeout
        self.process = None
        self.smtp_address = self.http_address = None
        self.output = []

    def start(self):
        import re
        import subprocess
        import threading

        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from leadflow.cli import run; run()", "serve",
             "--smtp-port", "0", "--http-port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=log, env=self.env, cwd=self.cwd)
        if log is not subprocess.DEVNULL:
            log.close()
        ready = threading.Event()

        def read():
            for line in self.process.stdout:
                text = line.decode("utf-8", "replace").strip()
                self.output.append(text)
                match = re.match(r"(smtp|http) listening on (\S+):(\d+)$", text)
                if match:
                    address = (match.group(2), int(match.group(3)))
                    if match.group(1) == "smtp":
                        self.smtp_address = address
                    else:
                        self.http_address = address
                        ready.set()
            self.process.stdout.close()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(self.timeout) or self.http_address is None:
            self.kill()
            raise RuntimeError(f"leadflow serve did not start (exit {self.process.poll()}): "
                               f"{self.output}")
        return self

    def __enter__(self):
        return self.start()

    def terminate(self, timeout=30):
        """SIGTERM, then wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(30)
        self._reader.join(5)
        return code

    def __exit__(self, *exc):
        try:
            self.terminate()
        except Exception:  # noqa: BLE001 - it would not stop: end it
            self.kill()
