"""Audit log: append rate with concurrent writers, and how fast `z4j audit verify` reads a chain.

Creates a fresh PostgreSQL database (or a SQLite file with ``--sqlite``),
migrates it, and has ``--writers`` writers (each with its own connection pool,
as separate brain processes would have) append ``--entries`` entries in all,
one transaction each through the same audited path the API uses (take the
head lock, append, commit). Then verifies the whole chain as
``z4j audit verify`` does and prints both rates. The database is dropped.

    python benchmarks/audit.py --entries 20000 --writers 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import asyncpg

from z4j_domain.audit import audit_key
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.migrations import migrate
from z4j_web import auditing
from z4j_web.auditing import Actor

ADMIN_URL = os.environ.get("Z4J_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
KEY = audit_key("benchmark-secret")


async def _writer(url: str, writer: int, count: int) -> None:
    database = await Database.connect(url)
    actor = Actor(name=f"writer-{writer}@example.com", user_id=writer, source_ip="10.0.0.1")
    clock = SystemClock()
    try:
        for i in range(count):
            record = actor.record(
                "task.retry", clock.now(), target=f"task:{writer}-{i}", project_id=1, queue="celery"
            )
            await auditing.record(database.unit_of_work, KEY, record)
    finally:
        await database.dispose()


async def _run(url: str, entries: int, writers: int) -> None:
    database = await Database.connect(url)
    await migrate(database)
    share = entries // writers
    started = time.perf_counter()
    await asyncio.gather(*(_writer(url, w, share) for w in range(writers)))
    appended = time.perf_counter() - started
    total = share * writers
    print(
        f"appended {total:,} entries with {writers} writers in {appended:.1f} s:"
        f" {total / appended:,.0f} entries/s ({appended / total * 1000:.2f} ms each, serialized)"
    )
    started = time.perf_counter()
    result = await auditing.verify(database.unit_of_work, KEY)
    verified = time.perf_counter() - started
    await database.dispose()
    if not result.ok or result.verified != total:
        raise SystemExit(f"verification failed: {result}")
    print(
        f"verified {result.verified:,} entries in {verified:.1f} s:"
        f" {result.verified / verified:,.0f} entries/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()
    if args.sqlite:
        with tempfile.TemporaryDirectory() as home:
            url = f"sqlite+aiosqlite:///{Path(home) / 'audit.db'}"
            print(f"SQLite {url}")
            asyncio.run(_run(url, args.entries, args.writers))
        return
    name = f"z4j_bench_audit_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    print(f"PostgreSQL database {name}")
    try:
        base = ADMIN_URL.rsplit("/", 1)[0]
        asyncio.run(_run(f"{base}/{name}", args.entries, args.writers))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
