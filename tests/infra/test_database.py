"""The SQL adapters beyond the shared contract: engine set-up, error translation, concurrency."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta, timezone

import anyio
import argon2
import attrs
import pytest
import sqlalchemy as sa
from hypothesis import given

from tests.strategies import task_events
from z4j_domain.errors import Conflict, InvalidInput
from z4j_domain.serialization import event_from_dict, event_to_dict
from z4j_domain.tasks import EventKind, TaskEvent, TaskState, fold
from z4j_infra import jsontext
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.errors import ConfigError, StorageError
from z4j_infra.passwords import Argon2PasswordHasher
from z4j_infra.schema import agents, projects
from z4j_infra.secrets import new_token

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _project(db: Database, slug: str = "p") -> int:
    async with db.unit_of_work() as uow:
        project = await uow.projects.create(slug=slug, name="P", created_at=T0)
        await uow.commit()
    return project.id


async def test_connect_refuses_other_schemes() -> None:
    """Database.connect accepts what the settings accept, nothing else."""
    with pytest.raises(ConfigError):
        await Database.connect("mysql://u@db/z4j")


async def test_sqlite_connections_are_configured(sqlite_database: Database) -> None:
    """Every SQLite connection runs in WAL mode with foreign keys and a busy timeout."""
    async with sqlite_database.engine.connect() as connection:
        pragmas = {
            name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": 1,
        "busy_timeout": 5000,
    }
    assert sqlite_database.dialect == "sqlite"


async def test_ping(database: Database) -> None:
    """A reachable database answers the ping."""
    await database.ping()


async def test_ping_names_an_unreachable_database_without_its_password() -> None:
    """An unreachable server gives a StorageError naming the URL, password masked."""
    database = await Database.connect("postgresql://z4j:hunter2@127.0.0.1:1/z4j")
    try:
        with pytest.raises(StorageError, match="cannot reach the database") as error:
            await database.ping()
    finally:
        await database.dispose()
    assert "127.0.0.1:1" in str(error.value)
    assert "hunter2" not in str(error.value)
    assert "hunter2" not in repr(database)


async def test_unit_of_work_outside_its_block() -> None:
    """Using a unit of work without `async with` is a programming error, said plainly."""
    database = await Database.connect("sqlite+aiosqlite://")
    try:
        uow = database.unit_of_work()
        with pytest.raises(RuntimeError, match="async with"):
            await uow.tasks.count()
    finally:
        await database.dispose()


async def test_integrity_errors_become_conflict(database: Database) -> None:
    """A constraint violation from the driver surfaces as the domain's Conflict."""
    await _project(database, "taken")
    async with database.unit_of_work() as uow:
        with pytest.raises(Conflict):
            await uow.execute(sa.insert(projects).values(slug="taken", name="x", created_at=T0))


@pytest.mark.postgres
async def test_values_the_database_refuses_become_invalid_input(
    postgres_database: Database,
) -> None:
    """A value longer than its column is refused as InvalidInput, not a server error."""
    async with postgres_database.unit_of_work() as uow:
        with pytest.raises(InvalidInput):
            await uow.execute(sa.insert(projects).values(slug="x" * 300, name="x", created_at=T0))


async def test_timestamps_are_stored_in_utc_and_come_back_aware(database: Database) -> None:
    """Whatever the offset given, the stored instant is the same and reads back in UTC."""
    tokyo = timezone(timedelta(hours=9))
    created = datetime(2026, 5, 1, 9, 0, 0, 123456, tzinfo=tokyo)
    async with database.unit_of_work() as uow:
        project = await uow.projects.create(slug="tz", name="TZ", created_at=created)
        await uow.commit()
    async with database.unit_of_work() as uow:
        stored = await uow.projects.get_by_slug("tz")
    assert stored == project
    assert stored is not None
    assert stored.created_at.tzinfo is UTC
    assert stored.created_at == datetime(2026, 5, 1, 0, 0, 0, 123456, tzinfo=UTC)


async def test_agent_count_skips_revoked_agents(database: Database) -> None:
    """Agents count per project and overall, revoked ones left out."""
    first = await _project(database, "first")
    second = await _project(database, "second")
    async with database.unit_of_work() as uow:
        rows = [
            {"project_id": first, "name": "a", "token_hash": "1", "revoked_at": None},
            {"project_id": first, "name": "b", "token_hash": "2", "revoked_at": T0},
            {"project_id": second, "name": "a", "token_hash": "3", "revoked_at": None},
        ]
        await uow.execute(sa.insert(agents), [{**row, "created_at": T0} for row in rows])
        await uow.commit()
        assert await uow.agents.count(first) == 1
        assert await uow.agents.count(second) == 1
        assert await uow.agents.count() == 2


def _lifecycle(task_id: str) -> list[TaskEvent]:
    kinds = [EventKind.SENT, EventKind.RECEIVED, EventKind.STARTED, EventKind.SUCCEEDED]
    return [
        TaskEvent(
            id=f"{task_id}:{kind.value}",
            task_id=task_id,
            kind=kind,
            timestamp=T0 + timedelta(seconds=index),
            name="app.task" if kind is EventKind.SENT else None,
            worker=None if kind is EventKind.SENT else "celery@w",
        )
        for index, kind in enumerate(kinds)
    ]


