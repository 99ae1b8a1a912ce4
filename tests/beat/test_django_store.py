"""django-celery-beat: the contract, its four schedule kinds, reused rows, admin changes.

A real ``DatabaseScheduler`` on a migrated SQLite file (see ``conftest.py``),
built as beat builds it. Entries are read back through a new
``DatabaseScheduler`` (what a restarted beat would load) and the models.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab

from z4j_agent_celerybeat.errors import ScheduleError
from z4j_agent_celerybeat.store import store_for
from z4j_domain.beat import SchedulerKind
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    EntryOptions,
    IntervalSchedule,
    SolarSchedule,
)

from .beat import BROKER
from .contract import (
    Backend,
    StoreContract,
    app_with_tasks,
    assert_holds,
    definition,
    interval_entry,
    request,
)


class DjangoBackend(Backend):
    """A ``DatabaseScheduler`` of ``app`` on the test database."""

    def __init__(self, app: Any) -> None:
        from django_celery_beat.schedulers import DatabaseScheduler

        from z4j_agent_celerybeat.django_store import DjangoScheduleStore

        self.app = app
        self.scheduler = DatabaseScheduler(app=app)
        # Its first reads set what later changes are compared with (as beat's first ticks do).
        self.scheduler.schedule  # noqa: B018
        self.scheduler.schedule  # noqa: B018
        store = store_for(self.scheduler, app)
        assert isinstance(store, DjangoScheduleStore)
        self.store = store
        store.attach()

    def read_back(self, name: str) -> Any | None:
        """The entry a newly started beat builds from the row (django-celery-beat's ModelEntry).

        A new ``DatabaseScheduler`` loads the same, but only the crontabs whose hour is
        near the current one.
        """
        from django_celery_beat.models import PeriodicTask
        from django_celery_beat.schedulers import ModelEntry

        row = PeriodicTask.objects.enabled().filter(name=name).first()
        return None if row is None else ModelEntry(row, app=self.app)

    def scheduled(self, name: str) -> bool:
        from django_celery_beat.models import PeriodicTask

        return bool(PeriodicTask.objects.enabled().filter(name=name).exists())

    def run_once(self, name: str) -> None:
        # What beat does when it sends the entry: reserve (in memory), then sync (to the row).
        self.scheduler.reserve(self.scheduler.schedule[name])
        self.scheduler.sync()

    def runs(self, name: str) -> tuple[datetime | None, int]:
        from django_celery_beat.models import PeriodicTask

        row = PeriodicTask.objects.get(name=name)
        return row.last_run_at, row.total_run_count

    def outside_create(self, name: str, task: str) -> None:
        from django_celery_beat.models import IntervalSchedule as Interval
        from django_celery_beat.models import PeriodicTask

        every, _ = Interval.objects.get_or_create(every=30, period=Interval.SECONDS)
        PeriodicTask.objects.create(name=name, task=task, interval=every)

    def outside_unexpressible(self) -> tuple[str, str]:
        from django_celery_beat.models import CrontabSchedule as Crontab
        from django_celery_beat.models import PeriodicTask

        bad = Crontab.objects.create(minute="61", hour="*")
        PeriodicTask.objects.create(name="bad-minute", task="proj.add", crontab=bad)
        return "bad-minute", "its crontab schedule is not valid: minute: 61 is out of range"


def django_app(**conf: Any) -> Celery:
    app = Celery("z4j-beat-django", broker=BROKER, set_as_current=False)
    app.conf.update(timezone="UTC", **conf)
    return app_with_tasks(app)


@pytest.fixture
def django_backend(django_db: None, redis_db: None) -> Iterator[DjangoBackend]:
    backend = DjangoBackend(django_app())
    yield backend
    backend.scheduler.close()


class TestDjangoCeleryBeat(StoreContract):
    """The contract on django-celery-beat."""

    @pytest.fixture
    def backend(self, django_backend: DjangoBackend) -> DjangoBackend:
        return django_backend


def test_the_store_reports_django_celery_beat(django_backend: DjangoBackend) -> None:
    """DatabaseScheduler is the writable Django store; its note gives the restart rule."""
    store = django_backend.store
    assert (store.kind, store.writable) == (SchedulerKind.DJANGO, True)
    assert store.class_path == "django_celery_beat.schedulers:DatabaseScheduler"
    assert "written over from it each time beat starts" in store.note


def test_every_schedule_kind_with_its_own_row(django_backend: DjangoBackend) -> None:
    """Crontab (with its timezone), interval, solar and clocked entries are written as rows."""
    from django_celery_beat import models

    run = django_backend.executor().apply
    entries = [
        interval_entry(
            "berlin",
            schedule=CrontabSchedule(minute="30", hour="6", timezone="Europe/Berlin"),
            description="mornings in Berlin",
        ),
        interval_entry("minutes", schedule=IntervalSchedule(every=90, period="minutes")),
        interval_entry(
            "sydney-dawn",
            schedule=SolarSchedule(event="dawn_civil", latitude=-33.868820, longitude=151.2093),
        ),
        interval_entry(
            "new-year",
            schedule=ClockedSchedule(clocked_time=datetime(2031, 1, 1, tzinfo=UTC)),
            one_off=True,
        ),
    ]
    for entry in entries:
        result = run(request("create", entry.name, entry))
        assert definition(result.entry) == definition(entry)
    berlin = models.PeriodicTask.objects.get(name="berlin")
    assert (berlin.crontab.minute, berlin.crontab.hour) == ("30", "6")
    assert berlin.crontab.timezone == ZoneInfo("Europe/Berlin")
    assert berlin.description == "mornings in Berlin"
    minutes = models.PeriodicTask.objects.get(name="minutes")
    assert (minutes.interval.every, minutes.interval.period) == (90, "minutes")
    dawn = models.PeriodicTask.objects.get(name="sydney-dawn")
    assert (dawn.solar.event, float(dawn.solar.latitude)) == ("dawn_civil", -33.86882)
    clocked = models.PeriodicTask.objects.get(name="new-year")
    assert clocked.clocked.clocked_time == datetime(2031, 1, 1, tzinfo=UTC)
    assert clocked.one_off
    loaded = django_backend.read_back("berlin")
    assert loaded is not None
    assert loaded.schedule.tz == ZoneInfo("Europe/Berlin")
    assert loaded.options["queue"] == "z4j-beat-contract"
    assert loaded.options["expires"] == 60
    # django-celery-beat's own JSON columns and option columns:
    assert (berlin.args, berlin.kwargs) == ("[1, 2]", '{"z": 3}')
    assert (berlin.queue, berlin.priority, berlin.expire_seconds) == ("z4j-beat-contract", 5, 60)


def test_identical_schedule_rows_are_reused(django_backend: DjangoBackend) -> None:
    """Two entries with the same schedule share its row; no duplicates pile up."""
    from django_celery_beat import models

    run = django_backend.executor().apply
    every = IntervalSchedule(every=45, period="seconds")
    cron = CrontabSchedule(minute="5", hour="*/2", timezone="America/New_York")
    for name in ("one", "two"):
        run(request("create", f"{name}-i", interval_entry(f"{name}-i", schedule=every)))
        run(request("create", f"{name}-c", interval_entry(f"{name}-c", schedule=cron)))
    run(request("update", "one-i", interval_entry("one-i", schedule=cron)))
    assert models.IntervalSchedule.objects.filter(every=45).count() == 1
    assert models.CrontabSchedule.objects.filter(minute="5").count() == 1
    first, second = (models.PeriodicTask.objects.get(name=n) for n in ("one-c", "two-c"))
    assert first.crontab_id == second.crontab_id
    assert models.PeriodicTask.objects.get(name="one-i").crontab_id == first.crontab_id


def test_a_change_marks_periodic_tasks_changed_for_beat(django_backend: DjangoBackend) -> None:
    """Every change moves PeriodicTasks.last_change, so the running beat reloads."""
    from django_celery_beat.models import PeriodicTasks

    run = django_backend.executor().apply
    scheduler = django_backend.scheduler
    for op, entry, loaded in (
        ("create", interval_entry("tracked"), True),
        ("update", interval_entry("tracked", args=[5]), True),
        ("disable", None, False),
        ("enable", None, True),
        ("delete", None, False),
    ):
        before = PeriodicTasks.last_change()
        run(request(op, "tracked", entry))
        assert PeriodicTasks.last_change() > before, op
        assert ("tracked" in scheduler.schedule) is loaded, op  # beat's own reload
    assert list(scheduler.schedule) == ["celery.backend_cleanup"]


def test_changes_in_the_admin_show_up(django_backend: DjangoBackend) -> None:
    """A row changed with the ORM (as the admin does) is reported changed at the next read."""
    from django_celery_beat.models import PeriodicTask

    run = django_backend.executor().apply
    run(request("create", "admin-edit", interval_entry("admin-edit")))
    store = django_backend.store
    assert store.snapshot(datetime.now(UTC)).get("admin-edit") is not None
    row = PeriodicTask.objects.get(name="admin-edit")
    row.args = "[42]"
    row.enabled = False
    row.save()
    listed = store.snapshot(datetime.now(UTC)).get("admin-edit")
    assert listed is not None
    assert (listed.args, listed.enabled) == ([42], False)
    row.delete()
    assert store.snapshot(datetime.now(UTC)).get("admin-edit") is None


def test_rows_z4j_cannot_express_are_refused(django_backend: DjangoBackend) -> None:
    """Invalid JSON arguments, and a row without a schedule, are refused with the reason."""
    from django_celery_beat import models

    every, _ = models.IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    models.PeriodicTask.objects.create(
        name="bad-json", task="proj.add", interval=every, args="[1, oops]"
    )
    orphan = models.PeriodicTask.objects.create(name="orphan", task="proj.add", interval=every)
    models.PeriodicTask.objects.filter(pk=orphan.pk).update(interval=None)
    models.PeriodicTasks.update_changed()
    refused = {
        item.name: item.reason for item in django_backend.store.snapshot(datetime.now(UTC)).refused
    }
    assert refused["bad-json"].startswith("its args are not valid JSON")
    assert refused["orphan"] == "it has no schedule (crontab, interval, solar or clocked)"


def test_runs_come_from_beats_memory_when_it_is_ahead(django_backend: DjangoBackend) -> None:
    """Beat writes runs to the rows every few minutes; the report reads its memory meanwhile."""
    django_backend.executor().apply(request("create", "busy", interval_entry("busy")))
    scheduler = django_backend.scheduler
    scheduler.reserve(scheduler.schedule["busy"])  # sent, not yet synced to the row
    assert django_backend.runs("busy") == (None, 0)
    listed = django_backend.store.snapshot(datetime.now(UTC)).get("busy")
    assert listed is not None
    assert listed.total_run_count == 1
    assert listed.last_run_at is not None
    assert abs(listed.last_run_at - datetime.now(UTC)) < timedelta(seconds=30)


def test_static_entries_warn_their_edit_lasts_until_a_restart(
    django_db: None, redis_db: None
) -> None:
    """django-celery-beat rewrites beat_schedule's rows at start-up: the outcome says so."""
    app = django_app(
        beat_schedule={"nightly": {"task": "proj.add", "schedule": crontab(minute="0", hour="3")}}
    )
    backend = DjangoBackend(app)
    edited = interval_entry("nightly", options=EntryOptions())
    result = backend.executor().apply(request("update", "nightly", edited))
    assert any("undone when beat restarts: 'nightly'" in warning for warning in result.warnings)
    assert_holds(backend, edited)
    backend.scheduler.close()
    restarted = DjangoBackend(app)
    held = restarted.read_back("nightly")
    assert held is not None
    assert held.schedule == crontab(minute="0", hour="3")
    restarted.scheduler.close()


def test_a_fractional_expiry_is_rounded_with_a_warning(django_backend: DjangoBackend) -> None:
    """expire_seconds is whole seconds: 2.5 is stored as 2, and the outcome says so."""
    entry = interval_entry("rounded", options=EntryOptions(expires=2.5))
    result = django_backend.executor().apply(request("create", "rounded", entry))
    assert result.warnings == ("django-celery-beat keeps expires in whole seconds: 2 was stored",)
    assert result.entry is not None
    assert result.entry.options.expires == 2.0


def test_an_unknown_entry_fails_every_operation(django_backend: DjangoBackend) -> None:
    """Update, delete, enable, disable and trigger of a missing entry fail naming it."""
    run = django_backend.executor().apply
    for op in ("delete", "enable", "disable", "trigger"):
        with pytest.raises(ScheduleError, match="no entry named 'ghost'"):
            run(request(op, "ghost"))
