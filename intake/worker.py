"""The processing worker of ``leadflow serve``: stored inquiries in, leads out.

The worker claims waiting inbound rows with ``pipeline.claim_pending`` (on
PostgreSQL ``FOR UPDATE SKIP LOCKED``: several instances share one queue) and
runs ``pipeline.process_many`` on groups of them, in the database thread pool; the
loop never blocks. It wakes at once when the SMTP listener or the webhook
commits a new row (:meth:`Worker.notify`), so local intake waits for no
poll; every ``worker.sweep_seconds`` it also looks by itself, which catches
rows stored by other instances, rows put back by ``inbox retry``, and rows
claimed by an instance that died (after ``worker.claim_timeout_seconds``).

Mail is parsed ahead (:class:`Preparser`): while one group of inquiries
holds the transaction, the next group's raw mail is parsed in a separate
process (``worker.parse_processes``), on another CPU and outside SQLite's
write lock; the pipeline's parse step then has nothing left to do. A parse
that fails there, or a pool that died, simply leaves the parse step to run
in the transaction as before, where a failure is recorded on the row.

On stop, the rows it claimed but did not start are handed back (``new``), so
another instance, or the next start, takes them at once.

With ``smtp.acknowledge_forwarder`` on, an internal colleague who forwarded
an inquiry by mail gets a short note once its lead is made ("lead #12
created: Sarah, Tech Innovators Inc."), sent after the commit, outside the
transaction. Never to the prospect, never for an auto-reply or spam.
"""

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid

from leadflow.intake import normalise, pipeline
from leadflow.intake.message import parse_many, watch_parent
from leadflow.store.database import db, run_sync
from leadflow.store.models import InboundMessage

log = logging.getLogger("leadflow.intake")


