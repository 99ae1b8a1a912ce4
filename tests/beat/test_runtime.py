"""The beat agent against a fake brain: hello, reports, fires, commands, sessions, beat's tick.

The scheduler is Celery's real file scheduler on a shelve in ``tmp_path`` (the
other two keep the same conversation; their stores have tests of their own),
built by a real ``celery.beat.Service``; the agent runs in this process with
the transport's test timings.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.beat import Scheduler, Service

from tests.agents.fake_brain import FAST, SECRET, TOKEN, FakeBrain
from z4j_agent_celery.config import AgentConfig
from z4j_agent_celerybeat.config import BeatConfig
from z4j_agent_celerybeat.fires import KEPT_FIRES, FireLog
from z4j_agent_celerybeat.runtime import BeatRuntime, build_report, fit_report
from z4j_agent_celerybeat.store import ReadOnlyScheduleStore, store_for
from z4j_domain.beat import ScheduleFire, ScheduleRequest, SchedulerKind, SchedulerReport
from z4j_domain.schedules import IntervalSchedule

from .beat import BROKER, command, drain, fires, outcome, reports, run, wait_report
from .contract import QUEUE, app_with_tasks, definition, interval_entry

POLL = 0.3


def config(url: str, poll: float = POLL) -> BeatConfig:
    return BeatConfig(
        agent=AgentConfig(
            brain_url=url, token=TOKEN, hmac_secret=SECRET, agent_name="beat-1", project="proj"
        ),
        poll_interval=poll,
    )


def beat_service(tmp_path: Path, **conf: Any) -> Service:
    """beat's Service with its scheduler built (as ``celery beat`` does before beat_init)."""
    app = Celery("z4j-beat-runtime", broker=BROKER, set_as_current=False)
    app.conf.update(timezone="UTC", **conf)
    app_with_tasks(app)
    service = Service(app, schedule_filename=str(tmp_path / "celerybeat-schedule"))
    service.scheduler  # noqa: B018 - built before beat_init, as Service.start does
    return service


class Agent:
    """A started runtime on a service's scheduler; stopped at the end of the test."""

    def __init__(self, service: Service, url: str, poll: float = POLL) -> None:
        self.service = service
        self.scheduler = service.scheduler
        self.runtime = BeatRuntime(
            config(url, poll),
            store=store_for(self.scheduler, service.app),
            app=service.app,
            settings=FAST,
        )
        self.runtime.attach(self.scheduler)
        self.runtime.start()

    def close(self) -> None:
        self.runtime.stop("test over", timeout=2)
        self.scheduler.close()


