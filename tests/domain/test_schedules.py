"""Celery Beat schedules: validation against Celery's own parser, the JSON form, and the
next fire times against croniter (both are oracles here only; the domain uses neither)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab, crontab_parser
from croniter import croniter
from hypothesis import given
from hypothesis import strategies as st

from tests.schedule_strategies import (
    ALL_ZONES,
    DST_ZONES,
    FIXED_ZONES,
    aware_datetimes,
    clockeds,
    cron_expressions,
    crontab_fields,
    crontabs,
    entries,
    instants_in,
    intervals,
    invalid_cron_expressions,
    json_values,
    solars,
    transitions,
)
from z4j_domain.errors import InvalidInput, PreviewUnavailable
from z4j_domain.schedules import (
    MAX_ARGUMENTS_BYTES,
    ClockedSchedule,
    CronField,
    CrontabSchedule,
    EntryOptions,
    IntervalPeriod,
    IntervalSchedule,
    ScheduleEntry,
    SolarEvent,
    SolarSchedule,
    entry_from_dict,
    entry_to_dict,
    next_fire_times,
    parse_cron_field,
    schedule_from_dict,
    schedule_to_dict,
    task_name_warnings,
)

# crontab_parser's (max_, min_) for each field, as celery.schedules.crontab calls it.
CELERY_PARSER_ARGS = {
    CronField.MINUTE: (60, 0),
    CronField.HOUR: (24, 0),
    CronField.DAY_OF_WEEK: (7, 0),
    CronField.DAY_OF_MONTH: (31, 1),
    CronField.MONTH_OF_YEAR: (12, 1),
}
FIELDS = st.sampled_from(CronField)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def celery_values(field: CronField, expression: str) -> set[int] | None:
    """What Celery's own parser makes of ``expression`` (``None`` when it refuses it)."""
    try:
        return crontab_parser(*CELERY_PARSER_ARGS[field]).parse(expression)
    except Exception:
        return None


def normalised(expression: str) -> str:
    """The expression as z4j stores it: spaces around list items dropped."""
    return ",".join(part.strip() for part in expression.split(","))


def entry(**fields: Any) -> ScheduleEntry:
    values: dict[str, Any] = {"name": "nightly", "task": "proj.tasks.add"}
    values.setdefault("schedule", CrontabSchedule())
    return ScheduleEntry(**{**values, **fields})


# ---------------------------------------------------------------- crontab fields


@given(FIELDS.flatmap(lambda f: st.tuples(st.just(f), cron_expressions(f))))
def test_valid_expressions_mean_what_they_mean_to_celery(case: tuple[CronField, str]) -> None:
    """Every generated expression is accepted, with exactly the values Celery's parser gives."""
    field, expression = case
    assert parse_cron_field(field, expression) == celery_values(field, expression)


@given(FIELDS.flatmap(lambda f: st.tuples(st.just(f), invalid_cron_expressions(f))))
def test_invalid_expressions_are_refused_naming_the_field(case: tuple[CronField, str]) -> None:
    """Out of range, a bad step, junk, an empty item: refused, the message naming the field."""
    field, expression = case
    with pytest.raises(InvalidInput, match=rf"^{field.value}: "):
        parse_cron_field(field, expression)


@given(FIELDS, st.text(alphabet="0123456789*/-, abcdefhijlmnorstuvwyMSFJ", max_size=12))
def test_anything_accepted_is_accepted_by_celery_with_the_same_values(
    field: CronField, text: str
) -> None:
    """On arbitrary text, z4j is never more lenient than Celery and never reads it differently."""
    try:
        ours = parse_cron_field(field, text)
    except InvalidInput:
        return
    assert celery_values(field, normalised(text)) == ours


