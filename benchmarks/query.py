"""Latency of the task list and queue APIs over HTTP with a large PostgreSQL history.

Creates a fresh PostgreSQL database, stores ``--tasks`` tasks in it through the
same batched repository path agents use, starts a real ``z4j serve`` on it, and
times sequential requests (one keep-alive connection) for: the first page, a
state filter, a name filter, a page deep into the cursor, and the queue counts.
Prints p50 / p95 / max per query. The database is dropped at the end.

    python benchmarks/query.py --tasks 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import asyncpg

from z4j_domain.queries import TaskCursor
from z4j_domain.tasks import EventKind, TaskEvent
from z4j_infra.database import Database
from z4j_infra.migrations import migrate

ADMIN_URL = os.environ.get("Z4J_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
NAMES = [f"app.tasks.job_{i:02d}" for i in range(40)]
QUEUES = ["celery", "default", "priority", "reports", "emails"]
WORKERS = [f"celery@worker-{i}" for i in range(8)]
OUTCOMES = (
    [EventKind.SUCCEEDED] * 85
    + [EventKind.FAILED] * 8
    + [EventKind.STARTED] * 4
    + [EventKind.RECEIVED] * 2
    + [EventKind.REVOKED]
)


def _events(n_tasks: int, start: datetime) -> list[TaskEvent]:
    rng = random.Random(42)
    events = []
    for i in range(n_tasks):
        kind = rng.choice(OUTCOMES)
        at = start + timedelta(milliseconds=i * 7)
        failed = kind is EventKind.FAILED
        events.append(
            TaskEvent(
                id=f"e{i}",
                task_id=f"{i:08d}-{rng.getrandbits(64):016x}",
                kind=kind,
                timestamp=at,
                name=rng.choice(NAMES),
                queue=rng.choice(QUEUES),
                worker=rng.choice(WORKERS),
                args=[i, "x"],
                kwargs={"user_id": i % 1000},
                result={"ok": True} if kind is EventKind.SUCCEEDED else None,
                exception="ValueError('boom')" if failed else None,
                traceback="Traceback (most recent call last):\n  ...\nValueError: boom"
                if failed
                else None,
                runtime=rng.random() if kind.state.is_terminal else None,
            )
        )
    return events


async def _load(url: str, n_tasks: int, batch: int) -> tuple[int, float]:
    db = await Database.connect(url)
    try:
        await migrate(db)
        async with db.unit_of_work() as uow:
            project = await uow.projects.create(
                slug="default", name="Default", created_at=datetime.now(UTC)
            )
            await uow.commit()
        events = _events(n_tasks, datetime.now(UTC) - timedelta(days=3))
        began = time.perf_counter()
        for offset in range(0, len(events), batch):
            async with db.unit_of_work() as uow:
                await uow.tasks.apply_events(project.id, events[offset : offset + batch])
                await uow.commit()
        elapsed = time.perf_counter() - began
        return project.id, elapsed
    finally:
        await db.dispose()


async def _deep_cursor(dsn: str, project_id: int, position: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT first_seen_at, id FROM tasks WHERE project_id = $1 "
            "ORDER BY first_seen_at DESC, id DESC OFFSET $2 LIMIT 1",
            project_id,
            position,
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return TaskCursor(first_seen_at=row["first_seen_at"], task_id=row["id"]).encode()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"z4j serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("z4j serve did not become ready")


def _time_requests(port: int, key: str, path: str, samples: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}"}
    timings = []
    for i in range(samples + 10):
        began = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}: {body[:300]!r}")
        if i >= 10:  # the first requests warm caches and the connection pool
            timings.append(elapsed * 1000)
    conn.close()
    return timings


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    name = f"z4j_bench_q_{secrets.token_hex(4)}"
    base, _, _ = ADMIN_URL.rpartition("/")
    dsn = f"{base}/{name}"
    z4j = str(Path(sys.executable).parent / "z4j")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    proc: subprocess.Popen[bytes] | None = None
    try:
        print(f"loading {args.tasks:,} tasks into PostgreSQL database {name} ...", flush=True)
        project_id, elapsed = asyncio.run(_load(dsn, args.tasks, args.batch))
        print(f"  loaded in {elapsed:.1f}s ({args.tasks / elapsed:,.0f} events/s)", flush=True)
        deep = asyncio.run(_deep_cursor(dsn, project_id, args.tasks // 2))

        port = _free_port()
        with tempfile.TemporaryDirectory() as home:
            env = {
                **os.environ,
                "Z4J_HOME": home,
                "Z4J_DATABASE_URL": dsn,
                "Z4J_BOOTSTRAP_ADMIN_EMAIL": "bench@example.com",
                "Z4J_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            }
            proc = subprocess.Popen(
                [z4j, "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait_healthy(port, proc)
            created = subprocess.run(
                [
                    z4j,
                    "api-key",
                    "create",
                    "--email",
                    "bench@example.com",
                    "--name",
                    "bench",
                    "--json",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            key = json.loads(created.stdout)["key"]
            base_path = "/api/v1/projects/default"
            queries = {
                "list: first page": f"{base_path}/tasks?limit=50",
                "list: state=failed": f"{base_path}/tasks?state=failed&limit=50",
                "list: name=...job_07": f"{base_path}/tasks?name={NAMES[7]}&limit=50",
                "list: page at 50% depth": (
                    f"{base_path}/tasks?{urlencode({'cursor': deep, 'limit': 50})}"
                ),
                "queues: counts": f"{base_path}/queues",
            }
            print(f"\n{args.tasks:,} tasks, {args.samples} sequential requests each, milliseconds")
            print(f"{'query':28} {'p50':>8} {'p95':>8} {'max':>8}")
            for label, path in queries.items():
                samples = args.samples if label.startswith("list") else max(20, args.samples // 4)
                timings = _time_requests(port, key, path, samples)
                print(
                    f"{label:28} {statistics.median(timings):8.1f} "
                    f"{_percentile(timings, 95):8.1f} {max(timings):8.1f}",
                    flush=True,
                )
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
