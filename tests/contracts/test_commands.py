"""The command storage contract: commands behave the same on every backend (in-memory fake,
SQLite, PostgreSQL).

Each test takes ``uow_factory`` and so runs once per backend, except those about
interleaved transactions, which take ``isolating_uow_factory`` (the SQL backends).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import pytest

from z4j_domain.commands import Command, CommandKind, CommandStatus
from z4j_domain.errors import Conflict
from z4j_domain.ports import UnitOfWorkFactory

from .support import at, new_project

pytestmark = pytest.mark.anyio


#: Nested, unicode, and numbers that JSON stores in more than one way.
PARAMS: Mapping[str, Any] = {
    "task_id": "3f2a-ünïcode-✓",
    "name": "app.tasks.日本語",
    "args": [1, 1.0, -0.5, 2**70, True, None, "", [], {}],
    "kwargs": {"émoji": "🚀", "nested": {"deep": [{"a": [1, [2, [3]]]}]}, "zero": 0},
    "queue": None,
    "recover_arguments": False,
}


def make(
    project_id: int,
    *,
    command_id: str | None = None,
    created: float = 0,
    deadline: float = 600,
    key: str | None = None,
    params: Mapping[str, Any] | None = None,
    kind: CommandKind = CommandKind.RETRY,
) -> Command:
    """A pending command of the project, created ``created`` seconds after T0."""
    return Command(
        id=command_id or uuid.uuid4().hex,
        project_id=project_id,
        kind=kind,
        params={"task_id": "t-1"} if params is None else params,
        idempotency_key=key,
        requested_by=7,
        requested_by_name="amy@example.com",
        created_at=at(created),
        deadline=at(deadline),
    )


async def store(factory: UnitOfWorkFactory, *commands: Command) -> None:
    """Create (and commit) each command; each must be new."""
    async with factory() as uow:
        for command in commands:
            _, created = await uow.commands.create(command)
            assert created
        await uow.commit()


async def stored(factory: UnitOfWorkFactory, command: Command) -> Command | None:
    """The stored version of ``command``."""
    async with factory() as uow:
        return await uow.commands.get(command.project_id, command.id)


def ids(commands: Sequence[Command]) -> list[str]:
    """The commands' ids, in order."""
    return [c.id for c in commands]


# -- create and get -------------------------------------------------------------------


async def test_every_field_round_trips(uow_factory: UnitOfWorkFactory) -> None:
    """A command with every field set, and one with only the required ones, read back equal."""
    project_id = await new_project(uow_factory)
    eastern = timezone(timedelta(hours=-5))
    full = Command(
        id=uuid.uuid4().hex,
        project_id=project_id,
        kind=CommandKind.BULK_RETRY,
        params=PARAMS,
        status=CommandStatus.FAILED,
        idempotency_key="Key-1!~",
        requested_by=42,
        requested_by_name="Zoë <zoe@example.com>",
        created_at=datetime(2026, 1, 1, 7, 0, 0, 123456, tzinfo=eastern),
        deadline=at(600.000001),
        agent="agent-ünï",
        delivered_at=at(1.5),
        acked_at=at(2.25),
        finished_at=at(3.000007),
        result={"new_task_id": "🆕", "counts": {"ok": 2**63, "failed": [1.5, None]}},
        error="boom: ✗ multi\nline",
    )
    bare = make(project_id, kind=CommandKind.PURGE, params={})
    bare = attrs.evolve(bare, requested_by=None, requested_by_name="system")
    async with uow_factory() as uow:
        for command in (full, bare):
            returned, created = await uow.commands.create(command)
            assert created is True
            assert returned == command
        await uow.commit()
    for command in (full, bare):
        assert await stored(uow_factory, command) == command
    got = await stored(uow_factory, full)
    assert got is not None
    assert got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert isinstance(got.params["args"][1], float)
    assert got.params["args"][3] == 2**70
    assert got.kind is CommandKind.BULK_RETRY
    assert got.status is CommandStatus.FAILED