def beat_until(scheduler: Any, done: Callable[[], bool], timeout: float = 15) -> None:
    """Run beat's loop (Service.start's: tick, sleep what it says) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        interval = scheduler.tick()
        assert interval <= POLL  # the agent's cap
        if interval > 0:
            time.sleep(interval)


@pytest.fixture
def agent(tmp_path: Path, brain: FakeBrain, redis_db: None) -> Iterator[Agent]:
    started = Agent(beat_service(tmp_path), brain.url)
    assert started.runtime.transport.connected.wait(5)
    yield started
    started.close()


def test_hello_the_schedule_null_heartbeats_and_a_bye_without_worker(
    tmp_path: Path, brain: FakeBrain, redis_db: None
) -> None:
    """The conversation: a celerybeat hello, the whole schedule, heartbeats, bye."""
    started = Agent(beat_service(tmp_path), brain.url)
    try:
        report = wait_report(brain, lambda report: True)
        assert brain.wait_for(lambda: len(brain.heartbeats) >= 2)
    finally:
        started.close()
    (hello,) = brain.hellos
    assert hello == {
        "protocol": 1,
        "agent": "beat-1",
        "project": "proj",
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "agent_version": "0.1.0",
        "kind": "celerybeat",
        "capabilities": ["schedule"],
    }
    assert report.kind is SchedulerKind.FILE
    assert report.class_path == "celery.beat:PersistentScheduler"
    assert (report.timezone, report.writable) == ("UTC", True)
    assert [entry.name for entry in report.entries] == ["celery.backend_cleanup"]
    assert {"proj.add", "proj.ping"} <= report.known_tasks
    assert "applied again each time beat starts" in report.note
    assert set(map(str, brain.heartbeats[0].items())) == {"('worker', None)", "('tasks', None)"}
    assert brain.wait_for(lambda: len(brain.byes) == 1)
    assert brain.byes[0] == {"reason": "test over", "worker": None}


def test_a_command_is_acked_done_with_its_outcome_and_reported(
    agent: Agent, brain: FakeBrain
) -> None:
    """A create is acked, then done with the entry as held; a new report lists it."""
    entry = interval_entry("from-z4j")
    result = outcome(run(brain, ScheduleRequest(op="create", name="from-z4j", entry=entry)))
    assert definition(result.entry) == definition(entry)
    report = wait_report(
        brain,
        lambda report: report.entries and any(item.name == "from-z4j" for item in report.entries),
    )
    assert len(report.entries) == 2


def test_a_repeated_part_is_answered_with_its_first_report(agent: Agent, brain: FakeBrain) -> None:
    """The same part again (after a reconnect, say) is not run twice."""
    body = command(ScheduleRequest(op="create", name="once", entry=interval_entry("once")))
    brain.command(body)
    first = brain.results_of(body["id"], 2)
    brain.command(body)
    assert brain.wait_for(lambda: len([r for r in brain.results if r["id"] == body["id"]]) == 3)
    again = [r for r in brain.results if r["id"] == body["id"]][2]
    assert again == first[1]
    assert again["status"] == "done"
    assert agent.runtime.executor.runs == 1


def test_failures_are_answered_failed_saying_why(agent: Agent, brain: FakeBrain) -> None:
    """An existing name, a missing entry, an unreadable request: failed, with the reason."""
    run(brain, ScheduleRequest(op="create", name="dup", entry=interval_entry("dup")))
    again = run(brain, ScheduleRequest(op="create", name="dup", entry=interval_entry("dup")))
    assert again["status"] == "failed"
    assert again["error"] == "the scheduler already has an entry named 'dup'; nothing was changed"
    missing = run(brain, ScheduleRequest(op="delete", name="nope"))
    assert missing["error"] == "the scheduler has no entry named 'nope'; nothing was changed"
    body = {"id": "bad-1", "command": "schedule", "part": 0, "items": [], "options": {"op": "x"}}
    brain.command(body)
    _, failed = brain.results_of("bad-1", 2)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("invalid schedule request: unknown schedule operation 'x'")


def test_changes_beat_makes_are_reported_at_most_every_poll(agent: Agent, brain: FakeBrain) -> None:
    """A run (last run, count) and an outside change are reported by the poll; nothing else is."""
    wait_report(brain, lambda report: True)
    time.sleep(POLL * 4)
    assert len(reports(brain)) == 1  # unchanged: nothing more
    scheduler = agent.scheduler
    with agent.runtime.store.tick_lock:  # beat sends it: reserve()
        scheduler.schedule["celery.backend_cleanup"] = next(
            scheduler.schedule["celery.backend_cleanup"]
        )
    ran = wait_report(brain, lambda report: report.entries[0].total_run_count == 1)
    assert ran.entries[0].last_run_at is not None
    with agent.runtime.store.tick_lock:
        scheduler.update_from_dict({"added": {"task": "proj.ping", "schedule": 15}})
    added = wait_report(brain, lambda report: len(report.entries) == 2)
    assert added.entries[0].name == "added"
    assert added.entries[0].schedule == IntervalSchedule(every=15, period="seconds")
    assert len(reports(brain)) == 3


def test_beat_sends_a_new_entry_within_seconds_and_the_fire_is_reported(
    agent: Agent, brain: FakeBrain
) -> None:
    """Beat's tick sleeps at most the poll interval, sees the new entry, fires it; reported."""
    scheduler = agent.scheduler
    assert scheduler.max_interval == 300
    assert scheduler.tick() <= POLL
    entry = interval_entry("every-second", schedule=IntervalSchedule(every=1, period="seconds"))
    outcome(run(brain, ScheduleRequest(op="create", name="every-second", entry=entry)))
    beat_until(scheduler, lambda: bool(fires(brain)))
    (fire, *_) = fires(brain)
    assert (fire.schedule, fire.manual, fire.error) == ("every-second", False, None)
    (message,) = drain(QUEUE)
    assert message.headers["id"] == fire.task_id
    assert message.headers["task"] == "proj.add"


def test_a_trigger_is_a_manual_fire(agent: Agent, brain: FakeBrain) -> None:
    """Trigger now sends the task and reports a manual fire with its task id."""
    run(brain, ScheduleRequest(op="create", name="t", entry=interval_entry("t")))
    result = outcome(run(brain, ScheduleRequest(op="trigger", name="t")))
    assert brain.wait_for(lambda: bool(fires(brain)))
    (fire,) = fires(brain)
    assert (fire.schedule, fire.task_id, fire.manual) == ("t", result.task_id, True)
    (message,) = drain(QUEUE)
    assert message.headers["id"] == result.task_id


