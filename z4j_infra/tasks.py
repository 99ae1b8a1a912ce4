"""SQL repositories of tasks and their events, including the batched fold of new events.

:meth:`SqlTaskRepository.apply_events` is the ingest hot path. Per batch it
runs a constant number of statements whatever the number of events (see
:mod:`z4j_infra._ingest` for how each dialect ships a batch):

1. insert the events, ``ON CONFLICT DO NOTHING`` (delivery is at least once,
   so some may be stored already), learning which ones are new where the
   dialect can say so cheaply;
2. one ``SELECT`` of the batch's task rows (``FOR UPDATE`` on PostgreSQL);
3. the domain's own fold, in Python: each task's events of the batch are
   folded together *while the database runs steps 1 and 2*, then merged into
   the stored task (the fold is a join, so that equals folding the events
   into it one by one; events that were stored already change nothing);
4. one bulk upsert of the tasks that changed;
5. one upsert of each statistics aggregate the changes moved
   (:mod:`z4j_domain.stats`: a few rows, whatever the batch's size).

Several brain processes may share a PostgreSQL database. Rows that exist are
locked by step 2; for rows that did not exist, two processes may both try to
create one. The upsert therefore only overwrites the ``version`` it read, and
a task whose write lost that race is read again (now locked) and merged again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Collection, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from z4j_domain.canvas import CanvasGathering, CanvasLinks
from z4j_domain.errors import InvalidInput
from z4j_domain.queries import QueueCount, TaskCursor, TaskFilter, TaskPage, TaskQuery
from z4j_domain.serialization import event_from_dict
from z4j_domain.stats import (
    ONE_MINUTE,
    FailureSample,
    FinishCount,
    StatsDelta,
    check_step,
    stats_delta,
)
from z4j_domain.tasks import Task, TaskEvent, TaskState, fold, merge
from z4j_infra._ingest import Batches, batches_for, row_to_task
from z4j_infra.errors import StorageError
from z4j_infra.jsontext import dumps
from z4j_infra.schema import (
    Timestamp,
    task_events,
    task_finish_counts,
    task_state_counts,
    tasks,
    upsertable_insert,
)

if TYPE_CHECKING:
    from z4j_infra.unit_of_work import SqlUnitOfWork

__all__ = ["SqlTaskEventRepository", "SqlTaskRepository"]

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

#: Rounds of "read, merge, write" before concurrent writers count as a failure.
_MAX_ROUNDS: Final = 5
#: Tasks folded between two chances for the event loop to talk to the database.
_FOLD_SLICE: Final = 64


@functools.cache
def _adding(dialect: str, table: sa.Table) -> Any:
    """The upsert that adds a row's ``count`` to an aggregate's stored one, built once per dialect.

    Building an ``ON CONFLICT`` statement costs more than running it (its
    ``excluded`` alias above all), and every ingested batch runs two.
    """
    insert = upsertable_insert(dialect, table)
    return insert.on_conflict_do_update(
        index_elements=[column.name for column in table.primary_key.columns],
        set_={"count": table.c.count + insert.excluded["count"]},
    )


async def _fold_by_task(events: Sequence[TaskEvent]) -> dict[str, Task]:
    """Each task's fold of its ``events``.

    Yields to the event loop now and then, so that the statements running
    meanwhile (see :func:`_overlapped`) get sent as soon as their turn comes.
    """
    by_task: dict[str, list[TaskEvent]] = {}
    for event in events:
        by_task.setdefault(event.task_id, []).append(event)
    folded: dict[str, Task] = {}
    for index, (task_id, group) in enumerate(by_task.items()):
        if index % _FOLD_SLICE == 0:
            await asyncio.sleep(0)
        task = fold(group)
        assert task is not None  # every group has an event
        folded[task_id] = task
    return folded


async def _overlapped(
    database: Coroutine[Any, Any, tuple[A, B]], computation: Coroutine[Any, Any, C]
) -> tuple[A, B, C]:
    """Run ``database`` (statements) and ``computation`` (Python) at the same time.

    The database works in its own process (or, for SQLite, in a thread that
    leaves the interpreter lock while SQLite runs), so folding while it
    executes the statements hides most of one behind the other. The
    statements run in a task of their own on the unit of work's connection;
    ``computation`` must not touch it.
    """
    statements = asyncio.ensure_future(database)
    try:
        computed = await computation
    except BaseException:
        statements.cancel()
        with contextlib.suppress(BaseException):
            await statements
        raise
    first, second = await statements
    return first, second, computed


class SqlTaskRepository:
    """:class:`~z4j_domain.ports.TaskRepository` on SQLite or PostgreSQL."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def apply_events(self, project_id: int, events: Sequence[TaskEvent]) -> Sequence[Task]:
        """Record new events and fold them into their tasks; return the tasks that changed."""
        unique: dict[str, TaskEvent] = {}
        for event in events:
            # The first of several copies wins, as it would had they come one by one.
            unique.setdefault(event.id, event)
        if not unique:
            return []
        batch = list(unique.values())
        task_ids = sorted({event.task_id for event in batch})
        batches = batches_for(self._uow.dialect)

        async def record_and_load() -> tuple[set[str] | None, dict[str, tuple[Task, int]]]:
            new_ids = await batches.insert_events(self._uow, project_id, batch)
            # Every task of the batch, before knowing which events are new:
            # this lets the database work while Python folds (below).
            return new_ids, await batches.load(self._uow, project_id, task_ids)

        new_ids, stored, folded = await _overlapped(record_and_load(), _fold_by_task(batch))
        if new_ids is None:
            updates = folded
        else:
            # Tasks with nothing new are left alone; for the others, events of
            # the batch that were stored already are in the stored task too,
            # so having them in the update changes nothing.
            updates = {
                event.task_id: folded[event.task_id] for event in batch if event.id in new_ids
            }
        return await self._store(project_id, updates, stored, batches)

    async def _store(
        self,
        project_id: int,
        updates: dict[str, Task],
        stored: dict[str, tuple[Task, int]],
        batches: Batches,
    ) -> Sequence[Task]:
        """Merge each update into its stored task and write the ones that changed.

        Merging the fold of the new events into the stored task is the same as
        folding the events into it one by one: the fold is a join.
        """
        written: dict[str, Task] = {}
        replaced: list[tuple[Task | None, Task]] = []
        pending = updates
        for _ in range(_MAX_ROUNDS):
            changed: dict[str, tuple[Task | None, Task]] = {}
            rows = []
            # Sorted: new rows are inserted in the same order by every writer.
            for task_id in sorted(pending):
                before, version = stored.get(task_id, (None, 0))
                task = pending[task_id] if before is None else merge(before, pending[task_id])
                if task != before:
                    changed[task_id] = (before, task)
                    rows.append((task, version + 1))
            if not rows:
                break
            stored_ids = await batches.upsert(self._uow, project_id, rows)
            for task_id in stored_ids:
                replaced.append(changed[task_id])
                written[task_id] = changed[task_id][1]
            # What is left lost a race with another brain that created the same
            # task: read it again (it exists now, so it gets locked) and merge again.
            pending = {
                task_id: pending[task_id] for task_id in changed if task_id not in stored_ids
            }
            if not pending:
                break
            stored = await batches.load(self._uow, project_id, sorted(pending))
        else:
            raise StorageError(
                f"could not store {len(pending)} task(s) after {_MAX_ROUNDS} rounds of "
                "concurrent updates; the batch was not applied"
            )
        await self._count(project_id, stats_delta(replaced))
        return list(written.values())

    async def _count(self, project_id: int, delta: StatsDelta) -> None:
        """Add ``delta`` to the project's aggregates, rows in key order (so that
        concurrent writers lock them in the same order, and never deadlock)."""
        changes = (
            (
                task_state_counts,
                [
                    {"project_id": project_id, "state": state.value, "count": n}
                    for state, n in sorted(delta.states.items())
                ],
            ),
            (
                task_finish_counts,
                [
                    {"project_id": project_id, "minute": minute, "state": state.value, "count": n}
                    for (minute, state), n in sorted(delta.finishes.items())
                ],
            ),
        )
        for table, rows in changes:
            if rows:
                await self._uow.execute(_adding(self._uow.dialect, table), rows)

    async def get(self, project_id: int, task_id: str) -> Task | None:
        """The task, or ``None``."""
        result = await self._uow.execute(
            sa.select(tasks).where(tasks.c.project_id == project_id, tasks.c.id == task_id)
        )
        row = result.first()
        return None if row is None else row_to_task(row)

    async def get_many(self, project_id: int, task_ids: Sequence[str]) -> Sequence[Task]:
        """The tasks with these ids that exist (one query by primary key)."""
        if not task_ids:
            return []
        result = await self._uow.execute(
            sa.select(tasks).where(
                tasks.c.project_id == project_id, tasks.c.id.in_(sorted(set(task_ids)))
            )
        )
        return [row_to_task(row) for row in result]

    async def list(self, project_id: int, query: TaskQuery) -> TaskPage:
        """One page of matching tasks, newest first by ``(first_seen_at, id)``."""
        statement = (
            sa.select(tasks)
            .where(tasks.c.project_id == project_id, *self._conditions(query.filter))
            .order_by(tasks.c.first_seen_at.desc(), tasks.c.id.desc())
            # One more than asked: whether it exists says if there is a next page.
            .limit(query.limit + 1)
        )
        if query.cursor is not None:
            statement = statement.where(self._before(query.cursor))
        result = await self._uow.execute(statement)
        items = [row_to_task(row) for row in result]
        more = len(items) > query.limit
        del items[query.limit :]
        return TaskPage(items=items, next_cursor=TaskCursor.after(items[-1]) if more else None)

    def _conditions(self, selection: TaskFilter) -> Sequence[sa.ColumnElement[bool]]:
        c = tasks.c
        conditions: list[sa.ColumnElement[bool]] = []
        if selection.states:
            conditions.append(c.state.in_(sorted(state.value for state in selection.states)))
        if selection.name is not None:
            conditions.append(c.name == selection.name)
        if selection.queue is not None:
            conditions.append(c.queue == selection.queue)
        if selection.worker is not None:
            conditions.append(c.worker == selection.worker)
        if selection.retry_of is not None:
            conditions.append(c.retry_of == selection.retry_of)
        if selection.since is not None:
            conditions.append(c.first_seen_at >= selection.since)
        if selection.until is not None:
            conditions.append(c.first_seen_at < selection.until)
        if selection.text is not None:
            text = selection.text
            if self._uow.dialect == "postgresql":
                name_lower = sa.func.lower(c.name)
                # LIKE is case-sensitive on PostgreSQL, so it is a true prefix test.
                id_prefix = c.id.startswith(text, autoescape=True)
            else:
                name_lower = sa.func.z4j_lower(c.name)
                # SQLite's LIKE ignores ASCII case, which a prefix of an id must not.
                id_prefix = sa.func.substr(c.id, 1, len(text)) == text
            conditions.append(sa.or_(name_lower.contains(text.lower(), autoescape=True), id_prefix))
        return conditions

    def _before(self, cursor: TaskCursor) -> sa.ColumnElement[bool]:
        """Tasks after ``cursor`` in list order: ``(first_seen_at, id) < (cursor's)``."""
        c = tasks.c
        when = sa.bindparam("cursor_first_seen_at", cursor.first_seen_at, type_=Timestamp)
        task_id = sa.bindparam("cursor_task_id", cursor.task_id, type_=c.id.type)
        if self._uow.dialect == "postgresql":
            # A row-value comparison is one index range condition for PostgreSQL.
            return sa.tuple_(c.first_seen_at, c.id) < sa.tuple_(when, task_id)
        # SQLite turns the leading `<=` into the index range and checks the rest per row.
        return sa.and_(
            c.first_seen_at <= when,
            sa.or_(c.first_seen_at < when, c.id < task_id),
        )

    async def retries(self, project_id: int, task_id: str, limit: int = 100) -> Sequence[Task]:
        """The tasks whose ``retry_of`` is ``task_id``, oldest first by ``(first_seen_at, id)``."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        result = await self._uow.execute(
            sa.select(tasks)
            .where(tasks.c.project_id == project_id, tasks.c.retry_of == task_id)
            .order_by(tasks.c.first_seen_at, tasks.c.id)
            .limit(limit)
        )
        return [row_to_task(row) for row in result]

    async def canvas(self, project_id: int, task_id: str, limit: int) -> Sequence[Task]:
        """The task's canvas, oldest first by ``(first_seen_at, id)``, at most ``limit`` tasks.

        Gathered as :class:`~z4j_domain.canvas.CanvasGathering` says: the task
        by its primary key, then per round one statement for the new tasks' ids
        and one for their rows, the second skipped when there are none
        (:meth:`_linked`). A chord applied from outside a task: four statements.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        start = await self.get(project_id, task_id)
        if start is None:
            return []
        gathering = CanvasGathering(start, limit)
        while (links := gathering.next_links()) is not None:
            gathering.add(
                await self._linked(project_id, links, gathering.found_ids, gathering.remaining)
            )
        return gathering.tasks()

    async def _linked(
        self, project_id: int, links: CanvasLinks, known: Collection[str], limit: int
    ) -> Sequence[Task]:
        """The oldest ``limit`` tasks ``links`` finds, other than ``known``: two statements.

        First their ids: one index lookup per kind of link (``ix_tasks_root``,
        ``ix_tasks_group``, ``ix_tasks_chord``, the primary key), each reading
        ``(id, first_seen_at)``, their union less ``known``, cut to the oldest
        ``limit``. Not one ``OR`` of the four: with the ``ORDER BY ... LIMIT``,
        a planner may turn that into a walk of the project's whole
        ``first_seen`` index. Then those rows by primary key, in a statement of
        their own: folded into the first, PostgreSQL was seen hashing the ids
        against a scan of the project's tasks. Each set of ids is one parameter
        whatever its size (an array on PostgreSQL, a JSON list on SQLite), so
        the statements' text does not depend on the canvas's size.
        """
        c = tasks.c
        lookups = (
            (c.root_id, links.root_ids),
            (c.group_id, links.group_ids),
            (c.chord_id, links.chord_ids),
            (c.id, links.task_ids),
        )
        branches = [
            sa.select(c.id, c.first_seen_at).where(
                c.project_id == project_id, self._one_of(column, values)
            )
            for column, values in lookups
            if values
        ]
        if not branches:
            return []
        linked = (sa.union(*branches) if len(branches) > 1 else branches[0]).subquery("linked")
        chosen = (
            sa.select(linked.c.id)
            .where(self._none_of(linked.c.id, known))
            .order_by(linked.c.first_seen_at, linked.c.id)
            .limit(limit)
        )
        ids = list((await self._uow.execute(chosen)).scalars())
        if not ids:
            return []
        result = await self._uow.execute(
            sa.select(tasks).where(c.project_id == project_id, self._one_of(c.id, ids))
        )
        return [row_to_task(row) for row in result]

    def _one_of(
        self, column: sa.ColumnElement[str], values: Collection[str]
    ) -> sa.ColumnElement[bool]:
        """``column`` is one of ``values``, sent as one parameter."""
        if self._uow.dialect == "postgresql":
            return column == sa.any_(self._array(values))
        return column.in_(self._json_values(values))

    def _none_of(
        self, column: sa.ColumnElement[str], values: Collection[str]
    ) -> sa.ColumnElement[bool]:
        """``column`` is none of ``values``, sent as one parameter."""
        if self._uow.dialect == "postgresql":
            return column != sa.all_(self._array(values))
        return column.not_in(self._json_values(values))

    @staticmethod
    def _array(values: Collection[str]) -> sa.BindParameter[Any]:
        return sa.bindparam(None, sorted(values), type_=postgresql.ARRAY(sa.String()))

    @staticmethod
    def _json_values(values: Collection[str]) -> sa.Select[tuple[Any]]:
        listed = sa.func.json_each(
            sa.bindparam(None, dumps(sorted(values)), type_=sa.Text())
        ).table_valued("value")
        return sa.select(listed.c.value)

    async def queue_counts(self, project_id: int) -> Sequence[QueueCount]:
        """Task counts per (queue, state), zero counts omitted."""
        count = sa.func.count().label("n")
        result = await self._uow.execute(
            sa.select(tasks.c.queue, tasks.c.state, count)
            .where(tasks.c.project_id == project_id)
            .group_by(tasks.c.queue, tasks.c.state)
        )
        counts = [
            QueueCount(queue=row.queue, state=TaskState(row.state), count=row.n) for row in result
        ]
        # Sorted here rather than in SQL: the order must not depend on the
        # database's collation.
        counts.sort(key=lambda qc: (qc.queue or "", qc.state.value))
        return counts

    async def count_matching(self, project_id: int, selection: TaskFilter, limit: int) -> int:
        """How many tasks ``selection`` matches, counting no further than ``limit``."""
        matching = (
            sa.select(sa.literal(1))
            .select_from(tasks)
            .where(tasks.c.project_id == project_id, *self._conditions(selection))
            .limit(max(limit, 0))
            .subquery()
        )
        statement = sa.select(sa.func.count()).select_from(matching)
        return int((await self._uow.execute(statement)).scalar_one())

    async def count(self, project_id: int | None = None) -> int:
        """How many tasks (in one project, or in all)."""
        statement = sa.select(sa.func.count()).select_from(tasks)
        if project_id is not None:
            statement = statement.where(tasks.c.project_id == project_id)
        return int((await self._uow.execute(statement)).scalar_one())

    async def state_counts(self, project_id: int) -> Mapping[TaskState, int]:
        """How many tasks are in each state (from the aggregate), zero counts omitted."""
        result = await self._uow.execute(
            sa.select(task_state_counts.c.state, task_state_counts.c.count.label("n")).where(
                task_state_counts.c.project_id == project_id, task_state_counts.c.count != 0
            )
        )
        return {TaskState(row.state): int(row.n) for row in result}

    async def finish_counts(
        self, project_id: int, since: datetime, step: timedelta = ONE_MINUTE
    ) -> Sequence[FinishCount]:
        """Finish counts from ``since`` on, summed per ``step`` in the database (a day's
        chart reads a few hundred rows, not one per minute), oldest first, zeros omitted."""
        minutes = check_step(step)
        table = task_finish_counts
        if self._uow.dialect == "postgresql":
            seconds: Any = sa.extract("epoch", table.c.minute)
        else:  # naive UTC text, which strftime reads as UTC
            seconds = sa.cast(sa.func.strftime("%s", table.c.minute), sa.Integer)
        origin = sa.literal(since.timestamp(), sa.Float)
        index = sa.cast(sa.func.floor((seconds - origin) / float(minutes * 60)), sa.Integer)
        bucket = index.label("bucket")
        result = await self._uow.execute(
            sa.select(bucket, table.c.state, sa.func.sum(table.c.count).label("n"))
            .where(table.c.project_id == project_id, table.c.minute >= since)
            .group_by(bucket, table.c.state)
            .order_by(bucket, table.c.state)
        )
        return [
            FinishCount(minute=since + row.bucket * step, state=TaskState(row.state), count=n)
            for row in result
            if (n := int(row.n))
        ]

    async def recent_failures(self, project_id: int, limit: int) -> Sequence[FailureSample]:
        """The last ``limit`` failed tasks, newest first by ``(first_seen_at, id)``."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        result = await self._uow.execute(
            sa.select(tasks.c.id, tasks.c.name, tasks.c.exception, tasks.c.finished_at)
            .where(tasks.c.project_id == project_id, tasks.c.state == TaskState.FAILED.value)
            .order_by(tasks.c.first_seen_at.desc(), tasks.c.id.desc())
            .limit(limit)
        )
        return [
            FailureSample(
                task_id=row.id, name=row.name, exception=row.exception, finished_at=row.finished_at
            )
            for row in result
        ]


class SqlTaskEventRepository:
    """:class:`~z4j_domain.ports.TaskEventRepository` on SQLite or PostgreSQL."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    async def timeline(self, project_id: int, task_id: str) -> Sequence[TaskEvent]:
        """A task's events in fold order (attempt, rank, clock, timestamp, id)."""
        result = await self._uow.execute(
            sa.select(task_events.c.payload).where(
                task_events.c.project_id == project_id, task_events.c.task_id == task_id
            )
        )
        events = [event_from_dict(payload) for payload in result.scalars()]
        # The rank of a kind is domain knowledge, so the order is the domain's key.
        events.sort(key=lambda event: event.key)
        return events
