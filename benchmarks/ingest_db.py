"""Measure the batched event ingest (``SqlTaskRepository.apply_events``) on SQLite and PostgreSQL.

Creates a fresh database per backend (a temporary SQLite file; a PostgreSQL
database ``z4j_bench_<hex>`` dropped afterwards), migrates it, and applies a
realistic event stream in batches, one unit of work and one commit per batch,
as the agent gateway does, with as many concurrent writers as it runs (two on
PostgreSQL, one on SQLite; ``--writers`` sets another count). Prints events
per second and checks the stored
task count (``--verify`` also compares every task with the domain's fold).

    python benchmarks/ingest_db.py --backend both --events 100000 --tasks 20000 --batch 1000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from z4j_domain.queries import TaskQuery
from z4j_domain.tasks import EventKind, Task, TaskEvent, fold
from z4j_infra.database import Database
from z4j_infra.migrations import migrate
from z4j_web.ingest import writers_for

START = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = [
    "shop.orders.place",
    "shop.orders.refund",
    "mail.send_receipt",
    "reports.daily.build",
    "images.thumbnail",
]
QUEUES = ["default", "mail", "reports", "images"]
WORKERS = [f"celery@worker-{n}" for n in range(8)]


def _task_events(rng: random.Random, index: int) -> list[TaskEvent]:
    """One task's events: sent, received, started, then succeeded or failed; some retry."""
    task_id = f"{index:08x}-{secrets.token_hex(12)}"
    name = rng.choice(NAMES)
    queue = rng.choice(QUEUES)
    worker = rng.choice(WORKERS)
    sent = START + timedelta(seconds=index * 0.01)
    common = {"task_id": task_id, "name": name, "root_id": task_id}
    events: list[TaskEvent] = []
    attempts = 2 if rng.random() < 0.25 else 1
    when = sent
    for attempt in range(attempts):
        received = when + timedelta(seconds=rng.uniform(0.001, 1.5))
        started = received + timedelta(seconds=rng.uniform(0.0005, 0.05))
        runtime = rng.uniform(0.01, 4.0)
        finished = started + timedelta(seconds=runtime)
        last = attempt == attempts - 1
        fails = not last or rng.random() < 0.08
        events += [
            TaskEvent(
                id=f"{task_id}:{attempt}:sent",
                kind=EventKind.SENT,
                timestamp=when,
                attempt=attempt,
                queue=queue,
                routing_key=queue,
                args=[index, f"order-{index}", {"amount": round(rng.uniform(1, 500), 2)}],
                kwargs={"currency": "EUR", "notify": True, "tags": ["web", "eu"]},
                retries=attempt,
                **common,
            ),
            TaskEvent(
                id=f"{task_id}:{attempt}:received",
                kind=EventKind.RECEIVED,
                timestamp=received,
                attempt=attempt,
                worker=worker,
                clock=index * 4 + 1,
                **common,
            ),
            TaskEvent(
                id=f"{task_id}:{attempt}:started",
                kind=EventKind.STARTED,
                timestamp=started,
                attempt=attempt,
                worker=worker,
                clock=index * 4 + 2,
                task_id=task_id,
            ),
        ]
        if fails:
            kind = EventKind.RETRIED if not last else EventKind.FAILED
            events.append(
                TaskEvent(
                    id=f"{task_id}:{attempt}:{kind.value}",
                    kind=kind,
                    timestamp=finished,
                    attempt=attempt,
                    worker=worker,
                    clock=index * 4 + 3,
                    exception="ConnectionError('payment gateway timed out')",
                    traceback="Traceback (most recent call last):\n"
                    + '  File "shop/orders.py", line 42, in place\n' * 6
                    + "ConnectionError: payment gateway timed out\n",
                    runtime=runtime,
                    task_id=task_id,
                )
            )
        else:
            events.append(
                TaskEvent(
                    id=f"{task_id}:{attempt}:succeeded",
                    kind=EventKind.SUCCEEDED,
                    timestamp=finished,
                    attempt=attempt,
                    worker=worker,
                    clock=index * 4 + 3,
                    result={"order": index, "status": "ok", "lines": [1, 2, 3]},
                    runtime=runtime,
                    task_id=task_id,
                )
            )
        when = finished + timedelta(seconds=rng.uniform(0.5, 3))
    return events