async def test_get_is_per_project_and_misses_are_none(uow_factory: UnitOfWorkFactory) -> None:
    """get finds a command in its own project only; unknown ids are None."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    command = make(project_id)
    await store(uow_factory, command)
    async with uow_factory() as uow:
        assert await uow.commands.get(other, command.id) is None
        assert await uow.commands.get(project_id, "f" * 32) is None


async def test_an_uncommitted_create_is_rolled_back(uow_factory: UnitOfWorkFactory) -> None:
    """Leaving the block without commit stores nothing."""
    project_id = await new_project(uow_factory)
    command = make(project_id, key="k")
    async with uow_factory() as uow:
        await uow.commands.create(command)
        assert await uow.commands.get(project_id, command.id) == command
    assert await stored(uow_factory, command) is None
    async with uow_factory() as uow:
        assert await uow.commands.create(command) == (command, True)


# -- idempotency ----------------------------------------------------------------------


async def test_the_same_key_returns_the_first_command(uow_factory: UnitOfWorkFactory) -> None:
    """A second create with the key returns the first command, not created, whatever it asks."""
    project_id = await new_project(uow_factory)
    first = make(project_id, key="retry:t-1", params={"task_id": "t-1"})
    await store(uow_factory, first)
    again = make(
        project_id,
        key="retry:t-1",
        params={"task_id": "t-2", "queue": "other"},
        kind=CommandKind.CANCEL,
        created=5,
    )
    async with uow_factory() as uow:
        assert await uow.commands.create(again) == (first, False)
        # In the same transaction as the first's creation too.
        third = make(project_id, key="k-2")
        assert await uow.commands.create(third) == (third, True)
        assert await uow.commands.create(make(project_id, key="k-2")) == (third, False)
        await uow.commit()
    assert await stored(uow_factory, again) is None
    async with uow_factory() as uow:
        assert sorted(ids(await uow.commands.list(project_id))) == sorted([first.id, third.id])


async def test_keys_are_per_project_and_no_key_never_dedupes(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Two projects may use one key; commands without a key are all stored."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    mine, theirs = make(project_id, key="same"), make(other, key="same")
    unkeyed = [make(project_id) for _ in range(3)]
    await store(uow_factory, mine, theirs, *unkeyed)
    async with uow_factory() as uow:
        assert await uow.commands.get(other, theirs.id) == theirs
        listed = await uow.commands.list(project_id)
        assert sorted(ids(listed)) == sorted([mine.id, *ids(unkeyed)])


async def test_a_duplicate_id_conflicts_and_leaves_the_unit_of_work_usable(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Another command with a stored id (and no matching key) is a Conflict, in any project."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    first = make(project_id, key="a")
    await store(uow_factory, first)
    async with uow_factory() as uow:
        for duplicate in (
            make(project_id, command_id=first.id),
            make(project_id, command_id=first.id, key="b"),
            make(other, command_id=first.id, key="a"),
        ):
            with pytest.raises(Conflict):
                await uow.commands.create(duplicate)
        later = make(project_id, key="c")
        assert await uow.commands.create(later) == (later, True)
        await uow.commit()
    assert await stored(uow_factory, first) == first
    assert await stored(uow_factory, later) == later


async def test_a_missing_project_conflicts_and_leaves_the_unit_of_work_usable(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A command of a project that does not exist is a Conflict."""
    project_id = await new_project(uow_factory)
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.commands.create(make(project_id + 1000, key="k"))
        command = make(project_id, key="k")
        assert await uow.commands.create(command) == (command, True)
        await uow.commit()
    assert await stored(uow_factory, command) == command


# -- list, pending, overdue -----------------------------------------------------------


