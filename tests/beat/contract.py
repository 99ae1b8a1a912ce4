"""The contract every writable scheduler store keeps, run against each real scheduler.

A test module subclasses :class:`StoreContract` and provides the ``backend``
fixture: a :class:`Backend` around a real scheduler instance (built the way
beat builds it), which reads entries back through the scheduler's **own** API
(its in-memory schedule, RedBeat's ``from_key``, a new ``DatabaseScheduler``),
so a check never goes through the code under test. Every change goes through
the :class:`~z4j_agent_celerybeat.actions.ScheduleExecutor`, as a command
from the brain does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from z4j_agent_celerybeat.actions import ScheduleExecutor
from z4j_agent_celerybeat.errors import ScheduleError
from z4j_agent_celerybeat.fires import FireLog
from z4j_agent_celerybeat.store import ScheduleStore
from z4j_domain.beat import ScheduleOutcome, ScheduleRequest
from z4j_domain.schedules import (
    CrontabSchedule,
    EntryOptions,
    IntervalSchedule,
    Schedule,
    ScheduleEntry,
    entry_to_dict,
)

from .beat import drain

#: The queue the contract's entries publish to.
QUEUE = "z4j-beat-contract"
#: Tasks every backend's app registers.
TASKS = ("proj.add", "proj.ping")


class Backend:
    """One real scheduler and how to look at it without z4j."""

    app: Any
    scheduler: Any
    store: ScheduleStore

    def executor(self, fires: FireLog | None = None) -> ScheduleExecutor:
        """The agent's executor over this scheduler's store."""
        return ScheduleExecutor(self.store, self.app, fires=fires or FireLog())

    def read_back(self, name: str) -> Any | None:
        """The entry as the scheduler holds it (task, schedule, args, kwargs, options)."""
        raise NotImplementedError

    def scheduled(self, name: str) -> bool:
        """Whether beat would send the entry (it exists and is enabled)."""
        raise NotImplementedError

    def run_once(self, name: str) -> None:
        """Record one run of the entry, as beat does when it sends it."""
        raise NotImplementedError

    def runs(self, name: str) -> tuple[datetime | None, int]:
        """The entry's last run and run count, as the scheduler keeps them."""
        raise NotImplementedError

    def outside_create(self, name: str, task: str) -> None:
        """Add an entry (every 30 seconds) the way users do without z4j."""
        raise NotImplementedError

    def outside_unexpressible(self) -> tuple[str, str]:
        """Add an entry z4j cannot show; its name and a fragment of the expected reason."""
        raise NotImplementedError


def _task(*args: Any, **kwargs: Any) -> None:
    """What the contract's tasks do: nothing (no worker runs them)."""


def app_with_tasks(app: Any) -> Any:
    """Register the contract's tasks on ``app``."""
    for name in TASKS:
        app.task(name=name)(_task)
    return app


def interval_entry(name: str = "every-10s", **fields: Any) -> ScheduleEntry:
    values: dict[str, Any] = {
        "task": "proj.add",
        "schedule": IntervalSchedule(every=10, period="seconds"),
        "args": [1, 2],
        "kwargs": {"z": 3},
        "options": EntryOptions(queue=QUEUE, priority=5, expires=60),
    }
    values.update(fields)
    return ScheduleEntry(name=name, **values)


def crontab_entry(name: str = "office-hours", **fields: Any) -> ScheduleEntry:
    values: dict[str, Any] = {
        "task": "proj.ping",
        "schedule": CrontabSchedule(minute="*/15", hour="8-18", day_of_week="mon-fri"),
        "args": ["a", {"b": [1, 2.5, None]}],
        "kwargs": {"flag": True},
        "options": EntryOptions(
            queue=QUEUE, routing_key="contract.key", exchange="contract-ex", priority=1
        ),
    }
    values.update(fields)
    return ScheduleEntry(name=name, **values)


def definition(entry: ScheduleEntry | None) -> dict[str, Any] | None:
    """What a change sets: the entry without what beat reports (runs, next run)."""
    if entry is None:
        return None
    plain = entry_to_dict(attrs.evolve(entry, last_run_at=None, total_run_count=0))
    plain.pop("next_run_at")
    return plain


def same_schedule(held: Any, schedule: Schedule) -> bool:
    """Whether a Celery schedule object is ``schedule`` (read from its own attributes)."""
    if isinstance(schedule, IntervalSchedule):
        return held.run_every == schedule.delta
    assert isinstance(schedule, CrontabSchedule)
    return [
        str(held._orig_minute),
        str(held._orig_hour),
        str(held._orig_day_of_week),
        str(held._orig_day_of_month),
        str(held._orig_month_of_year),
    ] == [
        schedule.minute,
        schedule.hour,
        schedule.day_of_week,
        schedule.day_of_month,
        schedule.month_of_year,
    ]


