"""Alembic is the schema's source of truth: migrating an empty database gives the metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from z4j_domain.beat import ScheduleFire, SchedulerKind, SchedulerReport
from z4j_domain.schedules import CrontabSchedule, ScheduleEntry
from z4j_domain.stats import aggregate, finish_minute
from z4j_domain.tasks import EventKind, TaskEvent
from z4j_infra.database import Database
from z4j_infra.migrations import downgrade, migrate, revisions
from z4j_infra.schema import metadata

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each dialect."""
    name = "empty_sqlite_url" if request.param == "sqlite" else "empty_postgres_url"
    url: str = request.getfixturevalue(name)
    return url


def _differences(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _tables(connection: sa.Connection) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


async def test_upgrade_gives_the_metadata(empty_url: str) -> None:
    """After `migrate`, autogenerate finds nothing to change: tables, columns, types, indexes."""
    database = await Database.connect(empty_url)
    try:
        assert await revisions(database) == (None, "0009")
        await migrate(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
        current, head = await revisions(database)
        assert current == head
    finally:
        await database.dispose()


async def test_migrate_twice_is_harmless(empty_url: str) -> None:
    """Running the migrations on an up-to-date database changes nothing."""
    database = await Database.connect(empty_url)
    try:
        await migrate(database)
        await migrate(database)
        current, head = await revisions(database)
        assert current == head
    finally:
        await database.dispose()


async def test_downgrade_to_base_and_up_again(empty_url: str) -> None:
    """Downgrading to base removes every table; upgrading again restores them."""
    database = await Database.connect(empty_url)
    try:
        await migrate(database)
        await downgrade(database, "base")
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_tables) <= {"alembic_version"}
        assert (await revisions(database))[0] is None
        await migrate(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_tables) >= set(metadata.tables)
            assert await connection.run_sync(_differences) == []
    finally:
        await database.dispose()


@pytest.mark.postgres
async def test_concurrent_migrations_serialize(empty_postgres_url: str) -> None:
    """Two brains starting at once on one PostgreSQL database both end up at head."""
    first = await Database.connect(empty_postgres_url)
    second = await Database.connect(empty_postgres_url)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(migrate, first)
            group.start_soon(migrate, second)
        current, head = await revisions(first)
        assert current == head
    finally:
        await first.dispose()
        await second.dispose()


async def test_the_statistics_revision_fills_its_tables_from_the_stored_tasks(
    empty_url: str,
) -> None:
    """0008 computes the aggregates of the tasks already stored, in both dialects, exactly
    as the writes keep them (minutes truncated in UTC, unfinished tasks left out)."""
    database = await Database.connect(empty_url)
    start = datetime(2026, 3, 8, 23, 59, 58, 999999, tzinfo=UTC)
    events = []
    for i in range(40):
        at = start + timedelta(seconds=7 * i)
        kind = [EventKind.SUCCEEDED, EventKind.FAILED, EventKind.STARTED, EventKind.REVOKED][i % 4]
        events.append(TaskEvent(id=f"s{i}", task_id=f"t{i}", kind=EventKind.SENT, timestamp=at))
        events.append(
            TaskEvent(id=f"o{i}", task_id=f"t{i}", kind=kind, timestamp=at + timedelta(seconds=1))
        )
    try:
        await migrate(database)
        async with database.unit_of_work() as uow:
            project = await uow.projects.create(slug="p", name="P", created_at=start)
            stored = await uow.tasks.apply_events(project.id, events)
            await uow.commit()
        expected = aggregate(stored)
        await downgrade(database, "0007")
        await migrate(database)
        async with database.unit_of_work() as uow:
            assert dict(await uow.tasks.state_counts(project.id)) == expected.states
            finishes = await uow.tasks.finish_counts(
                project.id, finish_minute(start) - timedelta(days=1)
            )
        assert {(c.minute, c.state): c.count for c in finishes} == expected.finishes
    finally:
        await database.dispose()


async def test_the_schedules_revision_goes_down_and_up_again(empty_url: str) -> None:
    """Downgrading to 0008 drops exactly the three schedule tables (projects stay); upgrading
    again gives empty tables the repository stores schedules in."""
    database = await Database.connect(empty_url)
    schedule_tables = {"schedulers", "schedule_entries", "schedule_fires"}
    at = datetime(2026, 3, 8, 12, tzinfo=UTC)
    entry = ScheduleEntry(
        name="nightly ✓", task="app.tasks.report", schedule=CrontabSchedule(minute="0", hour="3")
    )
    report = SchedulerReport(
        kind=SchedulerKind.DJANGO,
        class_path="django_celery_beat.schedulers:DatabaseScheduler",
        timezone="UTC",
        writable=True,
        entries=[entry],
    )
    fire = ScheduleFire(id="f-1", schedule=entry.name, fired_at=at, task_id="t-1")
    try:
        await migrate(database)
        async with database.unit_of_work() as uow:
            project = await uow.projects.create(slug="p", name="P", created_at=at)
            await uow.schedules.replace(project.id, "beat", report, at)
            assert await uow.schedules.add_fires(project.id, "beat", [fire]) == 1
            await uow.commit()
        await downgrade(database, "0008")
        async with database.engine.connect() as connection:
            tables = await connection.run_sync(_tables)
        assert tables.isdisjoint(schedule_tables)
        assert tables >= set(metadata.tables) - schedule_tables
        assert await revisions(database) == ("0008", "0009")
        await migrate(database)
        async with database.engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
        async with database.unit_of_work() as uow:
            assert await uow.projects.get(project.id) is not None
            assert await uow.schedules.schedulers(project.id) == []
            assert await uow.schedules.latest_fires(project.id) == {}
            await uow.schedules.replace(project.id, "beat", report, at)
            assert await uow.schedules.add_fires(project.id, "beat", [fire]) == 1
            await uow.commit()
        async with database.unit_of_work() as uow:
            stored = await uow.schedules.get(project.id, "beat", entry.name)
            assert stored is not None
            assert stored.entry == entry
            assert await uow.schedules.fires(project.id, "beat", entry.name, 5) == [fire]
    finally:
        await database.dispose()
