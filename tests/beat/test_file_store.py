"""Celery's default file scheduler: the contract, and what survives a beat restart.

A real ``PersistentScheduler`` on a shelve file in ``tmp_path``, built as
beat builds it (``schedule_filename``, not lazy: Celery merges the app's
``beat_schedule`` into the file on start). A "restart" closes it and builds a
new one on the same file; the shelve is also opened directly to check what
was written.
"""

from __future__ import annotations

import shelve
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.beat import PersistentScheduler
from celery.schedules import crontab, schedule, solar

from z4j_agent_celerybeat.errors import ScheduleError
from z4j_agent_celerybeat.file_store import CHANGES_KEY, FileScheduleStore
from z4j_agent_celerybeat.store import store_for
from z4j_domain.beat import SchedulerKind
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    SolarSchedule,
)

from .beat import BROKER
from .contract import (
    Backend,
    StoreContract,
    app_with_tasks,
    assert_holds,
    crontab_entry,
    definition,
    interval_entry,
    request,
)

STATIC = {
    "static-nightly": {
        "task": "proj.add",
        "schedule": crontab(minute="0", hour="3"),
        "args": (1, 2),
    }
}


class CustomSchedule(schedule):
    """A schedule class of the application's own: z4j cannot know what it means."""


class FileBackend(Backend):
    """A ``PersistentScheduler`` on ``path``; :meth:`restart` is a beat restart."""

    def __init__(self, path: Path, app: Any) -> None:
        self.path = path
        self.app = app
        self.open()

    def open(self) -> None:
        self.scheduler = PersistentScheduler(app=self.app, schedule_filename=str(self.path))
        store = store_for(self.scheduler, self.app)
        assert isinstance(store, FileScheduleStore)
        self.store = store
        store.attach()

    def restart(self) -> None:
        self.scheduler.close()
        self.open()

    def read_back(self, name: str) -> Any | None:
        return self.scheduler.schedule.get(name)

    def scheduled(self, name: str) -> bool:
        return name in self.scheduler.schedule

    def run_once(self, name: str) -> None:
        with self.store.tick_lock:  # what beat's reserve() does when it sends the entry
            self.scheduler.schedule[name] = next(self.scheduler.schedule[name])
            self.scheduler.sync()

    def runs(self, name: str) -> tuple[datetime | None, int]:
        entry = self.scheduler.schedule[name]
        return entry.last_run_at, entry.total_run_count

    def outside_create(self, name: str, task: str) -> None:
        with self.store.tick_lock:
            self.scheduler.update_from_dict(
                {name: {"task": task, "schedule": timedelta(seconds=30)}}
            )

    def outside_unexpressible(self) -> tuple[str, str]:
        with self.store.tick_lock:
            self.scheduler.update_from_dict(
                {"custom": {"task": "proj.add", "schedule": CustomSchedule(10)}}
            )
        return "custom", "test_file_store:CustomSchedule, which z4j cannot show or edit"

    def close(self) -> None:
        self.scheduler.close()


def file_app(**conf: Any) -> Celery:
    app = Celery("z4j-beat-file", broker=BROKER, set_as_current=False)
    app.conf.update(timezone="UTC", **conf)
    return app_with_tasks(app)


@pytest.fixture
def file_backend(tmp_path: Path, redis_db: None) -> Iterator[FileBackend]:
    backend = FileBackend(tmp_path / "celerybeat-schedule", file_app())
    yield backend
    backend.close()


class TestFileScheduler(StoreContract):
    """The contract on Celery's default scheduler."""

    @pytest.fixture
    def backend(self, file_backend: FileBackend) -> FileBackend:
        return file_backend


@pytest.fixture
def static_backend(tmp_path: Path, redis_db: None) -> Iterator[FileBackend]:
    """A scheduler whose app has one ``beat_schedule`` entry, ``static-nightly``."""
    backend = FileBackend(tmp_path / "celerybeat-schedule", file_app(beat_schedule=dict(STATIC)))
    yield backend
    backend.close()


