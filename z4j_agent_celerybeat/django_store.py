"""django-celery-beat's ``DatabaseScheduler``: entries are ``PeriodicTask`` rows, via Django's ORM.

z4j reads and writes the rows the admin does: a :class:`PeriodicTask` with
one schedule row (:class:`CrontabSchedule` with its timezone,
:class:`IntervalSchedule`, :class:`SolarSchedule` or :class:`ClockedSchedule`;
an identical existing row is reused, never duplicated), ``args`` and
``kwargs`` as JSON text, the publishing options in ``queue``, ``exchange``,
``routing_key``, ``priority`` and ``expire_seconds``, and ``one_off``,
``enabled`` and ``description``. Columns z4j does not show (``headers``,
``start_time``, ``expires``) are left as they are. Every change also marks
``PeriodicTasks`` (the row beat watches) changed, so beat reloads its
schedule within seconds; changes made elsewhere (the admin, the ORM) show up
in z4j the same way, through ``PeriodicTasks.last_change()``.

Beat keeps each entry's last run and run count in memory and writes them to
the rows only every few minutes, so the report takes them from beat's memory
when it is ahead. Every ORM call runs on the agent's threads (never beat's),
between ``close_old_connections()`` calls as Django's own request cycle does.

At start-up django-celery-beat writes the Celery app's ``beat_schedule``
setting over the rows of its entries (and brings back a deleted one), so an
edit or a deletion of one of those lasts until beat restarts; the outcome
says so.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from z4j_agent_celerybeat.conversion import entry_of
from z4j_agent_celerybeat.errors import EntryExists, NoSuchEntry, Unsupported
from z4j_agent_celerybeat.store import Publication, ScheduleStore, Snapshot, refusal
from z4j_domain.beat import RefusedEntry, SchedulerKind
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    EntryOptions,
    IntervalSchedule,
    Schedule,
    ScheduleEntry,
    SolarSchedule,
)

__all__ = ["DjangoScheduleStore"]

_LABEL: Final = "django-celery-beat"
#: Rows are read again at least this often even when nothing says they changed (seconds).
_REREAD_EVERY: Final = 60.0
#: Decimal places of SolarSchedule's latitude and longitude columns.
_COORDINATE_PLACES: Final = 6


@contextlib.contextmanager
def _orm() -> Iterator[None]:
    """Around ORM work on an agent thread: drop connections Django considers stale."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def _aware(value: datetime | None) -> datetime | None:
    """A column's datetime in UTC (a naive one is in Django's ``TIME_ZONE``: USE_TZ=False)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        from django.utils import timezone

        value = timezone.make_aware(value)
    return value.astimezone(UTC)


def _schedule_of(task: Any) -> Schedule:
    """The z4j schedule of a ``PeriodicTask`` row; :class:`InvalidInput` says why it has none."""
    chosen = [
        field for field in ("crontab", "interval", "solar", "clocked") if getattr(task, field)
    ]
    if not chosen:
        raise InvalidInput("it has no schedule (crontab, interval, solar or clocked)")
    if len(chosen) > 1:
        raise InvalidInput(f"it has more than one schedule ({', '.join(chosen)})")
    row = getattr(task, chosen[0])
    try:
        if chosen[0] == "crontab":
            return CrontabSchedule(
                minute=row.minute,
                hour=row.hour,
                day_of_week=row.day_of_week,
                day_of_month=row.day_of_month,
                month_of_year=row.month_of_year,
                timezone=str(getattr(row.timezone, "key", row.timezone)),
            )
        if chosen[0] == "interval":
            return IntervalSchedule(every=row.every, period=row.period)
        if chosen[0] == "solar":
            return SolarSchedule(
                event=row.event, latitude=float(row.latitude), longitude=float(row.longitude)
            )
        clocked_time = _aware(row.clocked_time)
        return ClockedSchedule(clocked_time=clocked_time)
    except InvalidInput as error:
        raise InvalidInput(f"its {chosen[0]} schedule is not valid: {error}") from None


def _json_column(task: Any, column: str) -> Any:
    text = getattr(task, column)
    try:
        return json.loads(text) if text else ([] if column == "args" else {})
    except ValueError as error:
        raise InvalidInput(f"its {column} are not valid JSON ({error})") from None


class DjangoScheduleStore(ScheduleStore):
    """django-celery-beat's tables, through Django's ORM (its models)."""

    kind = SchedulerKind.DJANGO
    writable = True
    label = _LABEL

    def __init__(self, scheduler: Any, app: Any) -> None:
        super().__init__(scheduler, app)
        self._rows: list[Any] | None = None
        self._seen_change: datetime | None = None
        self._read_at = 0.0

    @property
    def note(self) -> str:
        return (
            "Changes made in z4j are written to django-celery-beat's tables, and beat picks"
            " them up within seconds. Entries of the Celery app's beat_schedule setting are"
            " written over from it each time beat starts (a deleted one comes back); change"
            " those there."
        )

    def static_names(self) -> frozenset[str]:
        names = set(super().static_names())
        if self.app.conf.result_expires:
            names.add("celery.backend_cleanup")  # django-celery-beat installs it at each start
        return frozenset(names)

    # -- reading ----------------------------------------------------------------------------

    def _models(self) -> Any:
        from django_celery_beat import models

        return models

    def _read(self) -> list[Any]:
        """Every row (cached until ``PeriodicTasks`` says they changed, or a minute passed)."""
        models = self._models()
        rows = self._rows  # a command on the other thread may drop the cache meanwhile
        with _orm():
            change = models.PeriodicTasks.last_change()
            if (
                rows is None
                or change != self._seen_change
                or time.monotonic() - self._read_at >= _REREAD_EVERY
            ):
                rows = list(
                    models.PeriodicTask.objects.select_related(
                        "crontab", "interval", "solar", "clocked"
                    ).order_by("name")
                )
                self._rows, self._seen_change = rows, change
                self._read_at = time.monotonic()
        return list(rows)

    def _in_memory(self) -> dict[str, Any]:
        """The rows of beat's in-memory schedule (their runs are ahead of the table's)."""
        schedule = getattr(self.scheduler, "_schedule", None)
        if not isinstance(schedule, dict):
            return {}
        try:
            held = dict(schedule)
        except RuntimeError:  # replaced while copied: the table will do
            return {}
        return {name: getattr(entry, "model", None) for name, entry in held.items()}

    def _entry(self, task: Any, memory: Any, now: datetime) -> ScheduleEntry:
        last_run_at, count = task.last_run_at, task.total_run_count
        if (
            memory is not None
            and getattr(memory, "pk", None) == task.pk
            and memory.total_run_count != task.total_run_count
        ):
            last_run_at, count = memory.last_run_at, memory.total_run_count
        try:
            options = EntryOptions(
                queue=task.queue or None,
                routing_key=task.routing_key or None,
                exchange=task.exchange or None,
                priority=task.priority,
                expires=task.expire_seconds or None,
            )
        except InvalidInput as error:
            raise InvalidInput(f"options.{error}") from None
        return entry_of(
            name=task.name,
            task=task.task,
            schedule=_schedule_of(task),
            args=_json_column(task, "args"),
            kwargs=_json_column(task, "kwargs"),
            options=options,
            enabled=bool(task.enabled),
            one_off=bool(task.one_off),
            description=task.description or "",
            last_run_at=_aware(last_run_at),
            total_run_count=count,
            due_from=_aware(last_run_at or task.date_changed),
            now=now,
        )

    def snapshot(self, now: datetime) -> Snapshot:
        memory = self._in_memory()
        entries: list[ScheduleEntry] = []
        refused: list[RefusedEntry] = []
        for task in self._read():
            try:
                entries.append(self._entry(task, memory.get(task.name), now))
            except (InvalidInput, TypeError, ValueError) as error:
                refused.append(refusal(task.name, str(error) or type(error).__name__))
        return Snapshot(entries=tuple(entries), refused=tuple(refused))

    def _task(self, name: str) -> Any:
        models = self._models()
        try:
            return models.PeriodicTask.objects.select_related(
                "crontab", "interval", "solar", "clocked"
            ).get(name=name)
        except models.PeriodicTask.DoesNotExist:
            raise NoSuchEntry(name) from None

    def get(self, name: str, now: datetime) -> ScheduleEntry | None:
        with _orm():
            try:
                task = self._task(name)
            except NoSuchEntry:
                return None
        try:
            return self._entry(task, self._in_memory().get(name), now)
        except (InvalidInput, TypeError, ValueError):
            return None

    def publication(self, name: str) -> Publication:
        """As django-celery-beat's ``ModelEntry`` sends it (headers and ``periodic_task_name``)."""
        with _orm():
            task = self._task(name)
        try:
            args, kwargs = _json_column(task, "args"), _json_column(task, "kwargs")
            headers = json.loads(task.headers or "{}")
        except (InvalidInput, ValueError) as error:
            raise Unsupported(f"{name!r} cannot be sent: {error}") from None
        options: dict[str, Any] = {
            field: getattr(task, field)
            for field in ("queue", "exchange", "routing_key", "priority")
            if getattr(task, field) is not None
        }
        if task.expires or task.expire_seconds:
            options["expires"] = task.expires or task.expire_seconds
        options["headers"] = {**headers, "periodic_task_name": task.name}
        return Publication(task=task.task, args=args, kwargs=kwargs, options=options)

    # -- changing ---------------------------------------------------------------------------

    def _schedule_row(self, schedule: Schedule) -> tuple[str, Any]:
        """The schedule's row: an identical existing one, or a new one."""
        from zoneinfo import ZoneInfo

        models = self._models()
        if isinstance(schedule, CrontabSchedule):
            fields: dict[str, Any] = {
                "minute": schedule.minute,
                "hour": schedule.hour,
                "day_of_week": schedule.day_of_week,
                "day_of_month": schedule.day_of_month,
                "month_of_year": schedule.month_of_year,
                "timezone": ZoneInfo(schedule.timezone),
            }
            return "crontab", self._reuse(models.CrontabSchedule, fields)
        if isinstance(schedule, IntervalSchedule):
            fields = {"every": schedule.every, "period": schedule.period.value}
            return "interval", self._reuse(models.IntervalSchedule, fields)
        if isinstance(schedule, SolarSchedule):
            fields = {
                "event": schedule.event.value,
                "latitude": round(Decimal(repr(schedule.latitude)), _COORDINATE_PLACES),
                "longitude": round(Decimal(repr(schedule.longitude)), _COORDINATE_PLACES),
            }
            return "solar", self._reuse(models.SolarSchedule, fields)
        return "clocked", self._reuse(
            models.ClockedSchedule, {"clocked_time": schedule.clocked_time}
        )

    @staticmethod
    def _reuse(model: Any, fields: dict[str, Any]) -> Any:
        row = model.objects.filter(**fields).order_by("pk").first()
        return row if row is not None else model.objects.create(**fields)

    def _write(self, task: Any, entry: ScheduleEntry) -> list[str]:
        """Set every field z4j edits on ``task`` (a row, new or not) from ``entry``."""
        warnings: list[str] = []
        field, row = self._schedule_row(entry.schedule)
        for name in ("crontab", "interval", "solar", "clocked"):
            setattr(task, name, row if name == field else None)
        expires = entry.options.expires
        if expires is not None:
            if task.expires is not None:
                raise Unsupported(
                    f"{entry.name!r} has an expiry date (django-celery-beat's expires), which"
                    " cannot be combined with expires in seconds; clear it in the admin first;"
                    " nothing was changed"
                )
            seconds = max(1, round(expires))
            if not math.isclose(seconds, expires):
                warnings.append(
                    f"django-celery-beat keeps expires in whole seconds: {seconds} was stored"
                )
            expires = seconds
        task.name = entry.name
        task.task = entry.task
        task.args = json.dumps(entry.args)
        task.kwargs = json.dumps(entry.kwargs)
        task.queue = entry.options.queue
        task.exchange = entry.options.exchange
        task.routing_key = entry.options.routing_key
        task.priority = entry.options.priority
        task.expire_seconds = expires
        task.one_off = entry.one_off
        task.enabled = entry.enabled
        task.description = entry.description
        return warnings

    def _changed(self) -> None:
        """Mark the schedule changed for beat (the model's own signals do too; this is sure)."""
        self._models().PeriodicTasks.update_changed()
        self._rows = None

    def _restart_warning(self, *names: str) -> list[str]:
        static = self.static_names()
        return [
            f"this change will be undone when beat restarts: {name!r} is in the Celery app's"
            f" beat_schedule setting, which {_LABEL} writes over its row at start-up;"
            " change it there to keep it"
            for name in names
            if name in static
        ]

    def _atomic(self) -> Any:
        from django.db import transaction

        return transaction.atomic()

    def create(self, entry: ScheduleEntry) -> list[str]:
        models = self._models()
        with _orm(), self._atomic():
            if models.PeriodicTask.objects.filter(name=entry.name).exists():
                raise EntryExists(entry.name)
            task = models.PeriodicTask()
            warnings = self._write(task, entry)
            task.save()
            self._changed()
        return warnings + self._restart_warning(entry.name)

    def update(self, name: str, entry: ScheduleEntry) -> list[str]:
        models = self._models()
        with _orm(), self._atomic():
            task = self._task(name)
            renamed = entry.name != name
            if renamed and models.PeriodicTask.objects.filter(name=entry.name).exists():
                raise EntryExists(entry.name)
            warnings = self._write(task, entry)
            task.save()
            self._changed()
        return warnings + self._restart_warning(entry.name, *([name] if renamed else []))

    def delete(self, name: str) -> list[str]:
        with _orm(), self._atomic():
            self._task(name).delete()
            self._changed()
        return self._restart_warning(name)

    def set_enabled(self, name: str, enabled: bool) -> list[str]:
        with _orm(), self._atomic():
            task = self._task(name)
            if bool(task.enabled) == enabled:
                return []
            task.enabled = enabled
            task.save()
            self._changed()
        return []
