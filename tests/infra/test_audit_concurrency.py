"""The audit chain under concurrent writers on PostgreSQL: appends serialize, nothing forks.

The first test runs writers as separate OS processes, each with its own
:class:`~z4j_infra.database.Database`, as several brains sharing one database
would. The others run two writers in one process that skip the lock, or the
repository altogether, to show that the storage still refuses a fork.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from z4j_domain.audit import (
    GENESIS_MAC,
    AuditRecord,
    ChainHead,
    audit_key,
    chain_entry,
    verify_chain,
)
from z4j_domain.encoding import canonical_json
from z4j_domain.errors import Conflict
from z4j_infra.database import Database
from z4j_infra.schema import audit_entries

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]

KEY = audit_key("concurrency-test-secret")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WRITERS = 8
APPENDS = 500
#: Generous: the whole test takes seconds; a hang must still end it.
TIMEOUT = 120


def _record(writer: int, n: int) -> AuditRecord:
    return AuditRecord(
        action="tests.append",
        actor=f"writer:{writer}",
        at=T0 + timedelta(seconds=n),
        target=f"writer:{writer}",
        details={"writer": writer, "n": n},
    )


async def _append_many(url: str, writer: int, count: int, start: Any) -> None:
    database = await Database.connect(url)
    try:
        await database.ping()
        start.wait()
        for n in range(count):
            async with database.unit_of_work() as uow:
                head = await uow.audit.lock_head()
                entry, new_head = chain_entry(KEY, head, _record(writer, n))
                await uow.audit.append(entry, new_head)
                await uow.commit()
    finally:
        await database.dispose()


def _writer_process(url: str, writer: int, count: int, start: Any) -> None:
    """One writer process: its own event loop, engine and connection pool."""
    asyncio.run(_append_many(url, writer, count, start))


def _run_writers(url: str) -> list[int | None]:
    # Each writer is a fresh process (its own event loop, engine and pool), forked from a
    # server that imported this module once: spawned, each of the 8 imported SQLAlchemy,
    # asyncpg and z4j afresh, seconds of start-up on a small machine. The preload applies
    # when the server starts (the first use of forkserver in the session).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    start = context.Barrier(WRITERS)
    processes = [
        context.Process(target=_writer_process, args=(url, writer, APPENDS, start))
        for writer in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT)
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode for process in processes]


async def _until_blocked_or_done(database: Database, done: dict[Any, Any], key: Any) -> None:
    """Return once another connection to the database waits on a lock (the racer is blocked
    behind our open transaction), or the racer already has its outcome ``done[key]``."""
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with anyio.fail_after(10):
        while key not in done:
            async with database.engine.connect() as connection:
                if await connection.scalar(waiting):
                    return
            await anyio.sleep(0.01)


async def test_writer_processes_append_one_unbroken_chain(
    postgres_database: Database, postgres_url: str
) -> None:
    """8 processes x 500 appends: 4,000 entries numbered 1..4000, one chain, nobody lost."""
    exit_codes = await anyio.to_thread.run_sync(_run_writers, postgres_url)
    assert exit_codes == [0] * WRITERS
    async with postgres_database.unit_of_work() as uow:
        head = await uow.audit.head()
        entries = list(await uow.audit.entries(after_seq=0, through_seq=head.seq, limit=10_000))
        assert await uow.audit.entries(after_seq=head.seq, through_seq=2**62, limit=1) == []
    total = WRITERS * APPENDS
    assert head.seq == total
    assert [e.seq for e in entries] == list(range(1, total + 1))
    verification = verify_chain(KEY, entries, head=head)
    assert verification.ok, verification.broken
    assert Counter(e.record.details["writer"] for e in entries) == dict.fromkeys(
        range(WRITERS), APPENDS
    )
    for writer in range(WRITERS):
        # Each writer appended in order, so its entries are in order in the chain.
        mine = [e.record.details["n"] for e in entries if e.record.details["writer"] == writer]
        assert mine == list(range(APPENDS))


async def test_writers_that_skip_the_lock_cannot_fork(postgres_database: Database) -> None:
    """Two writers build on the same head read without the lock: the second append conflicts."""
    async with postgres_database.unit_of_work() as uow:
        entry, head = chain_entry(KEY, await uow.audit.lock_head(), _record(0, 0))
        await uow.audit.append(entry, head)
        await uow.commit()
    async with postgres_database.unit_of_work() as uow:
        stale = await uow.audit.head()
    first_appended = anyio.Event()
    outcomes: dict[int, Any] = {}

    async def write(writer: int) -> None:
        async with postgres_database.unit_of_work() as uow:
            if writer == 1:
                await first_appended.wait()
            entry, new_head = chain_entry(KEY, stale, _record(writer, 1))
            try:
                await uow.audit.append(entry, new_head)
            except Conflict as error:
                outcomes[writer] = error
                # The unit of work is still usable after the Conflict.
                assert (await uow.audit.head()).seq >= 1
                return
            if writer == 0:
                first_appended.set()
                # Hold the transaction (and the head row) while the other writer tries.
                await _until_blocked_or_done(postgres_database, outcomes, 1)
            await uow.commit()
            outcomes[writer] = new_head

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(write, 0)
            group.start_soon(write, 1)
    assert isinstance(outcomes[0], ChainHead)
    assert isinstance(outcomes[1], Conflict)
    async with postgres_database.unit_of_work() as uow:
        head = await uow.audit.head()
        entries = list(await uow.audit.entries(after_seq=0, through_seq=10, limit=10))
    assert head == outcomes[0]
    assert [e.record.actor for e in entries] == ["writer:0", "writer:0"]
    assert verify_chain(KEY, entries, head=head).ok


@pytest.mark.parametrize("seq", [1, 2], ids=["same-seq", "same-prev-mac"])
async def test_the_schema_refuses_a_fork_even_without_the_repository(
    postgres_database: Database, seq: int
) -> None:
    """A raw INSERT racing an append with the same seq or prev_mac fails; the chain verifies."""
    appended = anyio.Event()
    outcome: dict[str, Any] = {}

    async def append() -> None:
        async with postgres_database.unit_of_work() as uow:
            entry, head = chain_entry(KEY, await uow.audit.lock_head(), _record(0, 0))
            await uow.audit.append(entry, head)
            appended.set()
            # Hold the transaction (and the appended row) while the forger tries.
            await _until_blocked_or_done(postgres_database, outcome, "forge")
            await uow.commit()
            outcome["head"] = head

    async def forge() -> None:
        await appended.wait()
        record = _record(1, 0)
        async with postgres_database.unit_of_work() as uow:
            try:
                await uow.execute(
                    audit_entries.insert().values(
                        seq=seq,
                        action=record.action,
                        actor=record.actor,
                        at=record.at,
                        details=canonical_json(record.details).decode(),
                        prev_mac=GENESIS_MAC,
                        mac="f" * 64,
                    )
                )
                await uow.commit()
                outcome["forge"] = "committed"  # not refused: the test fails below
            except Conflict as error:
                outcome["forge"] = error

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(append)
            group.start_soon(forge)
    assert isinstance(outcome["forge"], Conflict)
    async with postgres_database.unit_of_work() as uow:
        head = await uow.audit.head()
        entries = list(await uow.audit.entries(after_seq=0, through_seq=10, limit=10))
    assert head == outcome["head"]
    assert len(entries) == 1
    assert verify_chain(KEY, entries, head=head).ok
