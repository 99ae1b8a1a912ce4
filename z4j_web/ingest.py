"""The ingest writer: tasks that commit agents' event batches in bulk.

Every agent connection hands its verified batches to the writer through a
bounded queue (:meth:`IngestWriter.submit` waits while it is full, so a
connection stops reading from its socket instead of buffering without limit).
A writer task takes what arrived within :attr:`~IngestWriter.linger` seconds,
up to about :attr:`~IngestWriter.max_events` events, applies each project's
share with one ``uow.tasks.apply_events`` and one commit, and only then tells
each batch's connection that it is committed, so the agent is acknowledged
only for what is durable.

**Writers.** On PostgreSQL two writer tasks take turns (:func:`writers_for`),
each on a connection of its own: while one writes a batch and commits, the
other inserts its events and folds them, so the database's work and the
brain's overlap (at 1,000-event batches, about 22,000 events/s against
16,700 with one writer, ``benchmarks/ingest_db.py --writers``). Batches may
then commit out of order, which changes nothing stored: the fold does not
depend on order, and a task's rows are locked while a batch changes it, so
the later batch reads what the earlier one wrote. Should the database still
abort one writer's transaction for the other's sake (a deadlock), that flush
is applied again, up to :data:`TRANSIENT_ATTEMPTS` times, before its agents
are told it failed. SQLite allows one writer at a time: one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from z4j_domain.errors import Transient
from z4j_domain.ports import UnitOfWorkFactory
from z4j_domain.tasks import Task, TaskEvent
from z4j_web.live import LiveUpdates
from z4j_web.metrics import Metrics

__all__ = ["IngestBatch", "IngestClosed", "IngestWriter", "writers_for"]

_log = logging.getLogger("z4j.ingest")

#: Batches the queue holds before :meth:`IngestWriter.submit` waits (each up to ~1,000 events).
DEFAULT_CAPACITY: Final = 64
#: How long to stop a writer's drain at shutdown before giving up on the rest.
DRAIN_TIMEOUT: Final = 30.0
#: Attempts at a flush whose transaction the database aborted (a deadlock between writers).
TRANSIENT_ATTEMPTS: Final = 3


def writers_for(dialect: str | None) -> int:
    """Writer tasks for a database of ``dialect``: two on PostgreSQL, else one (SQLite
    allows one writer at a time; the in-memory fake's units of work do not run side by side)."""
    return 2 if dialect == "postgresql" else 1


class IngestClosed(Exception):
    """The writer is stopping: no new batch is accepted."""


@attrs.define
class IngestBatch:
    """Events of one agent frame, and whom to tell when they are committed (or not)."""

    project_id: int
    events: Sequence[TaskEvent]
    #: Called once (through :meth:`settle`), with ``True`` after the commit or
    #: ``False`` when it failed.
    done: Callable[[bool], None]
    settled: bool = False

    def settle(self, committed: bool) -> None:
        """Report the outcome, once."""
        if not self.settled:
            self.settled = True
            self.done(committed)


class IngestWriter:
    """A bounded queue of event batches and the writer tasks that commit them."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWorkFactory],
        *,
        metrics: Metrics,
        live: LiveUpdates,
        capacity: int = DEFAULT_CAPACITY,
        max_events: int = 1_000,
        linger: float = 0.025,
    ) -> None:
        # A callable returning the factory: the database connects when serving
        # starts, after the writer was built.
        self._uow_factory = uow_factory
        self._metrics = metrics
        self._live = live
        self.capacity = capacity
        self.max_events = max_events
        self.linger = linger
        self._pending: deque[IngestBatch] = deque()
        self._space = asyncio.Semaphore(capacity)
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def writers(self) -> int:
        """Writer tasks running."""
        return len(self._tasks)

    @property
    def depth(self) -> int:
        """Batches waiting for the writer."""
        return len(self._pending)

    def start(self, writers: int = 1) -> None:
        """Start ``writers`` writer tasks (in the serving event loop)."""
        if writers < 1:
            raise ValueError(f"an ingest writer needs at least one task, not {writers}")
        if not self._tasks:
            self._stopping = False
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(), name=f"z4j-ingest-{number}")
                for number in range(1, writers + 1)
            ]

    async def stop(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Commit everything queued, then end the writer tasks."""
        self._stopping = True
        self._wakeup.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        done = asyncio.gather(*tasks)
        try:
            await asyncio.wait_for(asyncio.shield(done), drain_timeout)
        except TimeoutError:
            _log.error(
                "ingest: gave up draining after %.0f s; %d batches stay unacknowledged"
                " (agents resend them)",
                drain_timeout,
                len(self._pending),
            )
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await done

    async def submit(self, batch: IngestBatch) -> None:
        """Queue ``batch``, waiting while the queue is full.

        Raises :class:`IngestClosed` once the writer is stopping.
        """
        if self._stopping:
            raise IngestClosed("the brain is shutting down")
        await self._space.acquire()
        if self._stopping:
            self._space.release()
            raise IngestClosed("the brain is shutting down")
        self._pending.append(batch)
        self._metrics.queue_depth.set(len(self._pending))
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._pending:
                if self._stopping:
                    return
                self._wakeup.clear()
                continue
            if not self._stopping and self._queued_events() < self.max_events:
                # Let more batches arrive, so that one commit covers them all.
                await asyncio.sleep(self.linger)
            items = self._take()
            try:
                await self._flush(items)
            except Exception:  # the writer must outlive any one flush; agents resend
                _log.exception("ingest: a flush of %d batches failed unexpectedly", len(items))
                for item in items:
                    item.settle(False)
            finally:
                for _ in items:
                    self._space.release()
                self._metrics.queue_depth.set(len(self._pending))

    def _queued_events(self) -> int:
        return sum(len(item.events) for item in self._pending)

    def _take(self) -> list[IngestBatch]:
        items: list[IngestBatch] = []
        count = 0
        while self._pending and (
            not items or count + len(self._pending[0].events) <= self.max_events
        ):
            item = self._pending.popleft()
            items.append(item)
            count += len(item.events)
        return items

    async def _flush(self, items: list[IngestBatch]) -> None:
        started = time.perf_counter()
        by_project: dict[int, list[IngestBatch]] = {}
        for item in items:
            by_project.setdefault(item.project_id, []).append(item)
        for project_id, group in by_project.items():
            if not await self._commit(project_id, group) and len(group) > 1:
                # Isolate the batch that fails: the others still commit.
                for item in group:
                    await self._commit(project_id, [item])
        self._metrics.flush_seconds.observe(time.perf_counter() - started)

    async def _apply(self, project_id: int, events: list[TaskEvent]) -> Sequence[Task]:
        """Apply and commit ``events``; a transaction the database aborted is run again."""
        attempt = 1
        while True:
            try:
                async with self._uow_factory()() as uow:
                    changed: Sequence[Task] = await uow.tasks.apply_events(project_id, events)
                    await uow.commit()
            except Transient as error:
                if attempt >= TRANSIENT_ATTEMPTS:
                    raise
                attempt += 1
                _log.warning(
                    "ingest: %s; applying %d events of project %d again (attempt %d of %d)",
                    error,
                    len(events),
                    project_id,
                    attempt,
                    TRANSIENT_ATTEMPTS,
                )
            else:
                return changed

    async def _commit(self, project_id: int, group: list[IngestBatch]) -> bool:
        events = [event for item in group for event in item.events]
        try:
            changed = await self._apply(project_id, events)
        except Exception:  # any failure leaves the batches unacknowledged; agents resend
            _log.exception(
                "ingest: could not commit %d events of project %d (%d batches);"
                " they stay unacknowledged",
                len(events),
                project_id,
                len(group),
            )
            if len(group) == 1:
                self._metrics.flush_failures.inc()
                group[0].settle(False)
            return False
        self._metrics.events_ingested.inc(len(events))
        for item in group:
            item.settle(True)
        self._live.tasks_changed(project_id, changed)
        return True
