"""The schedule storage contract: Celery Beat schedulers, entries and fires behave the same on
every backend (in-memory fake, SQLite, PostgreSQL).

Each test takes ``uow_factory`` and so runs once per backend, except those about
interleaved transactions, which take ``isolating_uow_factory`` (the SQL backends).
Entries are built with :mod:`z4j_domain.schedules`, of every schedule kind and
with unicode and awkward numbers in their arguments, so their JSON form makes
the round trip through each backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.schedule_strategies import entries as any_entries
from z4j_domain.beat import (
    RefusedEntry,
    ScheduleFire,
    SchedulerInfo,
    SchedulerKind,
    SchedulerReport,
    StoredEntry,
)
from z4j_domain.errors import InvalidInput, NotFound
from z4j_domain.ports import UnitOfWorkFactory
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    EntryOptions,
    IntervalPeriod,
    IntervalSchedule,
    ScheduleEntry,
    SolarEvent,
    SolarSchedule,
)

from .support import at, new_project

pytestmark = pytest.mark.anyio

EASTERN = timezone(timedelta(hours=-5))
#: Numbers JSON stores in more than one way, unicode, nesting, empties.
ARGS: list[Any] = [1, 1.0, -0.5, 2**70, 1e300, -0.0, True, None, "", [], {}, "日本語 ✓"]
KWARGS: dict[str, Any] = {
    "émoji": "🚀",
    "nested": {"deep": [{"a": [1, [2, [3.25]]]}]},
    "zero": 0,
    'quote"back\\slash': "line\nbreak\ttab",
}


def crontab_entry(name: str = "rapport de nuit ☾", **changes: Any) -> ScheduleEntry:
    """A crontab entry in Berlin time with every field set."""
    entry = ScheduleEntry(
        name=name,
        task="app.tasks.report",
        schedule=CrontabSchedule(
            minute="0,30", hour="*/2", day_of_week="mon-fri", timezone="Europe/Berlin"
        ),
        args=ARGS,
        kwargs=KWARGS,
        options=EntryOptions(
            queue="réports", routing_key="r.k", exchange="ex", priority=7, expires=90.5
        ),
        description="Le rapport — chaque nuit",
        last_run_at=datetime(2026, 1, 1, 7, 30, 0, 123456, tzinfo=EASTERN),
        total_run_count=2**40,
        next_run_at=at(3600.000001),
    )
    return attrs.evolve(entry, **changes)


def interval_entry(name: str = "every 90 s", **changes: Any) -> ScheduleEntry:
    """An interval entry with only the required fields."""
    entry = ScheduleEntry(
        name=name,
        task="app.tasks.poll",
        schedule=IntervalSchedule(every=90, period=IntervalPeriod.SECONDS),
    )
    return attrs.evolve(entry, **changes)


def solar_entry(name: str = "日没", **changes: Any) -> ScheduleEntry:
    """A solar entry at fractional coordinates, disabled."""
    entry = ScheduleEntry(
        name=name,
        task="app.tasks.lights",
        schedule=SolarSchedule(event=SolarEvent.SUNSET, latitude=52.520008, longitude=-13.404954),
        kwargs={"on": True},
        enabled=False,
    )
    return attrs.evolve(entry, **changes)


def clocked_entry(name: str = "launch 🚀", **changes: Any) -> ScheduleEntry:
    """A one-off clocked entry given in a non-UTC zone."""
    entry = ScheduleEntry(
        name=name,
        task="app.tasks.launch",
        schedule=ClockedSchedule(clocked_time=datetime(2026, 6, 1, 9, 0, 0, 1, tzinfo=EASTERN)),
        args=[{"ü": [None]}],
        one_off=True,
    )
    return attrs.evolve(entry, **changes)


def every_kind() -> list[ScheduleEntry]:
    """One entry of each schedule kind."""
    return [crontab_entry(), interval_entry(), solar_entry(), clocked_entry()]


def report(
    entries: Sequence[ScheduleEntry] = (),
    *,
    kind: SchedulerKind = SchedulerKind.DJANGO,
    **header: Any,
) -> SchedulerReport:
    """A report of ``entries`` with a plausible header (overridden by ``header``)."""
    fields: dict[str, Any] = {
        "kind": kind,
        "class_path": "django_celery_beat.schedulers:DatabaseScheduler",
        "timezone": "Europe/Berlin",
        "writable": True,
        "entries": entries,
        "refused": [RefusedEntry(name="odd ✗", reason="a custom schedule class")],
        "known_tasks": {"app.tasks.report", "app.tasks.poll", "app.tasks.日本"},
        "note": "changes apply at the next sync — within 5 s",
    }
    fields.update(header)
    return SchedulerReport(**fields)


def stored(scheduler: str, entry: ScheduleEntry, updated: float) -> StoredEntry:
    """What the repository should hold for ``entry``, last changed ``updated`` s after T0."""
    return StoredEntry(scheduler=scheduler, entry=entry, updated_at=at(updated))


def fire(
    fire_id: str, schedule: str, seconds: float, *, task_id: str | None = "t", **fields: Any
) -> ScheduleFire:
    """A fire of ``schedule``, ``seconds`` after T0."""
    return ScheduleFire(
        id=fire_id,
        schedule=schedule,
        fired_at=at(seconds),
        task_id=None if task_id is None else f"{task_id}-{fire_id}",
        **fields,
    )


async def replace(
    factory: UnitOfWorkFactory,
    project_id: int,
    scheduler: str,
    scheduler_report: SchedulerReport,
    seconds: float,
) -> None:
    """Replace (and commit) the scheduler with the report, received ``seconds`` after T0."""
    async with factory() as uow:
        await uow.schedules.replace(project_id, scheduler, scheduler_report, at(seconds))
        await uow.commit()


async def entries_of(
    factory: UnitOfWorkFactory, project_id: int, scheduler: str | None = None
) -> list[StoredEntry]:
    """The stored entries, in the repository's order."""
    async with factory() as uow:
        return list(await uow.schedules.entries(project_id, scheduler))


