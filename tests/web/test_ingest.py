"""The ingest writer: one commit per flush, acks only after commit, backpressure, drain."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from z4j_domain.errors import Transient, Z4jError
from z4j_domain.tasks import Task, TaskEvent, TaskState, fold
from z4j_domain.testing import InMemoryStore, InMemoryUnitOfWork
from z4j_infra.database import Database
from z4j_web.ingest import IngestBatch, IngestClosed, IngestWriter
from z4j_web.live import LiveUpdates
from z4j_web.metrics import Metrics
from z4j_web.runtime import uow_factory_of

from .support import T0, event

pytestmark = pytest.mark.anyio


class GatedStore(InMemoryStore):
    """An in-memory store whose commits wait for ``gate`` and can be made to fail.

    With ``held_task`` set, only the commits of units of work that applied
    events of that task wait for the gate.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.commits = 0
        self.fail_task: str | None = None
        self.held_task: str | None = None
        #: Applies that raise ``Transient`` (a deadlock) before one goes through.
        self.transient_failures = 0

    def __call__(self) -> InMemoryUnitOfWork:
        uow = super().__call__()
        store = self
        commit = uow.commit
        apply_events = uow.tasks.apply_events
        applied: set[str] = set()

        async def gated_commit() -> None:
            if store.held_task is None or store.held_task in applied:
                await store.gate.wait()
            store.commits += 1
            await commit()

        async def failing_apply(project_id: int, events: Sequence[TaskEvent]) -> Sequence[Task]:
            if any(e.task_id == store.fail_task for e in events):
                raise Z4jError("simulated storage failure")
            if store.transient_failures:
                store.transient_failures -= 1
                raise Transient("simulated deadlock")
            applied.update(e.task_id for e in events)
            return await apply_events(project_id, events)

        uow.commit = gated_commit  # type: ignore[method-assign]
        uow.tasks.apply_events = failing_apply  # type: ignore[method-assign]
        return uow


def writer_for(store: GatedStore, **kw: Any) -> IngestWriter:
    """A writer over ``store`` with fresh metrics and hub."""
    return IngestWriter(lambda: store, metrics=Metrics(), live=LiveUpdates(), **kw)


def batch(project_id: int, task_id: str, results: list[tuple[str, bool]]) -> IngestBatch:
    """A one-event batch that records its outcome in ``results``."""
    return IngestBatch(
        project_id=project_id,
        events=[event(task_id, "sent", 0)],
        done=lambda ok: results.append((task_id, ok)),
    )


async def test_batches_that_arrive_together_share_one_commit() -> None:
    """Several batches queued within the linger window are applied with one commit."""
    store = GatedStore()
    writer = writer_for(store, linger=0.05)
    results: list[tuple[str, bool]] = []
    writer.start()
    for name in ("a", "b", "c"):
        await writer.submit(batch(1, name, results))
    await writer.stop()
    assert results == [("a", True), ("b", True), ("c", True)]
    assert store.commits == 1
    assert set(store.state.tasks) == {(1, "a"), (1, "b"), (1, "c")}


async def test_done_is_called_only_after_the_commit() -> None:
    """While the commit is held back, no batch is reported done."""
    store = GatedStore()
    store.gate.clear()
    writer = writer_for(store, linger=0)
    results: list[tuple[str, bool]] = []
    writer.start()
    await writer.submit(batch(1, "held", results))
    await asyncio.sleep(0.05)
    assert results == []
    assert not store.state.tasks
    store.gate.set()
    await writer.stop()
    assert results == [("held", True)]
    assert (1, "held") in store.state.tasks


async def held_then_free(writers: int) -> tuple[GatedStore, IngestWriter, list[tuple[str, bool]]]:
    """A writer with ``writers`` tasks, given a batch whose commit is held back, then another."""
    store = GatedStore()
    store.held_task = "held"
    store.gate.clear()
    writer = writer_for(store, linger=0, max_events=1)
    results: list[tuple[str, bool]] = []
    writer.start(writers=writers)
    assert writer.writers == writers
    await writer.submit(batch(1, "held", results))
    await asyncio.sleep(0.05)
    await writer.submit(batch(1, "free", results))
    return store, writer, results


async def test_one_writer_commits_in_turn() -> None:
    """With one writer task, a batch waits behind the commit that is held back."""
    store, writer, results = await held_then_free(writers=1)
    await asyncio.sleep(0.05)
    assert results == []
    store.gate.set()
    await writer.stop()
    assert results == [("held", True), ("free", True)]


async def test_two_writers_commit_while_the_other_is_held_back() -> None:
    """With two writer tasks, one commits a batch while the other's commit waits."""
    store, writer, results = await held_then_free(writers=2)
    for _ in range(100):
        if results:
            break
        await asyncio.sleep(0.01)
    assert results == [("free", True)]
    store.gate.set()
    await writer.stop()
    assert results == [("free", True), ("held", True)]
    assert writer.writers == 0


async def test_two_writers_drain_everything_once_at_stop() -> None:
    """Every queued batch is committed and acknowledged exactly once by two writers."""
    store = GatedStore()
    writer = writer_for(store, linger=0.01, max_events=3)
    results: list[tuple[str, bool]] = []
    writer.start(writers=2)
    names = [f"t{n}" for n in range(40)]
    for name in names:
        await writer.submit(batch(1, name, results))
    await writer.stop()
    # (What is stored is checked on PostgreSQL below: the in-memory fake's
    # units of work are not meant to run side by side.)
    assert sorted(results) == sorted((name, True) for name in names)


async def test_a_writer_needs_at_least_one_task() -> None:
    writer = writer_for(GatedStore())
    with pytest.raises(ValueError, match="at least one"):
        writer.start(writers=0)
    assert writer.writers == 0