def test_a_new_session_gets_the_schedule_and_the_last_fires_again(
    agent: Agent, brain: FakeBrain
) -> None:
    """After a reconnect the brain gets the whole schedule and the kept fires once more."""
    run(brain, ScheduleRequest(op="create", name="t", entry=interval_entry("t")))
    run(brain, ScheduleRequest(op="trigger", name="t"))
    assert brain.wait_for(lambda: len(fires(brain)) == 1)
    before = len(reports(brain))
    brain.drop_connections()
    assert brain.wait_for(lambda: len(brain.hellos) == 2)
    assert brain.wait_for(lambda: len(fires(brain)) == 2 and len(reports(brain)) > before)
    first, second = fires(brain)
    assert first == second
    assert reports(brain)[-1] == reports(brain)[before - 1]


def test_a_failed_send_is_a_fire_with_the_error(agent: Agent, brain: FakeBrain) -> None:
    """When beat cannot send an entry's task, the fire says why (and beat goes on)."""
    scheduler = agent.scheduler
    with agent.runtime.store.tick_lock:
        scheduler.update_from_dict(
            {"unsendable": {"task": "proj.add", "schedule": 1, "args": (object(),)}}
        )
    beat_until(scheduler, lambda: bool(fires(brain)))
    (fire, *_) = fires(brain)
    assert fire.schedule == "unsendable"
    assert fire.task_id is None
    assert fire.error is not None
    assert "Couldn't apply scheduled task unsendable" in fire.error


class HomeMadeScheduler(Scheduler):
    """A scheduler z4j does not know: reported read-only."""


def test_an_unknown_scheduler_is_reported_read_only(
    tmp_path: Path, brain: FakeBrain, redis_db: None
) -> None:
    """Its entries are listed; every command fails saying it is read-only in z4j."""
    app = app_with_tasks(Celery("z4j-beat-other", broker=BROKER, set_as_current=False))
    app.conf.beat_schedule = {"listed": {"task": "proj.add", "schedule": 30}}
    service = Service(app, scheduler_cls=HomeMadeScheduler)
    started = Agent(service, brain.url)
    try:
        assert isinstance(started.runtime.store, ReadOnlyScheduleStore)
        report = wait_report(brain, lambda report: True)
        assert (report.kind, report.writable) == (SchedulerKind.OTHER, False)
        assert report.class_path == "tests.beat.test_runtime:HomeMadeScheduler"
        assert [entry.name for entry in report.entries] == ["listed"]
        for request in (
            ScheduleRequest(op="create", name="x", entry=interval_entry("x")),
            ScheduleRequest(op="trigger", name="listed"),
        ):
            failed = run(brain, request)
            assert failed["error"] == (
                "this scheduler (tests.beat.test_runtime:HomeMadeScheduler) is read-only in"
                " z4j: z4j writes to django-celery-beat, RedBeat and Celery's default file"
                " scheduler"
            )
    finally:
        started.close()


def test_the_fire_log_keeps_the_last_200() -> None:
    """Fires beyond the last 200 are forgotten; new ones are handed over once."""
    log = FireLog()
    for n in range(KEPT_FIRES + 5):
        log.record(f"e{n}", task_id=f"t{n}")
    assert len(log.take_new()) == KEPT_FIRES + 5
    assert log.take_new() == []
    kept = log.all()
    assert len(kept) == KEPT_FIRES
    assert kept[0].schedule == "e5"
    assert log.record("x" * 300) is None  # a name no report carries: not reported


def test_a_report_too_large_for_a_frame_refuses_its_largest_entries(
    tmp_path: Path, redis_db: None
) -> None:
    """Entries that would not fit the brain's frame are refused, saying so; the rest is sent."""
    service = beat_service(tmp_path)
    store = store_for(service.scheduler, service.app)
    try:
        now = datetime.now(UTC)
        big = interval_entry("big", args=["x" * 40_000])
        store.create(big)
        store.create(interval_entry("small"))
        report = build_report(store, store.snapshot(now))
        body = fit_report(report, 20_000)
        fitted = SchedulerReport.from_body(body)
        assert [entry.name for entry in fitted.entries] == ["celery.backend_cleanup", "small"]
        (refused,) = fitted.refused
        assert refused.name == "big"
        assert refused.reason.startswith("too large to report (")
        assert fit_report(report, 1_000_000) == report.to_body()
    finally:
        service.scheduler.close()


def test_fires_are_read_back_as_the_brain_reads_them() -> None:
    """A fire's frame body is what the brain parses (ids unique, times in UTC)."""
    log = FireLog()
    log.record("a", task_id="t1")
    log.record("a", error="boom", manual=True)
    body = ScheduleFire.body(log.all())
    first, second = ScheduleFire.from_body(body)
    assert first.id != second.id
    assert (second.error, second.manual, second.task_id) == ("boom", True, None)
    assert abs(first.fired_at - datetime.now(UTC)) < timedelta(seconds=5)