class WriteGate:
    """On SQLite, in one process: commits of received inquiries go before the worker's work.

    SQLite has one writer at a time, and the pipeline holds the write lock for
    a whole inquiry (parse to assign). A waiting writer polls with growing
    sleeps and keeps missing the moment between two of the worker's
    transactions, so under a backlog the SMTP listener would wait for
    seconds. The gate hands the lock over in the process instead: an intake
    commit waits for at most the inquiry in progress, and the worker starts
    its next inquiry only when no intake commit is waiting.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._busy = False
        self._intake_waiting = 0

    @contextlib.contextmanager
    def intake(self):
        with self._condition:
            self._intake_waiting += 1
            while self._busy:
                self._condition.wait()
            self._intake_waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def worker(self):
        with self._condition:
            while self._busy or self._intake_waiting:
                self._condition.wait()
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def intake_waiting(self):
        """True while an intake commit waits for the write lock."""
        return self._intake_waiting > 0

    def _release(self):
        with self._condition:
            self._busy = False
            self._condition.notify_all()


# Channels whose raw inquiry is mail, parsed without the database (see pipeline.PARSERS).
_MAIL_CHANNELS = ("email", "cli")


class Preparser:
    """Parses claimed mail in a process pool, ahead of the transaction that uses it.

    :meth:`submit` reads the raw mail of some claimed rows (a plain read; the
    raw bytes never change) and hands it to the pool; :meth:`result` gives
    ``{id: ParsedMessage}``. With ``processes=0``, or when the pool fails,
    results are empty and the pipeline parses in its own step.
    """

    RETRY_SECONDS = 60.0  # after a failure, parse in the pipeline this long before a new pool

    def __init__(self, config, processes):
        self.config = config
        self.processes = processes
        self._pool = None
        self._retry_at = 0.0

    def _executor(self):
        if self._pool is None:
            # spawn: a fresh interpreter, never a fork of this threaded process
            self._pool = ProcessPoolExecutor(self.processes,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=watch_parent, initargs=(os.getpid(),))
        return self._pool

    def wanted(self, groups):
        """Whether to parse this batch ahead: when there is a next group to parse while one
        runs, or the pool is up anyway. A lone inquiry is parsed in the pipeline, without the
        round trip (and without starting processes for a trickle of mail)."""
        return (self.processes > 0 and time.monotonic() >= self._retry_at
                and (groups > 1 or self._pool is not None))

    def submit(self, ids):
        """Start parsing the mail among ``ids``; a handle for :meth:`result`."""
        if not self.processes or not ids or time.monotonic() < self._retry_at:
            return None
        rows = (InboundMessage.select(InboundMessage.id, InboundMessage.raw)
                .where(InboundMessage.id.in_(ids), InboundMessage.channel.in_(_MAIL_CHANNELS))
                .tuples())
        raws = [(inbound_id, bytes(raw)) for inbound_id, raw in rows]
        if not raws:
            return None
        try:
            return self._executor().submit(parse_many, raws, self.config.intake)
        except Exception as exc:  # noqa: BLE001 - a broken pool: parse in the pipeline instead
            self._broken(exc)
            return None

    def result(self, handle):
        if handle is None:
            return {}
        try:
            return handle.result()
        except Exception as exc:  # noqa: BLE001 - e.g. the parse process was killed
            self._broken(exc)
            return {}

    def _broken(self, exc):
        log.warning("worker: parse process failed (%s); parsing in the pipeline for %.0f s",
                    type(exc).__name__, self.RETRY_SECONDS)
        self._retry_at = time.monotonic() + self.RETRY_SECONDS
        self.close()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class Worker:
    """Claims and processes waiting rows until stopped."""

    def __init__(self, config, metrics=None, worker_id=pipeline.WORKER_ID, gate=None):
        self.config = config
        self.metrics = metrics
        self.worker_id = worker_id
        self.gate = gate
        self.preparser = Preparser(config, config.worker.parse_processes)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = None
        self._acks = set()
        self.processed = 0

    def notify(self, inbound_id=None):
        """A new row is committed: look now. Call on the loop's thread."""
        self._wake.set()

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def run(self):
        try:
            released = await run_sync(release_dead_local, self.worker_id)
            if released:
                log.warning("worker: %d row(s) claimed by a process of this host that died are "
                            "queued again", released)
        except Exception as exc:  # noqa: BLE001 - the sweep's claim timeout covers it
            log.error("worker: %s: %s", type(exc).__name__, exc)
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.worker.sweep_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while not self._stopping:
                try:
                    created = await run_sync(self.process_batch)
                except Exception as exc:  # noqa: BLE001 - the database is away: try at the next sweep
                    log.error("worker: %s: %s", type(exc).__name__, exc)
                    break
                if created is None:
                    break
                for inbound_id in created:
                    self._schedule_ack(inbound_id)

    def process_batch(self):
        """Claim one batch and process it (blocking); ids whose lead was created, None if idle."""
        with self._gate():
            ids = pipeline.claim_pending(self.config.worker.batch_size, self.config, self.worker_id)
        if not ids:
            return None
        created = []
        stop_early = self.gate.intake_waiting if self.gate is not None else None
        size = pipeline.GROUP_SIZE
        chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
        handles, parsed = {}, {}
        ahead = self.preparser.wanted(len(chunks))

        def parse_ahead(k):
            if ahead and k < len(chunks) and k not in handles:
                handles[k] = self.preparser.submit(chunks[k])

        position = 0
        while position < len(ids):
            if self._stopping:
                with self._gate():
                    release(ids[position:], self.worker_id)
                break
            group = ids[position:position + size]
            first, last = position // size, (position + len(group) - 1) // size
            for k in range(first, last + 1):
                parse_ahead(k)
                parsed.update(self.preparser.result(handles.get(k)))
                handles[k] = None  # collected
            parse_ahead(last + 1)  # parsed in the other process while this group runs
            started = time.perf_counter()
            with self._gate():
                outcomes = pipeline.process_many(group, self.config, stop_early=stop_early,
                                                 parsed={i: parsed[i] for i in group if i in parsed})
            elapsed = time.perf_counter() - started
            position += len(outcomes)
            for inbound_id in outcomes:
                parsed.pop(inbound_id, None)
            for inbound_id, outcome in outcomes.items():
                self.processed += 1
                if self.metrics is not None:
                    self.metrics.processed[outcome] += 1
                    self.metrics.processing_seconds += elapsed / len(outcomes)
                    self.metrics.processing_count += 1
                if outcome == "created":
                    created.append(inbound_id)
        return created

    def _gate(self):
        return self.gate.worker() if self.gate is not None else contextlib.nullcontext()

    def _schedule_ack(self, inbound_id):
        if not self.config.smtp.acknowledge_forwarder:
            return
        task = asyncio.get_running_loop().create_task(run_sync(send_acknowledgement, inbound_id,
                                                               self.config))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def stop(self, grace=10.0):
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
            except asyncio.TimeoutError:
                log.warning("worker: still busy after %.0f s; its rows are claimed again later", grace)
        if self._acks:
            await asyncio.wait(list(self._acks), timeout=grace)
        await run_sync(self.close)

    def close(self):
        """Stop the parse processes (after the last batch)."""
        self.preparser.close()