async def test_list_is_newest_first_with_filters_and_limit(uow_factory: UnitOfWorkFactory) -> None:
    """Newest first (ties by id, descending); status, before and limit narrow it."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    a = make(project_id, command_id="a" * 32, created=10)
    b = make(project_id, command_id="b" * 32, created=10)
    c = make(project_id, command_id="c" * 32, created=5)
    d = make(project_id, command_id="d" * 32, created=20)
    e = attrs.evolve(
        make(project_id, command_id="e" * 32, created=1), status=CommandStatus.SUCCEEDED
    )
    await store(uow_factory, a, b, c, d, e, make(other, created=15))
    async with uow_factory() as uow:
        commands = uow.commands
        assert ids(await commands.list(project_id)) == ids([d, b, a, c, e])
        assert ids(await commands.list(project_id, limit=2)) == ids([d, b])
        assert await commands.list(project_id, limit=0) == []
        assert ids(await commands.list(project_id, before=at(10))) == ids([c, e])
        assert ids(await commands.list(project_id, before=at(10.5), limit=2)) == ids([b, a])
        assert ids(await commands.list(project_id, status=CommandStatus.PENDING)) == ids(
            [d, b, a, c]
        )
        assert ids(await commands.list(project_id, status=CommandStatus.SUCCEEDED)) == ids([e])
        assert ids(
            await commands.list(project_id, status=CommandStatus.PENDING, before=at(10))
        ) == ids([c])
        assert await commands.list(project_id, status=CommandStatus.TIMED_OUT) == []
        assert await commands.list(project_id + 1000) == []


async def test_pending_is_oldest_first_and_only_pending(uow_factory: UnitOfWorkFactory) -> None:
    """Pending commands of the project, oldest first (ties by id); delivered and later are not."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    late = make(project_id, command_id="c" * 32, created=30)
    tie_b = make(project_id, command_id="b" * 32, created=10)
    tie_a = make(project_id, command_id="a" * 32, created=10)
    delivered = make(project_id, created=1).deliver("agent-1", at(2))
    acked = make(project_id, created=1).deliver("agent-1", at(2)).acknowledge(at(3))
    done = make(project_id, created=1).finish(at(4), result={"ok": True})
    failed = make(project_id, created=1).finish(at(4), error="no")
    timed_out = make(project_id, created=1).expire(at(600))
    await store(
        uow_factory,
        late,
        tie_b,
        tie_a,
        delivered,
        acked,
        done,
        failed,
        timed_out,
        make(other, created=0),
    )
    async with uow_factory() as uow:
        assert ids(await uow.commands.pending(project_id, 10)) == ids([tie_a, tie_b, late])
        assert ids(await uow.commands.pending(project_id, 2)) == ids([tie_a, tie_b])
        assert await uow.commands.pending(project_id + 1000, 10) == []