async def test_concurrent_writers_lose_no_update(database: Database) -> None:
    """Two units of work folding events of the same new task at once: both survive.

    On PostgreSQL the second writer finds the row the first one created after
    reading nothing (the version guard catches it); on SQLite it waits for the
    write lock.
    """
    project = await _project(database)
    events = _lifecycle("t1")
    first_applied = anyio.Event()
    release_first = anyio.Event()

    async def first() -> None:
        async with database.unit_of_work() as uow:
            await uow.tasks.apply_events(project, events[:2])
            first_applied.set()
            await release_first.wait()
            await uow.commit()

    async def second() -> None:
        await first_applied.wait()
        async with database.unit_of_work() as uow:
            await uow.tasks.apply_events(project, events[2:])
            await uow.commit()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(first)
            group.start_soon(second)
            # Give the second writer time to read and block before the first commits.
            await anyio.sleep(0.3)
            release_first.set()
    async with database.unit_of_work() as uow:
        assert await uow.tasks.get(project, "t1") == fold(events)
        # The statistics count the task once, in its final state (the loser's
        # second round replaced the winner's row, not nothing).
        assert await uow.tasks.state_counts(project) == {TaskState.SUCCEEDED: 1}


async def test_many_concurrent_batches_of_overlapping_tasks(database: Database) -> None:
    """Concurrent batches that share tasks end in the pure fold of everything, no deadlock."""
    project = await _project(database)
    events = [event for index in range(30) for event in _lifecycle(f"t{index:02d}")]
    batches = [events[offset::4] for offset in range(4)]

    async def write(batch: list[TaskEvent]) -> None:
        async with database.unit_of_work() as uow:
            await uow.tasks.apply_events(project, batch)
            await uow.commit()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for batch in batches:
                group.start_soon(write, batch)
    async with database.unit_of_work() as uow:
        for index in range(30):
            task_id = f"t{index:02d}"
            assert await uow.tasks.get(project, task_id) == fold(_lifecycle(task_id))
        assert await uow.tasks.state_counts(project) == {TaskState.SUCCEEDED: 30}
        finishes = await uow.tasks.finish_counts(project, T0)
        assert [(c.minute, c.state, c.count) for c in finishes] == [
            (T0.replace(second=0, microsecond=0), TaskState.SUCCEEDED, 30)
        ]


def test_password_hasher() -> None:
    """argon2 hashes verify, wrong passwords and garbage hashes read as False."""
    hasher = Argon2PasswordHasher(argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    stored = hasher.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert hasher.verify(stored, "correct horse")
    assert not hasher.verify(stored, "wrong")
    assert not hasher.verify("not-a-hash", "correct horse")
    assert not hasher.verify("", "")
    default = Argon2PasswordHasher()
    assert default.needs_rehash(stored)  # weaker than the library's defaults
    assert not default.needs_rehash(default.hash("x"))
    assert default.needs_rehash("not-a-hash")


def test_system_clock_is_aware_utc() -> None:
    """The clock's time is timezone-aware UTC."""
    now = SystemClock().now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_new_token() -> None:
    """Tokens are random, URL-safe, carry the prefix, and hold 256 bits."""
    token = new_token("z4j_")
    assert token.startswith("z4j_")
    assert len(token) == len("z4j_") + 43
    assert new_token() != new_token()
    alphabet = set(string.ascii_letters + string.digits + "-_")
    assert set(new_token()) <= alphabet


async def test_integers_wider_than_64_bits_are_stored_exactly(database: Database) -> None:
    """The fast JSON encoder's one gap (huge integers) falls back without losing a digit."""
    project = await _project(database, "bigints")
    huge = 2**70 + 1
    event = TaskEvent(
        id="e-big", task_id="big", kind=EventKind.SUCCEEDED, timestamp=T0, args=[huge], result=huge
    )
    async with database.unit_of_work() as uow:
        await uow.tasks.apply_events(project, [event])
        await uow.commit()
    async with database.unit_of_work() as uow:
        task = await uow.tasks.get(project, "big")
        (stored,) = await uow.events.timeline(project, "big")
    assert task is not None
    assert task.args == [huge]
    assert task.result == huge
    assert stored == event


def test_json_text_keeps_every_value_exactly() -> None:
    """The fast codec agrees with the standard library, wide integers included."""
    values = [2**70 + 1, -(2**64), 2**63 - 1, "1234567890123456789012", {"a": [1.5, None]}]
    for value in values:
        text = jsontext.dumps(value)
        assert json.loads(text) == value
        assert jsontext.loads(text) == value
        assert type(jsontext.loads(text)) is type(value)


def test_ingest_row_documents_take_orjsons_fast_path() -> None:
    """A task row document encodes with orjson itself, not the standard-library fallback.

    ``jsontext.dumps`` falls back silently on any ``TypeError``; column names
    that were a ``str`` subclass once sent every batch down the slow path.
    """
    import orjson

    from z4j_infra._ingest import TASK_COLUMNS, _same, _task_values

    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    task = fold([TaskEvent(id="e1", task_id="t1", kind=EventKind.SUCCEEDED, timestamp=at)])
    assert task is not None
    row = dict(zip(TASK_COLUMNS, _task_values(1, task, 1, document=_same), strict=True))
    assert all(type(name) is str for name in row)
    assert orjson.loads(orjson.dumps(row))["id"] == "t1"


@given(event=task_events())
def test_stored_event_documents_read_back_as_the_event(event: TaskEvent) -> None:
    """The ingest's payload encoding means what ``event_to_dict`` means, wide integers included."""
    from z4j_infra._ingest import event_document

    stored = jsontext.loads(jsontext.dumps(event_document(event)))
    assert event_from_dict(stored) == event
    assert stored.keys() == event_to_dict(event).keys()


def test_stored_event_documents_keep_false_results_and_drop_unset_flags() -> None:
    from z4j_infra._ingest import event_document

    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    event = TaskEvent(id="e1", task_id="t1", kind=EventKind.SUCCEEDED, timestamp=at, result=False)
    document = event_document(event)
    assert document["result"] is False
    assert "redacted" not in document
    assert event_document(attrs.evolve(event, redacted=True))["redacted"] is True