@pytest.mark.postgres
async def test_two_writers_on_postgresql_store_every_task_as_its_fold(
    postgres_database: Database,
) -> None:
    """Batches sharing tasks, committed by two writers in any order: each task is its fold."""
    async with postgres_database.unit_of_work() as uow:
        project = await uow.projects.create(slug="p", name="P", created_at=T0)
        await uow.commit()
    kinds = ["sent", "received", "started", "succeeded"]
    events = [
        event(f"t-{task:02d}", kind, task + step, name="app.job", worker="w@host")
        for task in range(30)
        for step, kind in enumerate(kinds)
    ]
    random.Random(8).shuffle(events)
    factory = uow_factory_of(postgres_database)
    writer = IngestWriter(
        lambda: factory,
        metrics=Metrics(),
        live=LiveUpdates(),
        linger=0,
        max_events=5,
    )
    results: list[bool] = []
    writer.start(writers=2)
    for start in range(0, len(events), 5):
        await writer.submit(
            IngestBatch(
                project_id=project.id, events=events[start : start + 5], done=results.append
            )
        )
    await writer.stop()
    assert results == [True] * (len(events) // 5)
    async with postgres_database.unit_of_work() as uow:
        for task in range(30):
            task_id = f"t-{task:02d}"
            stored = await uow.tasks.get(project.id, task_id)
            assert stored == fold(e for e in events if e.task_id == task_id)
            assert stored is not None
            assert stored.state is TaskState.SUCCEEDED


async def commit_one(store: GatedStore, task_id: str) -> list[tuple[str, bool]]:
    """Hand one batch of ``task_id`` to a one-task writer over ``store``; its outcome."""
    writer = writer_for(store, linger=0)
    results: list[tuple[str, bool]] = []
    writer.start()
    await writer.submit(batch(1, task_id, results))
    await writer.stop()
    return results


async def test_a_transaction_the_database_aborted_is_applied_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A deadlock costs a retry, not the batch: it is committed and acknowledged."""
    store = GatedStore()
    store.transient_failures = 2
    assert await commit_one(store, "retried") == [("retried", True)]
    assert (1, "retried") in store.state.tasks
    retries = [r.getMessage() for r in caplog.records if "applying 1 events" in r.getMessage()]
    assert len(retries) == 2
    assert "simulated deadlock" in retries[0]
    assert "attempt 2 of 3" in retries[0]


async def test_a_batch_aborted_every_time_is_not_acknowledged() -> None:
    """After the last attempt the batch is reported failed (its agent resends it)."""
    store = GatedStore()
    store.transient_failures = 3
    assert await commit_one(store, "doomed") == [("doomed", False)]
    assert not store.state.tasks


async def test_a_full_queue_makes_submit_wait_without_dropping() -> None:
    """With the queue full, submit waits; every batch is committed once the writer catches up."""
    store = GatedStore()
    store.gate.clear()
    writer = writer_for(store, capacity=2, linger=0)
    results: list[tuple[str, bool]] = []
    writer.start()
    await writer.submit(batch(1, "one", results))
    await writer.submit(batch(1, "two", results))
    blocked = asyncio.ensure_future(writer.submit(batch(1, "three", results)))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    store.gate.set()
    await asyncio.wait_for(blocked, 5)
    await writer.stop()
    assert sorted(results) == [("one", True), ("three", True), ("two", True)]


async def test_stop_drains_and_then_refuses() -> None:
    """Stopping commits what is queued; later submissions raise IngestClosed."""
    store = GatedStore()
    writer = writer_for(store, linger=10)
    results: list[tuple[str, bool]] = []
    writer.start()
    await writer.submit(batch(1, "last", results))
    await writer.stop()
    assert results == [("last", True)]
    with pytest.raises(IngestClosed):
        await writer.submit(batch(1, "late", results))


async def test_a_failing_batch_does_not_take_the_others_down() -> None:
    """One batch that cannot be stored is reported failed; the rest of the flush commits."""
    store = GatedStore()
    store.fail_task = "poison"
    writer = writer_for(store, linger=0.05)
    results: list[tuple[str, bool]] = []
    writer.start()
    for name in ("ok-1", "poison", "ok-2"):
        await writer.submit(batch(1, name, results))
    await writer.stop()
    assert sorted(results) == [("ok-1", True), ("ok-2", True), ("poison", False)]
    assert set(store.state.tasks) == {(1, "ok-1"), (1, "ok-2")}


async def test_each_project_gets_its_own_commit_and_live_update() -> None:
    """Batches of two projects are applied per project; subscribers see their project only."""
    store = GatedStore()
    live = LiveUpdates()
    writer = IngestWriter(lambda: store, metrics=Metrics(), live=live, linger=0.05)
    results: list[tuple[str, bool]] = []
    async with live.subscribe(2) as queue:
        writer.start()
        await writer.submit(batch(1, "p1", results))
        await writer.submit(batch(2, "p2", results))
        await writer.stop()
        message = queue.get_nowait()
        assert queue.empty()
    assert store.commits == 2
    assert message["type"] == "tasks"
    assert [t["id"] for t in message["items"]] == ["p2"]


def test_live_updates_drop_the_oldest_for_a_slow_subscriber() -> None:
    """A subscriber that does not read keeps the newest messages, and drops are counted."""
    dropped: list[int] = []
    live = LiveUpdates(backlog=2, on_drop=lambda: dropped.append(1))

    async def scenario() -> list[Any]:
        async with live.subscribe(7) as queue:
            for n in range(4):
                live.publish(7, {"n": n})
            return [queue.get_nowait(), queue.get_nowait()]

    assert asyncio.run(scenario()) == [{"n": 2}, {"n": 3}]
    assert len(dropped) == 2
