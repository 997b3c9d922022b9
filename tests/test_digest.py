"""Daily digests: claimed in the database, sent once per rep and local date, content per rep."""

import datetime
import subprocess
import sys
import time

import pytest
from playhouse.test_utils import count_queries

from leadflow import config as config_module
from leadflow.notify import digest
from leadflow.notify.testing import SmtpSink, make_lead, make_rep
from leadflow.store.models import (
    Activity,
    DigestLog,
    InboundMessage,
    Opportunity,
    Organisation,
    Rep,
)

WED = datetime.datetime(2026, 6, 10)  # a Wednesday; naive UTC like every stored time
H = datetime.timedelta(hours=1)
D = datetime.timedelta(days=1)
MIN = datetime.timedelta(minutes=1)


@pytest.fixture
def sink(config):
    with SmtpSink() as running:
        config.notify.relay.host = running.host
        config.notify.relay.port = running.port
        yield running


def ticks(config, start, end, every=datetime.timedelta(minutes=20)):
    """Run the digest tick from ``start`` to ``end``; every outcome."""
    outcomes, now = [], start
    while now < end:
        outcomes += digest.run_digests(config, now=now)
        now += every
    return outcomes


def sent(outcomes):
    return [o for o in outcomes if o.status == "sent"]


def test_each_rep_gets_their_own_worklist(database, config, sink):
    """Each rep's mail lists their leads, follow-ups and stale deals, with commands; none of another's."""
    sam = make_rep("Sam", created_at=WED - 30 * D)
    kim = make_rep("Kim", created_at=WED - 30 * D)
    org = Organisation.create(name="Tech Innovators Inc.", normalised_name="tech innovators")
    new = make_lead(sam, "Sarah Connor", organisation=org, score=85, source="email:sales@ourco.example",
                    created_at=WED - 5 * H, assigned_at=WED - 4 * H,
                    score_breakdown=[{"rule": "t", "points": 30, "reason": "Buying within 3 months"},
                                     {"rule": "d", "points": 10, "reason": "Company domain"}])
    qualified = make_lead(sam, "Quentin Q", status="qualified", qualified_at=WED - 3 * D,
                          assigned_at=WED - 9 * D, score=70)
    Activity.create(kind="call", text="Call Sarah about the demo", lead=new, due_at=WED.date() - D)
    opp = Opportunity.create(name="ACME: CRM", owner=sam, stage="proposal",
                             stage_changed_at=WED - 10 * D, created_at=WED - 12 * D)
    make_lead(kim, "Kira Other", assigned_at=WED - 2 * H, created_at=WED - 2 * H)

    ticks(config, WED + 7 * H, WED + 9 * H)

    (mail,) = sink.to("sam@ourco.example")
    text = mail.get_body(("plain",)).get_content()
    for expected in ("Sarah Connor", "Tech Innovators Inc.", "score 85", "Buying within 3 months (+30)",
                     "email:sales@ourco.example", f"leadflow leads show {new.id}",
                     "Quentin Q", f"leadflow leads convert {qualified.id}", "3 days",
                     "Call Sarah about the demo", "overdue 1 day",
                     "ACME: CRM", f"leadflow opps show {opp.id}", "no activity for 10 days"):
        assert expected in text, expected
    assert "Kira Other" not in text
    (kim_mail,) = sink.to("kim@ourco.example")
    assert "Kira Other" in kim_mail.get_body(("plain",)).get_content()
    assert mail["Message-ID"] == "<digest-%d-2026-06-10-rep@example.com>" % sam.id


@pytest.mark.parametrize("breakdown, reasons", [
    ([{"points": 10, "reason": "company domain"}, {"points": 30, "reason": "buying soon"}],
     ["buying soon (+30)", "company domain (+10)"]),
    ([{"points": 20, "reason": "timeline within 3 months: +20"}], ["timeline within 3 months: +20"]),
    ([{"points": -15, "reason": "free-mail address"}, {"points": 5, "reason": "a"},
      {"points": 1, "reason": "b"}, {"points": 2, "reason": "c"}],
     ["free-mail address (-15)", "a (+5)", "c (+2)"]),
    ([{"verdict": "disqualify", "reason": "competitor: disqualify"}], ["competitor: disqualify"]),
    ([{"rule": "no reason given", "points": 3}], ["no reason given (+3)"]),
    ([], []),
    (None, []),
])
def test_top_reasons(breakdown, reasons):
    """A lead's top three reasons, strongest first, with their points written once."""
    assert digest.top_reasons(breakdown) == reasons


