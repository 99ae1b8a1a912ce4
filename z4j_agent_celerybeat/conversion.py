"""Celery's schedule objects and entry fields, as z4j's schedule entries, and back.

Beat's schedulers hold Celery objects (``celery.schedules.crontab``,
``schedule``, ``solar``; django-celery-beat's rows are read directly by its
store); z4j speaks :class:`~z4j_domain.schedules.ScheduleEntry`. What cannot
be expressed either way raises :class:`~z4j_domain.errors.InvalidInput` (an
entry of the scheduler that z4j cannot show: its message is the refusal's
reason) or :class:`~z4j_agent_celerybeat.errors.Unsupported` (a change the
scheduler cannot hold).

Times: Celery's default scheduler and RedBeat read every crontab in beat's
own timezone (the Celery app's ``timezone``, UTC when it has none and
``enable_utc`` is on); z4j reports that timezone as the crontab's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from z4j_agent_celerybeat.errors import Unsupported
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    EntryOptions,
    IntervalSchedule,
    Schedule,
    ScheduleEntry,
    SolarSchedule,
    next_fire_times,
)

__all__ = [
    "OPTION_NAMES",
    "aware",
    "beat_timezone",
    "celery_options",
    "celery_schedule",
    "class_path",
    "entry_of",
    "fingerprint",
    "next_run_at",
    "options_of",
    "schedule_of",
]

#: The publishing options z4j shows and edits; others an entry has are kept as they are.
OPTION_NAMES: Final = ("queue", "routing_key", "exchange", "priority", "expires")


def class_path(value: object) -> str:
    """``module:Class`` of an object (or of a class)."""
    cls = value if isinstance(value, type) else type(value)
    return f"{cls.__module__}:{cls.__qualname__}"


def beat_timezone(app: Any) -> str | None:
    """The IANA zone beat reads crontabs in; ``None`` for the machine's local time."""
    configured = app.conf.timezone
    if configured:
        return str(getattr(configured, "key", configured))
    if app.conf.enable_utc:
        return "UTC"
    return None


