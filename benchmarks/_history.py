"""What the benchmarks over a large PostgreSQL task history share (not a benchmark itself).

``query.py`` (the JSON task list and queue API) and ``pages.py`` (the
dashboard's pages and the overview API) both: create a fresh PostgreSQL
database, store synthetic tasks in it through the same batched repository path
agents use, start a real ``z4j serve`` on it, mint an API key, and time
sequential keep-alive HTTP requests, reporting p50 / p95 / max.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from z4j_domain.tasks import EventKind, TaskEvent
from z4j_infra.database import Database
from z4j_infra.migrations import migrate

ADMIN_URL = os.environ.get("Z4J_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
Z4J = str(Path(sys.executable).parent / "z4j")
ADMIN_EMAIL = "bench@example.com"

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
#: What failed tasks raised, with repeats for unequal groups (4 : 3 : 2 : 1).
EXCEPTIONS = (
    [("ValueError", "boom")] * 4
    + [("KeyError", "user_id")] * 3
    + [("TimeoutError", "timed out")] * 2
    + [("ConnectionError", "connection refused")]
)
#: The spacing of consecutive tasks query.py has always used.
SPACING = timedelta(milliseconds=7)
#: Requests per timed query that warm caches and the connection pool, not counted.
WARMUP = 10


def events(n_tasks: int, start: datetime, spacing: timedelta = SPACING) -> list[TaskEvent]:
    """One event per task (85% succeeded, 8% failed, the rest started, received or
    revoked), task ``i`` at ``start + i * spacing``, ids in time order."""
    rng = random.Random(42)
    # A separate generator for exception types, so the other fields (and the tasks
    # query.py has always measured) do not depend on them.
    raised = random.Random(7)
    found = []
    for i in range(n_tasks):
        kind = rng.choice(OUTCOMES)
        at = start + spacing * i
        exception = traceback = None
        if kind is EventKind.FAILED:
            kind_name, message = raised.choice(EXCEPTIONS)
            exception = f"{kind_name}({message!r})"
            traceback = f"Traceback (most recent call last):\n  ...\n{kind_name}: {message}"
        found.append(
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
                exception=exception,
                traceback=traceback,
                runtime=rng.random() if kind.state.is_terminal else None,
            )
        )
    return found


async def load(
    url: str, n_tasks: int, batch: int, start: datetime, spacing: timedelta = SPACING
) -> tuple[int, float]:
    """Migrate, create project ``default``, store the tasks of :func:`events` in batches
    of ``batch`` events (one commit each); return the project's id and the seconds taken
    (the batches only)."""
    db = await Database.connect(url)
    try:
        await migrate(db)
        async with db.unit_of_work() as uow:
            project = await uow.projects.create(
                slug="default", name="Default", created_at=datetime.now(UTC)
            )
            await uow.commit()
        generated = events(n_tasks, start, spacing)
        began = time.perf_counter()
        for offset in range(0, len(generated), batch):
            async with db.unit_of_work() as uow:
                await uow.tasks.apply_events(project.id, generated[offset : offset + batch])
                await uow.commit()
        elapsed = time.perf_counter() - began
        return project.id, elapsed
    finally:
        await db.dispose()


async def _admin(sql: str, url: str = ADMIN_URL) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def vacuum_analyze(dsn: str) -> None:
    """``VACUUM ANALYZE`` the database (fresh statistics and visibility map, as a
    long-running database would have)."""
    asyncio.run(_admin("VACUUM ANALYZE", dsn))


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[tuple[str, str]]:
    """A new, empty PostgreSQL database: ``(name, dsn)``; dropped on the way out,
    whatever happened (an error, Ctrl-C)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    base, _, _ = ADMIN_URL.rpartition("/")
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name, f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _free_port() -> int:
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


@contextlib.contextmanager
def serve(dsn: str, password: str) -> Iterator[tuple[int, dict[str, str]]]:
    """A real ``z4j serve`` on ``dsn``, ready, with :data:`ADMIN_EMAIL` as its bootstrap
    admin: ``(port, env)`` (``env`` also serves the ``z4j`` CLI); stopped on the way out."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "Z4J_HOME": home,
            "Z4J_DATABASE_URL": dsn,
            "Z4J_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
            "Z4J_BOOTSTRAP_ADMIN_PASSWORD": password,
        }
        proc = subprocess.Popen(
            [Z4J, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_healthy(port, proc)
            yield port, env
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


def cli_json(env: Mapping[str, str], *args: str) -> dict[str, object]:
    """Run ``z4j <args> --json`` and return what it printed."""
    done = subprocess.run(
        [Z4J, *args, "--json"], env=dict(env), capture_output=True, text=True, check=True
    )
    found: dict[str, object] = json.loads(done.stdout)
    return found


def mint_key(env: Mapping[str, str]) -> str:
    """A new API key of :data:`ADMIN_EMAIL`."""
    created = cli_json(env, "api-key", "create", "--email", ADMIN_EMAIL, "--name", "bench")
    return str(created["key"])


def time_requests(
    port: int,
    path: str,
    samples: int,
    headers: Mapping[str, str],
    check: Callable[[bytes], str | None] | None = None,
) -> list[float]:
    """Milliseconds of ``samples`` sequential ``GET path`` on one keep-alive connection,
    after :data:`WARMUP` uncounted ones. Every answer must be 200, and ``check`` (if
    given) must find nothing wrong with its body (it returns what is wrong, or ``None``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    timings = []
    for i in range(samples + WARMUP):
        began = time.perf_counter()
        conn.request("GET", path, headers=dict(headers))
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}: {body[:300]!r}")
        if check is not None:
            wrong = check(body)
            if wrong is not None:
                raise SystemExit(f"{path}: {wrong}")
        if i >= WARMUP:
            timings.append(elapsed * 1000)
    conn.close()
    return timings


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def row(label: str, timings: list[float], width: int = 28) -> str:
    """One line of the results table: label, p50, p95, max."""
    return (
        f"{label:{width}} {statistics.median(timings):8.1f} "
        f"{percentile(timings, 95):8.1f} {max(timings):8.1f}"
    )


def header(width: int = 28) -> str:
    """The results table's column titles."""
    return f"{'query':{width}} {'p50':>8} {'p95':>8} {'max':>8}"
