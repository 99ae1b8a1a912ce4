"""RedBeat: the contract, entries made with RedBeat's API, and the restart rule of its statics.

A real ``RedBeatScheduler`` on Redis database 12 (its entries and the broker),
built as beat builds it; entries are read back with RedBeat's own
``RedBeatSchedulerEntry.from_key``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab
from celery.schedules import schedule as interval
from redbeat import RedBeatScheduler
from redbeat.schedulers import RedBeatSchedulerEntry, get_redis
from redbeat.schedules import rrule

from z4j_agent_celery.config import AgentConfig
from z4j_agent_celerybeat.config import BeatConfig
from z4j_agent_celerybeat.errors import ScheduleError
from z4j_agent_celerybeat.redbeat_store import RedBeatScheduleStore
from z4j_agent_celerybeat.runtime import BeatRuntime
from z4j_agent_celerybeat.store import store_for
from z4j_domain.beat import SchedulerKind
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    SolarSchedule,
)

from .beat import BROKER, drain
from .contract import (
    Backend,
    StoreContract,
    app_with_tasks,
    assert_holds,
    crontab_entry,
    interval_entry,
    request,
)


class RedBeatBackend(Backend):
    """A ``RedBeatScheduler`` with a key prefix of its own."""

    def __init__(self, **conf: Any) -> None:
        app = Celery("z4j-beat-redbeat", broker=BROKER, set_as_current=False)
        app.conf.update(
            timezone="UTC",
            redbeat_redis_url=BROKER,
            redbeat_key_prefix=f"z4j-test-{uuid.uuid4().hex[:8]}:",
            redbeat_lock_key=None,  # no lock: beat_init (which takes it) does not run here
            **conf,
        )
        self.app = app_with_tasks(app)
        self.open()

    def open(self) -> None:
        self.scheduler = RedBeatScheduler(app=self.app)
        store = store_for(self.scheduler, self.app)
        assert isinstance(store, RedBeatScheduleStore)
        self.store = store
        store.attach()

    def key(self, name: str) -> str:
        return str(RedBeatSchedulerEntry.generate_key(self.app, name))

    def read_back(self, name: str) -> Any | None:
        try:
            return RedBeatSchedulerEntry.from_key(self.key(name), app=self.app)
        except KeyError:
            return None

    def scheduled(self, name: str) -> bool:
        entry = self.read_back(name)
        in_set = get_redis(self.app).zscore(self.app.redbeat_conf.schedule_key, self.key(name))
        return entry is not None and bool(entry.enabled) and in_set is not None

    def run_once(self, name: str) -> None:
        entry = self.read_back(name)
        assert entry is not None
        next(entry)  # what RedBeat does when beat sends it: the meta is written

    def runs(self, name: str) -> tuple[datetime | None, int]:
        entry = self.read_back(name)
        assert entry is not None
        return entry.last_run_at, entry.total_run_count

    def outside_create(self, name: str, task: str) -> None:
        RedBeatSchedulerEntry(
            name, task, interval(timedelta(seconds=30)), args=[1], app=self.app
        ).save()

    def outside_unexpressible(self) -> tuple[str, str]:
        RedBeatSchedulerEntry("rrule", "proj.ping", rrule("MINUTELY"), app=self.app).save()
        return "rrule", "redbeat.schedules:rrule, which z4j cannot show or edit"


@pytest.fixture
def redbeat_backend(redis_db: None) -> Iterator[RedBeatBackend]:
    backend = RedBeatBackend()
    yield backend
    backend.scheduler.close()


class TestRedBeat(StoreContract):
    """The contract on RedBeat."""

    @pytest.fixture
    def backend(self, redbeat_backend: RedBeatBackend) -> RedBeatBackend:
        return redbeat_backend


def test_the_store_reports_redbeat(redbeat_backend: RedBeatBackend) -> None:
    """RedBeatScheduler is the writable RedBeat store; its note gives the restart rule."""
    store = redbeat_backend.store
    assert (store.kind, store.writable) == (SchedulerKind.REDBEAT, True)
    assert store.class_path == "redbeat.schedulers:RedBeatScheduler"
    assert "written over from it each time beat starts" in store.note


def test_what_redbeat_cannot_hold_fails_clearly(redbeat_backend: RedBeatBackend) -> None:
    """Solar, clocked, one-off and other-timezone entries fail naming why; none is written."""
    run = redbeat_backend.executor().apply
    cases = [
        (
            interval_entry("sun", schedule=SolarSchedule(event="sunset", latitude=1, longitude=2)),
            "cannot store solar schedules",
        ),
        (
            interval_entry(
                "clock",
                schedule=ClockedSchedule(clocked_time=datetime(2031, 1, 1, tzinfo=UTC)),
                one_off=True,
            ),
            "has no one-off entries",
        ),
        (interval_entry("once", one_off=True), "has no one-off entries"),
        (
            crontab_entry("tokyo", schedule=CrontabSchedule(minute="0", timezone="Asia/Tokyo")),
            "beat's timezone (UTC)",
        ),
    ]
    for entry, reason in cases:
        with pytest.raises(ScheduleError) as failed:
            run(request("create", entry.name, entry))
        assert reason in str(failed.value)
        assert redbeat_backend.read_back(entry.name) is None


def test_a_description_is_not_kept_and_the_outcome_says_so(
    redbeat_backend: RedBeatBackend,
) -> None:
    """RedBeat has no description: the entry is saved without it, with a warning."""
    entry = interval_entry("described", description="nightly report")
    result = redbeat_backend.executor().apply(request("create", "described", entry))
    assert list(result.warnings) == ["RedBeat keeps no description; it was not saved"]
    assert result.entry is not None
    assert result.entry.description == ""


def test_changes_to_static_entries_warn_they_last_until_a_restart(redis_db: None) -> None:
    """RedBeat rewrites beat_schedule's entries at start-up: the outcome says so, and it does."""
    backend = RedBeatBackend(
        beat_schedule={"nightly": {"task": "proj.add", "schedule": crontab(minute="0", hour="3")}}
    )
    try:
        edited = interval_entry("nightly")
        result = backend.executor().apply(request("update", "nightly", edited))
        assert list(result.warnings) == [
            "this change will be undone when beat restarts: 'nightly' is in the Celery app's"
            " beat_schedule setting, which RedBeat writes over its entry at start-up;"
            " change it there to keep it"
        ]
        assert_holds(backend, edited)
        backend.scheduler.close()
        backend.open()  # beat restarts
        held = backend.read_back("nightly")
        assert held is not None
        assert held.schedule == crontab(minute="0", hour="3")
    finally:
        backend.scheduler.close()


