"""Celery Beat schedule entries: their schedules, validation, JSON form and next fire times.

The four schedule kinds are the ones Celery and django-celery-beat know, with
django-celery-beat's field names: :class:`CrontabSchedule`,
:class:`IntervalSchedule`, :class:`SolarSchedule` and :class:`ClockedSchedule`.
A :class:`ScheduleEntry` is one named entry of beat's schedule. Every value is
validated when it is built and refused with :class:`InvalidInput` naming the
field and the bad value; :func:`entry_to_dict` / :func:`entry_from_dict` carry
entries as plain JSON (the API and the wire protocol).

Crontab fields follow Celery's ``crontab`` syntax, strictly: ``*``, ``*/n``,
``a``, ``a-b``, ``a-b/n`` and comma-separated lists of those; a range whose end
is smaller than its start wraps around (``fri-mon``, ``50-10``); Sunday is day
0 (``7`` is refused, as Celery does). Day names (``mon`` or ``monday``) are
allowed in ``day_of_week`` only and month names (``jan`` or ``january``) in
``month_of_year`` only, in any case. Every expression accepted here is
accepted by Celery's own parser with the same values. Celery's parser also lets
through some accidents that z4j refuses: trailing text after a valid prefix
(``1-5/2x``, ``1-2-3``), any word starting with a name (``monkey``), month
names in other fields (``jan`` as minute 1), and non-ASCII digits. Spaces
around list items are dropped (django-celery-beat's admin may store ``0, 30``).

When both ``day_of_month`` and ``day_of_week`` are restricted, a day must match
**both** (Celery's rule: ``day_of_week="mon"`` with ``day_of_month="1-7"`` is
the first Monday of the month), unlike classic cron, where either one is enough.

Time zones are IANA names loaded with :mod:`zoneinfo`, so the machine needs the
system's time zone database (or the ``tzdata`` package).
"""

from __future__ import annotations

import calendar
import difflib
import enum
import functools
import itertools
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Final, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from z4j_domain.encoding import MAX_JSON_DEPTH, utc_isoformat
from z4j_domain.errors import InvalidInput, PreviewUnavailable

__all__ = [
    "MAX_ARGUMENTS_BYTES",
    "MAX_FIRE_TIMES",
    "MAX_INTERVAL",
    "MAX_NAME_LENGTH",
    "MIN_INTERVAL",
    "ClockedSchedule",
    "CronField",
    "CrontabSchedule",
    "EntryOptions",
    "IntervalPeriod",
    "IntervalSchedule",
    "Schedule",
    "ScheduleEntry",
    "ScheduleKind",
    "SolarEvent",
    "SolarSchedule",
    "entry_from_dict",
    "entry_to_dict",
    "next_fire_times",
    "parse_cron_field",
    "schedule_from_dict",
    "schedule_to_dict",
    "task_name_warnings",
]

#: Longest entry name, task name, queue, exchange and routing key (django-celery-beat's columns).
MAX_NAME_LENGTH: Final = 200
#: Longest description.
MAX_DESCRIPTION_LENGTH: Final = 4000
#: Largest ``args`` or ``kwargs`` of one entry, as compact JSON.
MAX_ARGUMENTS_BYTES: Final = 64 * 1024
#: Shortest interval: beat checks its schedule at most about once a second, and
#: django-celery-beat's scheduler syncs every few seconds, so a shorter one cannot be kept.
MIN_INTERVAL: Final = timedelta(seconds=1)
#: Longest interval; anything rarer reads better as a crontab or a clocked entry.
MAX_INTERVAL: Final = timedelta(days=365)
#: Longest ``expires`` option (the same bound as a retry's countdown).
MAX_EXPIRES: Final = 366 * 86_400
#: Most fire times :func:`next_fire_times` computes in one call.
MAX_FIRE_TIMES: Final = 1000
_MAX_TIMEZONE_LENGTH: Final = 63
_SHOWN_LENGTH: Final = 60


def _shown(value: object) -> str:
    """``repr(value)``, cut short: error messages quote the bad value, never a whole payload."""
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def _invalid(field: str, problem: str, value: object) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}, got {_shown(value)}")


# ---------------------------------------------------------------- crontab fields