@pytest.mark.parametrize(
    ("field", "expression", "values"),
    [
        ("minute", "*/15", {0, 15, 30, 45}),
        ("hour", "0,8-17/2", {0, 8, 10, 12, 14, 16}),
        ("day_of_week", "mon-fri", {1, 2, 3, 4, 5}),
        ("day_of_week", "sun-sat", set(range(7))),
        ("day_of_week", "fri-mon", {5, 6, 0, 1}),
        ("day_of_week", "Saturday,SUN", {6, 0}),
        ("day_of_month", "30-2", {30, 31, 1, 2}),
        ("day_of_month", "*/10", {1, 11, 21, 31}),
        ("month_of_year", "jan-mar,December", {1, 2, 3, 12}),
        ("minute", " 0 , 30 ", {0, 30}),
        ("minute", "007", {7}),
    ],
)
def test_documented_examples(field: str, expression: str, values: set[int]) -> None:
    """Examples from Celery's docs, names, wrapping ranges and django-admin spacing."""
    assert parse_cron_field(field, expression) == values


@pytest.mark.parametrize(
    ("field", "expression", "message"),
    [
        ("minute", "60", "minute: 60 is out of range 0-59"),
        ("day_of_week", "7", "day_of_week: 7 is out of range 0-6"),
        ("day_of_month", "0", "day_of_month: 0 is out of range 1-31"),
        ("minute", "*/0", "step after '/' must be a whole number of at least 1"),
        ("minute", "5/15", "a step needs '\\*' or a range before it"),
        ("minute", "", "must not be empty"),
        ("minute", "1,,2", "empty item"),
        ("minute", "mon", "names are allowed in day_of_week and month_of_year only"),
        ("day_of_week", "jan", "'jan' is not a number or a day name"),
        ("month_of_year", "monkey", "is not a number or a month name"),
        ("hour", "1-5/2x", "step after '/'"),
        ("minute", "x" * 300, "at most 240 characters"),
    ],
)
def test_refusals_say_what_is_wrong(field: str, expression: str, message: str) -> None:
    """Each kind of mistake gets a message that names the field and the problem."""
    with pytest.raises(InvalidInput, match=message):
        parse_cron_field(field, expression)


@given(crontab_fields())
def test_a_crontab_is_valid_exactly_when_celery_takes_it(fields: dict[str, str]) -> None:
    """Including Celery's check that some day of the month occurs in some month."""
    try:
        celery = crontab(**fields)
    except ValueError:
        celery = None
    try:
        ours = CrontabSchedule(**fields)  # type: ignore[arg-type]
    except InvalidInput:
        assert celery is None
        return
    assert celery is not None
    assert ours.values("minute") == celery.minute
    assert ours.values("hour") == celery.hour
    assert ours.values("day_of_week") == celery.day_of_week
    assert ours.values("day_of_month") == celery.day_of_month
    assert ours.values("month_of_year") == celery.month_of_year


def test_a_day_that_no_month_has_is_refused() -> None:
    """The 30th of February never comes; the 29th does (in leap years)."""
    with pytest.raises(InvalidInput, match="day_of_month '30' never occurs in month_of_year 'feb'"):
        CrontabSchedule(day_of_month="30", month_of_year="feb")
    assert CrontabSchedule(day_of_month="29", month_of_year="2").values("day_of_month") == {29}


def test_celery_values_and_collections_are_taken_as_text() -> None:
    """``crontab(minute=0, hour=[1, 2])`` in a beat_schedule reports as ints and lists."""
    schedule = CrontabSchedule(minute=0, hour=[13, 1], day_of_week={6, 0})  # type: ignore[arg-type]
    assert (schedule.minute, schedule.hour, schedule.day_of_week) == ("0", "1,13", "0,6")
    for bad in (None, True, [], ["1"], 1.5):
        with pytest.raises(InvalidInput, match=r"^minute: "):
            CrontabSchedule(minute=bad)  # type: ignore[arg-type]