def make_events(events: int, tasks: int, seed: int = 7) -> list[TaskEvent]:
    """About ``events`` events of ``tasks`` tasks, in a realistic, moderately shuffled order.

    Events arrive roughly in time order with jitter, so a task's events span a
    few batches and most batches mix new tasks with ones already stored.
    """
    rng = random.Random(seed)
    stream: list[tuple[float, TaskEvent]] = []
    per_task = [_task_events(rng, index) for index in range(tasks)]
    pool = [event for task_events in per_task for event in task_events]
    # Trim or pad (with redeliveries, which the ingest must ignore) to the count asked for.
    if len(pool) > events:
        pool = pool[:events]
    while len(pool) < events:
        pool.append(rng.choice(pool))
    for event in pool:
        delay = rng.expovariate(1 / 0.5)  # transport and batching delays, in seconds
        stream.append(((event.timestamp - START).total_seconds() + delay, event))
    stream.sort(key=lambda item: item[0])
    return [event for _, event in stream]


def batches(events: Sequence[TaskEvent], size: int) -> list[Sequence[TaskEvent]]:
    """Consecutive slices of ``size`` events."""
    return [events[i : i + size] for i in range(0, len(events), size)]


async def ingest(
    db: Database, project_id: int, stream: list[Sequence[TaskEvent]], writers: int = 1
) -> float:
    """Apply every batch (one unit of work and commit each); return the seconds it took.

    With several writers, each takes the next batch as soon as it is free, on a
    connection of its own, the way several brain processes share a database:
    one folds in Python while another's statements run in PostgreSQL.
    """
    pending = iter(stream)

    async def writer() -> None:
        for batch in pending:
            async with db.unit_of_work() as uow:
                await uow.tasks.apply_events(project_id, batch)
                await uow.commit()

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - started


async def stored_tasks(db: Database, project_id: int) -> dict[str, Task]:
    """Every stored task of the project, through the list API."""
    found: dict[str, Task] = {}
    cursor = None
    async with db.unit_of_work() as uow:
        while True:
            page = await uow.tasks.list(project_id, TaskQuery(limit=500, cursor=cursor))
            found.update((task.id, task) for task in page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor


async def run_backend(url: str, events: list[TaskEvent], args: argparse.Namespace) -> bool:
    """Benchmark one database; return whether the stored tasks check out."""
    db = await Database.connect(url)
    try:
        await migrate(db)
        async with db.unit_of_work() as uow:
            project = await uow.projects.create(slug="bench", name="Bench", created_at=START)
            await uow.commit()
        stream = batches(events, args.batch)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        writers = args.writers or writers_for(db.dialect)
        seconds = await ingest(db, project.id, stream, writers)
        if profiler is not None:
            profiler.disable()
            stats = pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative"))
            stats.print_stats(int(os.environ.get("NSTATS", "35")))
        async with db.unit_of_work() as uow:
            count = await uow.tasks.count(project.id)
        expected_count = len({event.task_id for event in events})
        ok = count == expected_count
        print(
            f"{db.dialect:>10}: {len(events):,} events in {len(stream):,} batches "
            f"({writers} writer{'s' if writers > 1 else ''}) "
            f"in {seconds:.2f} s = {len(events) / seconds:,.0f} events/s; "
            f"{count:,} tasks stored (expected {expected_count:,}: {'ok' if ok else 'WRONG'})"
        )
        if args.verify:
            by_task: dict[str, list[TaskEvent]] = {}
            for event in {event.id: event for event in events}.values():
                by_task.setdefault(event.task_id, []).append(event)
            expected = {task_id: fold(task_events) for task_id, task_events in by_task.items()}
            same = await stored_tasks(db, project.id) == expected
            print(f"{'':>10}  every stored task equals the domain's fold: {same}")
            ok = ok and same
        return ok
    finally:
        await db.dispose()


async def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the benchmark on the chosen backends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument(
        "--writers",
        type=int,
        default=None,
        help="concurrent units of work taking batches in turn (default: as the agent gateway "
        "does, 2 on PostgreSQL and 1 on SQLite)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "Z4J_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="maintenance database URL; the benchmark creates and drops its own database",
    )
    parser.add_argument("--verify", action="store_true", help="compare every task with the fold")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the ingest")
    args = parser.parse_args(argv)

    events = make_events(args.events, args.tasks)
    # In a brain, events arrive a batch at a time and are garbage soon after;
    # here all of them live for the whole run. Keep the collector from scanning
    # them over and over, which would charge the ingest for the set-up.
    gc.collect()
    gc.freeze()
    ok = True
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="z4j-bench-") as directory:
            path = Path(directory) / "z4j.db"
            ok &= await run_backend(f"sqlite+aiosqlite:///{path}", events, args)
    if args.backend in ("postgresql", "both"):
        name = f"z4j_bench_{secrets.token_hex(6)}"
        admin = await asyncpg.connect(args.postgres_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            base = args.postgres_url.rpartition("/")[0]
            ok &= await run_backend(f"{base}/{name}", events, args)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
