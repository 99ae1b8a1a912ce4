"""PostgreSQL's statistics of a young ``tasks`` table, and the ingest's lookup plan.

Until ``tasks`` has been analyzed, PostgreSQL took ``project_id = $1`` for a
selective condition and looked each task of a batch up through a secondary
index, scanning the whole project once per id (each batch slower than the
last until autovacuum came by). The ingest analyzes the table itself when it
first writes tasks into a database without those statistics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from z4j_domain.tasks import EventKind, TaskEvent
from z4j_infra._ingest import PostgresBatches
from z4j_infra.database import Database
from z4j_infra.migrations import migrate

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 1, tzinfo=UTC)

HAS_STATISTICS = (
    "SELECT EXISTS (SELECT FROM pg_stats WHERE tablename = 'tasks' AND attname = 'project_id')"
)


def _events(first: int, count: int) -> list[TaskEvent]:
    return [
        TaskEvent(
            id=f"e-{index}",
            task_id=f"t-{index:06d}",
            kind=EventKind.RECEIVED,
            timestamp=START + timedelta(seconds=index),
            name="shop.orders.place",
            queue="default",
        )
        for index in range(first, first + count)
    ]


@pytest.fixture
async def young(empty_postgres_url: str) -> AsyncIterator[tuple[Database, int]]:
    """A new, migrated database without statistics, and its project's id."""
    database = await Database.connect(empty_postgres_url)
    try:
        await migrate(database)
        async with database.unit_of_work() as uow:
            project = await uow.projects.create(slug="p", name="P", created_at=START)
            await uow.commit()
        assert not await _has_statistics(database)
        yield database, project.id
    finally:
        await database.dispose()


async def _has_statistics(database: Database) -> bool:
    async with database.engine.connect() as connection:
        return bool((await connection.exec_driver_sql(HAS_STATISTICS)).scalar())


async def test_the_first_write_of_tasks_analyzes_a_young_table(
    young: tuple[Database, int],
) -> None:
    database, project_id = young
    for first in range(0, 3000, 1000):
        async with database.unit_of_work() as uow:
            await uow.tasks.apply_events(project_id, _events(first, 1000))
            await uow.commit()

    assert await _has_statistics(database)
    # The next batch's lookup goes by primary key (project and id), never
    # through an index on the project alone with the id as a filter.
    ids = [f"t-{index:06d}" for index in range(2500, 3500)]
    async with database.engine.connect() as connection:
        result = await connection.exec_driver_sql(
            "EXPLAIN " + PostgresBatches()._select_sql, (ids, project_id)
        )
        plan = "\n".join(row[0] for row in result)
    assert "pk_tasks" in plan, plan
    assert "Filter" not in plan, plan


async def test_a_rolled_back_analysis_is_made_again(young: tuple[Database, int]) -> None:
    database, project_id = young
    async with database.unit_of_work() as uow:
        await uow.tasks.apply_events(project_id, _events(0, 10))
        # No commit: the batch, and the statistics taken with it, are rolled back.
    assert not await _has_statistics(database)
    async with database.unit_of_work() as uow:
        await uow.tasks.apply_events(project_id, _events(10, 10))
        await uow.commit()
    assert await _has_statistics(database)