async def test_overdue_is_unfinished_past_their_deadline_in_any_project(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Unfinished commands whose deadline is at or before now, earliest deadline first."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    pending = make(project_id, deadline=100)
    delivered = make(other, deadline=50).deliver("agent-1", at(1))
    acked = make(project_id, deadline=200).deliver("agent-1", at(1)).acknowledge(at(2))
    future = make(project_id, deadline=201)
    done = make(project_id, deadline=10).finish(at(5), result={})
    failed = make(project_id, deadline=10).finish(at(5), error="x")
    expired = make(project_id, deadline=10).expire(at(10))
    await store(uow_factory, pending, delivered, acked, future, done, failed, expired)
    async with uow_factory() as uow:
        assert ids(await uow.commands.overdue(at(200), 10)) == ids([delivered, pending, acked])
        assert ids(await uow.commands.overdue(at(200), 1)) == ids([delivered])
        assert ids(await uow.commands.overdue(at(99.999), 10)) == ids([delivered])
        assert await uow.commands.overdue(at(49), 10) == []
        assert ids(await uow.commands.overdue(at(1000), 10)) == ids(
            [delivered, pending, acked, future]
        )


# -- save -----------------------------------------------------------------------------


async def test_transitions_are_saved(uow_factory: UnitOfWorkFactory) -> None:
    """Each step of the lifecycle, made by the domain's methods, is stored by save."""
    project_id = await new_project(uow_factory)
    command = make(project_id, key="life")
    await store(uow_factory, command)
    steps = [
        lambda c: c.deliver("agent-1", at(1)),
        lambda c: c.redeliverable(),
        lambda c: c.deliver("agent-2", at(2)),
        lambda c: c.acknowledge(at(3)),
        lambda c: c.finish(at(4), result={"new_task_id": "t-2", "note": "ünï ✓"}),
    ]
    for step in steps:
        command = step(command)
        async with uow_factory() as uow:
            assert await uow.commands.save(command) is True
            await uow.commit()
        assert await stored(uow_factory, command) == command
    assert command.status is CommandStatus.SUCCEEDED
    assert command.agent == "agent-2"
    async with uow_factory() as uow:
        assert await uow.commands.pending(project_id, 10) == []
        assert await uow.commands.overdue(at(10_000), 10) == []


async def test_a_redelivered_command_is_pending_again(uow_factory: UnitOfWorkFactory) -> None:
    """A command taken back from an agent that went away is pending once more."""
    project_id = await new_project(uow_factory)
    command = make(project_id).deliver("agent-1", at(1))
    await store(uow_factory, command)
    async with uow_factory() as uow:
        assert await uow.commands.pending(project_id, 10) == []
        assert await uow.commands.save(command.redeliverable()) is True
        assert ids(await uow.commands.pending(project_id, 10)) == [command.id]
        await uow.commit()
    got = await stored(uow_factory, command)
    assert got is not None
    assert (got.status, got.agent, got.delivered_at) == (CommandStatus.PENDING, None, None)


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(lambda c: c.finish(at(5), result={"n": 1}), id="succeeded"),
        pytest.param(lambda c: c.finish(at(5), error="it failed"), id="failed"),
        pytest.param(lambda c: c.expire(at(600)), id="timed_out"),
    ],
)
async def test_a_finished_command_is_never_overwritten(
    uow_factory: UnitOfWorkFactory, outcome: Any
) -> None:
    """Once stored finished, save refuses every later state and the stored one stays."""
    project_id = await new_project(uow_factory)
    command = make(project_id).deliver("agent-1", at(1))
    await store(uow_factory, command)
    finished = outcome(command)
    async with uow_factory() as uow:
        assert await uow.commands.save(finished) is True
        await uow.commit()
    late_reports = [
        command,  # a stale copy, still delivered
        command.redeliverable(),
        command.acknowledge(at(6)),
        command.finish(at(7), result={"n": 2}),
        command.finish(at(7), error="late"),
        command.expire(at(10_000)),
        finished,  # even the same outcome again
    ]
    for late in late_reports:
        async with uow_factory() as uow:
            assert await uow.commands.save(late) is False
            await uow.commit()
        assert await stored(uow_factory, command) == finished


async def test_save_of_an_unknown_command_stores_nothing(uow_factory: UnitOfWorkFactory) -> None:
    """save returns False for an id that is not stored, or stored in another project."""
    project_id = await new_project(uow_factory)
    other = await new_project(uow_factory)
    command = make(project_id)
    async with uow_factory() as uow:
        assert await uow.commands.save(command.deliver("agent-1", at(1))) is False
    await store(uow_factory, command)
    moved = attrs.evolve(command, project_id=other).deliver("agent-1", at(1))
    async with uow_factory() as uow:
        assert await uow.commands.save(moved) is False
        await uow.commit()
    assert await stored(uow_factory, command) == command
    async with uow_factory() as uow:
        assert await uow.commands.get(other, command.id) is None


