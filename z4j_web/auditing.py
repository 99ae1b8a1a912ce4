"""Writing, reading, verifying and pruning the audit log, over the domain's ports.

Every state-changing use case runs inside :func:`audited`: a unit of work that
first takes the chain's append lock, so the change and its audit entry commit
together or not at all, and appends from every process form one chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from z4j_domain.audit import (
    AuditEntry,
    AuditPage,
    AuditQuery,
    AuditRecord,
    ChainBreak,
    ChainHead,
    ChainVerifier,
    Verification,
    chain_entry,
    make_checkpoint,
)
from z4j_domain.errors import InvalidInput
from z4j_domain.ports import Clock, UnitOfWork, UnitOfWorkFactory

__all__ = [
    "Actor",
    "Audited",
    "Change",
    "PruneResult",
    "audited",
    "prune",
    "record",
    "search",
    "verify",
]

#: Entries read per query while verifying: bounded memory whatever the log's size.
VERIFY_PAGE: Final = 1000
# Larger than any sequence number a chain reaches (a BIGINT's maximum).
_LAST_SEQ: Final = 2**63 - 1


@attrs.frozen(kw_only=True)
class Actor:
    """Who does something: what the audit log records as actor, actor id and source IP."""

    name: str
    user_id: int | None = None
    source_ip: str | None = None

    def record(
        self,
        action: str,
        at: datetime,
        *,
        target: str | None = None,
        project_id: int | None = None,
        **details: Any,
    ) -> AuditRecord:
        """An audit record of ``action`` done by this actor at ``at``."""
        return AuditRecord(
            action=action,
            actor=self.name,
            actor_id=self.user_id,
            source_ip=self.source_ip,
            at=at,
            target=target,
            project_id=project_id,
            details=details,
        )


@attrs.frozen(kw_only=True)
class Change:
    """What an audited use case needs: storage, the time, the chain's key and who acts."""

    uow_factory: UnitOfWorkFactory
    clock: Clock
    audit_key: bytes = attrs.field(repr=False)
    actor: Actor

    def audited(self) -> AbstractAsyncContextManager[Audited]:
        """A unit of work holding the audit chain's append lock (see :func:`audited`)."""
        return audited(self.uow_factory, self.audit_key)


@attrs.define
class Audited:
    """A unit of work holding the audit chain's append lock."""

    uow: UnitOfWork
    key: bytes = attrs.field(repr=False)
    head: ChainHead

    async def append(self, record: AuditRecord) -> AuditEntry:
        """Append ``record`` to the chain (it commits with the unit of work)."""
        entry, self.head = chain_entry(self.key, self.head, record)
        await self.uow.audit.append(entry, self.head)
        return entry

    async def commit(self) -> None:
        """Commit the change and its entries."""
        await self.uow.commit()


@asynccontextmanager
async def audited(uow_factory: UnitOfWorkFactory, key: bytes) -> AsyncIterator[Audited]:
    """A unit of work that starts by taking the audit chain's append lock.

    Taking the lock first also makes the transaction a writer from its first
    statement, which SQLite needs to never fail a later write as "locked".
    """
    async with uow_factory() as uow:
        head = await uow.audit.lock_head()
        yield Audited(uow=uow, key=key, head=head)


async def record(uow_factory: UnitOfWorkFactory, key: bytes, entry: AuditRecord) -> AuditEntry:
    """Append one record in a transaction of its own (e.g. a failed login)."""
    async with audited(uow_factory, key) as work:
        appended = await work.append(entry)
        await work.commit()
    return appended


async def search(uow_factory: UnitOfWorkFactory, query: AuditQuery) -> AuditPage:
    """One page of the log, newest first."""
    async with uow_factory() as uow:
        return await uow.audit.search(query)


async def verify(uow_factory: UnitOfWorkFactory, key: bytes) -> Verification:
    """Recompute the whole chain, from the newest checkpoint up to the committed head.

    The head is read first and only entries up to it are checked, so appends
    committing meanwhile neither disturb nor fail the verification. It is read
    holding the append lock for a moment, together with whatever lies beyond
    it: an entry past the head means the head was moved back to hide it.
    """
    async with uow_factory() as uow:
        head = await uow.audit.lock_head()
        beyond = await uow.audit.entries(after_seq=head.seq, through_seq=_LAST_SEQ, limit=1)
        checkpoint = await uow.audit.latest_checkpoint()
    verifier = ChainVerifier(key, checkpoint)
    after = checkpoint.through_seq if checkpoint is not None else 0
    while verifier.broken is None and after < head.seq:
        async with uow_factory() as uow:
            page = await uow.audit.entries(after_seq=after, through_seq=head.seq, limit=VERIFY_PAGE)
        for entry in page:
            if verifier.feed(entry) is not None:
                break
        if not page:
            break
        after = page[-1].seq
    result = verifier.finish(head)
    if result.ok and beyond:
        hidden = beyond[0].seq
        reason = (
            f"entry {hidden} lies beyond the chain's head at entry {head.seq} (head moved back)"
        )
        result = attrs.evolve(
            result, broken=ChainBreak(position=result.verified, seq=hidden, reason=reason)
        )
    return result


@attrs.frozen(kw_only=True)
class PruneResult:
    """What :func:`prune` did: how many entries went, and through which one."""

    pruned: int
    through_seq: int | None


async def prune(change: Change, *, older_than: timedelta) -> PruneResult:
    """Delete entries older than ``older_than``, leaving a signed checkpoint in their place.

    The newest entry is never pruned, and the prune itself is audited, so the
    log always shows that (and when, and by whom) history was removed.
    """
    if older_than < timedelta(days=1):
        raise InvalidInput("keep at least one day of audit history")
    now = change.clock.now()
    cutoff = now - older_than
    async with change.audited() as work:
        checkpoint = await work.uow.audit.latest_checkpoint()
        first = checkpoint.through_seq if checkpoint is not None else 0
        last: AuditEntry | None = None
        page = await work.uow.audit.entries(
            after_seq=first, through_seq=max(first, work.head.seq - 1), limit=VERIFY_PAGE
        )
        while page:
            old = [entry for entry in page if entry.record.at < cutoff]
            if old:
                last = old[-1]
            if len(old) < len(page):
                break
            page = await work.uow.audit.entries(
                after_seq=page[-1].seq, through_seq=work.head.seq - 1, limit=VERIFY_PAGE
            )
        if last is None:
            return PruneResult(pruned=0, through_seq=None)
        pruned = last.seq - first
        await work.uow.audit.prune(make_checkpoint(change.audit_key, last, now, pruned))
        await work.append(
            change.actor.record(
                "audit.pruned",
                now,
                target=f"audit:1-{last.seq}",
                through_seq=last.seq,
                pruned=pruned,
            )
        )
        await work.commit()
    return PruneResult(pruned=pruned, through_seq=last.seq)