def test_qualified_leads_are_listed_oldest_first(database, config):
    """Leads waiting for conversion come oldest first, with their age."""
    sam = make_rep("Sam")
    for name, days in (("Middle", 5), ("Newest", 1), ("Oldest", 9)):
        make_lead(sam, name, status="qualified", qualified_at=WED - days * D)
    built = digest.build_rep_digest(sam, config, WED.date(), WED)
    assert [(i.title, i.age) for i in built.to_convert] == [
        ("Oldest", "9 days"), ("Middle", "5 days"), ("Newest", "1 day")]


def test_new_leads_are_those_assigned_since_the_last_digest(database, config, sink):
    """A lead listed yesterday as new is not new today; one assigned since is."""
    sam = make_rep("Sam", created_at=WED - 30 * D)
    make_lead(sam, "Old News", assigned_at=WED - 2 * H)
    ticks(config, WED + 8 * H, WED + 9 * H)
    make_lead(sam, "Fresh One", assigned_at=WED + 15 * H)
    ticks(config, WED + D + 8 * H, WED + D + 9 * H)
    first, second = sink.to("sam@ourco.example")
    assert "Old News" in first.get_body(("plain",)).get_content()
    text = second.get_body(("plain",)).get_content()
    assert "Fresh One" in text and "Old News" not in text


def test_empty_digest_is_skipped_and_recorded(database, config, sink):
    """Nothing to list: no mail, and the log says skipped."""
    sam = make_rep("Sam")
    outcomes = ticks(config, WED + 8 * H, WED + 10 * H)
    assert [o.status for o in outcomes] == ["skipped"]
    assert sink.messages == []
    assert DigestLog.get(DigestLog.rep == sam).status == "skipped"


def test_empty_digest_is_sent_when_configured(database, config, sink):
    """notify.send_empty = true sends "nothing needs you today"."""
    config.notify.send_empty = True
    make_rep("Sam")
    ticks(config, WED + 8 * H, WED + 10 * H)
    (mail,) = sink.messages
    assert "Nothing needs you today" in mail.get_body(("plain",)).get_content()


def test_temporary_failure_is_retried_with_backoff_then_sent(database, config):
    """A 451 from the relay: status retry with a later attempt; the next due tick sends it."""
    sam = make_rep("Sam")
    make_lead(sam, "Sarah Connor", assigned_at=WED)
    with SmtpSink(data_replies=["451 4.3.0 try again later"]) as sink:
        config.notify.relay.port = sink.port
        config.notify.relay.host = sink.host
        (first,) = digest.run_digests(config, now=WED + 8 * H)
        entry = DigestLog.get(DigestLog.rep == sam)
        assert (first.status, entry.status, entry.attempts) == ("retry", "retry", 1)
        assert entry.next_attempt_at == WED + 8 * H + datetime.timedelta(seconds=60)
        assert "451" in entry.error
        assert digest.run_digests(config, now=WED + 8 * H + datetime.timedelta(seconds=30)) == []
        (second,) = digest.run_digests(config, now=WED + 8 * H + datetime.timedelta(seconds=61))
        assert second.status == "sent"
        assert len(sink.messages) == 1
    entry = DigestLog.get(DigestLog.rep == sam)
    assert (entry.status, entry.attempts, entry.error) == ("sent", 2, None)


def test_backoff_doubles_until_max_attempts_then_fails(database, config):
    """Temporary failures wait 60 s, 120 s, ... and end failed after notify.max_attempts."""
    config.notify.max_attempts = 3
    sam = make_rep("Sam")
    make_lead(sam, assigned_at=WED)
    with SmtpSink(data_replies=["451 4.3.0 later"] * 5) as sink:
        config.notify.relay.port, config.notify.relay.host = sink.port, sink.host
        now = WED + 8 * H
        statuses, waits = [], []
        for _ in range(3):
            (outcome,) = digest.run_digests(config, now=now)
            entry = DigestLog.get(DigestLog.rep == sam)
            statuses.append(outcome.status)
            if entry.next_attempt_at:
                waits.append((entry.next_attempt_at - now).total_seconds())
                now = entry.next_attempt_at
    assert statuses == ["retry", "retry", "failed"]
    assert waits == [60, 120]
    assert DigestLog.get(DigestLog.rep == sam).attempts == 3