async def add_fires(
    factory: UnitOfWorkFactory, project_id: int, scheduler: str, fires: Sequence[ScheduleFire]
) -> int:
    """Add (and commit) the fires; how many were new."""
    async with factory() as uow:
        added = await uow.schedules.add_fires(project_id, scheduler, fires)
        await uow.commit()
    return added


def by_name(entries: Sequence[ScheduleEntry]) -> list[ScheduleEntry]:
    """The entries in code-point order of their names."""
    return sorted(entries, key=lambda entry: entry.name)


def json_types(value: Any) -> Any:
    """``value`` with every leaf replaced by its type (``1 == 1.0`` hides a changed type)."""
    if isinstance(value, list):
        return [json_types(item) for item in value]
    if isinstance(value, dict):
        return {key: json_types(item) for key, item in value.items()}
    return type(value)


# -- replace and read back --------------------------------------------------------------


async def test_a_report_round_trips(uow_factory: UnitOfWorkFactory) -> None:
    """The header and every kind of entry read back equal, times aware and in UTC, numbers
    of the types they were."""
    project = await new_project(uow_factory)
    beat = report(every_kind())
    await replace(uow_factory, project, "beat ☀", beat, 10.000001)
    async with uow_factory() as uow:
        info = await uow.schedules.scheduler(project, "beat ☀")
        assert info == SchedulerInfo.of("beat ☀", beat, at(10.000001))
        assert await uow.schedules.schedulers(project) == [info]
        expected = [stored("beat ☀", entry, 10.000001) for entry in by_name(every_kind())]
        assert await uow.schedules.entries(project) == expected
        assert await uow.schedules.entries(project, "beat ☀") == expected
        for entry in every_kind():
            got = await uow.schedules.get(project, "beat ☀", entry.name)
            assert got == stored("beat ☀", entry, 10.000001)
            assert got is not None
            assert json_types(got.entry.args) == json_types(entry.args)
            assert json_types(got.entry.kwargs) == json_types(entry.kwargs)
            assert got.updated_at.tzinfo is not None
            assert got.updated_at.utcoffset() == timedelta(0)
        assert info is not None
        assert info.reported_at.utcoffset() == timedelta(0)