def test_the_cron_line_form() -> None:
    """``from_cron`` reads the classic order (minute hour day month weekday); ``cron`` writes it."""
    schedule = CrontabSchedule.from_cron("*/15 9-17 1-7 * mon", timezone="Europe/Berlin")
    assert schedule == CrontabSchedule(
        minute="*/15", hour="9-17", day_of_month="1-7", day_of_week="mon", timezone="Europe/Berlin"
    )
    assert CrontabSchedule.from_cron(schedule.cron, "Europe/Berlin") == schedule
    with pytest.raises(InvalidInput, match="five fields"):
        CrontabSchedule.from_cron("* * * *")


@given(st.sampled_from(ALL_ZONES))
def test_every_iana_zone_is_accepted(zone: str) -> None:
    """Any name the time zone database has."""
    assert CrontabSchedule(timezone=zone).timezone == zone


@pytest.mark.parametrize(
    "zone",
    [
        "",
        "Mars/Olympus",
        "europe/berlin",
        "Europe/Berlin ",
        "Europe",
        "../etc/passwd",
        "/etc/localtime",
        "localtime",
        "zone.tab",
        "UTC\x00",
        "x" * 64,
        None,
        5,
    ],
)
def test_unknown_timezones_are_refused(zone: object) -> None:
    """Only IANA names; not the machine's own "localtime", not paths, not files that are no zone."""
    with pytest.raises(InvalidInput, match=r"^timezone: "):
        CrontabSchedule(timezone=zone)  # type: ignore[arg-type]


def test_every_month_day_falls_on_every_weekday_within_400_years() -> None:
    """Why a crontab that passes Celery's month check always fires: no day/weekday pair is
    impossible (the Gregorian calendar repeats every 400 years)."""
    seen = set()
    day = date(2000, 1, 1)
    while day < date(2400, 1, 1):
        seen.add((day.month, day.day, day.isoweekday() % 7))
        day += timedelta(days=1)
    assert len(seen) == 366 * 7


# ---------------------------------------------------------------- other schedules


@given(intervals())
def test_intervals_within_bounds_are_accepted(interval: IntervalSchedule) -> None:
    """From one second to 365 days, in any period; ``from_timedelta`` finds an equal length."""
    assert timedelta(seconds=1) <= interval.delta <= timedelta(days=365)
    assert IntervalSchedule.from_timedelta(interval.delta).delta == interval.delta


@pytest.mark.parametrize(
    ("every", "period", "message"),
    [
        (0, "seconds", "every: must be a whole number of at least 1"),
        (-5, "minutes", "every: must be a whole number of at least 1"),
        (True, "seconds", "every: must be a whole number"),
        (1.5, "seconds", "every: must be a whole number"),
        (999_999, "microseconds", "every: an interval is from 1 second to 365 days"),
        (366, "days", "every: an interval is from 1 second to 365 days"),
        (10**30, "days", "every: an interval is from 1 second to 365 days"),
        (1, "weeks", "period: must be one of days, hours, minutes, seconds, microseconds"),
        (1, None, "period: must be one of"),
    ],
)
def test_intervals_out_of_bounds_are_refused(every: object, period: object, message: str) -> None:
    """Below a second beat cannot keep up; above a year a crontab says it better."""
    with pytest.raises(InvalidInput, match=message):
        IntervalSchedule(every=every, period=period)  # type: ignore[arg-type]


def test_from_timedelta_picks_the_largest_exact_unit() -> None:
    """As the beat agent reports Celery's ``schedule(run_every=...)``."""
    assert IntervalSchedule.from_timedelta(timedelta(hours=2)) == IntervalSchedule(
        every=2, period=IntervalPeriod.HOURS
    )
    assert IntervalSchedule.from_timedelta(timedelta(seconds=90)) == IntervalSchedule(
        every=90, period=IntervalPeriod.SECONDS
    )
    assert IntervalSchedule.from_timedelta(timedelta(seconds=1.5)) == IntervalSchedule(
        every=1_500_000, period=IntervalPeriod.MICROSECONDS
    )
    with pytest.raises(InvalidInput, match="every: "):
        IntervalSchedule.from_timedelta(timedelta(0))


