"""Bulk retry through the brain: how fast it turns a filter into parts, and what memory it holds.

Creates a fresh PostgreSQL database (or a SQLite file with ``--sqlite``), stores
``--tasks`` failed tasks (plus as many succeeded ones the filter must skip),
issues a bulk retry by filter through the same code the API uses
(:func:`z4j_web.commands.issue`), and lets the brain's dispatcher carry it out
against an in-process agent link that answers every part at once (so the
figure is the brain's side: paging the filter, planning each retry, cutting
parts, storing progress, auditing). Prints tasks per second and the peak of
memory allocated meanwhile (``tracemalloc``), which must not grow with the
number of tasks: a bulk action holds one part's tasks at a time.

    python benchmarks/bulk.py --tasks 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import tracemalloc
import types
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from z4j_domain.audit import audit_key
from z4j_domain.commands import CommandKind, CommandPart, ItemReport, PartReport
from z4j_domain.queries import TaskFilter
from z4j_domain.tasks import EventKind, TaskEvent
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.migrations import migrate
from z4j_web import commands
from z4j_web.auditing import Actor, Change
from z4j_web.live import LiveUpdates

ADMIN_URL = os.environ.get("Z4J_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
KEY = audit_key("benchmark-secret")
START = datetime(2026, 1, 1, tzinfo=UTC)


class InstantAgent:
    """An agent link that reports every part published as soon as it is sent."""

    project_id = 0
    agent_name = "bench"
    capabilities = frozenset({"retry", "cancel", "purge"})

    def __init__(self, dispatcher: commands.Dispatcher, project_id: int) -> None:
        self.dispatcher = dispatcher
        self.project_id = project_id
        self.parts = 0

    def send_command(self, body: Mapping[str, Any]) -> bool:
        part = CommandPart.from_body(body)
        self.parts += 1
        loop = asyncio.get_running_loop()
        loop.call_soon(self._answer, part)
        return True

    def _answer(self, part: CommandPart) -> None:
        base = {"command_id": part.command_id, "action": part.action, "part": part.part}
        self.dispatcher.reported(self, PartReport(status="acked", **base))
        outcomes = [
            ItemReport(task_id=i["task_id"], outcome="published", new_task_id=i["new_task_id"])
            for i in part.items
        ]
        self.dispatcher.reported(self, PartReport(status="done", outcomes=outcomes, **base))


async def _seed(database: Database, tasks: int) -> int:
    async with database.unit_of_work() as uow:
        project = await uow.projects.create(slug="bench", name="Bench", created_at=START)
        await uow.commit()
    batch: list[TaskEvent] = []
    for i in range(tasks * 2):
        failed = i % 2 == 0
        at = START + timedelta(milliseconds=i)
        for kind in (EventKind.SENT, EventKind.FAILED if failed else EventKind.SUCCEEDED):
            batch.append(
                TaskEvent(
                    id=f"{i}-{kind.value}",
                    task_id=f"task-{i:08d}",
                    kind=kind,
                    timestamp=at,
                    name="app.tasks.send_report",
                    queue="reports",
                    args=[i, "quarterly"],
                    kwargs={"recipients": ["ops@example.com"], "format": "pdf"},
                )
            )
        if len(batch) >= 2000:
            async with database.unit_of_work() as uow:
                await uow.tasks.apply_events(project.id, batch)
                await uow.commit()
            batch = []
    if batch:
        async with database.unit_of_work() as uow:
            await uow.tasks.apply_events(project.id, batch)
            await uow.commit()
    return project.id


async def _run(url: str, tasks: int) -> None:
    database = await Database.connect(url)
    await migrate(database)
    project_id = await _seed(database, tasks)
    clock = SystemClock()
    runtime = types.SimpleNamespace(
        uow=database.unit_of_work, clock=clock, audit_key=KEY, live=LiveUpdates()
    )
    dispatcher = commands.Dispatcher(runtime)
    agent = InstantAgent(dispatcher, project_id)
    dispatcher.connected(agent)
    change = Change(
        uow_factory=database.unit_of_work,
        clock=clock,
        audit_key=KEY,
        actor=Actor(name="bench@example.com", user_id=None),
    )
    async with database.unit_of_work() as uow:
        project = await uow.projects.get(project_id)
    assert project is not None
    task_filter = TaskFilter(states={"failed"}, name="app.tasks.send_report")
    tracemalloc.start()
    started = time.perf_counter()
    count, _ = await commands.count_matching(
        database.unit_of_work, project_id, task_filter, limit=tasks + 1, sample=20
    )
    counted = time.perf_counter() - started
    assert count == tasks, count
    command, _ = await commands.issue(
        change,
        project=project,
        command_id=commands.new_command_id(),
        kind=CommandKind.BULK_RETRY,
        params={
            "target": "tasks",
            "filter": task_filter.to_params(),
            "until": clock.now().isoformat(),
            "total": count,
        },
        time_limit=timedelta(hours=1),
    )
    await dispatcher.look()
    await dispatcher.settle()
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    async with database.unit_of_work() as uow:
        done = await uow.commands.get(project_id, command.id)
    await dispatcher.stop()
    await database.dispose()
    assert done is not None
    assert done.result is not None
    if done.status.value != "succeeded" or done.result["outcomes"] != {"published": tasks}:
        raise SystemExit(f"the bulk retry did not finish as expected: {done}")
    print(
        f"bulk retry of {tasks:,} failed tasks (of {2 * tasks:,}): dry-run count {counted:.2f} s;"
        f" counted, issued and carried out in {elapsed:.2f} s ({tasks / elapsed:,.0f} tasks/s,"
        f" {agent.parts} parts); peak Python memory allocated meanwhile {peak / 2**20:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as home:
            asyncio.run(_run(f"sqlite+aiosqlite:///{Path(home) / 'bench.db'}", args.tasks))
        return
    name = f"z4j_bench_{secrets.token_hex(4)}"

    async def create() -> None:
        admin = await asyncpg.connect(ADMIN_URL.replace("postgresql+asyncpg", "postgresql"))
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(ADMIN_URL.replace("postgresql+asyncpg", "postgresql"))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    asyncio.run(create())
    try:
        base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        asyncio.run(_run(f"{base}/{name}", args.tasks))
    finally:
        asyncio.run(drop())


if __name__ == "__main__":
    main()