def test_permanent_failure_is_recorded_and_not_retried(database, config):
    """A 550 for the rep's address: failed with the error, and no later tick sends it."""
    sam = make_rep("Sam")
    make_lead(sam, assigned_at=WED)
    with SmtpSink(rcpt_replies={"sam@ourco.example": "550 5.1.1 no such user"}) as sink:
        config.notify.relay.port, config.notify.relay.host = sink.port, sink.host
        outcomes = ticks(config, WED + 8 * H, WED + 12 * H)
        assert [o.status for o in outcomes] == ["failed"]
        assert sink.messages == []
    entry = DigestLog.get(DigestLog.rep == sam)
    assert entry.status == "failed" and "550" in entry.error and "no such user" in entry.error


def test_a_claim_whose_sender_died_is_taken_over_after_its_lease(database, config, sink):
    """A claimed row left behind by a crashed process is sent once its lease runs out."""
    sam = make_rep("Sam")
    make_lead(sam, assigned_at=WED)
    assert digest.claim(sam, "rep", WED.date(), WED + 8 * H, worker_id="dead:1")
    assert digest.run_digests(config, now=WED + 8 * H + datetime.timedelta(minutes=5)) == []
    (outcome,) = digest.run_digests(config, now=WED + 8 * H + digest.LEASE)
    assert outcome.status == "sent" and len(sink.messages) == 1


@pytest.mark.parametrize("fields, now, state", [
    ({}, WED + 7 * H + 59 * datetime.timedelta(minutes=1), "early"),
    ({}, WED + 8 * H, "due"),
    ({}, WED + 19 * H + 59 * datetime.timedelta(minutes=1), "due"),
    ({}, WED + 20 * H, "late"),
    ({"working_days": "1,2,4,5"}, WED + 9 * H, "off_day"),
    ({"away_until": WED.date()}, WED + 9 * H, "away"),
    ({"away_until": WED.date() - D}, WED + 9 * H, "due"),
    ({"timezone": "Asia/Tokyo"}, WED - 1 * H, "due"),  # 08:00 in Tokyo on Wednesday
    ({"timezone": "America/New_York"}, WED + 11 * H, "early"),  # 07:00 in New York
    ({"digest_hour": 6}, WED + 6 * H, "due"),
])
def test_due_state(fields, now, state):
    """A digest is due from the rep's local hour until the cut-off, on working days, unless away."""
    rep = Rep(name="Sam", email="sam@ourco.example", **fields)
    assert digest.due_state(rep, config_module.parse({}), now)[1] == state


def test_restart_after_a_missed_hour_sends_that_day(database, config, sink):
    """leadflow down from 07:00 to 11:00: the 08:00 digest goes out on the first tick after."""
    sam = make_rep("Sam")
    make_lead(sam, assigned_at=WED)
    assert ticks(config, WED + 6 * H, WED + 7 * H) == []
    (outcome,) = ticks(config, WED + 11 * H, WED + 12 * H)
    assert (outcome.status, outcome.local_date) == ("sent", WED.date())


def test_downtime_past_the_cutoff_records_missed(database, config, sink):
    """Back after the cut-off hour: nothing is sent that day, and the log says missed."""
    sam = make_rep("Sam")
    make_lead(sam, assigned_at=WED)
    assert [o.status for o in ticks(config, WED + 21 * H, WED + 23 * H)] == ["missed"]
    assert sink.messages == []
    assert DigestLog.get(DigestLog.rep == sam).status == "missed"
    assert [o.status for o in ticks(config, WED + D + 8 * H, WED + D + 9 * H)] == ["sent"]


@pytest.mark.parametrize("day, hour", [
    (datetime.date(2026, 11, 1), 1),  # fall back: 01:00-02:00 happens twice
    (datetime.date(2026, 11, 1), 8),
    (datetime.date(2026, 3, 8), 2),  # spring forward: 02:00-03:00 never happens
])
def test_one_digest_on_the_days_clocks_change(database, config, sink, day, hour):
    """A rep in America/New_York gets exactly one digest on the days clocks change."""
    rep = make_rep("Nora", timezone="America/New_York", digest_hour=hour)
    make_lead(rep, assigned_at=datetime.datetime.combine(day, datetime.time()) - D)
    start = datetime.datetime.combine(day, datetime.time(5))  # 01:00 EDT / 00:00 EST
    outcomes = ticks(config, start, start + 24 * H)
    assert [(o.status, o.local_date) for o in outcomes] == [("sent", day)]
    assert len(sink.messages) == 1