async def test_save_stores_the_state_not_the_request(uow_factory: UnitOfWorkFactory) -> None:
    """What was asked is fixed at creation: save writes status, agent, times, result, error."""
    project_id = await new_project(uow_factory)
    command = make(project_id, key="fixed", params={"task_id": "t-1"})
    await store(uow_factory, command)
    rewritten = attrs.evolve(
        command.deliver("agent-1", at(1)),
        kind=CommandKind.PURGE,
        params={"task_id": "t-9"},
        idempotency_key="other",
        requested_by=None,
        requested_by_name="someone else",
        created_at=at(50),
        deadline=at(5000),
    )
    async with uow_factory() as uow:
        assert await uow.commands.save(rewritten) is True
        await uow.commit()
    assert await stored(uow_factory, command) == command.deliver("agent-1", at(1))


# -- interleaved transactions (SQL backends) ------------------------------------------


async def test_concurrent_creates_with_one_key_store_one_command(
    isolating_uow_factory: UnitOfWorkFactory,
) -> None:
    """Two transactions creating with the same key at once: one creates, the other gets it."""
    uow_factory = isolating_uow_factory
    project_id = await new_project(uow_factory)
    attempts = [make(project_id, key="double-click") for _ in range(2)]
    outcomes: dict[str, tuple[Command, bool]] = {}

    async def create(command: Command) -> None:
        async with uow_factory() as uow:
            outcomes[command.id] = await uow.commands.create(command)
            await anyio.sleep(0.05)  # hold the transaction open while the other one tries
            await uow.commit()

    async with anyio.create_task_group() as group:
        for command in attempts:
            group.start_soon(create, command)
    assert sorted(created for _, created in outcomes.values()) == [False, True]
    winner = next(command for command, created in outcomes.values() if created)
    assert [command for command, _ in outcomes.values()] == [winner, winner]
    async with uow_factory() as uow:
        assert await uow.commands.list(project_id) == [winner]


async def test_a_key_is_free_again_when_its_first_create_rolls_back(
    isolating_uow_factory: UnitOfWorkFactory,
) -> None:
    """A create waiting on another transaction's key creates its own if that one rolls back."""
    uow_factory = isolating_uow_factory
    project_id = await new_project(uow_factory)
    first, second = make(project_id, key="k"), make(project_id, key="k")
    inserted = anyio.Event()
    outcome: list[tuple[Command, bool]] = []

    async def abandon() -> None:
        async with uow_factory() as uow:
            await uow.commands.create(first)
            inserted.set()
            await anyio.sleep(0.1)
            await uow.rollback()

    async def create() -> None:
        await inserted.wait()
        async with uow_factory() as uow:
            outcome.append(await uow.commands.create(second))
            await uow.commit()

    async with anyio.create_task_group() as group:
        group.start_soon(abandon)
        group.start_soon(create)
    assert outcome == [(second, True)]
    async with uow_factory() as uow:
        assert await uow.commands.list(project_id) == [second]


async def test_save_with_an_expected_status_is_a_compare_and_set(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Of two brains claiming one pending command, only the first stores its claim."""
    project_id = await new_project(uow_factory)
    command = make(project_id)
    await store(uow_factory, command)
    first = command.deliver("agent-1", at(1))
    second = command.deliver("agent-2", at(2))
    async with uow_factory() as uow:
        assert await uow.commands.save(first, expected=CommandStatus.PENDING) is True
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.commands.save(second, expected=CommandStatus.PENDING) is False
        await uow.commit()
    assert await stored(uow_factory, command) == first
    acked = first.acknowledge(at(3))
    async with uow_factory() as uow:
        assert await uow.commands.save(acked, expected=CommandStatus.DELIVERED) is True
        await uow.commit()
    done = acked.finish(at(4), result={})
    async with uow_factory() as uow:
        assert await uow.commands.save(done, expected=CommandStatus.ACKED) is True
        await uow.commit()
    # Finished never moves, not even when the caller expects the finished status.
    async with uow_factory() as uow:
        late = attrs.evolve(done, error="late", status=CommandStatus.FAILED)
        assert await uow.commands.save(late, expected=CommandStatus.SUCCEEDED) is False
        await uow.commit()
    assert await stored(uow_factory, command) == done
