"""The audit service over every backend: appends in the action's transaction, verify, prune."""

from __future__ import annotations

from datetime import timedelta

import pytest

from z4j_domain.audit import ChainHead
from z4j_domain.errors import InvalidInput
from z4j_domain.testing import FakeClock
from z4j_web import auditing

from .support import AUDIT_KEY, TESTS, Backend, change

pytestmark = pytest.mark.anyio


async def append(backend: Backend, clock: FakeClock, n: int) -> None:
    """Append ``n`` entries, a minute apart."""
    for i in range(n):
        record = TESTS.record("test.appended", clock.now(), target=f"n:{i}", i=i)
        await auditing.record(backend.uow_factory, AUDIT_KEY, record)
        clock.advance(60)


async def test_a_failed_action_leaves_no_entry(backend: Backend, clock: FakeClock) -> None:
    """An entry appended in a transaction that is not committed is gone with it."""
    await append(backend, clock, 2)
    async with auditing.audited(backend.uow_factory, AUDIT_KEY) as work:
        await work.append(TESTS.record("test.rolled_back", clock.now()))
    await append(backend, clock, 1)
    result = await auditing.verify(backend.uow_factory, AUDIT_KEY)
    assert result.ok, result.broken
    assert (result.first_seq, result.last_seq) == (1, 3)


async def test_a_head_moved_back_does_not_hide_newer_entries(
    backend: Backend, clock: FakeClock
) -> None:
    """A genuine but stale head (say, restored from a backup) fails on the entry past it."""
    await append(backend, clock, 3)
    async with backend.uow_factory() as uow:
        second = (await uow.audit.entries(after_seq=1, through_seq=2, limit=1))[0]
    await backend.set_audit_head(ChainHead.signed(AUDIT_KEY, second.seq, second.mac))
    result = await auditing.verify(backend.uow_factory, AUDIT_KEY)
    assert result.broken is not None
    assert result.broken.seq == 3
    assert "beyond the chain's head" in result.broken.reason


async def test_prune_keeps_the_chain_verifiable_and_is_itself_audited(
    backend: Backend, clock: FakeClock
) -> None:
    """Pruning old entries leaves a checkpoint; the prune is the newest entry; never the head."""
    await append(backend, clock, 5)
    clock.advance(timedelta(days=2).total_seconds())
    await append(backend, clock, 1)
    nothing = await auditing.prune(
        change(backend.uow_factory, clock), older_than=timedelta(days=30)
    )
    assert nothing == auditing.PruneResult(pruned=0, through_seq=None)
    pruned = await auditing.prune(change(backend.uow_factory, clock), older_than=timedelta(days=1))
    assert pruned == auditing.PruneResult(pruned=5, through_seq=5)
    result = await auditing.verify(backend.uow_factory, AUDIT_KEY)
    assert result.ok, result.broken
    assert result.checkpoint is not None
    assert (result.checkpoint.through_seq, result.first_seq, result.last_seq) == (5, 6, 7)
    async with backend.uow_factory() as uow:
        newest = (await uow.audit.entries(after_seq=6, through_seq=7, limit=1))[0]
    assert newest.record.action == "audit.pruned"
    assert newest.record.details == {"through_seq": 5, "pruned": 5}
    # Everything but the head is old now: the head entry stays.
    clock.advance(timedelta(days=3).total_seconds())
    again = await auditing.prune(change(backend.uow_factory, clock), older_than=timedelta(days=1))
    assert again == auditing.PruneResult(pruned=1, through_seq=6)
    assert (await auditing.verify(backend.uow_factory, AUDIT_KEY)).ok
    with pytest.raises(InvalidInput):
        await auditing.prune(change(backend.uow_factory, clock), older_than=timedelta(hours=1))