@given(solars)
def test_solar_schedules_within_bounds_are_accepted(solar: SolarSchedule) -> None:
    """Any of Celery's nine events, latitude -90..90, longitude -180..180 (ints become floats)."""
    assert isinstance(solar.latitude, float)
    assert set(SolarEvent) == {
        "dawn_astronomical",
        "dawn_nautical",
        "dawn_civil",
        "sunrise",
        "solar_noon",
        "sunset",
        "dusk_civil",
        "dusk_nautical",
        "dusk_astronomical",
    }


@given(
    st.one_of(
        st.floats(min_value=90, exclude_min=True),
        st.floats(max_value=-90, exclude_max=True),
        st.sampled_from([float("nan"), True, "45", None]),
    ),
    st.one_of(
        st.floats(min_value=180, exclude_min=True),
        st.floats(max_value=-180, exclude_max=True),
        st.sampled_from([float("nan"), False, "10"]),
    ),
)
def test_solar_coordinates_out_of_bounds_are_refused(latitude: object, longitude: object) -> None:
    """Either coordinate outside its range, not finite or not a number is refused by name."""
    with pytest.raises(InvalidInput, match=r"^latitude: must be a number from -90 to 90"):
        SolarSchedule(event="sunrise", latitude=latitude, longitude=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^longitude: must be a number from -180 to 180"):
        SolarSchedule(event="sunrise", latitude=0, longitude=longitude)  # type: ignore[arg-type]


def test_unknown_solar_events_and_naive_clocked_times_are_refused() -> None:
    """Celery's event names only; a clocked time needs its timezone."""
    with pytest.raises(InvalidInput, match=r"^event: must be one of dawn_astronomical"):
        SolarSchedule(event="noon", latitude=0, longitude=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^clocked_time: must have a timezone"):
        ClockedSchedule(clocked_time=datetime(2026, 1, 1))


# ---------------------------------------------------------------- entries


@given(entries())
def test_entries_round_trip_through_json(value: ScheduleEntry) -> None:
    """``entry_from_dict(entry_to_dict(x)) == x``, through real JSON text too."""
    as_dict = entry_to_dict(value)
    assert entry_from_dict(as_dict) == value
    assert entry_from_dict(json.loads(json.dumps(as_dict, allow_nan=False))) == value


@given(st.one_of(crontabs(), intervals(), solars, clockeds))
def test_schedules_round_trip_through_json(schedule: Any) -> None:
    """Each kind on its own, with its ``kind`` tag."""
    as_dict = schedule_to_dict(schedule)
    assert as_dict["kind"] == schedule.kind
    assert schedule_from_dict(json.loads(json.dumps(as_dict))) == schedule


_NOT_JSON = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        b"bytes",
        {1, 2},
        object(),
        datetime(2026, 1, 1, tzinfo=UTC),
        {1: "int key"},
        "NUL \x00 inside",
        "lone surrogate \ud800",
    ]
)


@given(st.lists(json_values, max_size=3), _NOT_JSON, st.booleans())
def test_arguments_that_are_not_json_are_refused_naming_where(
    good: list[Any], bad: object, nested: bool
) -> None:
    """A value JSON cannot carry, anywhere in args or kwargs, is refused with its path."""
    value = {"outer": [bad]} if nested else bad
    with pytest.raises(InvalidInput, match=r"^args\[\d+\]"):
        entry(args=[*good, value])
    with pytest.raises(InvalidInput, match=r"^kwargs\['k'\]"):
        entry(kwargs={"k": value})


