"""The scheduler is only a tick: one coalescing job that runs the digest function off the loop."""

import asyncio
import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from peewee import SqliteDatabase

from leadflow import config as config_module
from leadflow.notify import scheduler as scheduler_module
from leadflow.notify.scheduler import JOB_ID, create_scheduler
from leadflow.notify.testing import SmtpSink, make_lead, make_rep
from leadflow.store.database import db, shutdown_executor
from leadflow.store.models import DigestLog


def test_create_scheduler_returns_one_unstarted_tick_job():
    """An AsyncIOScheduler, not running, with a one-minute tick that never overlaps itself."""
    scheduler = create_scheduler(config_module.parse({}))
    assert isinstance(scheduler, AsyncIOScheduler)
    assert not scheduler.running
    (job,) = scheduler.get_jobs()
    assert job.id == JOB_ID
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == datetime.timedelta(minutes=1)
    assert (job.coalesce, job.max_instances) == (True, 1)
    assert job.misfire_grace_time >= 1


def test_started_scheduler_sends_a_due_digest_once(database, config):
    """Started on a loop, the first tick sends the due digest; later ticks send nothing more."""
    rep = make_rep("Sam", digest_hour=0)  # due at any hour of today, UTC
    config.notify.cutoff_hour = 0
    make_lead(rep, "Sarah Connor", assigned_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None))

    async def run(sink):
        scheduler = create_scheduler(config, tick_seconds=1)
        scheduler.start()
        try:
            for _ in range(100):
                await asyncio.sleep(0.05)
                if sink.messages:
                    break
            await asyncio.sleep(2.2)  # two more ticks
        finally:
            scheduler.shutdown(wait=True)

    with SmtpSink() as sink:
        config.notify.relay.host, config.notify.relay.port = sink.host, sink.port
        try:
            asyncio.run(run(sink))
        finally:
            shutdown_executor()
    assert len(sink.messages) == 1
    assert "Sarah Connor" in sink.messages[0].get_body(("plain",)).get_content()
    assert DigestLog.get(DigestLog.rep == rep).status == "sent"


def test_a_failing_tick_is_logged_and_does_not_raise(tmp_path, caplog):
    """A tick whose database cannot be opened is logged; the next tick simply tries again."""
    db.initialize(SqliteDatabase(str(tmp_path / "no" / "such" / "folder.db")))
    try:
        assert asyncio.run(scheduler_module.digest_tick(config_module.parse({}))) == []
    finally:
        shutdown_executor()
        db.initialize(None)
    assert "digest tick failed" in caplog.text and "unable to open database" in caplog.text