async def test_a_bare_report_round_trips(uow_factory: UnitOfWorkFactory) -> None:
    """A report of an unwritable scheduler with nothing in it: empty lists, empty note."""
    project = await new_project(uow_factory)
    bare = SchedulerReport(
        kind=SchedulerKind.OTHER, class_path="my.sched:Custom", timezone="UTC", writable=False
    )
    await replace(uow_factory, project, "beat", bare, 1)
    async with uow_factory() as uow:
        assert await uow.schedules.scheduler(project, "beat") == SchedulerInfo.of(
            "beat", bare, at(1)
        )
        assert await uow.schedules.entries(project) == []


async def test_unknown_schedulers_and_entries_read_as_none(uow_factory: UnitOfWorkFactory) -> None:
    """Nothing stored: no scheduler, no entry, empty lists."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report([interval_entry()]), 1)
    async with uow_factory() as uow:
        assert await uow.schedules.scheduler(project, "other") is None
        assert await uow.schedules.get(project, "other", interval_entry().name) is None
        assert await uow.schedules.get(project, "beat", "no such entry") is None
        assert await uow.schedules.entries(project, "other") == []
        empty = await new_project(uow_factory)
        assert await uow.schedules.schedulers(empty) == []
        assert await uow.schedules.entries(empty) == []


async def test_a_second_report_drops_changes_and_keeps(uow_factory: UnitOfWorkFactory) -> None:
    """Entries the new report lacks go; changed ones are rewritten (new updated_at); equal
    ones keep their updated_at; new ones come; the header is the new report's."""
    project = await new_project(uow_factory)
    kept, changed, dropped = crontab_entry(), interval_entry(), solar_entry()
    await replace(uow_factory, project, "beat", report([kept, changed, dropped]), 1)
    # Beat moved on: a new next run is a change too.
    rewritten = attrs.evolve(changed, next_run_at=at(90), total_run_count=1)
    added = clocked_entry()
    second = report(
        [added, rewritten, kept],
        kind=SchedulerKind.REDBEAT,
        class_path="redbeat:RedBeatScheduler",
        timezone="UTC",
        writable=False,
        refused=[],
        known_tasks=set(),
        note="",
    )
    await replace(uow_factory, project, "beat", second, 2)
    assert await entries_of(uow_factory, project) == [
        stored("beat", entry, updated)
        for entry, updated in sorted(
            [(kept, 1), (rewritten, 2), (added, 2)], key=lambda item: item[0].name
        )
    ]
    async with uow_factory() as uow:
        assert await uow.schedules.scheduler(project, "beat") == SchedulerInfo.of(
            "beat", second, at(2)
        )
        assert await uow.schedules.get(project, "beat", dropped.name) is None


