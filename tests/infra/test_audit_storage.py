"""How the SQL audit log stores the chain: rows the contract suite cannot see, on both dialects.

The stored details are the canonical text the MAC covers; a row changed
behind z4j's back reads as a changed entry instead of failing the read; a
missing head row (an emptied table) is recreated as the genesis head.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from z4j_domain.audit import (
    AuditQuery,
    AuditRecord,
    audit_key,
    chain_entry,
    genesis_head,
    verify_chain,
)
from z4j_domain.encoding import canonical_json
from z4j_infra.audit import UNREADABLE_ACTION
from z4j_infra.database import Database
from z4j_infra.schema import audit_entries, audit_head

pytestmark = pytest.mark.anyio

KEY = audit_key("storage-test-secret")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _record(n: int, **details: object) -> AuditRecord:
    return AuditRecord(
        action="tests.stored", actor="amy@example.com", at=T0, details={"n": n, **details}
    )


async def _append(database: Database, *records: AuditRecord) -> None:
    for record in records:
        async with database.unit_of_work() as uow:
            entry, head = chain_entry(KEY, await uow.audit.lock_head(), record)
            await uow.audit.append(entry, head)
            await uow.commit()


async def _execute(database: Database, statement: sa.Executable) -> None:
    async with database.unit_of_work() as uow:
        await uow.execute(statement)
        await uow.commit()


async def test_details_are_stored_as_the_canonical_text(database: Database) -> None:
    """The details column holds exactly the canonical JSON the MAC was computed over."""
    record = _record(1, zeta="ü", alpha=[1.5, {"b": None, "a": 2**65}])
    await _append(database, record)
    async with database.unit_of_work() as uow:
        stored = (await uow.execute(sa.select(audit_entries.c.details))).scalar_one()
    assert stored == canonical_json(record.details).decode("utf-8")


@pytest.mark.parametrize(
    "change",
    [
        {"action": "Not An Action"},
        {"details": "{not json"},
        {"details": "[1, 2]"},
        {"actor": "x" * 2000},
    ],
    ids=["action", "details-not-json", "details-not-an-object", "actor-too-long"],
)
async def test_a_row_changed_into_an_invalid_record_reads_as_a_changed_entry(
    database: Database, change: dict[str, str]
) -> None:
    """Verification reports a row no longer valid as changed instead of failing to read it."""
    await _append(database, _record(1), _record(2), _record(3))
    await _execute(database, audit_entries.update().where(audit_entries.c.seq == 2).values(change))
    async with database.unit_of_work() as uow:
        entries = list(await uow.audit.entries(after_seq=0, through_seq=10, limit=10))
        head = await uow.audit.head()
        page = await uow.audit.search(AuditQuery())
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[1].record.action == UNREADABLE_ACTION
    assert [e.seq for e in page.items] == [3, 2, 1]
    verification = verify_chain(KEY, entries, head=head)
    assert verification.broken is not None
    assert verification.broken.position == 1
    assert "changed" in verification.broken.reason


async def test_a_missing_head_row_is_recreated_as_genesis(database: Database) -> None:
    """With the head row deleted, head() is genesis and lock_head puts the row back."""
    await _execute(database, sa.delete(audit_head))
    async with database.unit_of_work() as uow:
        assert await uow.audit.head() == genesis_head()
    await _append(database, _record(1), _record(2))
    async with database.unit_of_work() as uow:
        rows = (await uow.execute(sa.select(audit_head.c.id, audit_head.c.seq))).all()
        head = await uow.audit.head()
        entries = list(await uow.audit.entries(after_seq=0, through_seq=10, limit=10))
    assert [tuple(row) for row in rows] == [(1, 2)]
    assert verify_chain(KEY, entries, head=head).ok