class CronField(enum.StrEnum):
    """One of a crontab's five fields; the values are Celery's and django-celery-beat's names."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY_OF_WEEK = "day_of_week"
    DAY_OF_MONTH = "day_of_month"
    MONTH_OF_YEAR = "month_of_year"

    @property
    def low(self) -> int:
        """Smallest value of the field."""
        return _BOUNDS[self][0]

    @property
    def high(self) -> int:
        """Largest value of the field."""
        return _BOUNDS[self][1]


_BOUNDS: Final = {
    CronField.MINUTE: (0, 59),
    CronField.HOUR: (0, 23),
    CronField.DAY_OF_WEEK: (0, 6),
    CronField.DAY_OF_MONTH: (1, 31),
    CronField.MONTH_OF_YEAR: (1, 12),
}

# django-celery-beat's column widths: an expression z4j accepts fits its CrontabSchedule.
_MAX_FIELD_LENGTH: Final = {
    CronField.MINUTE: 240,
    CronField.HOUR: 96,
    CronField.DAY_OF_WEEK: 64,
    CronField.DAY_OF_MONTH: 124,
    CronField.MONTH_OF_YEAR: 64,
}


def _names(full: Iterable[str], first: int) -> dict[str, int]:
    names: dict[str, int] = {}
    for number, name in enumerate(full, start=first):
        names[name] = number
        names[name[:3]] = number
    return names


_FIELD_NAMES: Final[Mapping[CronField, Mapping[str, int]]] = {
    # Sunday is 0, as in Celery (date.isoweekday() % 7).
    CronField.DAY_OF_WEEK: _names(
        ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"), 0
    ),
    CronField.MONTH_OF_YEAR: _names(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ),
        1,
    ),
}

# ASCII only: int() would also take "٣" or "1_0", which nobody means in a crontab.
_NUMBER: Final = re.compile(r"[0-9]+")
_WORD: Final = re.compile(r"[A-Za-z]+")


def _field_value(field: CronField, token: str, expression: str) -> int:
    if not token:
        raise InvalidInput(f"{field}: a range is missing a value in {_shown(expression)}")
    if _NUMBER.fullmatch(token):
        number = int(token)
    elif _WORD.fullmatch(token) and token.lower() in _FIELD_NAMES.get(field, {}):
        return _FIELD_NAMES[field][token.lower()]
    elif _WORD.fullmatch(token) and field not in _FIELD_NAMES:
        raise InvalidInput(
            f"{field}: names are allowed in day_of_week and month_of_year only,"
            f" got {_shown(token)} in {_shown(expression)}"
        )
    else:
        what = {
            CronField.DAY_OF_WEEK: " or a day name",
            CronField.MONTH_OF_YEAR: " or a month name",
        }
        raise InvalidInput(
            f"{field}: {_shown(token)} is not a number{what.get(field, '')} in {_shown(expression)}"
        )
    if not field.low <= number <= field.high:
        raise InvalidInput(
            f"{field}: {number} is out of range {field.low}-{field.high} in {_shown(expression)}"
        )
    return number


def _item_values(field: CronField, item: str, expression: str) -> list[int]:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
            raise InvalidInput(
                f"{field}: the step after '/' must be a whole number of at least 1"
                f" in {_shown(expression)}"
            )
        step = int(step_text)
    if base == "*":
        values = list(range(field.low, field.high + 1))
    elif "-" in base:
        start_text, _, end_text = base.partition("-")
        start = _field_value(field, start_text, expression)
        end = _field_value(field, end_text, expression)
        if end >= start:
            values = list(range(start, end + 1))
        else:  # wraps around, as Celery's parser does: fri-mon is fri, sat, sun, mon
            values = list(range(start, field.high + 1)) + list(range(field.low, end + 1))
    elif slash:
        # Celery refuses "5/15" (cron's "from 5 every 15"): say how to write it.
        raise InvalidInput(
            f"{field}: a step needs '*' or a range before it, like '*/{step_text}' or"
            f" '{base}-{field.high}/{step_text}', got {_shown(expression)}"
        )
    else:
        values = [_field_value(field, base, expression)]
    return values[::step]


def _normalised(field: CronField, value: object) -> str:
    """A crontab field as text: Celery also takes an int or a collection of ints."""
    if isinstance(value, str):
        return ",".join(part.strip() for part in value.split(","))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        if not value:
            raise _invalid(field, "must not be empty", value)
        return ",".join(str(v) for v in sorted(value))
    raise _invalid(field, "must be a crontab expression (a string)", value)


@functools.lru_cache(maxsize=1024)
def _parse(field: CronField, expression: str) -> frozenset[int]:
    if not expression:
        raise InvalidInput(f"{field}: must not be empty (use '*' for every {field.value})")
    if len(expression) > _MAX_FIELD_LENGTH[field]:
        raise InvalidInput(
            f"{field}: at most {_MAX_FIELD_LENGTH[field]} characters, got {len(expression)}"
        )
    values: set[int] = set()
    for item in expression.split(","):
        if not item:
            raise InvalidInput(f"{field}: empty item in {_shown(expression)}")
        values.update(_item_values(field, item, expression))
    return frozenset(values)


def parse_cron_field(field: CronField | str, expression: str) -> frozenset[int]:
    """The values a crontab field expression stands for; raises :class:`InvalidInput`.

    ``parse_cron_field("hour", "0,8-17/2")`` is ``{0, 8, 10, 12, 14, 16}``; days
    of the week count from Sunday = 0. Spaces around list items are ignored.
    """
    try:
        cron_field = CronField(field)
    except ValueError:
        raise InvalidInput(f"unknown crontab field {_shown(field)}") from None
    return _parse(cron_field, _normalised(cron_field, expression))


# ---------------------------------------------------------------- schedules


class ScheduleKind(enum.StrEnum):
    """Which kind of schedule an entry has; the ``kind`` of its JSON form."""

    CRONTAB = "crontab"
    INTERVAL = "interval"
    SOLAR = "solar"
    CLOCKED = "clocked"


def _cron_text(field: CronField, value: object) -> str:
    text = _normalised(field, value)
    _parse(field, text)
    return text


# Named converters, one per field: mypy's attrs plugin reads their types.
def _minute(value: object) -> str:
    return _cron_text(CronField.MINUTE, value)


def _hour(value: object) -> str:
    return _cron_text(CronField.HOUR, value)


def _day_of_week(value: object) -> str:
    return _cron_text(CronField.DAY_OF_WEEK, value)


def _day_of_month(value: object) -> str:
    return _cron_text(CronField.DAY_OF_MONTH, value)


def _month_of_year(value: object) -> str:
    return _cron_text(CronField.MONTH_OF_YEAR, value)


def _timezone(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TIMEZONE_LENGTH:
        raise _invalid("timezone", "must be an IANA time zone name like 'Europe/Berlin'", value)
    # "localtime" is the machine's own zone: it would mean one thing on the brain and
    # another on the beat host.
    if value == "localtime":
        raise _invalid("timezone", "must name a zone, not the machine's local time", value)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _invalid("timezone", "is not a known IANA time zone", value) from None
    return value


@attrs.frozen(kw_only=True)
class CrontabSchedule:
    """Fire at the minutes that match all five fields, read in ``timezone``.

    Each field is a Celery crontab expression (see the module's docs); ``*``
    matches everything. A day matches when its month, its day of the month and
    its day of the week all match (Celery's rule, not cron's "either day
    field"). Like Celery, a day of the month that occurs in none of the months
    (``day_of_month="30"``, ``month_of_year="2"``) is refused.
    """

    kind: ClassVar[ScheduleKind] = ScheduleKind.CRONTAB

    minute: str = attrs.field(default="*", converter=_minute)
    hour: str = attrs.field(default="*", converter=_hour)
    day_of_week: str = attrs.field(default="*", converter=_day_of_week)
    day_of_month: str = attrs.field(default="*", converter=_day_of_month)
    month_of_year: str = attrs.field(default="*", converter=_month_of_year)
    timezone: str = attrs.field(default="UTC", converter=_timezone)

    def __attrs_post_init__(self) -> None:
        days, months = self.values(CronField.DAY_OF_MONTH), self.values(CronField.MONTH_OF_YEAR)
        # 29 for February: leap years have it (so does Celery's check).
        if not any(day <= _LONGEST_MONTH[month] for month in months for day in days):
            raise InvalidInput(
                f"day_of_month {self.day_of_month!r} never occurs in"
                f" month_of_year {self.month_of_year!r}"
            )

    def values(self, field: CronField | str) -> frozenset[int]:
        """The values one field stands for (days of the week from Sunday = 0)."""
        cron_field = CronField(field)
        expression: str = getattr(self, cron_field.value)
        return _parse(cron_field, expression)

    @property
    def cron(self) -> str:
        """The five fields in classic cron order: minute hour day-of-month month day-of-week."""
        return (
            f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"
        )

    @classmethod
    def from_cron(cls, expression: str, timezone: str = "UTC") -> CrontabSchedule:
        """Read a classic five-field line like ``"*/15 9-17 * * mon-fri"`` (Celery's from_string).

        Fields are separated by whitespace, so a field cannot contain spaces here.
        """
        if not isinstance(expression, str) or len(parts := expression.split()) != 5:
            raise _invalid(
                "cron",
                "must be five fields: minute hour day-of-month month day-of-week",
                expression,
            )
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        return cls(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone=timezone,
        )


_LONGEST_MONTH: Final = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}


class IntervalPeriod(enum.StrEnum):
    """The unit of an interval's ``every`` (django-celery-beat's ``IntervalSchedule.period``)."""

    DAYS = "days"
    HOURS = "hours"
    MINUTES = "minutes"
    SECONDS = "seconds"
    MICROSECONDS = "microseconds"

    @property
    def microseconds(self) -> int:
        """Length of one period in microseconds."""
        return _PERIOD_MICROSECONDS[self]


_MIN_MICROSECONDS: Final = MIN_INTERVAL // timedelta(microseconds=1)
_MAX_MICROSECONDS: Final = MAX_INTERVAL // timedelta(microseconds=1)
_PERIOD_MICROSECONDS: Final = {
    IntervalPeriod.DAYS: 86_400_000_000,
    IntervalPeriod.HOURS: 3_600_000_000,
    IntervalPeriod.MINUTES: 60_000_000,
    IntervalPeriod.SECONDS: 1_000_000,
    IntervalPeriod.MICROSECONDS: 1,
}


def _whole(field: str, minimum: int) -> Callable[[Any, Any, int], None]:
    def check(_instance: Any, _attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _invalid(field, f"must be a whole number of at least {minimum}", value)

    return check


def _period(value: object) -> IntervalPeriod:
    try:
        return IntervalPeriod(value if isinstance(value, str) else "")
    except ValueError:
        choices = ", ".join(p.value for p in IntervalPeriod)
        raise _invalid("period", f"must be one of {choices}", value) from None


@attrs.frozen(kw_only=True)
class IntervalSchedule:
    """Fire every ``every`` periods (``every=30, period="seconds"``), counted from the last run.

    Between :data:`MIN_INTERVAL` (a second) and :data:`MAX_INTERVAL` (365
    days) in all. ``every=90, period="seconds"`` and ``every=1, period="minutes"``
    are different values, as they are different rows in django-celery-beat;
    :meth:`from_timedelta` picks the largest exact unit.
    """

    kind: ClassVar[ScheduleKind] = ScheduleKind.INTERVAL

    every: int = attrs.field(validator=_whole("every", 1))
    period: IntervalPeriod = attrs.field(converter=_period)

    def __attrs_post_init__(self) -> None:
        # Compared in whole microseconds: a huge ``every`` cannot overflow a timedelta here.
        length = self.every * self.period.microseconds
        if not _MIN_MICROSECONDS <= length <= _MAX_MICROSECONDS:
            raise InvalidInput(
                f"every: an interval is from 1 second to 365 days,"
                f" got {self.every} {self.period.value}"
            )

    @property
    def delta(self) -> timedelta:
        """The interval's length."""
        return timedelta(microseconds=self.every * self.period.microseconds)

    @classmethod
    def from_timedelta(cls, delta: timedelta) -> IntervalSchedule:
        """The interval of Celery's ``schedule(run_every=delta)``, in the largest exact unit."""
        if not isinstance(delta, timedelta):
            raise _invalid("every", "must be a timedelta", delta)
        length = delta // timedelta(microseconds=1)
        # Largest unit first; microseconds always divide, so one is found.
        period = next(p for p in IntervalPeriod if length % p.microseconds == 0)
        return cls(every=length // period.microseconds, period=period)


class SolarEvent(enum.StrEnum):
    """The solar events Celery's ``solar`` schedule knows."""

    DAWN_ASTRONOMICAL = "dawn_astronomical"
    DAWN_NAUTICAL = "dawn_nautical"
    DAWN_CIVIL = "dawn_civil"
    SUNRISE = "sunrise"
    SOLAR_NOON = "solar_noon"
    SUNSET = "sunset"
    DUSK_CIVIL = "dusk_civil"
    DUSK_NAUTICAL = "dusk_nautical"
    DUSK_ASTRONOMICAL = "dusk_astronomical"


def _solar_event(value: object) -> SolarEvent:
    try:
        return SolarEvent(value if isinstance(value, str) else "")
    except ValueError:
        choices = ", ".join(e.value for e in SolarEvent)
        raise _invalid("event", f"must be one of {choices}", value) from None


def _coordinate(field: str, limit: int, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not -limit <= value <= limit
    ):
        raise _invalid(field, f"must be a number from -{limit} to {limit}", value)
    return float(value)


def _latitude(value: object) -> float:
    return _coordinate("latitude", 90, value)


def _longitude(value: object) -> float:
    return _coordinate("longitude", 180, value)


@attrs.frozen(kw_only=True)
class SolarSchedule:
    """Fire at a solar event as seen from a place (latitude -90..90, longitude -180..180).

    Beat computes these times with the ``ephem`` library; z4j does not
    (:func:`next_fire_times` raises :class:`PreviewUnavailable` for them).
    """

    kind: ClassVar[ScheduleKind] = ScheduleKind.SOLAR

    event: SolarEvent = attrs.field(converter=_solar_event)
    latitude: float = attrs.field(converter=_latitude)
    longitude: float = attrs.field(converter=_longitude)


def _instant(field: str, value: object) -> datetime:
    """``value`` in UTC; refuses anything but an aware datetime, naming ``field``."""
    if not isinstance(value, datetime):
        raise _invalid(field, "must be a datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise _invalid(field, "must have a timezone", value.isoformat())
    return value.astimezone(UTC)


def _clocked_time(value: object) -> datetime:
    return _instant("clocked_time", value)


def _last_run_at(value: object) -> datetime | None:
    return None if value is None else _instant("last_run_at", value)


def _next_run_at(value: object) -> datetime | None:
    return None if value is None else _instant("next_run_at", value)


@attrs.frozen(kw_only=True)
class ClockedSchedule:
    """Fire once, at ``clocked_time`` (django-celery-beat's clocked schedule); kept in UTC."""

    kind: ClassVar[ScheduleKind] = ScheduleKind.CLOCKED

    clocked_time: datetime = attrs.field(converter=_clocked_time)


#: Any schedule an entry can have.
Schedule: TypeAlias = CrontabSchedule | IntervalSchedule | SolarSchedule | ClockedSchedule

_SCHEDULE_CLASSES: Final[Mapping[ScheduleKind, type[Schedule]]] = {
    cls.kind: cls for cls in (CrontabSchedule, IntervalSchedule, SolarSchedule, ClockedSchedule)
}

# ---------------------------------------------------------------- entries


def _storable(text: str) -> bool:
    """Whether a database can store ``text``: no NUL, no lone surrogate (JSON's ``"\\ud800"``)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _line(field: str, value: object) -> str:
    """A name: non-blank, at most :data:`MAX_NAME_LENGTH` characters, no control characters."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_NAME_LENGTH
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
        or not _storable(value)
    ):
        raise _invalid(
            field,
            f"must be a non-blank line of at most {MAX_NAME_LENGTH} characters, without"
            " control characters",
            value,
        )
    return value


def _name(value: object) -> str:
    return _line("name", value)


def _queue(value: object) -> str | None:
    return None if value is None else _line("queue", value)


def _routing_key(value: object) -> str | None:
    return None if value is None else _line("routing_key", value)


def _exchange(value: object) -> str | None:
    return None if value is None else _line("exchange", value)


_TASK_NAME: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")


def _task_name(value: object) -> str:
    # Celery takes any string as a task name ("add", "proj.tasks.add", "send-mail");
    # only what can never be one (blank, spaces, control characters) is refused.
    if (
        not isinstance(value, str)
        or len(value) > MAX_NAME_LENGTH
        or not _TASK_NAME.fullmatch(value)
        or not _storable(value)
    ):
        raise _invalid(
            "task",
            f"must be a task name like 'proj.tasks.add' (at most {MAX_NAME_LENGTH} characters,"
            " no spaces)",
            value,
        )
    return value


def _description(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH or not _storable(value):
        raise _invalid(
            "description",
            f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters, without NUL"
            " or lone surrogates",
            value,
        )
    return value


def _json_copy(value: Any, path: str, depth: int = 0) -> Any:
    """A copy of ``value`` made of JSON types only; anything else is refused, naming where.

    Unlike :func:`~z4j_domain.encoding.storable_json`, which makes whatever an
    agent observed storable and never fails, this is a check of what a user
    asks beat to send: a value JSON cannot carry is an error, not a repr.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not _storable(value):
            raise InvalidInput(
                f"{path}: contains a NUL character or a lone surrogate, which no database stores"
            )
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{path}: {value!r} is not a JSON number")
        return float(value)
    if depth >= MAX_JSON_DEPTH:
        raise InvalidInput(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        return [_json_copy(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path}: key {_shown(key)} is not a string")
            out[_json_copy(key, f"{path} key", depth + 1)] = _json_copy(
                item, f"{path}[{key!r}]", depth + 1
            )
        return out
    raise InvalidInput(f"{path}: a {type(value).__name__} is not a JSON value")


def _bounded(field: str, value: Any) -> None:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_ARGUMENTS_BYTES:
        raise InvalidInput(f"{field}: at most {MAX_ARGUMENTS_BYTES} bytes as JSON, got {size}")


def _args(value: object) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _invalid("args", "must be a list", value)
    copy: list[Any] = _json_copy(value, "args")
    _bounded("args", copy)
    return copy


def _kwargs(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid("kwargs", "must be an object", value)
    copy: dict[str, Any] = _json_copy(value, "kwargs")
    _bounded("kwargs", copy)
    return copy


def _priority(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise _invalid("priority", "must be a whole number from 0 to 255", value)
    return value


def _expires(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= MAX_EXPIRES
    ):
        raise _invalid("expires", "must be a number of seconds, above 0 and up to a year", value)
    return float(value)


@attrs.frozen(kw_only=True)
class EntryOptions:
    """How beat publishes the entry's task (Celery's ``apply_async`` options); ``None`` is unset.

    ``expires`` is in seconds after publishing (django-celery-beat's
    ``expire_seconds``); ``priority`` is 0 to 255 (RabbitMQ; Redis reads 0 to 9).
    """

    queue: str | None = attrs.field(default=None, converter=_queue)
    routing_key: str | None = attrs.field(default=None, converter=_routing_key)
    exchange: str | None = attrs.field(default=None, converter=_exchange)
    priority: int | None = attrs.field(default=None, converter=_priority)
    expires: float | None = attrs.field(default=None, converter=_expires)


def _schedule(_instance: Any, _attribute: Any, value: Schedule) -> None:
    if not isinstance(value, tuple(_SCHEDULE_CLASSES.values())):
        raise _invalid("schedule", "must be a crontab, interval, solar or clocked schedule", value)


def _options(_instance: Any, _attribute: Any, value: EntryOptions) -> None:
    if not isinstance(value, EntryOptions):
        raise _invalid("options", "must be EntryOptions", value)


def _flag(field: str) -> Callable[[Any, Any, bool], None]:
    def check(_instance: Any, _attribute: Any, value: bool) -> None:
        if not isinstance(value, bool):
            raise _invalid(field, "must be true or false", value)

    return check


@attrs.frozen(kw_only=True)
class ScheduleEntry:
    """One entry of beat's schedule: what to send, when, and what beat reports of it.

    ``name`` identifies the entry within its scheduler. ``args`` and ``kwargs``
    must be JSON (kept as a copy: tuples become lists). A ``one_off`` entry is
    disabled by beat after its first run; a clocked schedule must be one-off
    (django-celery-beat refuses it otherwise). ``last_run_at``,
    ``total_run_count`` and ``next_run_at`` are what beat reports; they are
    kept in UTC.
    """

    name: str = attrs.field(converter=_name)
    task: str = attrs.field(converter=_task_name)
    schedule: Schedule = attrs.field(validator=_schedule)
    args: list[Any] = attrs.field(factory=list, converter=_args)
    kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_kwargs)
    options: EntryOptions = attrs.field(factory=EntryOptions, validator=_options)
    enabled: bool = attrs.field(default=True, validator=_flag("enabled"))
    one_off: bool = attrs.field(default=False, validator=_flag("one_off"))
    description: str = attrs.field(default="", converter=_description)
    last_run_at: datetime | None = attrs.field(default=None, converter=_last_run_at)
    total_run_count: int = attrs.field(default=0, validator=_whole("total_run_count", 0))
    next_run_at: datetime | None = attrs.field(default=None, converter=_next_run_at)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.schedule, ClockedSchedule) and not self.one_off:
            raise InvalidInput("one_off: a clocked schedule fires once, so one_off must be true")


def task_name_warnings(entry: ScheduleEntry, known_tasks: Collection[str]) -> list[str]:
    """Warnings (not errors) about the entry's task name, given the tasks the beat app knows.

    Beat sends a task it does not know all the same (workers may know it), so
    an unknown name is worth a warning, with the closest known name if there is
    one. An empty ``known_tasks`` means beat has not said: nothing to warn about.
    """
    if not known_tasks or entry.task in known_tasks:
        return []
    close = difflib.get_close_matches(entry.task, sorted(known_tasks), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return [
        f"task {entry.task!r} is not registered in the beat app{hint}; beat sends it anyway,"
        " and a worker that does not know it rejects it"
    ]


# ---------------------------------------------------------------- JSON form


def _mapping(what: str, data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _invalid(what, "must be a JSON object", data)
    return data


def _check_keys(
    what: str, data: Mapping[str, Any], required: Collection[str], allowed: Collection[str]
) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise InvalidInput(f"{unknown[0]}: not a field of {what}")
    missing = [key for key in required if key not in data]
    if missing:
        raise InvalidInput(f"{missing[0]}: required in {what}")


def _parse_instant(field: str, value: object) -> object:
    """An ISO 8601 string read as a datetime (the constructor then checks it has a timezone)."""
    if not isinstance(value, str):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(field, "must be an ISO 8601 date and time", value) from None


_KINDS: Final = ", ".join(kind.value for kind in ScheduleKind)
_SCHEDULE_FIELDS: Final[Mapping[ScheduleKind, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # kind: (required fields, optional fields)
    ScheduleKind.CRONTAB: ((), (*(f.value for f in CronField), "timezone")),
    ScheduleKind.INTERVAL: (("every", "period"), ()),
    ScheduleKind.SOLAR: (("event", "latitude", "longitude"), ()),
    ScheduleKind.CLOCKED: (("clocked_time",), ()),
}


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    """The schedule as JSON: its fields and ``kind`` (``"crontab"``, ``"interval"``, ...)."""
    out: dict[str, Any] = {"kind": schedule.kind.value}
    for field in attrs.fields(type(schedule)):
        value = getattr(schedule, field.name)
        if isinstance(value, datetime):
            value = utc_isoformat(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        out[field.name] = value
    return out


def schedule_from_dict(data: object) -> Schedule:
    """Read :func:`schedule_to_dict`'s form; raises :class:`InvalidInput` naming the bad field.

    A crontab's missing fields are ``"*"`` and its missing timezone ``"UTC"``.
    """
    mapping = _mapping("schedule", data)
    if "kind" not in mapping:
        raise InvalidInput(f"kind: required in a schedule (one of {_KINDS})")
    raw_kind = mapping["kind"]
    try:
        kind = ScheduleKind(raw_kind if isinstance(raw_kind, str) else "")
    except ValueError:
        raise _invalid("kind", f"must be one of {_KINDS}", raw_kind) from None
    required, optional = _SCHEDULE_FIELDS[kind]
    fields = {key: value for key, value in mapping.items() if key != "kind"}
    _check_keys(f"{kind.value} schedules", fields, required, (*required, *optional))
    if kind is ScheduleKind.CLOCKED:
        fields["clocked_time"] = _parse_instant("clocked_time", fields["clocked_time"])
    return _SCHEDULE_CLASSES[kind](**fields)


def entry_to_dict(entry: ScheduleEntry) -> dict[str, Any]:
    """The entry as JSON (what the API shows and the wire carries); datetimes in UTC ISO 8601."""
    options = entry.options
    return {
        "name": entry.name,
        "task": entry.task,
        "schedule": schedule_to_dict(entry.schedule),
        "args": _json_copy(entry.args, "args"),
        "kwargs": _json_copy(entry.kwargs, "kwargs"),
        "options": {
            "queue": options.queue,
            "routing_key": options.routing_key,
            "exchange": options.exchange,
            "priority": options.priority,
            "expires": options.expires,
        },
        "enabled": entry.enabled,
        "one_off": entry.one_off,
        "description": entry.description,
        "last_run_at": None if entry.last_run_at is None else utc_isoformat(entry.last_run_at),
        "total_run_count": entry.total_run_count,
        "next_run_at": None if entry.next_run_at is None else utc_isoformat(entry.next_run_at),
    }


_ENTRY_REQUIRED: Final = ("name", "task", "schedule")
_ENTRY_FIELDS: Final = tuple(field.name for field in attrs.fields(ScheduleEntry))
_OPTION_FIELDS: Final = tuple(field.name for field in attrs.fields(EntryOptions))


def _nested(prefix: str, build: Callable[[], Any]) -> Any:
    """``build()``, its errors named by their path from the entry (``schedule.minute: ...``)."""
    try:
        return build()
    except InvalidInput as error:
        message = str(error)
        raise InvalidInput(
            message if message.startswith(f"{prefix}:") else f"{prefix}.{message}"
        ) from None


def _options_from_dict(data: object) -> EntryOptions:
    options = _mapping("options", data)
    _check_keys("the options", options, (), _OPTION_FIELDS)
    return EntryOptions(**options)


def entry_from_dict(data: object) -> ScheduleEntry:
    """Read :func:`entry_to_dict`'s form; raises :class:`InvalidInput` naming the bad field.

    Only ``name``, ``task`` and ``schedule`` are required; the rest default as
    in :class:`ScheduleEntry`. Errors inside the schedule or the options are
    named by their path, like ``schedule.minute`` or ``options.priority``.
    """
    mapping = _mapping("entry", data)
    _check_keys("a schedule entry", mapping, _ENTRY_REQUIRED, _ENTRY_FIELDS)
    fields = dict(mapping)
    fields["schedule"] = _nested("schedule", lambda: schedule_from_dict(mapping["schedule"]))
    if "options" in mapping:
        fields["options"] = _nested("options", lambda: _options_from_dict(mapping["options"]))
    for name in ("last_run_at", "next_run_at"):
        if name in fields:
            fields[name] = _parse_instant(name, fields[name])
    return ScheduleEntry(**fields)


# ---------------------------------------------------------------- fire times


def next_fire_times(
    schedule: Schedule,
    after: datetime,
    count: int = 5,
    *,
    last_run_at: datetime | None = None,
) -> list[datetime]:
    """The schedule's next ``count`` fire times strictly after ``after``, in UTC, increasing.

    Fewer come back when the schedule fires fewer times (a clocked time, or a
    crontab whose next match is past the year 9999).

    * **crontab**: every minute whose local time in the schedule's timezone
      matches the fields (day fields joined by *and*, as Celery does). Around
      daylight saving changes: a local time that does not exist (the hour
      skipped in spring) is skipped; a local time that happens twice (the hour
      repeated in autumn) fires once, at its first occurrence. Celery fires
      once there too; croniter fires both occurrences, and fires a skipped
      time at the end of the gap.
    * **interval**: ``last_run_at + every``, ``+ 2 * every``, ... Without a last
      run, or when it is overdue (``last_run_at + every <= after``, which beat
      runs at once and counts from then), counting starts at ``after``.
    * **clocked**: its time, if later than ``after``.
    * **solar**: not computed (beat uses the ``ephem`` library for it, which the
      pure domain does not have): raises :class:`PreviewUnavailable`.
    """
    after = _instant("after", after)
    if last_run_at is not None:
        last_run_at = _instant("last_run_at", last_run_at)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_FIRE_TIMES:
        raise _invalid("count", f"must be a whole number from 0 to {MAX_FIRE_TIMES}", count)
    if isinstance(schedule, SolarSchedule):
        raise PreviewUnavailable(
            "solar schedules are not previewed: beat computes sunrise and the like with"
            " the ephem library, and reports the next run itself"
        )
    if count == 0:
        return []
    if isinstance(schedule, ClockedSchedule):
        return [schedule.clocked_time] if schedule.clocked_time > after else []
    if isinstance(schedule, IntervalSchedule):
        instants = _interval_instants(schedule, after, last_run_at)
    elif isinstance(schedule, CrontabSchedule):
        instants = _crontab_instants(schedule, after)
    else:
        raise _invalid(
            "schedule", "must be a crontab, interval, solar or clocked schedule", schedule
        )
    return list(itertools.islice(instants, count))


def _interval_instants(
    schedule: IntervalSchedule, after: datetime, last_run_at: datetime | None
) -> Iterator[datetime]:
    every = schedule.delta
    start = after
    if last_run_at is not None:
        try:
            if last_run_at + every > after:  # not overdue: beat keeps counting from it
                start = last_run_at
        except OverflowError:  # its next run would be past the year 9999
            return
    try:
        while True:
            start += every
            yield start
    except OverflowError:  # past the year 9999
        return


def _crontab_instants(schedule: CrontabSchedule, after: datetime) -> Iterator[datetime]:
    """The crontab's fire instants (UTC) strictly after ``after``, in order.

    Walks local wall-clock times from ``after``'s own, in order. Mapping an
    existing wall time to its first occurrence is increasing, so no earlier
    wall time can map past ``after`` and the instants come out increasing.
    """
    zone = ZoneInfo(schedule.timezone)
    try:
        start = after.astimezone(zone).replace(tzinfo=None)
    except OverflowError:  # ``after`` is at the very end of datetime's range
        return
    hours = sorted(schedule.values(CronField.HOUR))
    minutes = sorted(schedule.values(CronField.MINUTE))
    for day in _matching_days(schedule, start.date()):
        first_day = day == start.date()
        for hour in hours:
            if first_day and hour < start.hour:
                continue
            for minute in minutes:
                if first_day and hour == start.hour and minute < start.minute:
                    continue
                wall = datetime(day.year, day.month, day.day, hour, minute)
                instant = _first_occurrence(wall, zone)
                if instant is not None and instant > after:
                    yield instant


def _first_occurrence(wall: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of a local wall time: the first if it repeats, ``None`` if it is skipped."""
    try:
        instant = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the earlier occurrence
        back = instant.astimezone(zone).replace(tzinfo=None)
    except OverflowError:  # the very edge of datetime's range
        return None
    # In a gap, fold=0 reads the wall time with the offset from before the change,
    # which lands on a different wall time: the time does not exist that day.
    return instant if back == wall else None


def _matching_days(schedule: CrontabSchedule, start: date) -> Iterator[date]:
    """Days from ``start`` on whose month, day of month and day of week all match.

    Terminates: validation ensures some day of the month occurs in some month,
    and in the Gregorian calendar's 400-year cycle every valid (month, day)
    falls on every day of the week.
    """
    months = sorted(schedule.values(CronField.MONTH_OF_YEAR))
    days = sorted(schedule.values(CronField.DAY_OF_MONTH))
    weekdays = schedule.values(CronField.DAY_OF_WEEK)
    for year in range(start.year, 10_000):
        for month in months:
            if (year, month) < (start.year, start.month):
                continue
            length = calendar.monthrange(year, month)[1]
            for day in days:
                if day > length:
                    break
                candidate = date(year, month, day)
                if candidate >= start and candidate.isoweekday() % 7 in weekdays:
                    yield candidate