def test_the_store_reports_celerys_file_scheduler(file_backend: FileBackend) -> None:
    """Celery's PersistentScheduler is the writable file store; its note says what survives."""
    store = file_backend.store
    assert (store.kind, store.writable) == (SchedulerKind.FILE, True)
    assert store.class_path == "celery.beat:PersistentScheduler"
    assert store.timezone == "UTC"
    assert "applied again each time beat starts" in store.note
    assert "the setting wins" in store.note


def test_static_entries_and_refusals_are_reported(tmp_path: Path, redis_db: None) -> None:
    """The setting's entries are listed; what z4j cannot express is refused with why."""
    app = file_app(
        beat_schedule={
            "nightly": {"task": "proj.add", "schedule": crontab(minute="0", hour="3")},
            "every-minute": {"task": "proj.ping", "schedule": 60.0, "args": (1,)},
            "sunrise": {"task": "proj.ping", "schedule": solar("sunrise", 52.5, 13.4)},
            "custom": {"task": "proj.ping", "schedule": CustomSchedule(5)},
            "relative": {"task": "proj.ping", "schedule": schedule(60, relative=True)},
            "a-date-arg": {
                "task": "proj.ping",
                "schedule": 30,
                "args": (datetime(2024, 1, 1, tzinfo=UTC),),
            },
            "not-a-queue": {"task": "proj.ping", "schedule": 30, "options": {"priority": 900}},
        }
    )
    backend = FileBackend(tmp_path / "schedule", app)
    try:
        snapshot = backend.store.snapshot(datetime.now(UTC))
        shown = {entry.name: entry for entry in snapshot.entries}
        assert shown["nightly"].schedule == CrontabSchedule(minute="0", hour="3")
        assert shown["every-minute"].args == [1]
        assert shown["sunrise"].schedule == SolarSchedule(
            event="sunrise", latitude=52.5, longitude=13.4
        )
        sunrise_next = shown["sunrise"].next_run_at
        assert sunrise_next is not None
        assert sunrise_next - datetime.now(UTC) < timedelta(days=2)
        refused = {item.name: item.reason for item in snapshot.refused}
        assert set(refused) == {"custom", "relative", "a-date-arg", "not-a-queue"}
        assert "CustomSchedule, which z4j cannot show or edit" in refused["custom"]
        assert "relative interval" in refused["relative"]
        assert "args[0]: a datetime is not a JSON value" in refused["a-date-arg"]
        assert refused["not-a-queue"].startswith("options.priority:")
    finally:
        backend.close()


def test_a_created_entry_is_in_the_shelve_file(file_backend: FileBackend) -> None:
    """After a change the file itself holds the entry (the scheduler's sync wrote it)."""
    entry = crontab_entry()
    file_backend.executor().apply(request("create", entry.name, entry))
    file_backend.scheduler.close()
    with shelve.open(str(file_backend.path)) as shelf:  # noqa: S301 - our own test file
        held = shelf["entries"][entry.name]
        assert (held.task, list(held.args), held.options["queue"]) == (
            entry.task,
            entry.args,
            entry.options.queue,
        )
        assert CHANGES_KEY in shelf
    file_backend.open()


def test_z4j_changes_survive_a_restart(file_backend: FileBackend) -> None:
    """Entries created, edited, disabled and deleted in z4j stay so when beat restarts."""
    run = file_backend.executor().apply
    kept, off, gone = interval_entry("kept"), crontab_entry("off"), interval_entry("gone")
    for entry in (kept, off, gone):
        run(request("create", entry.name, entry))
    run(request("disable", "off"))
    run(request("delete", "gone"))
    file_backend.run_once("kept")
    last_run, _ = file_backend.runs("kept")
    file_backend.restart()
    assert_holds(file_backend, kept)
    assert file_backend.runs("kept") == (last_run, 1)
    assert not file_backend.scheduled("off")
    assert file_backend.read_back("gone") is None
    snapshot = file_backend.store.snapshot(datetime.now(UTC))
    assert sorted(entry.name for entry in snapshot.entries) == [
        "celery.backend_cleanup",
        "kept",
        "off",
    ]
    listed = snapshot.get("off")
    assert listed is not None
    assert not listed.enabled
    file_backend.executor().apply(request("enable", "off"))  # the new beat's store
    assert_holds(file_backend, off)