def test_arguments_are_copied_and_bounded() -> None:
    """Tuples become lists, the caller's objects are not shared, and size is limited."""
    payload = {"ids": (1, 2)}
    value = entry(args=(payload,), kwargs=payload)
    payload["ids"] = ()
    assert value.args == [{"ids": [1, 2]}]
    assert value.kwargs == {"ids": [1, 2]}
    with pytest.raises(InvalidInput, match=rf"^args: at most {MAX_ARGUMENTS_BYTES} bytes"):
        entry(args=["x" * MAX_ARGUMENTS_BYTES])
    with pytest.raises(InvalidInput, match=r"^args: must be a list"):
        entry(args={"a": 1})
    with pytest.raises(InvalidInput, match=r"^kwargs: must be an object"):
        entry(kwargs=[1])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "^name: must be a non-blank line"),
        ({"name": "   "}, "^name: "),
        ({"name": "a\nb"}, "^name: "),
        ({"name": "x" * 201}, "^name: "),
        ({"task": "proj tasks"}, "^task: must be a task name"),
        ({"task": ""}, "^task: "),
        ({"task": None}, "^task: "),
        ({"schedule": "*/5 * * * *"}, "^schedule: must be a crontab"),
        ({"enabled": "yes"}, "^enabled: must be true or false"),
        ({"total_run_count": -1}, "^total_run_count: must be a whole number of at least 0"),
        ({"last_run_at": datetime(2026, 1, 1)}, "^last_run_at: must have a timezone"),
        ({"next_run_at": "2026-01-01"}, "^next_run_at: must be a datetime"),
        ({"description": "x" * 4001}, "^description: "),
        ({"description": "\ud800"}, "^description: "),
        ({"name": "night\udfff"}, "^name: "),
        ({"task": "proj.\ud800"}, "^task: "),
        (
            {"schedule": ClockedSchedule(clocked_time=NOW)},
            "^one_off: a clocked schedule fires once",
        ),
        ({"options": {"priority": 1}}, "^options: must be EntryOptions"),
    ],
)
def test_invalid_entries_are_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    """Each field checks its own value."""
    with pytest.raises(InvalidInput, match=message):
        entry(**fields)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 256}, "priority: must be a whole number from 0 to 255"),
        ({"priority": -1}, "priority: "),
        ({"priority": True}, "priority: "),
        ({"expires": 0}, "expires: must be a number of seconds"),
        ({"expires": float("inf")}, "expires: "),
        ({"expires": 400 * 86_400}, "expires: "),
        ({"queue": ""}, "queue: must be a non-blank line"),
        ({"routing_key": "a\x00"}, "routing_key: "),
        ({"exchange": 5}, "exchange: "),
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Priority 0-255, expires a positive number of seconds up to a year, names non-blank."""
    with pytest.raises(InvalidInput, match=rf"^{message}"):
        EntryOptions(**options)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "^entry: must be a JSON object"),
        ({"task": "a"}, "^name: required in a schedule entry"),
        ({"name": "n", "task": "a", "schedule": {}, "colour": 1}, "^colour: not a field"),
        ({"name": "n", "task": "a", "schedule": "x"}, "^schedule: must be a JSON object"),
        ({"name": "n", "task": "a", "schedule": {}}, "^schedule.kind: required"),
        ({"name": "n", "task": "a", "schedule": {"kind": "cron"}}, "^schedule.kind: must be one"),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab", "minute": "61"}},
            "^schedule.minute: 61 is out of range 0-59",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "interval", "every": 5}},
            "^schedule.period: required in interval schedules",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab", "every": 5}},
            "^schedule.every: not a field of crontab schedules",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "clocked", "clocked_time": "soon"}},
            "^schedule.clocked_time: must be an ISO 8601 date and time",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab"}, "options": {"ttl": 1}},
            "^options.ttl: not a field of the options",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab"}, "options": {"queue": 1}},
            "^options.queue: ",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab"}, "kwargs": {"x": [1e999]}},
            r"^kwargs\['x'\]\[0\]: inf is not a JSON number",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab"}, "last_run_at": "2026"},
            "^last_run_at: must be an ISO 8601 date and time",
        ),
        (
            {
                "name": "n",
                "task": "a",
                "schedule": {"kind": "crontab"},
                "next_run_at": "2026-01-01",
            },
            "^next_run_at: must have a timezone",
        ),
        (
            {"name": "n", "task": "a", "schedule": {"kind": "crontab"}, "options": []},
            "^options: must be a JSON object",
        ),
    ],
)
def test_from_dict_names_the_bad_field(data: object, message: str) -> None:
    """Errors from the JSON form name their path: ``schedule.minute``, ``options.queue``."""
    with pytest.raises(InvalidInput, match=message):
        entry_from_dict(data)


def test_from_dict_defaults() -> None:
    """Only name, task and schedule are needed; a crontab's missing fields are ``*`` in UTC."""
    value = entry_from_dict({"name": "n", "task": "a", "schedule": {"kind": "crontab"}})
    assert value == ScheduleEntry(name="n", task="a", schedule=CrontabSchedule())
    assert value.schedule == CrontabSchedule(timezone="UTC")
    assert value.enabled
    assert not value.one_off
    assert (value.args, value.kwargs, value.options) == ([], {}, EntryOptions())