@pytest.mark.parametrize("before, after, start, change_at, end, dates", [
    # westward: still the same local date, already logged
    ("Europe/Amsterdam", "America/New_York", WED + 5 * H, WED + 10 * H, WED + 20 * H, [0]),
    # back across midnight: the new local date (9 June) is earlier than the one logged
    ("Pacific/Auckland", "Europe/Amsterdam", WED - 12 * H, WED - 3 * H, WED + 12 * H, [0]),
    # eastward past midnight: the rep's next morning, which gets its own digest
    ("Europe/Amsterdam", "Pacific/Auckland", WED + 5 * H, WED + 10 * H, WED + 22 * H, [0, 1]),
])
def test_time_zone_changed_mid_day(database, config, sink, before, after, start, change_at, end,
                                   dates):
    """A rep whose time zone changes mid-day gets no second digest for that date (local dates
    only move forward)."""
    config.notify.send_empty = True
    config.notify.cutoff_hour = 0
    rep = make_rep("Tess", timezone=before)
    ticks(config, start, change_at)
    Rep.update(timezone=after).where(Rep.id == rep.id).execute()
    ticks(config, change_at, end)
    assert sorted(m["X-Leadflow-Digest"] for m in sink.messages) == [
        f"rep {WED.date() + n * D}" for n in dates]


def test_admin_digest_reports_yesterdays_intake(database, config, sink):
    """Admins and marketing get yesterday's intake by channel and form, ignored and failed."""
    make_rep("Ada", role="admin")
    yesterday = WED - 10 * H
    for channel, form, status, classification in [
            ("email", None, "done", "lead"), ("email", None, "done", "lead"),
            ("form", "contact", "done", "lead"), ("email", None, "ignored", "auto_reply"),
            ("email", None, "ignored", "bounce"), ("form", "demo", "failed", None)]:
        InboundMessage.create(channel=channel, form=form, raw=b"x", status=status,
                              classification=classification, received_at=yesterday,
                              failed_step="parse" if status == "failed" else None,
                              error="ValueError: <bad>" if status == "failed" else None)
    InboundMessage.create(channel="email", raw=b"x", status="done", received_at=WED - 30 * H)
    make_lead(None, "A", created_at=yesterday, qualified_at=yesterday, status="qualified")
    for name in ("B", "C", "D"):
        make_lead(None, name, created_at=yesterday)
    ticks(config, WED + 8 * H, WED + 9 * H)
    (mail,) = sink.to("ada@ourco.example")
    assert mail["X-Leadflow-Digest"] == "admin 2026-06-10"
    text = mail.get_body(("plain",)).get_content()
    assert "6 inquiries received, 4 new leads, 1 qualified (25%)" in text
    for line in ("email      -                        4", "form       contact                  1",
                 "auto_reply", "bounce", "failed at parse: ValueError: <bad>",
                 "leadflow inbox retry"):
        assert line in text, line
    assert DigestLog.select().where(DigestLog.kind == "admin").count() == 1


def _fill(rep, n, start_id):
    org = Organisation.create(name=f"Org {start_id}", normalised_name=f"org {start_id}")
    for i in range(n):
        lead = make_lead(rep, f"Lead {start_id + i}", organisation=org, assigned_at=WED - H,
                         score=40 + i, score_breakdown=[{"points": 5, "reason": "r"}])
        make_lead(rep, f"Qual {start_id + i}", status="qualified", qualified_at=WED - D)
        opp = Opportunity.create(name=f"Deal {start_id + i}", owner=rep, organisation=org,
                                 lead=lead, stage_changed_at=WED - 30 * D,
                                 created_at=WED - 30 * D)
        Activity.create(kind="call", text="x", opportunity=opp, due_at=WED.date() - D,
                        created_at=WED - 40 * D)
        Activity.create(kind="note", text="y", lead=lead, due_at=WED.date(),
                        created_at=WED - 40 * D)


def test_queries_per_digest_are_bounded(database, config):
    """Building and sending one rep's digest runs the same number of queries for 1 or 40 items each."""
    counts = []
    for n, start in ((1, 0), (40, 100)):
        rep = make_rep(f"Rep {n}", created_at=WED - 30 * D)
        _fill(rep, n, start)
        with count_queries() as counter:
            built = digest.build_rep_digest(rep, config, WED.date(), WED)
        counts.append(counter.count)
        assert built.totals == {"new": n, "convert": n, "followups": 2 * n, "stale": n}
    assert counts[0] == counts[1] <= 6