def test_beat_sends_a_new_entry_without_a_restart(
    redbeat_backend: RedBeatBackend, brain_settings: Any
) -> None:
    """An entry created through z4j is sent by the running scheduler's next ticks, as a fire."""
    runtime = BeatRuntime(
        BeatConfig(agent=brain_settings, poll_interval=0.5),
        store=redbeat_backend.store,
        app=redbeat_backend.app,
    )
    runtime.attach(redbeat_backend.scheduler)
    assert redbeat_backend.scheduler.tick() <= 0.5  # RedBeat alone would sleep 5 minutes
    entry = interval_entry("soon", schedule=IntervalSchedule(every=1, period="seconds"))
    runtime.executor.apply(request("create", "soon", entry))
    deadline = datetime.now(UTC) + timedelta(seconds=15)
    while not runtime.fires.all() and datetime.now(UTC) < deadline:
        redbeat_backend.scheduler.tick()
    (fire,) = runtime.fires.all()[:1]
    assert (fire.schedule, fire.manual, fire.error) == ("soon", False, None)
    (message,) = drain("z4j-beat-contract")
    assert message.headers["id"] == fire.task_id
    assert redbeat_backend.runs("soon")[1] >= 1


@pytest.fixture
def brain_settings() -> AgentConfig:
    """Settings for a runtime that never connects (its transport is not started)."""
    return AgentConfig(
        brain_url="http://127.0.0.1:9", token="t", hmac_secret="s", agent_name="beat-test"
    )
