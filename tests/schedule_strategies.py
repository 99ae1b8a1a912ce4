"""Hypothesis strategies for Celery Beat schedules and entries (:mod:`z4j_domain.schedules`).

Kept apart from ``tests/strategies.py``: they are only used by the schedule
tests. Crontab expressions are built item by item from Celery's grammar, in
every spelling it takes (numbers with leading zeros, day and month names in
any case, wrapping ranges, steps), and invalid ones by breaking exactly one item.
"""

from __future__ import annotations

import functools
import string
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import strategies as st

from z4j_domain.schedules import (
    MAX_INTERVAL,
    ClockedSchedule,
    CronField,
    CrontabSchedule,
    EntryOptions,
    IntervalPeriod,
    IntervalSchedule,
    Schedule,
    ScheduleEntry,
    SolarEvent,
    SolarSchedule,
)

DAY_NAMES: Final = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTH_NAMES: Final = (
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
)

#: Zones with the daylight saving rules worth testing: one-hour changes both
#: ways in either hemisphere, Lord Howe's half-hour change, Chatham's :45
#: offsets, Sao Paulo's midnight changes (until 2019), and zones without any.
DST_ZONES: Final = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Europe/London",
)
FIXED_ZONES: Final = ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "Etc/GMT+5")
ALL_ZONES: Final = tuple(sorted(available_timezones() - {"localtime"}))


def _name_token(draw: st.DrawFn, name: str) -> str:
    text = name if draw(st.booleans()) else name[:3]
    style = draw(st.sampled_from(["lower", "upper", "title"]))
    return {"lower": text.lower(), "upper": text.upper(), "title": text.title()}[style]


def _value_token(draw: st.DrawFn, field: CronField, value: int) -> str:
    if field is CronField.DAY_OF_WEEK and draw(st.booleans()):
        return _name_token(draw, DAY_NAMES[value])
    if field is CronField.MONTH_OF_YEAR and draw(st.booleans()):
        return _name_token(draw, MONTH_NAMES[value - 1])
    return "0" * draw(st.integers(min_value=0, max_value=1)) + str(value)


@st.composite
def cron_items(draw: st.DrawFn, field: CronField) -> str:
    """One valid item of a field: ``*``, ``*/n``, ``a``, ``a-b`` or ``a-b/n`` (b < a wraps)."""
    values = st.integers(min_value=field.low, max_value=field.high)
    steps = st.integers(min_value=1, max_value=field.high - field.low + 3)
    shape = draw(st.sampled_from(["*", "*/n", "a", "a-b", "a-b/n"]))
    if shape == "*":
        return "*"
    if shape == "*/n":
        return f"*/{draw(steps)}"
    start = _value_token(draw, field, draw(values))
    if shape == "a":
        return start
    item = f"{start}-{_value_token(draw, field, draw(values))}"
    return f"{item}/{draw(steps)}" if shape == "a-b/n" else item


@st.composite
def cron_expressions(draw: st.DrawFn, field: CronField, max_items: int = 3) -> str:
    """A valid expression of ``field``: one to ``max_items`` items joined by commas."""
    items = draw(st.lists(cron_items(field), min_size=1, max_size=max_items))
    return ",".join(items)


def _invalid_items(field: CronField) -> st.SearchStrategy[str]:
    too_big = st.integers(min_value=field.high + 1, max_value=field.high + 1000).map(str)
    too_small = st.just(str(field.low - 1)) if field.low > 0 else st.nothing()
    word = "jan" if field is not CronField.MONTH_OF_YEAR else "mon"
    out_of_range = st.one_of(
        too_big,
        too_small,
        too_big.map(lambda n: f"{field.low}-{n}"),
        too_big.map(lambda n: f"{n}-{field.high}/2"),
    )
    bad_steps = st.sampled_from(["*/0", f"{field.low}-{field.high}/0", "*/", "*/-1", "*/x"]) | (
        st.integers(min_value=field.low, max_value=field.high).map(lambda n: f"{n}/2")
    )
    junk = st.sampled_from(
        [
            "**",
            "*-5",
            "1-2-3",
            "1.5",
            "+5",
            "5x",
            "x5",
            f"{field.low}-{field.high}/2x",
            "1_0",
            "\u0661",
            word,
            "monkey",
            "-1",
            "1-",
            "?",
            "L",
            "1 2",
        ]
    )
    return st.one_of(out_of_range, bad_steps, junk)