def release(ids, worker_id):
    """Hand claimed rows that were not started back to the queue."""
    if not ids:
        return
    with db.atomic():
        (InboundMessage.update(status="new", claimed_by=None, claimed_at=None,
                               attempts=InboundMessage.attempts - 1)
         .where(InboundMessage.id.in_(ids), InboundMessage.claimed_by == worker_id,
                InboundMessage.status == "processing").execute())


def release_dead_local(worker_id):
    """Queue again rows claimed by a dead process of this host (``host:pid``); how many.

    Rows of workers on other hosts wait for ``worker.claim_timeout_seconds``.
    """

    host = worker_id.rsplit(":", 1)[0]
    claimers = (InboundMessage.select(InboundMessage.claimed_by).distinct()
                .where(InboundMessage.status == "processing",
                       InboundMessage.claimed_by.startswith(f"{host}:")))
    dead = []
    for row in claimers:
        pid = row.claimed_by.rsplit(":", 1)[1]
        if row.claimed_by == worker_id or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.append(row.claimed_by)
        except PermissionError:  # alive, someone else's
            pass
    if not dead:
        return 0
    with db.atomic():
        return (InboundMessage.update(status="new", claimed_by=None, claimed_at=None)
                .where(InboundMessage.status == "processing", InboundMessage.claimed_by.in_(dead))
                .execute())


def acknowledgement(inbound_id, config):
    """The note to the internal forwarder of a mailed inquiry whose lead was created, or None."""
    inbound = InboundMessage.get_or_none(InboundMessage.id == inbound_id)
    if inbound is None or inbound.channel != "email" or inbound.lead_id is None:
        return None
    if inbound.classification not in (None, "lead"):
        return None
    lead = inbound.lead
    forwarder = normalise.normalise_email(lead.submitted_by)
    if not forwarder or forwarder == lead.email:
        return None
    domain = normalise.email_domain(forwarder)
    internal = {d.lstrip("@").lower() for d in config.intake.internal_domains}
    forwarders = {normalise.normalise_email(a) for a in config.intake.forwarders}
    if domain not in internal and forwarder not in forwarders:
        return None  # never to anyone outside: the prospect, or a stranger's auto-forward
    if forwarder == normalise.normalise_email(config.notify.from_):
        return None
    who = ", ".join(p for p in (lead.name or lead.email, lead.company) if p)
    message = EmailMessage()
    message["From"] = config.notify.from_
    message["To"] = forwarder
    message["Subject"] = f"lead #{lead.id} created: {who}"
    message["Auto-Submitted"] = "auto-generated"
    message["Message-ID"] = make_msgid(domain=config.smtp.hostname)
    if inbound.message_id:
        message["In-Reply-To"] = f"<{inbound.message_id}>"
    message.set_content(f"Thank you for forwarding. leadflow made lead #{lead.id} for {who}.\n")
    return message


def send_acknowledgement(inbound_id, config):
    """Build and send the acknowledgement (blocking); failures are logged, never raised."""
    try:
        message = acknowledgement(inbound_id, config)
        if message is None:
            return False
        from leadflow.notify.mailer import send

        send(config, message)
        log.info("inbound #%s: acknowledgement sent to %s", inbound_id, message["To"])
        return True
    except Exception as exc:  # noqa: BLE001 - a courtesy note; the lead exists either way
        log.warning("inbound #%s: acknowledgement not sent: %s", inbound_id, exc)
        return False