def test_unknown_task_names_are_warned_about_not_refused() -> None:
    """A warning with the closest known name; none for a known task or when beat said nothing."""
    value = entry(task="proj.tasks.ad")
    known = {"proj.tasks.add", "proj.tasks.mul", "celery.backend_cleanup"}
    warnings = task_name_warnings(value, known)
    assert len(warnings) == 1
    assert "'proj.tasks.ad' is not registered" in warnings[0]
    assert "did you mean 'proj.tasks.add'?" in warnings[0]
    assert task_name_warnings(entry(task="proj.tasks.add"), known) == []
    assert task_name_warnings(value, set()) == []
    assert "did you mean" not in task_name_warnings(entry(task="zzz"), known)[0]


# ---------------------------------------------------------------- next fire times


def _matches(schedule: CrontabSchedule, instant: datetime) -> bool:
    local = instant.astimezone(ZoneInfo(schedule.timezone))
    return (
        local.second == 0
        and local.microsecond == 0
        and local.minute in schedule.values("minute")
        and local.hour in schedule.values("hour")
        and local.day in schedule.values("day_of_month")
        and local.month in schedule.values("month_of_year")
        and local.isoweekday() % 7 in schedule.values("day_of_week")
    )


# The classic cron line's order of the fields.
CRON_ORDER = (
    CronField.MINUTE,
    CronField.HOUR,
    CronField.DAY_OF_MONTH,
    CronField.MONTH_OF_YEAR,
    CronField.DAY_OF_WEEK,
)


def _croniter_field(schedule: CrontabSchedule, field: CronField) -> str:
    values = schedule.values(field)
    if len(values) == field.high - field.low + 1:
        return "*"
    return ",".join(str(v) for v in sorted(values))


def croniter_times(schedule: CrontabSchedule, after: datetime, count: int) -> list[datetime]:
    """croniter's next times (AND of the day fields, in the schedule's zone), less its two
    daylight-saving extras: a skipped time fired at the end of the gap (its wall time does
    not match the fields) and the second occurrence of a repeated time."""
    zone = ZoneInfo(schedule.timezone)
    line = " ".join(_croniter_field(schedule, field) for field in CRON_ORDER)
    times = croniter(line, after.astimezone(zone), day_or=False, max_years_between_matches=500)
    out: list[datetime] = []
    while len(out) < count:
        instant = times.get_next(datetime).astimezone(UTC)
        wall = instant.astimezone(zone).replace(tzinfo=None)
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if _matches(schedule, instant) and instant == first:
            out.append(instant)
    return out


def _crontab_and_instant(zones: tuple[str, ...]) -> st.SearchStrategy[tuple[CrontabSchedule, Any]]:
    return crontabs(zones=zones).flatmap(lambda s: st.tuples(st.just(s), instants_in(s.timezone)))


@given(_crontab_and_instant(DST_ZONES + FIXED_ZONES))
def test_crontab_fire_times_equal_croniters(case: tuple[CrontabSchedule, datetime]) -> None:
    """The next five times are croniter's (day_or=False), DST extras aside, and each matches."""
    schedule, after = case
    times = next_fire_times(schedule, after)
    assert times == croniter_times(schedule, after, 5)
    assert all(t.tzinfo is UTC for t in times)
    assert all(a < b for a, b in zip([after, *times], times, strict=False))
    assert all(_matches(schedule, t) for t in times)