async def test_an_entry_equal_but_encoded_differently_is_not_rewritten(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """kwargs in another order make an equal entry: its updated_at stays."""
    project = await new_project(uow_factory)
    forward = crontab_entry(kwargs={"a": 1, "b": [2, 3], "c": {"x": None, "y": "ÿ"}})
    backward = crontab_entry(kwargs={"c": {"y": "ÿ", "x": None}, "b": [2, 3], "a": 1})
    assert forward == backward
    await replace(uow_factory, project, "beat", report([forward]), 1)
    await replace(uow_factory, project, "beat", report([backward]), 2)
    assert await entries_of(uow_factory, project) == [stored("beat", forward, 1)]


async def test_an_empty_report_removes_every_entry(uow_factory: UnitOfWorkFactory) -> None:
    """A report without entries leaves the scheduler, with none."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report(every_kind()), 1)
    await replace(uow_factory, project, "beat", report([]), 2)
    assert await entries_of(uow_factory, project) == []
    async with uow_factory() as uow:
        info = await uow.schedules.scheduler(project, "beat")
    assert info is not None
    assert info.reported_at == at(2)


async def test_a_report_touches_no_other_scheduler_or_project(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Replacing one scheduler leaves the project's others and another project's same-named
    scheduler exactly as they were."""
    project, other_project = await new_project(uow_factory), await new_project(uow_factory)
    first, second = report(every_kind()), report([interval_entry()], timezone="UTC")
    await replace(uow_factory, project, "beat", first, 1)
    await replace(uow_factory, project, "beat-2", first, 1)
    await replace(uow_factory, other_project, "beat", first, 1)
    await replace(uow_factory, project, "beat", second, 2)
    everything = [stored("beat-2", entry, 1) for entry in by_name(every_kind())]
    assert await entries_of(uow_factory, project, "beat-2") == everything
    assert await entries_of(uow_factory, project, "beat") == [stored("beat", interval_entry(), 1)]
    assert await entries_of(uow_factory, other_project) == [
        stored("beat", entry, 1) for entry in by_name(every_kind())
    ]
    async with uow_factory() as uow:
        assert await uow.schedules.scheduler(project, "beat-2") == SchedulerInfo.of(
            "beat-2", first, at(1)
        )
        assert await uow.schedules.scheduler(other_project, "beat") == SchedulerInfo.of(
            "beat", first, at(1)
        )
        assert await uow.schedules.scheduler(project, "beat") == SchedulerInfo.of(
            "beat", second, at(2)
        )


async def test_lists_are_ordered_by_code_point(uow_factory: UnitOfWorkFactory) -> None:
    """Schedulers by name; entries by scheduler then name; both in code-point order
    (upper case before lower, digits as characters, accents after ASCII)."""
    project = await new_project(uow_factory)
    scheduler_names = ["beat", "Beat", "béat", "beat-2", "beat_2", "Zeta", "10", "9"]
    entry_names = ["b", "B", "a b", "a-b", "a_b", "é", "z", "Z", "10", "9", "日"]
    for position, name in enumerate(scheduler_names):
        scheduler_entries = [interval_entry(f"{n}") for n in entry_names[position % 3 :: 2]]
        await replace(uow_factory, project, name, report(scheduler_entries), position)
    async with uow_factory() as uow:
        infos = await uow.schedules.schedulers(project)
        listed = await uow.schedules.entries(project)
    assert [info.name for info in infos] == sorted(scheduler_names)
    keys = [(item.scheduler, item.entry.name) for item in listed]
    assert keys == sorted(keys)
    assert len(keys) == sum(len(entry_names[p % 3 :: 2]) for p in range(len(scheduler_names)))
    for name in scheduler_names:
        own = await entries_of(uow_factory, project, name)
        assert [item.entry.name for item in own] == sorted(k[1] for k in keys if k[0] == name)


@given(entries=st.lists(any_entries(), max_size=4, unique_by=lambda entry: entry.name))
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_any_entries_round_trip(
    uow_factory: UnitOfWorkFactory, entries: list[ScheduleEntry]
) -> None:
    """Whatever the entries (any kind, any JSON arguments), a report of them reads back
    equal, numbers of the types they were; a second report of the same changes nothing."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report(entries), 1)
    await replace(uow_factory, project, "beat", report(entries), 2)
    got = await entries_of(uow_factory, project)
    assert got == [stored("beat", entry, 1) for entry in by_name(entries)]
    for item, entry in zip(got, by_name(entries), strict=True):
        assert json_types(item.entry.args) == json_types(entry.args)
        assert json_types(item.entry.kwargs) == json_types(entry.kwargs)


# -- put and remove ------------------------------------------------------------------------


async def test_put_stores_and_overwrites(uow_factory: UnitOfWorkFactory) -> None:
    """put adds an entry to a known scheduler, or overwrites the one of its name (new
    updated_at even when equal); the others stay."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report([interval_entry()]), 1)
    changed = crontab_entry(enabled=False, args=[])
    async with uow_factory() as uow:
        await uow.schedules.put(project, "beat", crontab_entry(), at(2))
        await uow.schedules.put(project, "beat", changed, at(3))
        await uow.schedules.put(project, "beat", interval_entry(), at(4))
        await uow.commit()
    assert await entries_of(uow_factory, project) == [
        stored("beat", interval_entry(), 4),
        stored("beat", changed, 3),
    ]


async def test_put_renames_with_replacing(uow_factory: UnitOfWorkFactory) -> None:
    """replacing removes the old name in the same step; replacing the entry's own name, or a
    name that is not there, just stores the entry."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report([interval_entry(), solar_entry()]), 1)
    renamed = interval_entry("every 90 s — renamed")
    async with uow_factory() as uow:
        await uow.schedules.put(project, "beat", renamed, at(2), replacing=interval_entry().name)
        await uow.commit()
    assert await entries_of(uow_factory, project) == [
        stored("beat", renamed, 2),
        stored("beat", solar_entry(), 1),
    ]
    updated = solar_entry(enabled=True)
    async with uow_factory() as uow:
        await uow.schedules.put(project, "beat", updated, at(3), replacing=updated.name)
        await uow.schedules.put(project, "beat", clocked_entry(), at(4), replacing="never there")
        await uow.commit()
    assert await entries_of(uow_factory, project) == [
        stored("beat", renamed, 2),
        stored("beat", clocked_entry(), 4),
        stored("beat", updated, 3),
    ]


async def test_put_to_an_unknown_scheduler_is_not_found(uow_factory: UnitOfWorkFactory) -> None:
    """put raises NotFound for a scheduler the project does not have (even if another project
    has it), stores nothing, and leaves the unit of work usable."""
    project, other_project = await new_project(uow_factory), await new_project(uow_factory)
    await replace(uow_factory, other_project, "beat", report([]), 1)
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.schedules.put(project, "beat", interval_entry(), at(2))
        with pytest.raises(NotFound):
            await uow.schedules.put(
                project, "beat", interval_entry(), at(2), replacing=solar_entry().name
            )
        await uow.schedules.replace(project, "beat-2", report([solar_entry()]), at(3))
        await uow.commit()
    assert await entries_of(uow_factory, project) == [stored("beat-2", solar_entry(), 3)]
    assert await entries_of(uow_factory, other_project) == []


async def test_remove(uow_factory: UnitOfWorkFactory) -> None:
    """remove deletes one entry and says whether there was one; others and fires stay."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report([interval_entry(), solar_entry()]), 1)
    await replace(uow_factory, project, "beat-2", report([interval_entry()]), 1)
    gone = fire("f1", interval_entry().name, 5)
    assert await add_fires(uow_factory, project, "beat", [gone]) == 1
    async with uow_factory() as uow:
        assert await uow.schedules.remove(project, "beat", interval_entry().name) is True
        assert await uow.schedules.remove(project, "beat", interval_entry().name) is False
        assert await uow.schedules.remove(project, "no beat", interval_entry().name) is False
        assert await uow.schedules.remove(project + 1000, "beat", solar_entry().name) is False
        await uow.commit()
    assert await entries_of(uow_factory, project) == [
        stored("beat", solar_entry(), 1),
        stored("beat-2", interval_entry(), 1),
    ]
    async with uow_factory() as uow:
        assert await uow.schedules.fires(project, "beat", interval_entry().name, 10) == [gone]
        assert await uow.schedules.latest_fires(project) == {("beat", gone.schedule): gone}


# -- fires -----------------------------------------------------------------------------------


async def test_a_fire_round_trips(uow_factory: UnitOfWorkFactory) -> None:
    """Every field of a fire reads back equal: a failed manual one, and a plain one."""
    project = await new_project(uow_factory)
    failed = ScheduleFire(
        id="3f2a-ünï",
        schedule="rapport de nuit ☾",
        fired_at=datetime(2026, 1, 1, 7, 0, 0, 654321, tzinfo=EASTERN),
        task_id=None,
        manual=True,
        error="ConnectionError: broker ✗\nsecond line",
    )
    plain = fire(str(uuid.uuid4()), "rapport de nuit ☾", 1)  # an agent's fire id
    assert await add_fires(uow_factory, project, "beat", [failed, plain]) == 2
    async with uow_factory() as uow:
        got = await uow.schedules.fires(project, "beat", "rapport de nuit ☾", 10)
    assert got == [failed, plain]
    assert got[0].fired_at.utcoffset() == timedelta(0)


async def test_fires_are_stored_once_by_id(uow_factory: UnitOfWorkFactory) -> None:
    """add_fires counts the new ones: a fire reported again, twice in one batch, or by
    another scheduler of the project is stored once (the first), another project's is its own."""
    project, other_project = await new_project(uow_factory), await new_project(uow_factory)
    first = fire("a", "nightly", 1)
    assert await add_fires(uow_factory, project, "beat", []) == 0
    assert await add_fires(uow_factory, project, "beat", [first]) == 1
    assert await add_fires(uow_factory, project, "beat", [first]) == 0
    again = attrs.evolve(first, fired_at=at(2), task_id="changed", schedule="other")
    twice = fire("b", "nightly", 3)
    batch = [twice, again, attrs.evolve(twice, manual=True), fire("c", "nightly", 4)]
    assert await add_fires(uow_factory, project, "beat", batch) == 2
    assert await add_fires(uow_factory, project, "beat-2", [first, fire("c", "x", 9)]) == 0
    assert await add_fires(uow_factory, other_project, "beat", [first]) == 1
    async with uow_factory() as uow:
        assert await uow.schedules.fires(project, "beat", "nightly", 10) == [
            fire("c", "nightly", 4),
            twice,
            first,
        ]
        assert await uow.schedules.fires(project, "beat-2", "x", 10) == []
        assert await uow.schedules.fires(project, "beat", "other", 10) == []
        assert await uow.schedules.fires(other_project, "beat", "nightly", 10) == [first]


async def test_fires_come_newest_first_within_the_limit(uow_factory: UnitOfWorkFactory) -> None:
    """An entry's fires by (fired_at, id) descending, at most ``limit``; other entries',
    schedulers' and projects' fires are not among them; a limit below 1 is refused."""
    project, other_project = await new_project(uow_factory), await new_project(uow_factory)
    # Ties at 5 s: by id descending, in code-point order ("b" > "B" > "9" > "10").
    own = [fire(fire_id, "nightly", 5) for fire_id in ("10", "9", "B", "b")]
    own += [fire("z", "nightly", 4.999999), fire("a", "nightly", 5.000001), fire("m", "nightly", 1)]
    assert await add_fires(uow_factory, project, "beat", own) == len(own)
    assert await add_fires(uow_factory, project, "beat", [fire("n2", "hourly", 99)]) == 1
    assert await add_fires(uow_factory, project, "beat-2", [fire("n3", "nightly", 99)]) == 1
    assert await add_fires(uow_factory, other_project, "beat", [fire("n4", "nightly", 99)]) == 1
    newest_first = sorted(own, key=lambda f: (f.fired_at, f.id), reverse=True)
    assert [f.id for f in newest_first] == ["a", "b", "B", "9", "10", "z", "m"]
    async with uow_factory() as uow:
        assert await uow.schedules.fires(project, "beat", "nightly", 100) == newest_first
        assert await uow.schedules.fires(project, "beat", "nightly", 3) == newest_first[:3]
        assert await uow.schedules.fires(project, "beat", "nightly", 1) == newest_first[:1]
        assert await uow.schedules.fires(project, "beat", "never", 5) == []
        for limit in (0, -1):
            with pytest.raises(InvalidInput):
                await uow.schedules.fires(project, "beat", "nightly", limit)


async def test_latest_fires(uow_factory: UnitOfWorkFactory) -> None:
    """The newest fire of every (scheduler, entry) of the project that has one, ties by id,
    removed entries included; nothing for a project without fires."""
    project, other_project = await new_project(uow_factory), await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report([interval_entry()]), 1)
    nightly = [fire("n1", "nightly", 10), fire("n3", "nightly", 30), fire("n2", "nightly", 30)]
    hourly = [fire("h1", "hourly", 50, task_id=None, error="boom"), fire("h0", "hourly", 40)]
    elsewhere = [fire("x1", "nightly", 20), fire("x2", "nightly", 60, manual=True)]
    await add_fires(uow_factory, project, "beat", nightly + hourly)
    await add_fires(uow_factory, project, "beat-2", elsewhere)
    await add_fires(uow_factory, other_project, "beat", [fire("o1", "nightly", 99)])
    async with uow_factory() as uow:
        assert await uow.schedules.latest_fires(project) == {
            ("beat", "nightly"): nightly[1],
            ("beat", "hourly"): hourly[0],
            ("beat-2", "nightly"): elsewhere[1],
        }
        assert await uow.schedules.latest_fires(other_project) == {
            ("beat", "nightly"): fire("o1", "nightly", 99)
        }
        assert await uow.schedules.latest_fires(await new_project(uow_factory)) == {}