@st.composite
def invalid_cron_expressions(draw: st.DrawFn, field: CronField) -> str:
    """An expression of ``field`` with one broken or empty item, or empty as a whole."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(st.sampled_from(["", ",", " ", " , "]))
    items = draw(st.lists(cron_items(field), min_size=0, max_size=2))
    bad = draw(st.one_of(_invalid_items(field), st.just("")))
    position = draw(st.integers(min_value=0, max_value=len(items)))
    return ",".join([*items[:position], bad, *items[position:]])


@st.composite
def crontab_fields(draw: st.DrawFn, max_items: int = 3) -> dict[str, str]:
    """The five fields of a crontab (maybe not a valid combination of days and months)."""
    fields: dict[str, str] = {}
    for field in CronField:
        # "*" often: most real crontabs leave most fields open.
        fields[field.value] = draw(st.just("*") | cron_expressions(field, max_items))
    return fields


def _is_valid(fields: dict[str, str], timezone: str) -> bool:
    try:
        CrontabSchedule(**fields, timezone=timezone)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


@st.composite
def crontabs(draw: st.DrawFn, zones: tuple[str, ...] = DST_ZONES + FIXED_ZONES) -> CrontabSchedule:
    """A valid crontab in one of ``zones``."""
    timezone = draw(st.sampled_from(zones))
    fields = draw(crontab_fields().filter(lambda f: _is_valid(f, timezone)))
    return CrontabSchedule(**fields, timezone=timezone)  # type: ignore[arg-type]


@functools.cache
def transitions(zone_name: str) -> tuple[datetime, ...]:
    """The instants (UTC) at which ``zone_name`` changed its offset in 2018, 2019 and 2025."""
    zone = ZoneInfo(zone_name)
    found = []
    for year in (2018, 2019, 2025):
        instant = datetime(year, 1, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC)
        while instant < end:
            step = instant + timedelta(hours=1)
            if instant.astimezone(zone).utcoffset() != step.astimezone(zone).utcoffset():
                low, high = instant, step
                while high - low > timedelta(minutes=1):
                    middle = low + (high - low) / 2
                    if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                        low = middle
                    else:
                        high = middle
                found.append(high.replace(second=0, microsecond=0))
            instant = step
    return tuple(found)


def instants_in(zone_name: str) -> st.SearchStrategy[datetime]:
    """Instants from 2000 to 2040, half of them within five hours of one of the zone's changes."""
    anywhere = st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    )
    changes = transitions(zone_name)
    if not changes:
        return anywhere
    near = st.builds(
        lambda change, minutes, seconds: change + timedelta(minutes=minutes, seconds=seconds),
        st.sampled_from(changes),
        st.integers(min_value=-300, max_value=300),
        st.sampled_from([0, 0, 30, 59.999999]),
    )
    return anywhere | near


@st.composite
def intervals(draw: st.DrawFn) -> IntervalSchedule:
    """A valid interval: one second to 365 days, in any period."""
    period = draw(st.sampled_from(IntervalPeriod))
    unit = timedelta(microseconds=period.microseconds)
    low = max(1, -(-timedelta(seconds=1) // unit))
    every = draw(st.integers(min_value=low, max_value=MAX_INTERVAL // unit))
    return IntervalSchedule(every=every, period=period)


solars = st.builds(
    SolarSchedule,
    event=st.sampled_from(SolarEvent),
    latitude=st.floats(min_value=-90, max_value=90) | st.integers(min_value=-90, max_value=90),
    longitude=st.floats(min_value=-180, max_value=180) | st.integers(min_value=-180, max_value=180),
)

aware_datetimes = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata")]),
)

clockeds = st.builds(ClockedSchedule, clocked_time=aware_datetimes)

schedules: st.SearchStrategy[Schedule] = st.one_of(
    crontabs(zones=ALL_ZONES[::7] + FIXED_ZONES), intervals(), solars, clockeds
)

# Text a database stores: no NUL, no lone surrogate (entries refuse both).
_storable_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_json_text = st.text(_storable_chars, max_size=8)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _json_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_json_text, children, max_size=3)
    ),
    max_leaves=8,
)

_names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    str.strip
)
task_names = st.text(string.ascii_letters + string.digits + "._-:", min_size=1, max_size=40)

entry_options = st.builds(
    EntryOptions,
    queue=st.none() | _names,
    routing_key=st.none() | _names,
    exchange=st.none() | _names,
    priority=st.none() | st.integers(min_value=0, max_value=255),
    expires=st.none()
    | st.floats(min_value=0.001, max_value=366 * 86_400)
    | st.integers(min_value=1, max_value=86_400),
)


@st.composite
def entries(draw: st.DrawFn) -> ScheduleEntry:
    """A valid schedule entry of any kind, with what beat reports of it or without."""
    schedule = draw(schedules)
    return ScheduleEntry(
        name=draw(_names),
        task=draw(task_names),
        schedule=schedule,
        args=draw(st.lists(json_values, max_size=3)),
        kwargs=draw(st.dictionaries(_json_text, json_values, max_size=3)),
        options=draw(entry_options),
        enabled=draw(st.booleans()),
        one_off=True if isinstance(schedule, ClockedSchedule) else draw(st.booleans()),
        description=draw(st.text(_storable_chars, max_size=30)),
        last_run_at=draw(st.none() | aware_datetimes),
        total_run_count=draw(st.integers(min_value=0, max_value=10**9)),
        next_run_at=draw(st.none() | aware_datetimes),
    )
