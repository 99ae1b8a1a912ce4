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
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import asyncpg
from _history import (
    NAMES,
    fresh_database,
    header,
    load,
    mint_key,
    row,
    serve,
    time_requests,
    vacuum_analyze,
)

from z4j_domain.queries import TaskCursor


async def _deep_cursor(dsn: str, project_id: int, position: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchrow(
            "SELECT first_seen_at, id FROM tasks WHERE project_id = $1 "
            "ORDER BY first_seen_at DESC, id DESC OFFSET $2 LIMIT 1",
            project_id,
            position,
        )
    finally:
        await conn.close()
    return TaskCursor(first_seen_at=found["first_seen_at"], task_id=found["id"]).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    with fresh_database("z4j_bench_q") as (name, dsn):
        print(f"loading {args.tasks:,} tasks into PostgreSQL database {name} ...", flush=True)
        # Tasks 7 ms apart from three days ago (query.py's history since it was written).
        start = datetime.now(UTC) - timedelta(days=3)
        project_id, elapsed = asyncio.run(load(dsn, args.tasks, args.batch, start))
        print(f"  loaded in {elapsed:.1f}s ({args.tasks / elapsed:,.0f} events/s)", flush=True)
        deep = asyncio.run(_deep_cursor(dsn, project_id, args.tasks // 2))
        vacuum_analyze(dsn)

        with serve(dsn, secrets.token_urlsafe(16)) as (port, env):
            headers = {"Authorization": f"Bearer {mint_key(env)}"}
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
            print(header())
            for label, path in queries.items():
                samples = args.samples if label.startswith("list") else max(20, args.samples // 4)
                timings = time_requests(port, path, samples, headers)
                print(row(label, timings), flush=True)


if __name__ == "__main__":
    main()