# -- transactions --------------------------------------------------------------------------


async def test_rollback_leaves_nothing(uow_factory: UnitOfWorkFactory) -> None:
    """A report, a put and fires rolled back (or left uncommitted) are not stored; the
    stored scheduler stays as it was."""
    project = await new_project(uow_factory)
    await replace(uow_factory, project, "beat", report([interval_entry()]), 1)
    async with uow_factory() as uow:
        await uow.schedules.replace(project, "beat", report([solar_entry()]), at(2))
        await uow.schedules.replace(project, "new", report(every_kind()), at(2))
        await uow.schedules.put(project, "beat", crontab_entry(), at(3))
        await uow.schedules.remove(project, "beat", interval_entry().name)
        await uow.schedules.add_fires(project, "beat", [fire("f", "nightly", 4)])
        await uow.rollback()
        assert await uow.schedules.scheduler(project, "new") is None
    async with uow_factory() as uow:
        await uow.schedules.replace(project, "new", report(every_kind()), at(5))
        await uow.schedules.add_fires(project, "beat", [fire("g", "nightly", 4)])
        # Leaving the block without committing.
    async with uow_factory() as uow:
        assert [info.name for info in await uow.schedules.schedulers(project)] == ["beat"]
        info = await uow.schedules.scheduler(project, "beat")
        assert info is not None
        assert info.reported_at == at(1)
        assert await uow.schedules.entries(project) == [stored("beat", interval_entry(), 1)]
        assert await uow.schedules.latest_fires(project) == {}
    # The rolled-back fires were not stored: adding them counts them as new.
    assert await add_fires(uow_factory, project, "beat", [fire("f", "nightly", 4)]) == 1


