"""How SQL storage gathers a canvas: a few statements per round, each an index lookup.

The repository contract (``tests/contracts``) says *what* a canvas is; this
says what it costs on SQLite and PostgreSQL: the task by its primary key, then
per round of :class:`~z4j_domain.canvas.CanvasGathering` one statement for the
new tasks' ids and one for their rows (none when there are no new ones), and
no statement that reads the project's tasks one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from z4j_domain.tasks import EventKind, TaskEvent
from z4j_infra.database import Database

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: Unrelated tasks of the same project: enough that a scan would not be the cheap plan.
_NOISE = 3_000


def _sent(task_id: str, seconds: float, **links: str) -> TaskEvent:
    return TaskEvent(
        id=f"{task_id}:sent",
        task_id=task_id,
        kind=EventKind.SENT,
        timestamp=T0 + timedelta(seconds=seconds),
        name="app.add",
        **links,
    )


def _chord_from_outside() -> list[TaskEvent]:
    """``chord([add] * 3)(total)`` applied outside a task: each header task is its own root."""
    headers = [
        _sent(header, n, root_id=header, group_id="G", chord_id="cb")
        for n, header in enumerate(("h1", "h2", "h3"))
    ]
    return [*headers, _sent("cb", 3, root_id="h3", parent_id="h3", group_id="G")]


def _noise() -> list[TaskEvent]:
    """Other canvases of the project: lone tasks, groups of ten, chords with callbacks."""
    events = []
    for n in range(_NOISE):
        links = {"root_id": f"n{n}", "group_id": f"ng{n // 10}"}
        if n % 10 != 9:
            links["chord_id"] = f"n{n - n % 10 + 9}"
        events.append(_sent(f"n{n}", 10 + n, **links))
    return events


@contextmanager
def _statements(database: Database) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with their parameters) run on ``database`` meanwhile."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    engine = database.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


async def _seeded(database: Database) -> int:
    async with database.unit_of_work() as uow:
        project = await uow.projects.create(slug="p", name="P", created_at=T0)
        await uow.tasks.apply_events(project.id, [*_chord_from_outside(), *_noise()])
        await uow.commit()
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql("ANALYZE")
    return project.id


async def _plan(database: Database, statement: str, parameters: Any) -> str:
    explain = "EXPLAIN QUERY PLAN " if database.dialect == "sqlite" else "EXPLAIN "
    async with database.engine.connect() as connection:
        result = await connection.exec_driver_sql(explain + statement, parameters)
        rows = result.all()
    # SQLite: (id, parent, notused, detail); PostgreSQL: one text column.
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    "start",
    [
        # The first round finds the header tasks through the group; the second finds nothing.
        "cb",
        # The first round finds the other headers and the callback; the second finds nothing.
        "h2",
    ],
)
async def test_a_chord_applied_from_outside_takes_two_rounds_of_index_lookups(
    database: Database, start: str
) -> None:
    """The task, ids and rows of the first round, ids of the second: four index lookups."""
    project = await _seeded(database)
    with _statements(database) as seen:
        async with database.unit_of_work() as uow:
            canvas = await uow.tasks.canvas(project, start, 2_001)
    assert [task.id for task in canvas] == ["h1", "h2", "h3", "cb"]
    reads = [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 4
    for sql, params in reads:
        plan = await _plan(database, sql, params)
        if database.dialect == "sqlite":
            assert not any(line.startswith("SCAN tasks") for line in plan.splitlines()), plan
        else:
            assert "Seq Scan" not in plan, plan