def assert_holds(backend: Backend, entry: ScheduleEntry) -> None:
    """The scheduler, read through its own API, holds exactly ``entry``."""
    held = backend.read_back(entry.name)
    assert held is not None, f"{entry.name!r} is not in the scheduler"
    assert held.task == entry.task
    assert same_schedule(held.schedule, entry.schedule)
    assert list(held.args) == entry.args
    assert dict(held.kwargs) == entry.kwargs
    options = entry.options
    for key in ("queue", "routing_key", "exchange", "priority", "expires"):
        value = getattr(options, key)
        assert held.options.get(key) == value, (key, held.options)


def request(op: str, name: str, entry: ScheduleEntry | None = None) -> ScheduleRequest:
    return ScheduleRequest(op=op, name=name, entry=entry)


def now() -> datetime:
    return datetime.now(UTC)


class StoreContract:
    """What every writable scheduler does with z4j's commands; subclasses give ``backend``."""

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError

    @pytest.fixture
    def fires(self) -> FireLog:
        return FireLog()

    @pytest.fixture
    def executor(self, backend: Backend, fires: FireLog) -> ScheduleExecutor:
        return backend.executor(fires)

    def test_create_holds_exactly_the_entry(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """A created entry is in the scheduler as sent; the outcome is what the scheduler holds."""
        for entry in (interval_entry(), crontab_entry()):
            result = executor.apply(request("create", entry.name, entry))
            assert definition(result.entry) == definition(entry)
            assert result.entry is not None
            assert result.entry.last_run_at is None
            assert result.entry.total_run_count == 0
            assert result.entry.next_run_at is not None
            assert result.entry.next_run_at >= now() - timedelta(seconds=5)
            assert_holds(backend, entry)
            assert backend.scheduled(entry.name)
            assert definition(backend.store.snapshot(now()).get(entry.name)) == definition(entry)

    def test_create_an_existing_name_fails_and_changes_nothing(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """A second create of a name fails saying so; the first entry stays as it was."""
        executor.apply(request("create", "twice", interval_entry("twice")))
        other = crontab_entry("twice")
        with pytest.raises(ScheduleError, match="already has an entry named 'twice'"):
            executor.apply(request("create", "twice", other))
        assert_holds(backend, interval_entry("twice"))

    def test_update_changes_schedule_arguments_and_options(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """An update writes the new schedule, arguments and options over the entry."""
        executor.apply(request("create", "job", interval_entry("job")))
        changed = crontab_entry("job", task="proj.add", options=EntryOptions(queue="other"))
        result = executor.apply(request("update", "job", changed))
        assert definition(result.entry) == definition(changed)
        assert_holds(backend, changed)

    def test_rename_keeps_the_runs_and_frees_the_old_name(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """A rename moves the entry, last run and run count included; the old name is gone."""
        executor.apply(request("create", "old-name", interval_entry("old-name")))
        backend.run_once("old-name")
        last_run, count = backend.runs("old-name")
        assert count == 1
        renamed = interval_entry("new-name", args=[9])
        result = executor.apply(request("update", "old-name", renamed))
        assert definition(result.entry) == definition(renamed)
        assert backend.read_back("old-name") is None
        assert_holds(backend, renamed)
        assert backend.runs("new-name") == (last_run, 1)
        assert result.entry is not None
        assert result.entry.total_run_count == 1
        assert result.entry.last_run_at is not None

    def test_update_errors_name_the_entry(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """Updating a missing entry, or renaming onto a taken name, fails and changes nothing."""
        with pytest.raises(ScheduleError, match="no entry named 'missing'"):
            executor.apply(request("update", "missing", interval_entry("missing")))
        executor.apply(request("create", "a", interval_entry("a")))
        executor.apply(request("create", "b", crontab_entry("b")))
        with pytest.raises(ScheduleError, match="already has an entry named 'b'"):
            executor.apply(request("update", "a", interval_entry("b")))
        assert_holds(backend, interval_entry("a"))
        assert_holds(backend, crontab_entry("b"))

    def test_delete(self, backend: Backend, executor: ScheduleExecutor) -> None:
        """A deleted entry is gone; deleting it again says there is none."""
        executor.apply(request("create", "doomed", interval_entry("doomed")))
        assert executor.apply(request("delete", "doomed")) == ScheduleOutcome(entry=None)
        assert backend.read_back("doomed") is None
        assert backend.store.snapshot(now()).get("doomed") is None
        with pytest.raises(ScheduleError, match="no entry named 'doomed'"):
            executor.apply(request("delete", "doomed"))

    def test_disable_and_enable(self, backend: Backend, executor: ScheduleExecutor) -> None:
        """A disabled entry stays listed (disabled, no next run) and beat does not send it."""
        entry = interval_entry("switch")
        executor.apply(request("create", "switch", entry))
        disabled = executor.apply(request("disable", "switch")).entry
        assert disabled is not None
        assert (disabled.enabled, disabled.next_run_at) == (False, None)
        assert not backend.scheduled("switch")
        listed = backend.store.snapshot(now()).get("switch")
        assert listed is not None
        assert not listed.enabled
        assert definition(listed) == definition(attrs.evolve(entry, enabled=False))
        enabled = executor.apply(request("enable", "switch")).entry
        assert enabled is not None
        assert enabled.enabled
        assert enabled.next_run_at is not None
        assert backend.scheduled("switch")
        assert_holds(backend, entry)
        with pytest.raises(ScheduleError, match="no entry named 'nope'"):
            executor.apply(request("enable", "nope"))

    def test_a_created_disabled_entry_is_not_sent(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """An entry created disabled is listed and not scheduled."""
        entry = interval_entry("created-off", enabled=False)
        result = executor.apply(request("create", "created-off", entry))
        assert definition(result.entry) == definition(entry)
        assert not backend.scheduled("created-off")

    def test_trigger_publishes_with_the_entrys_options_and_leaves_it_alone(
        self, backend: Backend, executor: ScheduleExecutor, fires: FireLog, redis_db: None
    ) -> None:
        """A trigger sends the task now, to the entry's queue with its arguments; nothing else."""
        entry = interval_entry("trigger-me")
        executor.apply(request("create", "trigger-me", entry))
        backend.run_once("trigger-me")
        before = backend.runs("trigger-me")
        result = executor.apply(request("trigger", "trigger-me"))
        assert result.task_id is not None
        assert definition(result.entry) == definition(entry)
        (message,) = drain(QUEUE)
        assert message.headers["task"] == "proj.add"
        assert message.headers["id"] == result.task_id
        assert message.headers["expires"] is not None
        args, kwargs, _ = message.decode()
        assert (args, kwargs) == ([1, 2], {"z": 3})
        assert message.properties.get("priority") == 5
        assert backend.runs("trigger-me") == before
        assert_holds(backend, entry)
        (fire,) = fires.all()
        assert (fire.schedule, fire.task_id, fire.manual, fire.error) == (
            "trigger-me",
            result.task_id,
            True,
            None,
        )
        with pytest.raises(ScheduleError, match="no entry named 'ghost'"):
            executor.apply(request("trigger", "ghost"))

    def test_runs_are_reported(self, backend: Backend, executor: ScheduleExecutor) -> None:
        """After beat ran an entry, the report shows its last run and run count."""
        executor.apply(request("create", "runner", interval_entry("runner")))
        backend.run_once("runner")
        listed = backend.store.snapshot(now()).get("runner")
        assert listed is not None
        assert listed.total_run_count == 1
        assert listed.last_run_at is not None
        assert abs(listed.last_run_at - now()) < timedelta(seconds=30)
        assert listed.next_run_at is not None
        assert listed.next_run_at - listed.last_run_at <= timedelta(seconds=10, milliseconds=1)

    def test_entries_made_without_z4j_are_reported(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """An entry created the scheduler's own way shows up, and z4j can change it."""
        backend.outside_create("made-elsewhere", "proj.ping")
        listed = backend.store.snapshot(now()).get("made-elsewhere")
        assert listed is not None
        assert listed.task == "proj.ping"
        assert listed.schedule == IntervalSchedule(every=30, period="seconds")
        changed = interval_entry("made-elsewhere")
        executor.apply(request("update", "made-elsewhere", changed))
        assert_holds(backend, changed)

    def test_entries_z4j_cannot_express_are_refused_with_the_reason(self, backend: Backend) -> None:
        """An entry z4j cannot show is listed as refused, with why; never dropped."""
        name, reason = backend.outside_unexpressible()
        snapshot = backend.store.snapshot(now())
        assert snapshot.get(name) is None
        (refused,) = [item for item in snapshot.refused if item.name == name]
        assert reason in refused.reason, refused.reason

    def test_known_tasks_and_an_unknown_task_name(
        self, backend: Backend, executor: ScheduleExecutor
    ) -> None:
        """The app's tasks are known, Celery's own too (beat's default schedule sends
        celery.backend_cleanup); an unknown task is a warning, not an error."""
        known = backend.store.known_tasks()
        assert set(TASKS) <= known
        assert "celery.backend_cleanup" in known
        cleanup = interval_entry("cleanup", task="celery.backend_cleanup")
        assert executor.apply(request("create", "cleanup", cleanup)).warnings == ()
        result = executor.apply(request("create", "typo", interval_entry("typo", task="proj.ad")))
        assert any("'proj.ad' is not registered" in warning for warning in result.warnings)
        assert any("did you mean 'proj.add'" in warning for warning in result.warnings)
        assert_holds(backend, interval_entry("typo", task="proj.ad"))
