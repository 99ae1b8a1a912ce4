"""The audit chain's storage on SQLite and PostgreSQL: entries, the one head row, checkpoints.

Appends are serialized by the single ``audit_head`` row: :meth:`lock_head`
locks it (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite an ``UPDATE``
that changes nothing, which takes the database's write lock at once) and the
lock lasts until the transaction ends, in whatever process. Behind the lock
stand the table's constraints: an entry's ``seq`` is its primary key and its
``prev_mac`` is unique, so no two entries can follow the same one, and
:meth:`append` only stores an entry that follows the stored head.

``details`` is stored as the canonical JSON text the entry's MAC covers, so
that reading it back gives the very document that was signed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from z4j_domain.audit import (
    GENESIS_MAC,
    AuditEntry,
    AuditPage,
    AuditQuery,
    AuditRecord,
    ChainHead,
    Checkpoint,
    genesis_head,
)
from z4j_domain.encoding import canonical_json
from z4j_domain.errors import Conflict
from z4j_infra.repositories import _SqlRepository
from z4j_infra.schema import audit_checkpoints, audit_entries, audit_head

if TYPE_CHECKING:
    from z4j_infra.unit_of_work import SqlUnitOfWork

__all__ = ["SqlAuditLogRepository"]

_HEAD_ID: Final = 1
#: What an entry whose stored row no longer makes a valid record reads as.
UNREADABLE_ACTION: Final = "audit.unreadable"


def _record(row: Any) -> AuditRecord:
    try:
        return AuditRecord(
            action=row.action,
            actor=row.actor,
            at=row.at,
            actor_id=row.actor_id,
            target=row.target,
            project_id=row.project_id,
            source_ip=row.source_ip,
            details=json.loads(row.details),
        )
    except (ValueError, TypeError) as error:
        # Only a row changed behind z4j's back gets here. Reading it as a
        # placeholder (whose MAC cannot match) lets verification report the
        # entry as changed instead of failing to read the log at all.
        return AuditRecord(
            action=UNREADABLE_ACTION,
            actor="system",
            at=row.at if isinstance(row.at, datetime) else datetime(1970, 1, 1, tzinfo=UTC),
            details={"error": str(error)[:500]},
        )


def _row_to_entry(row: Any) -> AuditEntry:
    return AuditEntry(seq=row.seq, record=_record(row), prev_mac=row.prev_mac, mac=row.mac)


def _row_to_head(row: Any) -> ChainHead:
    return ChainHead(seq=row.seq, mac=row.mac, signature=row.signature)


def _prefix_range(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """``column`` starts with ``prefix`` (which ends in ``.``), as an index range.

    Every string that starts with ``x.`` sorts from ``x.`` up to, not
    including, ``x/`` in code-point order (the C collation on PostgreSQL,
    SQLite's default), and no other string does.
    """
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return sa.and_(column >= prefix, column < upper)


class SqlAuditLogRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.AuditLogRepository` on SQLite or PostgreSQL."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        super().__init__(uow)
        # The transaction that holds the lock, and the head as it stands in it:
        # a lock taken once lasts until that transaction ends.
        self._held: tuple[object, ChainHead] | None = None

    def _transaction(self) -> object | None:
        connection = self._uow.connection.sync_connection
        return None if connection is None else connection.get_transaction()

    async def lock_head(self) -> ChainHead:
        """Take the chain's append lock for this transaction and return its head."""
        transaction = self._transaction()
        if self._held is not None and transaction is not None and self._held[0] is transaction:
            return self._held[1]
        locked = await self._lock_head()
        self._held = (self._transaction(), locked)
        return locked

    async def _lock_head(self) -> ChainHead:
        head = audit_head.c
        select = sa.select(audit_head).where(head.id == _HEAD_ID)
        if self._uow.dialect == "sqlite":
            # Write before reading: a SQLite transaction that reads first and
            # then writes fails at once if another writer committed meanwhile;
            # one that starts by writing waits its turn (busy_timeout).
            await self._uow.execute(
                sa.update(audit_head).where(head.id == _HEAD_ID).values(seq=head.seq)
            )
        else:
            select = select.with_for_update()
        row = (await self._uow.execute(select)).first()
        if row is None:
            # Migration 0004 inserts the row; it is missing only if someone
            # emptied the table. Concurrent lockers both try; one inserts.
            await self._uow.execute(
                self._insert(audit_head)
                .values(id=_HEAD_ID, seq=0, mac=GENESIS_MAC, signature="")
                .on_conflict_do_nothing(index_elements=["id"])
            )
            row = (await self._uow.execute(select)).one()
        return _row_to_head(row)

    async def head(self) -> ChainHead:
        """The chain's head as committed, without locking."""
        row = (
            await self._uow.execute(sa.select(audit_head).where(audit_head.c.id == _HEAD_ID))
        ).first()
        return genesis_head() if row is None else _row_to_head(row)

    async def append(self, entry: AuditEntry, head: ChainHead) -> None:
        """Store ``entry`` and move the head to ``head``.

        Raise :class:`~z4j_domain.errors.Conflict`, changing nothing, if the
        entry does not follow the stored head, or an entry with its sequence
        number or previous MAC exists.
        """
        # Taken here too (free once held), so even a caller that skipped
        # lock_head waits for other appenders and then sees where the chain is.
        current = await self.lock_head()
        if (current.seq, current.mac) != (entry.seq - 1, entry.prev_mac):
            raise Conflict(
                f"audit entry {entry.seq} does not follow the chain's head at {current.seq}"
            )
        record = entry.record
        result = await self._uow.execute(
            self._insert(audit_entries)
            .values(
                seq=entry.seq,
                action=record.action,
                actor=record.actor,
                actor_id=record.actor_id,
                target=record.target,
                project_id=record.project_id,
                source_ip=record.source_ip,
                at=record.at,
                details=canonical_json(record.details).decode("utf-8"),
                prev_mac=entry.prev_mac,
                mac=entry.mac,
            )
            # Any conflict: the sequence number or the previous MAC.
            .on_conflict_do_nothing()
            .returning(audit_entries.c.seq)
        )
        if result.scalar_one_or_none() is None:
            raise Conflict(f"the audit log already has entry {entry.seq} or its predecessor's")
        await self._uow.execute(
            sa.update(audit_head)
            .where(audit_head.c.id == _HEAD_ID)
            .values(seq=head.seq, mac=head.mac, signature=head.signature)
        )
        self._held = (self._transaction(), head)

    async def entries(
        self, *, after_seq: int, through_seq: int, limit: int
    ) -> Sequence[AuditEntry]:
        """Up to ``limit`` entries with ``after_seq < seq <= through_seq``, by sequence number."""
        seq = audit_entries.c.seq
        result = await self._uow.execute(
            sa.select(audit_entries)
            .where(seq > after_seq, seq <= through_seq)
            .order_by(seq)
            .limit(limit)
        )
        return [_row_to_entry(row) for row in result]

    async def search(self, query: AuditQuery) -> AuditPage:
        """One page of entries matching ``query``, newest first."""
        c = audit_entries.c
        conditions: list[sa.ColumnElement[bool]] = []
        if query.project_id is not None:
            conditions.append(c.project_id == query.project_id)
        if query.action is not None:
            conditions.append(
                _prefix_range(c.action, query.action)
                if query.action.endswith(".")
                else c.action == query.action
            )
        if query.actor is not None:
            conditions.append(c.actor == query.actor)
        if query.target is not None:
            conditions.append(c.target == query.target)
        if query.since is not None:
            conditions.append(c.at >= query.since)
        if query.until is not None:
            conditions.append(c.at < query.until)
        if query.before is not None:
            conditions.append(c.seq < query.before)
        result = await self._uow.execute(
            sa.select(audit_entries)
            .where(*conditions)
            .order_by(c.seq.desc())
            .limit(query.limit + 1)
        )
        return AuditPage.of([_row_to_entry(row) for row in result], query.limit)

    async def count_recent(
        self,
        action: str,
        since: datetime,
        *,
        target: str | None = None,
        source_ip: str | None = None,
    ) -> int:
        """How many ``action`` entries since ``since`` (with that target / source IP)."""
        c = audit_entries.c
        statement = (
            sa.select(sa.func.count())
            .select_from(audit_entries)
            .where(c.action == action, c.at >= since)
        )
        if target is not None:
            statement = statement.where(c.target == target)
        if source_ip is not None:
            statement = statement.where(c.source_ip == source_ip)
        return int((await self._uow.execute(statement)).scalar_one())

    async def latest_checkpoint(self) -> Checkpoint | None:
        """The newest pruning checkpoint, or ``None``."""
        row = (
            await self._uow.execute(
                sa.select(audit_checkpoints)
                .order_by(audit_checkpoints.c.through_seq.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        return Checkpoint(
            through_seq=row.through_seq,
            mac=row.mac,
            at=row.at,
            pruned=row.pruned,
            signature=row.signature,
        )

    async def prune(self, checkpoint: Checkpoint) -> int:
        """Delete entries up to ``checkpoint.through_seq`` and store the checkpoint; how many
        entries were deleted."""
        await self.lock_head()
        result = await self._uow.execute(
            sa.delete(audit_entries).where(audit_entries.c.seq <= checkpoint.through_seq)
        )
        await self._uow.execute(
            self._insert(audit_checkpoints)
            .values(
                through_seq=checkpoint.through_seq,
                mac=checkpoint.mac,
                at=checkpoint.at,
                pruned=checkpoint.pruned,
                signature=checkpoint.signature,
            )
            # A repeated checkpoint keeps the first one: it is the one that counted the entries.
            .on_conflict_do_nothing(index_elements=["through_seq"])
        )
        return int(result.rowcount)