@given(_crontab_and_instant(FIXED_ZONES))
def test_without_daylight_saving_croniter_agrees_as_it_is(
    case: tuple[CrontabSchedule, datetime],
) -> None:
    """In zones with a fixed offset, croniter's raw output is ours, nothing filtered."""
    schedule, after = case
    zone = ZoneInfo(schedule.timezone)
    line = " ".join(_croniter_field(schedule, field) for field in CRON_ORDER)
    raw = croniter(line, after.astimezone(zone), day_or=False, max_years_between_matches=500)
    expected = [raw.get_next(datetime).astimezone(UTC) for _ in range(3)]
    assert next_fire_times(schedule, after, 3) == expected


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        # Berlin springs forward 2025-03-30 02:00 -> 03:00: 02:30 does not happen that day.
        (
            "30 2 * * *",
            "Europe/Berlin",
            _utc(2025, 3, 29, 12),
            [_utc(2025, 3, 31, 0, 30), _utc(2025, 4, 1, 0, 30)],
        ),
        # ... and falls back 2025-10-26 03:00 -> 02:00: 02:30 happens twice, fires once (CEST).
        (
            "30 2 * * *",
            "Europe/Berlin",
            _utc(2025, 10, 25, 12),
            [_utc(2025, 10, 26, 0, 30), _utc(2025, 10, 27, 1, 30)],
        ),
        # Every 20 minutes from 1 to 3 o'clock: the skipped hour's three runs are gone.
        (
            "*/20 1-3 * * *",
            "Europe/Berlin",
            _utc(2025, 3, 29, 23),
            [
                _utc(2025, 3, 30, 0, 0),
                _utc(2025, 3, 30, 0, 20),
                _utc(2025, 3, 30, 0, 40),
                _utc(2025, 3, 30, 1, 0),
                _utc(2025, 3, 30, 1, 20),
            ],
        ),
        # New York springs forward 2025-03-09 02:00 -> 03:00.
        (
            "30 2 * * *",
            "America/New_York",
            _utc(2025, 3, 8, 12),
            [_utc(2025, 3, 10, 6, 30)],
        ),
        # ... falls back 2025-11-02 02:00 -> 01:00: hourly runs once at 01:00 (EDT), then 02:00 EST.
        (
            "0 * * * *",
            "America/New_York",
            _utc(2025, 11, 2, 4, 30),
            [_utc(2025, 11, 2, 5), _utc(2025, 11, 2, 7), _utc(2025, 11, 2, 8)],
        ),
        # Started inside the repeated hour's second pass: 01:30 EDT is past, 01:30 EST is skipped.
        (
            "30 1 * * *",
            "America/New_York",
            _utc(2025, 11, 2, 6, 10),
            [_utc(2025, 11, 3, 6, 30)],
        ),
        # Lord Howe moves by half an hour: 01:45 repeats on 2025-04-06 and fires once.
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            _utc(2025, 4, 5, 12),
            [_utc(2025, 4, 5, 14, 45), _utc(2025, 4, 6, 15, 15)],
        ),
        # The first Monday of the month: both day fields must match (Celery's rule, not cron's).
        (
            "0 9 1-7 * mon",
            "UTC",
            _utc(2026, 3, 1),
            [_utc(2026, 3, 2, 9), _utc(2026, 4, 6, 9), _utc(2026, 5, 4, 9)],
        ),
        # The 29th of February on a Monday: decades apart.
        (
            "0 0 29 2 mon",
            "UTC",
            _utc(2025, 1, 1),
            [_utc(2044, 2, 29), _utc(2072, 2, 29), _utc(2112, 2, 29)],
        ),
    ],
)
def test_fire_times_around_daylight_saving_and_day_rules(
    cron: str, zone: str, after: datetime, expected: list[datetime]
) -> None:
    """Skipped local times do not fire; repeated ones fire once, at their first occurrence."""
    schedule = CrontabSchedule.from_cron(cron, timezone=zone)
    assert next_fire_times(schedule, after, len(expected)) == expected