def test_a_description_is_kept(file_backend: FileBackend) -> None:
    """Celery's entries have no description: z4j keeps it, across a restart."""
    entry = interval_entry("described", description="sends the nightly report")
    result = file_backend.executor().apply(request("create", "described", entry))
    assert definition(result.entry) == definition(entry)
    file_backend.restart()
    listed = file_backend.store.snapshot(datetime.now(UTC)).get("described")
    assert listed is not None
    assert listed.description == "sends the nightly report"


def test_changes_to_the_settings_entries_survive_until_the_setting_changes(
    static_backend: FileBackend, beat_log: Any
) -> None:
    """An edit of a beat_schedule entry is applied again at restart, until the setting changes."""
    edited = interval_entry("static-nightly", args=[7])
    result = static_backend.executor().apply(request("update", "static-nightly", edited))
    assert any("applies this change again each time beat starts" in w for w in result.warnings)
    static_backend.restart()
    assert_holds(static_backend, edited)
    # Celery alone would have put the setting back:
    assert static_backend.store.restored_warnings == []
    static_backend.app.conf.beat_schedule = {
        "static-nightly": {**STATIC["static-nightly"], "args": (5, 5)}
    }
    static_backend.restart()
    held = static_backend.read_back("static-nightly")
    assert held is not None
    assert list(held.args) == [5, 5]
    assert "the setting wins" in static_backend.store.note
    assert "The beat_schedule setting of 'static-nightly' changed" in static_backend.store.note
    assert (
        "WARNING:z4j.celerybeat.file_store:z4j beat agent: The beat_schedule setting of"
        " 'static-nightly' changed since it was changed in z4j" in beat_log.getvalue()
    )
    static_backend.restart()
    assert static_backend.store.restored_warnings == []  # the dropped change is forgotten


def test_a_deleted_setting_entry_stays_deleted(static_backend: FileBackend) -> None:
    """Deleting a beat_schedule entry holds across restarts (Celery would bring it back)."""
    result = static_backend.executor().apply(request("delete", "static-nightly"))
    assert result.warnings
    static_backend.restart()
    assert static_backend.read_back("static-nightly") is None


def test_what_the_file_scheduler_cannot_hold_fails_clearly(file_backend: FileBackend) -> None:
    """Other timezones, clocked and one-off entries are refused, naming why; nothing changes."""
    run = file_backend.executor().apply
    berlin = crontab_entry(schedule=CrontabSchedule(minute="0", timezone="Europe/Berlin"))
    with pytest.raises(ScheduleError, match=r"beat's timezone \(UTC\), not per entry"):
        run(request("create", berlin.name, berlin))
    clocked = interval_entry(
        "once",
        schedule=ClockedSchedule(clocked_time=datetime(2030, 1, 1, tzinfo=UTC)),
        one_off=True,
    )
    with pytest.raises(ScheduleError, match="has no one-off entries"):
        run(request("create", "once", clocked))
    one_off = interval_entry("once", one_off=True)
    with pytest.raises(ScheduleError, match="has no one-off entries"):
        run(request("create", "once", one_off))
    names = [entry.name for entry in file_backend.store.snapshot(datetime.now(UTC)).entries]
    assert names == ["celery.backend_cleanup"]


def test_a_solar_entry_can_be_written(file_backend: FileBackend) -> None:
    """Solar schedules are Celery's own: the file scheduler holds them."""
    entry = interval_entry(
        "dawn", schedule=SolarSchedule(event="dawn_civil", latitude=-33.87, longitude=151.21)
    )
    result = file_backend.executor().apply(request("create", "dawn", entry))
    assert definition(result.entry) == definition(entry)
    held = file_backend.read_back("dawn")
    assert held is not None
    assert (held.schedule.event, held.schedule.lat, held.schedule.lon) == (
        "dawn_civil",
        -33.87,
        151.21,
    )


def test_changes_after_beat_closed_the_schedule_fail(file_backend: FileBackend) -> None:
    """Once beat closed its schedule (shutting down), a change fails saying so."""
    file_backend.scheduler.close()
    with pytest.raises(ScheduleError, match="beat is shutting down"):
        file_backend.executor().apply(request("create", "late", interval_entry("late")))
    file_backend.open()
