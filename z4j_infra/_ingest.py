"""The bulk statements of the task ingest, one implementation per dialect.

Both dialects run the same steps (see :mod:`z4j_infra.tasks`), each one
statement per batch whatever its size; they differ in how a batch travels:

* PostgreSQL: the events go as **one JSON document** (their payloads, which
  the statement also reads the row's columns out of), and so do the task rows
  (unpacked by ``json_populate_recordset``), so Python runs the C JSON encoder
  once per statement. Either way the statement text does not depend on the
  batch size, so asyncpg prepares it once per connection. Measured against
  SQLAlchemy's multi-row ``VALUES`` with one parameter per value, this more
  than doubled the ingest rate on the benchmark; one array per column (binary,
  through ``unnest``) saves PostgreSQL little and costs Python more, because
  asyncpg encodes arrays value by value.
* SQLite: plain tuples through the driver's ``executemany``, which loops in C;
  values are encoded by hand exactly as SQLAlchemy's types would store them.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from z4j_domain.tasks import PAYLOAD_FLAGS, EventKey, Task, TaskEvent, TaskState, restore_task
from z4j_infra.jsontext import dumps, loads
from z4j_infra.schema import JSONType, Timestamp, task_events, tasks

if TYPE_CHECKING:
    from z4j_infra.unit_of_work import SqlUnitOfWork

#: Task ids per ``IN (...)`` list on SQLite.
SQLITE_IN_CHUNK: Final = 500

# Plain str: SQLAlchemy names are a str subclass, which orjson refuses as a key (and
# jsontext.dumps would then fall back to the standard library, 4x slower).
TASK_COLUMNS: Final = tuple(str(column.name) for column in tasks.columns)
_UPDATED_COLUMNS: Final = tuple(name for name in TASK_COLUMNS if name not in ("project_id", "id"))
_SQLITE_TIMESTAMP_COLUMNS: Final = frozenset(
    index for index, column in enumerate(tasks.columns) if isinstance(column.type, Timestamp)
)
_JSON_COLUMNS: Final = frozenset(
    index for index, column in enumerate(tasks.columns) if column.type is JSONType
)


_EVENT_FIELDS: Final = tuple(field.name for field in attrs.fields(TaskEvent))
_event_values: Final = attrgetter(*_EVENT_FIELDS)
_FLAG_FIELDS: Final = frozenset(PAYLOAD_FLAGS)


def event_document(event: TaskEvent) -> dict[str, Any]:
    """The stored payload of ``event``: ``event_to_dict(event)``, datetimes and kinds as they are.

    The same keys and values, except that datetimes and enum members are left
    for :func:`~z4j_infra.jsontext.dumps` to render (orjson does it natively,
    several times faster than the domain's ``utc_isoformat`` per value; the
    text differs only in dropping zero microseconds, which reads back equal).
    One pass over the fields in C, then one comprehension: this runs for
    every ingested event.
    """
    return {
        name: value
        for name, value in zip(_EVENT_FIELDS, _event_values(event), strict=True)
        if value is not None and (value is not False or name not in _FLAG_FIELDS)
    }


def row_to_task(row: Any) -> Task:
    """The task stored in a ``tasks`` row (an SQLAlchemy ``Row``)."""
    return task_from_values(row._mapping)


def task_from_values(row: Mapping[str, Any]) -> Task:
    """The task stored in a ``tasks`` row given as a mapping of column names to values.

    Rows were written from valid tasks, and the drivers return timestamps as
    aware UTC datetimes (SQLite's through :func:`_from_sqlite_timestamp`), so
    the task is restored without re-running its converters and validators.
    """
    # Sorted again: JSONB keeps an object's keys in an order of its own.
    attempts = row["field_attempts"]
    return restore_task(
        id=row["id"],
        state=TaskState(row["state"]),
        name=row["name"],
        queue=row["queue"],
        routing_key=row["routing_key"],
        worker=row["worker"],
        args=row["args"],
        kwargs=row["kwargs"],
        result=row["result"],
        exception=row["exception"],
        traceback=row["traceback"],
        retries=row["retries"],
        eta=row["eta"],
        expires=row["expires"],
        sent_at=row["sent_at"],
        received_at=row["received_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        runtime=row["runtime"],
        root_id=row["root_id"],
        parent_id=row["parent_id"],
        group_id=row["group_id"],
        chord_id=row["chord_id"],
        retry_of=row["retry_of"],
        first_seen_at=row["first_seen_at"],
        updated_at=row["updated_at"],
        state_key=EventKey(
            attempt=row["state_attempt"],
            rank=row["state_rank"],
            clock=row["state_clock"],
            timestamp=row["state_timestamp"],
            event_id=row["state_event_id"],
        ),
        field_attempts=dict(sorted(attempts.items())) if attempts else {},
        redacted=bool(row["redacted"]),
        truncated=bool(row["truncated"]),
        arguments_redacted=bool(row["arguments_redacted"]),
        arguments_truncated=bool(row["arguments_truncated"]),
    )


def _json(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _same(value: Any) -> Any:
    return value


def _task_values(
    project_id: int,
    task: Task,
    version: int,
    timestamp: Callable[[Any], Any] = _same,
    document: Callable[[Any], Any] = _json,
) -> tuple[Any, ...]:
    """The task's row in ``tasks`` column order (keep in step with the table).

    ``timestamp`` and ``document`` turn datetimes and JSON values into what the
    statement takes: as they are, or as text.
    """
    ts = timestamp
    key = task.state_key
    return (
        project_id,
        task.id,
        task.state.value,
        task.name,
        task.queue,
        task.routing_key,
        task.worker,
        document(task.args),
        document(task.kwargs),
        document(task.result),
        task.exception,
        task.traceback,
        task.retries,
        ts(task.eta),
        ts(task.expires),
        ts(task.sent_at),
        ts(task.received_at),
        ts(task.started_at),
        ts(task.finished_at),
        task.runtime,
        task.root_id,
        task.parent_id,
        task.group_id,
        task.chord_id,
        ts(task.first_seen_at),
        ts(task.updated_at),
        key.attempt,
        key.rank,
        key.clock,
        ts(key.timestamp),
        key.event_id,
        document(dict(task.field_attempts) or None),
        version,
        task.redacted,
        task.truncated,
        task.arguments_redacted,
        task.arguments_truncated,
        task.retry_of,
    )


def _on_conflict_update(statement: Any, *, returning: bool = True) -> Any:
    """Overwrite a stored task only if it is still the version this batch read."""
    statement = statement.on_conflict_do_update(
        index_elements=["project_id", "id"],
        set_={name: statement.excluded[name] for name in _UPDATED_COLUMNS},
        where=tasks.c.version == statement.excluded.version - sa.literal_column("1"),
    )
    return statement.returning(tasks.c.id) if returning else statement


class Batches(Protocol):
    """The bulk statements of one dialect."""

    async def insert_events(
        self, uow: SqlUnitOfWork, project_id: int, events: Sequence[TaskEvent]
    ) -> set[str] | None:
        """Insert the events that are not stored yet; return their ids, or ``None`` if unknown.

        ``None`` means "fold them all": folding an event already folded
        changes nothing, so it only costs time.
        """
        ...

    async def load(
        self, uow: SqlUnitOfWork, project_id: int, task_ids: Sequence[str]
    ) -> dict[str, tuple[Task, int]]:
        """The stored tasks among ``task_ids`` (sorted) with their versions, locked for update."""
        ...

    async def upsert(
        self, uow: SqlUnitOfWork, project_id: int, rows: Sequence[tuple[Task, int]]
    ) -> set[str]:
        """Store ``(task, new version)`` pairs; return the ids whose write won."""
        ...


#: Whether PostgreSQL holds statistics of the ``tasks`` table's columns yet.
_HAS_STATISTICS_SQL: Final = (
    "SELECT EXISTS (SELECT FROM pg_stats WHERE schemaname = current_schema() "
    "AND tablename = 'tasks' AND attname = 'project_id')"
)


class PostgresBatches:
    """:class:`Batches` for PostgreSQL: events and task rows each as one JSON document.

    **A young table.** Until ``tasks`` has been analyzed, PostgreSQL takes
    ``project_id = $1`` for a selective condition (it has no statistics to
    say that most rows share it), and was seen to look the batch's tasks up
    through a secondary index that starts with ``project_id``, scanning the
    whole project once per id: each batch slower than the last (10 ms, 26, 38,
    ..., 198 ms for the tenth) until autovacuum, which looks at most once a
    minute by default, analyzes the table. So the first write of tasks into
    a database without those statistics analyzes the table itself, in the
    same transaction (``ANALYZE`` samples the rows that transaction wrote);
    after that, lookups are by primary key (about 1.6 ms per batch).
    """

    def __init__(self) -> None:
        #: The engines (databases) whose ``tasks`` table is known to have statistics.
        self._analyzed: weakref.WeakSet[Any] = weakref.WeakSet()
        documents = sa.func.jsonb_array_elements(
            sa.cast(sa.bindparam("events", type_=sa.Text()), postgresql.JSONB)
        ).table_valued(sa.column("value", postgresql.JSONB))
        event = documents.c.value
        # The row's columns are read out of the payload, which is exactly
        # event_to_dict(event): Python encodes each event once.
        self._insert_events = (
            postgresql.insert(task_events)
            .from_select(
                ["project_id", "id", "task_id", "kind", "attempt", "timestamp", "payload"],
                sa.select(
                    sa.bindparam("project_id", type_=sa.Integer()),
                    event["id"].astext,
                    event["task_id"].astext,
                    event["kind"].astext,
                    event["attempt"].astext.cast(sa.Integer()),
                    event["timestamp"].astext.cast(postgresql.TIMESTAMP(timezone=True)),
                    event,
                ),
            )
            .on_conflict_do_nothing(index_elements=["project_id", "id"])
            .returning(task_events.c.id)
        )

        # Rows travel as one JSON document that PostgreSQL unpacks into the
        # table's own row type: one fast encode in Python (datetimes and JSON
        # columns included, nothing encoded twice) instead of an array per column,
        # which asyncpg encodes value by value (measured: 4x the Python time).
        # Read as `json`, not `jsonb`: the document is walked once, never built
        # into a JSONB value first (measured 4-5 ms less per 540-row upsert).
        records = sa.func.json_populate_recordset(
            sa.literal_column("NULL::tasks"),
            sa.cast(sa.bindparam("rows", type_=sa.Text()), postgresql.JSON),
        ).table_valued(*TASK_COLUMNS)
        self._upsert = _on_conflict_update(
            postgresql.insert(tasks).from_select(
                list(TASK_COLUMNS), sa.select(*(records.c[name] for name in TASK_COLUMNS))
            )
        )

        wanted = (
            sa.func.unnest(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text())))
            .table_valued("id")
            .render_derived()
        )
        # One primary-key lookup per id. The LIMIT keeps the planner from
        # flattening the lateral subquery into a join, which it was seen to
        # plan, on a young table, as a scan of the whole project per batch.
        # The ids come sorted, so rows are locked in one fixed order and two
        # brains locking overlapping batches cannot deadlock.
        lookup = (
            sa.select(tasks)
            .where(tasks.c.project_id == sa.bindparam("project_id"), tasks.c.id == wanted.c.id)
            # A literal, not a parameter: a generic plan must know it is 1.
            .limit(sa.literal_column("1"))
            .with_for_update()
            .lateral("task")
        )
        select = sa.select(lookup).select_from(wanted).join(lookup, sa.true())
        compiled = select.compile(dialect=postgresql.asyncpg.dialect())  # type: ignore[no-untyped-call]
        if tuple(compiled.positiontup or ()) != ("ids", "project_id"):  # pragma: no cover
            raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
        self._select_sql = str(compiled)

    async def insert_events(
        self, uow: SqlUnitOfWork, project_id: int, events: Sequence[TaskEvent]
    ) -> set[str]:
        """Insert the events not stored yet; return their ids."""
        # Sorted by id: two brains inserting overlapping batches take the
        # unique-index locks in one order, so they queue instead of deadlocking.
        ordered = sorted(events, key=attrgetter("id"))
        document = dumps([event_document(event) for event in ordered])
        result = await uow.execute(
            self._insert_events, {"project_id": project_id, "events": document}
        )
        return set(result.scalars().all())

    async def load(
        self, uow: SqlUnitOfWork, project_id: int, task_ids: Sequence[str]
    ) -> dict[str, tuple[Task, int]]:
        """The stored tasks among ``task_ids``, locked ``FOR UPDATE``."""
        # Straight through the driver: asyncpg returns aware datetimes, and the
        # JSONB codec SQLAlchemy installs on each connection decodes documents,
        # so per-value result processing would only repeat work.
        result = await uow.execute_driver_sql(self._select_sql, (list(task_ids), project_id))
        found: dict[str, tuple[Task, int]] = {}
        for row in result:
            values = dict(zip(TASK_COLUMNS, row, strict=True))
            found[values["id"]] = (task_from_values(values), values["version"])
        return found

    async def upsert(
        self, uow: SqlUnitOfWork, project_id: int, rows: Sequence[tuple[Task, int]]
    ) -> set[str]:
        """Write the tasks; return the ids whose version guard held."""
        records = [
            _task_values(project_id, task, version, document=_same) for task, version in rows
        ]
        document = dumps([dict(zip(TASK_COLUMNS, record, strict=True)) for record in records])
        result = await uow.execute(self._upsert, {"rows": document})
        stored = set(result.scalars().all())
        await self._ensure_statistics(uow)
        return stored

    async def _ensure_statistics(self, uow: SqlUnitOfWork) -> None:
        """Analyze ``tasks`` if PostgreSQL has no statistics of it (see the class)."""
        engine = uow.connection.engine.sync_engine
        if engine in self._analyzed:
            return
        result = await uow.execute_driver_sql(_HAS_STATISTICS_SQL, ())
        if result.scalar():
            # Known from now on; checked again in a new process only.
            self._analyzed.add(engine)
            return
        await uow.execute_driver_sql("ANALYZE tasks", ())


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_timestamp(value: datetime | None) -> str | None:
    # SQLAlchemy's storage format for SQLite DATETIME (naive UTC, microseconds
    # always written), so that every other query reads and compares these
    # values like the ones it wrote itself. Domain datetimes are UTC already.
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


def _from_sqlite_timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _positional(statement: Any, expected: Sequence[str]) -> str:
    """SQLite's SQL text of ``statement``, checking its ``?`` come in ``expected`` order."""
    compiled = statement.compile(dialect=sqlite.dialect())
    if tuple(compiled.positiontup) != tuple(expected):  # pragma: no cover - a coding error
        raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
    return str(compiled)


_EVENT_COLUMNS: Final = ("project_id", "id", "task_id", "kind", "attempt", "timestamp", "payload")


class SqliteBatches:
    """:class:`Batches` for SQLite: the driver's ``executemany``, values encoded by hand.

    SQLite runs in-process, so what costs is Python: the statements go to the
    driver as plain tuples (no per-value type processing by SQLAlchemy), and
    ``executemany`` loops in C. No ``RETURNING`` is needed: a SQLite
    transaction holds the database's write lock from its first write (the
    events) to its commit, so no other writer can interleave, and events that
    were stored already fold in again without changing anything (the fold is
    idempotent).
    """

    def __init__(self) -> None:
        events = sqlite.insert(task_events).values(
            {name: sa.bindparam(name) for name in _EVENT_COLUMNS}
        )
        self._insert_events = _positional(
            events.on_conflict_do_nothing(index_elements=["project_id", "id"]), _EVENT_COLUMNS
        )
        upsert = sqlite.insert(tasks).values({name: sa.bindparam(name) for name in TASK_COLUMNS})
        self._upsert = _positional(_on_conflict_update(upsert, returning=False), TASK_COLUMNS)
        # Identifiers from the schema, values bound: the IN list's length varies.
        columns = ", ".join(TASK_COLUMNS)
        self._select = f"SELECT {columns} FROM tasks WHERE project_id = ? AND id IN "  # noqa: S608

    async def insert_events(
        self, uow: SqlUnitOfWork, project_id: int, events: Sequence[TaskEvent]
    ) -> set[str] | None:
        """Insert the events not stored yet; which ones those were is not reported."""
        rows = [
            (
                project_id,
                event.id,
                event.task_id,
                event.kind.value,
                event.attempt,
                _sqlite_timestamp(event.timestamp),
                dumps(event_document(event)),
            )
            for event in events
        ]
        await uow.execute_driver_sql(self._insert_events, rows)
        return None

    async def load(
        self, uow: SqlUnitOfWork, project_id: int, task_ids: Sequence[str]
    ) -> dict[str, tuple[Task, int]]:
        """The stored tasks among ``task_ids`` (the write lock is already held)."""
        found: dict[str, tuple[Task, int]] = {}
        for chunk in _chunks(task_ids, SQLITE_IN_CHUNK):
            sql = self._select + "(" + ", ".join("?" * len(chunk)) + ")"
            result = await uow.execute_driver_sql(sql, (project_id, *chunk))
            for row in result:
                values = list(row)
                for index in _SQLITE_TIMESTAMP_COLUMNS:
                    values[index] = _from_sqlite_timestamp(values[index])
                for index in _JSON_COLUMNS:
                    if values[index] is not None:
                        values[index] = loads(values[index])
                named = dict(zip(TASK_COLUMNS, values, strict=True))
                found[named["id"]] = (task_from_values(named), named["version"])
        return found

    async def upsert(
        self, uow: SqlUnitOfWork, project_id: int, rows: Sequence[tuple[Task, int]]
    ) -> set[str]:
        """Write the tasks; every write wins, as no other writer can interleave."""
        values = [
            _task_values(project_id, task, version, _sqlite_timestamp) for task, version in rows
        ]
        await uow.execute_driver_sql(self._upsert, values)
        return {task.id for task, _ in rows}


@functools.cache
def batches_for(dialect: str) -> Batches:
    """The bulk statements for ``dialect``, built once per process."""
    if dialect == "postgresql":
        return PostgresBatches()
    return SqliteBatches()