def test_the_dst_examples_are_at_real_transitions() -> None:
    """The instants above are where the zones really change (guards the examples themselves)."""
    assert _utc(2025, 3, 30, 1) in transitions("Europe/Berlin")
    assert _utc(2025, 10, 26, 1) in transitions("Europe/Berlin")
    assert _utc(2025, 3, 9, 7) in transitions("America/New_York")
    assert _utc(2025, 11, 2, 6) in transitions("America/New_York")
    assert _utc(2025, 4, 5, 15) in transitions("Australia/Lord_Howe")


@given(intervals(), aware_datetimes, st.none() | st.integers(min_value=-(10**7), max_value=10**7))
def test_interval_fire_times(
    interval: IntervalSchedule, after: datetime, last_run_offset: int | None
) -> None:
    """Every ``delta`` from the last run, or from ``after`` when there is none or it is overdue."""
    after = after.astimezone(UTC)  # elapsed time: aware arithmetic in a local zone is wall time
    last_run = None if last_run_offset is None else after + timedelta(seconds=last_run_offset)
    times = next_fire_times(interval, after, 4, last_run_at=last_run)
    start = last_run if last_run is not None and last_run + interval.delta > after else after
    assert times == [start + interval.delta * k for k in range(1, 5)]
    assert all(t > after for t in times)
    assert all(t.tzinfo is UTC for t in times)


@given(clockeds, aware_datetimes)
def test_a_clocked_schedule_fires_once_if_still_ahead(
    clocked: ClockedSchedule, after: datetime
) -> None:
    """Its one time, when later than ``after``; nothing otherwise."""
    expected = [clocked.clocked_time] if clocked.clocked_time > after else []
    assert next_fire_times(clocked, after) == expected


def test_solar_times_are_not_previewed() -> None:
    """A documented refusal (an InvalidInput, so a shell answers 400), never a wrong guess."""
    solar = SolarSchedule(event="sunrise", latitude=52.5, longitude=13.4)
    with pytest.raises(PreviewUnavailable, match="solar schedules are not previewed"):
        next_fire_times(solar, NOW)
    assert issubclass(PreviewUnavailable, InvalidInput)


def test_next_fire_times_checks_its_arguments() -> None:
    """``after`` must be aware, ``count`` from 0 to 1000, and the schedule one of the four kinds."""
    schedule = CrontabSchedule()
    assert next_fire_times(schedule, NOW, 0) == []
    assert len(next_fire_times(schedule, NOW, 1000)) == 1000
    with pytest.raises(InvalidInput, match=r"^after: must have a timezone"):
        next_fire_times(schedule, datetime(2026, 1, 1))
    for count in (-1, 1001, True, 2.0):
        with pytest.raises(InvalidInput, match=r"^count: "):
            next_fire_times(schedule, NOW, count)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"^schedule: "):
        next_fire_times("*/5 * * * *", NOW)  # type: ignore[arg-type]


def test_fire_times_stop_at_the_end_of_the_calendar() -> None:
    """Fewer times come back when the crontab's next match is past year 9999."""
    schedule = CrontabSchedule.from_cron("0 0 29 2 mon")
    assert next_fire_times(schedule, _utc(9990, 1, 1), 5) == []
    end = datetime.max.replace(tzinfo=UTC)
    assert next_fire_times(CrontabSchedule(timezone="Pacific/Kiritimati"), end) == []
    daily = IntervalSchedule(every=1, period=IntervalPeriod.DAYS)
    assert len(next_fire_times(daily, end - timedelta(days=2, hours=1))) == 2
    assert next_fire_times(daily, end - timedelta(days=3), last_run_at=end) == []