def aware(value: datetime | None) -> datetime | None:
    """``value`` in UTC; a naive one is taken as UTC (as Celery does)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# ---------------------------------------------------------------- Celery -> z4j


def schedule_of(value: Any, *, timezone: str | None) -> Schedule:
    """The z4j schedule of a Celery schedule object; :class:`InvalidInput` says why not.

    ``timezone`` is beat's (:func:`beat_timezone`): a plain Celery crontab is
    read in it.
    """
    from celery.schedules import crontab, schedule, solar

    kind = type(value)
    if kind is crontab:
        if timezone is None:
            raise InvalidInput(
                "beat reads its crontabs in the machine's local time (the Celery app sets no"
                " timezone and enable_utc is off), which z4j cannot name"
            )
        return CrontabSchedule(
            minute=_cron(value._orig_minute),
            hour=_cron(value._orig_hour),
            day_of_week=_cron(value._orig_day_of_week),
            day_of_month=_cron(value._orig_day_of_month),
            month_of_year=_cron(value._orig_month_of_year),
            timezone=timezone,
        )
    if kind is schedule:
        if value.relative:
            raise InvalidInput(
                "a relative interval (relative=True, rounded to the clock) is not one z4j shows"
            )
        return IntervalSchedule.from_timedelta(value.run_every)
    if kind is solar:
        return SolarSchedule(event=value.event, latitude=value.lat, longitude=value.lon)
    raise InvalidInput(
        f"its schedule is a {class_path(value)}, which z4j cannot show or edit"
        " (z4j knows Celery's crontab, schedule and solar)"
    )


def _cron(value: Any) -> Any:
    """A crontab field as Celery keeps it: a string, a number, or a collection of numbers."""
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value)
    return value


def options_of(options: Mapping[str, Any] | None) -> EntryOptions:
    """The publishing options z4j shows, from Celery's options (others are ignored here).

    An ``expires`` that is a date (not seconds) is not one of them: it is kept
    by the scheduler, not shown.
    """
    options = options or {}
    expires = options.get("expires")
    if isinstance(expires, (datetime, timedelta)):
        expires = expires.total_seconds() if isinstance(expires, timedelta) else None
    try:
        return EntryOptions(
            queue=options.get("queue"),
            routing_key=options.get("routing_key"),
            exchange=options.get("exchange"),
            priority=options.get("priority"),
            expires=expires,
        )
    except InvalidInput as error:
        raise InvalidInput(f"options.{error}") from None


def entry_of(
    *,
    name: Any,
    task: Any,
    schedule: Schedule,
    args: Any,
    kwargs: Any,
    options: EntryOptions,
    enabled: bool = True,
    one_off: bool = False,
    description: str = "",
    last_run_at: datetime | None,
    total_run_count: int,
    now: datetime,
    due_from: datetime | None = None,
) -> ScheduleEntry:
    """A z4j entry with its next run; :class:`InvalidInput` names what z4j cannot carry.

    ``last_run_at`` is what z4j shows (``None`` when it never ran);
    ``due_from`` is what the scheduler counts the next run from (Celery sets a
    new entry's "last run" to when it was created), default ``last_run_at``.
    """
    if not isinstance(args, (list, tuple)):
        raise InvalidInput(f"args: must be a list, got a {type(args).__name__}")
    if kwargs is None:
        kwargs = {}
    entry = ScheduleEntry(
        name=name,
        task=task,
        schedule=schedule,
        args=list(args),
        kwargs=kwargs,
        options=options,
        enabled=enabled,
        one_off=one_off,
        description=description or "",
        last_run_at=aware(last_run_at),
        total_run_count=max(int(total_run_count or 0), 0),
    )
    counted_from = aware(due_from) if due_from is not None else entry.last_run_at
    upcoming = next_run_at(
        entry.schedule,
        now=now,
        last_run_at=counted_from,
        enabled=entry.enabled,
        done=entry.one_off and entry.total_run_count > 0,
    )
    if upcoming is None:
        return entry
    return attrs.evolve(entry, next_run_at=upcoming)


def next_run_at(
    schedule: Schedule,
    *,
    now: datetime,
    last_run_at: datetime | None,
    enabled: bool = True,
    done: bool = False,
) -> datetime | None:
    """When beat sends the entry next (``now`` when it is due); ``None`` when it will not.

    Crontabs, intervals and clocked times come from z4j's own computation
    (:func:`~z4j_domain.schedules.next_fire_times`, counting from the last
    run); a solar event from Celery's ``solar`` (the ``ephem`` library), when
    beat's environment has it.
    """
    if not enabled or done:
        return None
    try:
        if isinstance(schedule, SolarSchedule):
            return _solar_next(schedule, now=now, last_run_at=last_run_at)
        if isinstance(schedule, ClockedSchedule):
            return max(schedule.clocked_time, now)
        start = last_run_at if last_run_at is not None and last_run_at <= now else now
        times = next_fire_times(schedule, start, 1, last_run_at=last_run_at)
    except (InvalidInput, ValueError, OverflowError):
        return None
    return max(times[0], now) if times else None


def _solar_next(
    schedule: SolarSchedule, *, now: datetime, last_run_at: datetime | None
) -> datetime | None:
    from celery.schedules import solar

    try:
        celery_solar = solar(schedule.event.value, schedule.latitude, schedule.longitude)
        remaining: timedelta = celery_solar.remaining_estimate(last_run_at or now)
    except Exception:  # no ephem here, or a circumpolar event: no estimate
        return None
    return max(now + remaining, now)  # Celery's estimate counts from now


# ---------------------------------------------------------------- z4j -> Celery


def celery_schedule(
    schedule: Schedule, *, timezone: str | None, scheduler: str, solar_ok: bool = True
) -> Any:
    """The Celery schedule object for a z4j schedule; :class:`Unsupported` when ``scheduler``
    (its name, for the message) cannot hold it."""
    from celery.schedules import crontab, solar
    from celery.schedules import schedule as interval

    if isinstance(schedule, CrontabSchedule):
        if timezone is None:
            raise Unsupported(
                f"{scheduler} reads every crontab in the machine's local time (the Celery app"
                " sets no timezone); set the app's timezone to write crontabs through z4j"
            )
        if schedule.timezone != timezone:
            raise Unsupported(
                f"{scheduler} reads every crontab in beat's timezone ({timezone}), not per entry:"
                f" give the crontab the timezone {timezone!r}; nothing was changed"
            )
        return crontab(
            minute=schedule.minute,
            hour=schedule.hour,
            day_of_week=schedule.day_of_week,
            day_of_month=schedule.day_of_month,
            month_of_year=schedule.month_of_year,
        )
    if isinstance(schedule, IntervalSchedule):
        return interval(run_every=schedule.delta)
    if isinstance(schedule, SolarSchedule):
        if not solar_ok:
            raise Unsupported(f"{scheduler} cannot store solar schedules; nothing was changed")
        try:
            return solar(schedule.event.value, schedule.latitude, schedule.longitude)
        except Exception as error:  # ImproperlyConfigured: ephem is not installed
            raise Unsupported(
                f"beat cannot compute solar schedules here ({error}); nothing was changed"
            ) from None
    raise Unsupported(
        f"{scheduler} has no clocked schedules (they are django-celery-beat's): use a crontab"
        " for a one-time run; nothing was changed"
    )


def celery_options(options: EntryOptions, keep: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Celery's publishing options for ``options``, over the ones z4j does not edit in ``keep``."""
    out = {key: value for key, value in (keep or {}).items() if key not in OPTION_NAMES}
    if isinstance((keep or {}).get("expires"), datetime) and options.expires is None:
        out["expires"] = (keep or {})["expires"]  # a date z4j does not show: kept
    for key in OPTION_NAMES:
        value = getattr(options, key)
        if value is not None:
            out[key] = value
    return out


def fingerprint(config: Any) -> str | None:
    """A stable text of one ``beat_schedule`` item, to tell if it changed (``None``: absent)."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        config = {str(key): config[key] for key in sorted(config, key=str)}
    return json.dumps(config, sort_keys=True, default=repr)
