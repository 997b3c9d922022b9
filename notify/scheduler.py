"""The scheduler of ``leadflow serve``: a tick every minute, nothing more.

:func:`create_scheduler` returns an APScheduler 3 ``AsyncIOScheduler``, not
started; ``leadflow serve`` starts it on its event loop and shuts it down on
exit. Its one job runs :func:`leadflow.notify.digest.tick` in the database
thread pool (``run_sync``), so the loop never blocks on the database or the
relay. The job coalesces missed runs, never overlaps itself
(``max_instances=1``) and tolerates a late start (``misfire_grace_time``).

The scheduler holds no state that matters: which digest is due and who sends
it is decided in the database at each tick (see ``notify/digest.py``), so any
number of processes may tick against one database.
"""

import datetime
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from leadflow.store.database import run_sync

log = logging.getLogger("leadflow.notify")

JOB_ID = "leadflow-digest-tick"
TICK_SECONDS = 60


async def digest_tick(config):
    """Run one tick in the database thread pool; log, never raise."""
    from leadflow.notify.digest import tick

    try:
        outcomes = await run_sync(tick, config)
    except Exception:  # the next tick tries again; the database keeps the state
        log.exception("digest tick failed")
        return []
    for outcome in outcomes:
        log.info("digest tick: rep %s %s %s: %s", outcome.rep_id, outcome.kind,
                 outcome.local_date, outcome.status)
    return outcomes


def create_scheduler(config, tick_seconds=TICK_SECONDS, first_run=None):
    """An ``AsyncIOScheduler`` (not started) whose job is the digest tick.

    The first tick runs at ``first_run`` (default: right after start), so a
    digest missed while leadflow was down goes out at once.
    """
    scheduler = AsyncIOScheduler(timezone=datetime.timezone.utc)
    scheduler.add_job(
        digest_tick,
        IntervalTrigger(seconds=tick_seconds, timezone=datetime.timezone.utc),
        args=[config],
        id=JOB_ID,
        name="digests and hot-lead alerts",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=max(1, tick_seconds // 2),
        next_run_time=first_run or datetime.datetime.now(datetime.timezone.utc),
        replace_existing=True,
    )
    return scheduler