def test_admin_digest_queries_are_bounded(database, config):
    """The admin digest's query count does not grow with the intake."""
    admin = make_rep("Ada", role="admin")
    counts = []
    for n in (1, 30):
        for _ in range(n):
            InboundMessage.create(channel="email", raw=b"x", status="failed", error="e",
                                  received_at=WED - 10 * H)
            make_lead(None, f"L{_}{n}", email=None, created_at=WED - 10 * H)
        with count_queries() as counter:
            digest.build_admin_digest(admin, config, WED.date(), WED)
        counts.append(counter.count)
    assert counts[0] == counts[1] <= 6


def test_hot_lead_alert_once_per_lead_and_rate_limited(database, config, sink):
    """A lead at the hot score alerts its owner once; more than hot_alert_per_hour wait an hour."""
    config.notify.hot_alert_per_hour = 2
    config.scoring.hot_score = 80
    sam = make_rep("Sam")
    now = WED + 9 * H
    leads = [make_lead(sam, f"Hot {i}", score=90, scored_at=now - datetime.timedelta(minutes=i))
             for i in range(3)]
    make_lead(sam, "Lukewarm", score=50, scored_at=now)
    first = digest.send_hot_alerts(config, now=now)
    assert [o.status for o in first] == ["sent", "sent"]
    assert digest.send_hot_alerts(config, now=now + datetime.timedelta(minutes=5)) == []
    later = digest.send_hot_alerts(config, now=now + 61 * datetime.timedelta(minutes=1))
    assert [o.kind for o in later] == [f"hot:{leads[0].id}"]
    assert digest.send_hot_alerts(config, now=now + 3 * H) == []
    subjects = sorted(m["Subject"] for m in sink.messages)
    assert subjects == [f"Hot lead: Hot {i}, score 90" for i in range(3)]


# -- several processes against one database -----------------------------------------------

TICKER = r"""
import datetime, sys, time
from leadflow import config as config_module
from leadflow.store.database import open_database
from leadflow.notify.digest import run_digests

url, port, start, minutes, go_at, name = sys.argv[1:7]
config = config_module.parse({"notify": {"relay": {"host": "127.0.0.1", "port": int(port)}}})
open_database(url, pool_size=2)
# one simulated clock shared by every process: SPEED simulated seconds per real second
start, go_at, end = datetime.datetime.fromisoformat(start), float(go_at), float(minutes) * 60
while time.time() < go_at:
    time.sleep(0.005)
sent = 0
while (elapsed := (time.time() - go_at) * SPEED) < end:
    now = start + datetime.timedelta(seconds=elapsed)
    sent += sum(o.status == "sent" for o in run_digests(config, now=now, worker_id=name))
    time.sleep(0.05)
print(sent)
"""
SPEED = 120  # 10 simulated minutes (the claim lease) take 5 real seconds


def _run_processes(url, port, start, minutes, count=4):
    go_at = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", TICKER.replace("SPEED", str(SPEED)), url,
                               str(port), start.isoformat(), str(minutes), str(go_at), f"p{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(count)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(int(out.strip().splitlines()[-1]))
    return results


@pytest.mark.slow
def test_four_processes_send_exactly_one_digest_per_rep(database, database_url, sink):
    """Four processes ticking against one database send one digest per rep; restarts add none."""
    # every rep's digest falls due at 06:00 UTC, so all four processes race for all of them
    zones = [("UTC", 6), ("Europe/Amsterdam", 8), ("Europe/London", 7), ("Africa/Lagos", 7),
             ("Europe/Helsinki", 9)]
    reps = [make_rep(f"Rep {i}", timezone=zones[i % 5][0], digest_hour=zones[i % 5][1])
            for i in range(20)]
    for rep in reps:
        make_lead(rep, f"Lead of {rep.id}", assigned_at=WED)
    per_process = _run_processes(database_url, sink.port, WED + 6 * H - 2 * MIN, 10)
    assert sum(per_process) == len(reps)
    assert sorted(m["To"].addresses[0].addr_spec for m in sink.messages) == sorted(r.email for r in reps)
    rows = list(DigestLog.select())
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1)] * len(reps)
    assert len({r.claimed_by for r in rows}) > 1  # the work was really shared
    # a restart later that day (new processes, same database) sends nothing more
    assert _run_processes(database_url, sink.port, WED + 12 * H, 4) == [0, 0, 0, 0]
    assert len(sink.messages) == len(reps)