async def test_concurrent_overlapping_fires_are_stored_once(
    isolating_uow_factory: UnitOfWorkFactory,
) -> None:
    """Two transactions adding overlapping fires at once (in opposite orders) both commit,
    and each fire is stored and counted once."""
    uow_factory = isolating_uow_factory
    project = await new_project(uow_factory)
    shared = [fire(f"s{i}", "nightly", i) for i in range(20)]
    batches = [
        [*shared, fire("only-a", "nightly", 50)],
        [fire("only-b", "nightly", 60), *reversed(shared)],
    ]
    counts: list[int] = []

    async def add(batch: list[ScheduleFire]) -> None:
        async with uow_factory() as uow:
            counts.append(await uow.schedules.add_fires(project, "beat", batch))
            await anyio.sleep(0.05)  # hold the transaction open while the other one tries
            await uow.commit()

    async with anyio.create_task_group() as group:
        for batch in batches:
            group.start_soon(add, batch)
    assert sum(counts) == len(shared) + 2
    async with uow_factory() as uow:
        assert len(await uow.schedules.fires(project, "beat", "nightly", 100)) == len(shared) + 2


async def test_a_report_waits_for_a_concurrent_removal(
    isolating_uow_factory: UnitOfWorkFactory,
) -> None:
    """A report that arrives while a removal of one of its entries is uncommitted compares
    against the removal's outcome: the entry is back once both commit."""
    uow_factory = isolating_uow_factory
    project = await new_project(uow_factory)
    entries = [interval_entry(), solar_entry()]
    await replace(uow_factory, project, "beat", report(entries), 1)
    removed = anyio.Event()

    async def remove() -> None:
        async with uow_factory() as uow:
            assert await uow.schedules.remove(project, "beat", solar_entry().name)
            removed.set()
            await anyio.sleep(0.1)  # the report starts meanwhile
            await uow.commit()

    async def report_again() -> None:
        await removed.wait()
        async with uow_factory() as uow:
            await uow.schedules.replace(project, "beat", report(entries), at(2))
            await uow.commit()

    async with anyio.create_task_group() as group:
        group.start_soon(remove)
        group.start_soon(report_again)
    assert await entries_of(uow_factory, project) == [
        stored("beat", interval_entry(), 1),
        stored("beat", solar_entry(), 2),
    ]
