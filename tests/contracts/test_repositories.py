"""The repository contract: every backend (in-memory fake, SQLite, PostgreSQL) behaves the same.

Each test takes ``uow_factory`` and so runs once per backend. The in-memory
fake and the domain's pure fold are the reference semantics.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from z4j_domain.canvas import MAX_ROUNDS
from z4j_domain.errors import Conflict, InvalidInput
from z4j_domain.ports import UnitOfWorkFactory
from z4j_domain.queries import QueueCount, TaskCursor, TaskFilter, TaskQuery
from z4j_domain.stats import aggregate, bucket_start
from z4j_domain.tasks import EventKind, Task, TaskEvent, TaskState, fold
from z4j_domain.users import Agent
from z4j_domain.workers import Worker, WorkerStatus

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_slugs = itertools.count(1)


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


async def new_project(factory: UnitOfWorkFactory, slug: str | None = None) -> int:
    """Create (and commit) a project; return its id."""
    async with factory() as uow:
        project = await uow.projects.create(
            slug=slug or f"p{next(_slugs)}", name="Project", created_at=T0
        )
        await uow.commit()
    return project.id


def lifecycle(
    task_id: str,
    start: float,
    *,
    name: str = "app.tasks.add",
    queue: str | None = "default",
    worker: str = "celery@w1",
    outcome: EventKind = EventKind.SUCCEEDED,
) -> list[TaskEvent]:
    """The four events of a task that runs once: sent, received, started, ``outcome``."""
    return [
        TaskEvent(
            id=f"{task_id}:sent",
            task_id=task_id,
            kind=EventKind.SENT,
            timestamp=at(start),
            name=name,
            queue=queue,
            args=[1, {"nested": [True, None, 2.5]}],
            kwargs={"text": "héllo", "n": 3},
            root_id=task_id,
        ),
        TaskEvent(
            id=f"{task_id}:received",
            task_id=task_id,
            kind=EventKind.RECEIVED,
            timestamp=at(start + 0.001),
            name=name,
            worker=worker,
            clock=2,
        ),
        TaskEvent(
            id=f"{task_id}:started",
            task_id=task_id,
            kind=EventKind.STARTED,
            timestamp=at(start + 0.002),
            worker=worker,
            clock=3,
        ),
        TaskEvent(
            id=f"{task_id}:{outcome.value}",
            task_id=task_id,
            kind=outcome,
            timestamp=at(start + 0.5),
            worker=worker,
            clock=4,
            result={"value": 3} if outcome is EventKind.SUCCEEDED else None,
            exception="ValueError('boom')" if outcome is EventKind.FAILED else None,
            traceback="Traceback ...\nValueError: boom" if outcome is EventKind.FAILED else None,
            runtime=0.498,
        ),
    ]


def expected_tasks(events: Sequence[TaskEvent]) -> dict[str, Task]:
    """The reference: the domain's pure fold of each task's (unique) events."""
    unique = {event.id: event for event in reversed(events)}
    by_task: dict[str, list[TaskEvent]] = {}
    for event in unique.values():
        by_task.setdefault(event.task_id, []).append(event)
    result = {}
    for task_id, task_events in by_task.items():
        task = fold(task_events)
        assert task is not None
        result[task_id] = task
    return result


async def apply(
    factory: UnitOfWorkFactory, project_id: int, events: Sequence[TaskEvent]
) -> list[Task]:
    """Apply one batch in its own committed unit of work."""
    async with factory() as uow:
        changed = await uow.tasks.apply_events(project_id, events)
        await uow.commit()
    return list(changed)


async def all_tasks(factory: UnitOfWorkFactory, project_id: int) -> dict[str, Task]:
    """Every task of the project, through the list's pages."""
    found: dict[str, Task] = {}
    cursor = None
    async with factory() as uow:
        while True:
            page = await uow.tasks.list(project_id, TaskQuery(limit=500, cursor=cursor))
            found.update((task.id, task) for task in page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor


# -- apply_events -------------------------------------------------------------------------


async def test_apply_events_stores_the_domain_fold(uow_factory: UnitOfWorkFactory) -> None:
    """Folded and stored tasks equal the pure fold, field by field, bookkeeping included."""
    project = await new_project(uow_factory)
    events = lifecycle("t1", 0) + lifecycle("t2", 1, outcome=EventKind.FAILED, queue=None)
    changed = await apply(uow_factory, project, events)
    expected = expected_tasks(events)
    assert {task.id: task for task in changed} == expected
    async with uow_factory() as uow:
        for task_id, task in expected.items():
            assert await uow.tasks.get(project, task_id) == task


async def test_payloads_no_database_accepts_raw_are_stored_in_their_storable_form(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """NaN, infinities and NUL in one task's payload do not fail the batch on any backend."""
    project = await new_project(uow_factory)
    odd = TaskEvent(
        id="odd-1",
        task_id="odd",
        kind=EventKind.FAILED,
        timestamp=at(1),
        args=[float("nan"), "a\x00b"],
        kwargs={"limit": float("inf")},
        result={"x": float("-inf")},
        exception="Boom\x00",
        traceback="Traceback\x00",
    )
    plain = TaskEvent(id="plain-1", task_id="plain", kind=EventKind.SENT, timestamp=at(1))
    await apply(uow_factory, project, [odd, plain])
    stored = await all_tasks(uow_factory, project)
    assert set(stored) == {"odd", "plain"}
    assert stored["odd"].args == ["NaN", "a\ufffdb"]
    assert stored["odd"].kwargs == {"limit": "Infinity"}
    assert stored["odd"].result == {"x": "-Infinity"}
    assert stored["odd"].exception == "Boom\ufffd"
    async with uow_factory() as uow:
        (event,) = await uow.events.timeline(project, "odd")
    assert event == odd


async def test_apply_events_in_reverse_order_gives_the_same_task(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A late `received` after `succeeded`, one event per batch, does not regress the state."""
    project = await new_project(uow_factory)
    events = lifecycle("t1", 0)
    for event in reversed(events):
        await apply(uow_factory, project, [event])
    async with uow_factory() as uow:
        task = await uow.tasks.get(project, "t1")
    assert task == expected_tasks(events)["t1"]
    assert task is not None
    assert task.state is TaskState.SUCCEEDED


async def test_duplicates_within_a_batch_are_ignored(uow_factory: UnitOfWorkFactory) -> None:
    """An event repeated in one batch is recorded and folded once."""
    project = await new_project(uow_factory)
    events = lifecycle("t1", 0)
    changed = await apply(uow_factory, project, events + events[::-1])
    assert changed == [expected_tasks(events)["t1"]]
    async with uow_factory() as uow:
        assert len(await uow.events.timeline(project, "t1")) == 4


async def test_duplicates_across_batches_are_ignored(uow_factory: UnitOfWorkFactory) -> None:
    """A batch delivered again changes nothing and returns no task."""
    project = await new_project(uow_factory)
    events = lifecycle("t1", 0) + lifecycle("t2", 1)
    await apply(uow_factory, project, events)
    assert await apply(uow_factory, project, events) == []
    assert await apply(uow_factory, project, events[2:3]) == []
    assert await all_tasks(uow_factory, project) == expected_tasks(events)
    async with uow_factory() as uow:
        assert len(await uow.events.timeline(project, "t1")) == 4


async def test_apply_events_returns_each_changed_task_once(uow_factory: UnitOfWorkFactory) -> None:
    """Many events of one task in a batch give one task, in its final state."""
    project = await new_project(uow_factory)
    events = lifecycle("t1", 0) + lifecycle("t2", 5)
    changed = await apply(uow_factory, project, events)
    assert sorted(task.id for task in changed) == ["t1", "t2"]
    assert {task.state for task in changed} == {TaskState.SUCCEEDED}


async def test_a_new_event_that_changes_nothing_returns_no_task(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A new event whose content the task already has is recorded but changes no task."""
    project = await new_project(uow_factory)
    first = TaskEvent(id="e2", task_id="t1", kind=EventKind.SENT, timestamp=at(0))
    # Same kind and time, lower event id: it neither decides the state nor adds a field.
    echo = TaskEvent(id="e1", task_id="t1", kind=EventKind.SENT, timestamp=at(0))
    await apply(uow_factory, project, [first])
    assert await apply(uow_factory, project, [echo]) == []
    async with uow_factory() as uow:
        assert [e.id for e in await uow.events.timeline(project, "t1")] == ["e1", "e2"]


async def test_apply_events_with_nothing(uow_factory: UnitOfWorkFactory) -> None:
    """An empty batch is fine and changes nothing."""
    project = await new_project(uow_factory)
    assert await apply(uow_factory, project, []) == []


async def test_retry_attempt_restarts_the_task(uow_factory: UnitOfWorkFactory) -> None:
    """A higher delivery attempt starts the task again, even after a terminal state."""
    project = await new_project(uow_factory)
    events = [
        *lifecycle("t1", 0, outcome=EventKind.FAILED),
        TaskEvent(
            id="t1:retry-started",
            task_id="t1",
            kind=EventKind.STARTED,
            timestamp=at(10),
            attempt=1,
            worker="celery@w2",
            retries=1,
        ),
    ]
    await apply(uow_factory, project, events)
    async with uow_factory() as uow:
        task = await uow.tasks.get(project, "t1")
    assert task == expected_tasks(events)["t1"]
    assert task is not None
    assert (task.state, task.worker, task.attempt) == (TaskState.STARTED, "celery@w2", 1)


async def test_values_round_trip(uow_factory: UnitOfWorkFactory) -> None:
    """Datetimes in other offsets, JSON documents and long texts come back equal."""
    project = await new_project(uow_factory)
    plus_two = timezone(timedelta(hours=2))
    event = TaskEvent(
        id="e1",
        task_id="t1",
        kind=EventKind.FAILED,
        timestamp=datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=plus_two),
        attempt=3,
        clock=2**40,
        name="app.tasks.ünïcode",
        queue="q",
        routing_key="rk",
        worker="celery@host",
        args=[[], {}, "", 0, -1, 1.5, True, False, None, "☃", {"a": {"b": [1, 2]}}],
        kwargs={"deep": {"list": [None, {"x": "y"}]}, "empty": {}},
        result="just a string",
        exception="KeyError('x')",
        traceback="x" * 20_000,
        runtime=1.25,
        retries=3,
        eta=datetime(2026, 3, 1, 13, 0, tzinfo=plus_two),
        expires=datetime(2026, 3, 2, tzinfo=UTC),
        root_id="root",
        parent_id="parent",
        group_id="group",
        chord_id="chord",
        retry_of="original",
    )
    changed = await apply(uow_factory, project, [event])
    expected = expected_tasks([event])["t1"]
    assert changed == [expected]
    async with uow_factory() as uow:
        stored = await uow.tasks.get(project, "t1")
        timeline = await uow.events.timeline(project, "t1")
    assert stored == expected
    assert stored is not None
    assert stored.first_seen_at.tzinfo is UTC
    assert timeline == [event]


@pytest.mark.parametrize(
    "result", [1.0, 2**70, -1, "1", True, None, [1.5, "x"], {"n": 10**20}, 0.1], ids=repr
)
async def test_json_values_keep_their_type(uow_factory: UnitOfWorkFactory, result: object) -> None:
    """JSON documents come back as they went in: 1.0 stays a float, big integers stay exact."""
    project = await new_project(uow_factory)
    event = TaskEvent(
        id="e1", task_id="t1", kind=EventKind.SUCCEEDED, timestamp=at(0), result=result
    )
    await apply(uow_factory, project, [event])
    async with uow_factory() as uow:
        task = await uow.tasks.get(project, "t1")
        page = await uow.tasks.list(project, TaskQuery())
    assert task is not None
    assert repr(task.result) == repr(result)
    assert repr(page.items[0].result) == repr(result)


async def test_get_unknown_task(uow_factory: UnitOfWorkFactory) -> None:
    """Asking for a task that does not exist gives None."""
    project = await new_project(uow_factory)
    async with uow_factory() as uow:
        assert await uow.tasks.get(project, "nope") is None


async def test_get_many_reads_the_tasks_that_exist(uow_factory: UnitOfWorkFactory) -> None:
    """Several ids at once: the stored tasks of this project, each once; unknown ids left out."""
    project = await new_project(uow_factory)
    other = await new_project(uow_factory)
    events = _catalogue()
    await apply(uow_factory, project, events)
    await apply(uow_factory, other, events)
    expected = expected_tasks(events)
    wanted = sorted(expected)[:3]
    async with uow_factory() as uow:
        found = await uow.tasks.get_many(project, [*wanted, wanted[0], "nope"])
        assert await uow.tasks.get_many(project, []) == []
        assert await uow.tasks.get_many(project, ["nope"]) == []
    assert sorted(task.id for task in found) == wanted
    async with uow_factory() as uow:
        for task in found:
            assert task == await uow.tasks.get(project, task.id)


_TASK_IDS = ("t1", "t2", "t3")


@st.composite
def event_sets(draw: st.DrawFn) -> list[TaskEvent]:
    """Events of a few tasks with colliding attempts, clocks and times, each id once."""
    count = draw(st.integers(min_value=1, max_value=14))
    events = []
    for index in range(count):
        events.append(
            TaskEvent(
                id=f"e{index}",
                task_id=draw(st.sampled_from(_TASK_IDS)),
                kind=draw(st.sampled_from(EventKind)),
                timestamp=at(draw(st.integers(min_value=0, max_value=3))),
                attempt=draw(st.integers(min_value=0, max_value=2)),
                clock=draw(st.integers(min_value=0, max_value=2)),
                name=draw(st.sampled_from([None, "a", "b"])),
                queue=draw(st.sampled_from([None, "q1", "q2"])),
                worker=draw(st.sampled_from([None, "w1", "w2"])),
                args=draw(st.sampled_from([None, [1], [2, "x"]])),
                result=draw(st.sampled_from([None, 1, {"r": [1]}])),
                retries=draw(st.sampled_from([None, 0, 1])),
                retry_of=draw(st.sampled_from([None, None, "o1", "o2"])),
            )
        )
    return events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[TaskEvent], list[list[TaskEvent]]]:
    """Events, and the batches they arrive in: any order, any split, some delivered twice."""
    events = draw(event_sets())
    stream = draw(st.permutations(events)) + draw(st.lists(st.sampled_from(events), max_size=4))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    batches = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    return events, batches


# Everything is drawn before the test runs: drawing inside a coroutine lets
# hypothesis' internal stop signal escape through the event loop.
@given(delivery=deliveries())
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_any_batch_split_and_order_gives_the_same_tasks(
    uow_factory: UnitOfWorkFactory, delivery: tuple[list[TaskEvent], list[list[TaskEvent]]]
) -> None:
    """Whatever the order, batching and redelivery, the stored tasks are the pure fold."""
    events, batches = delivery
    project = await new_project(uow_factory)
    changed: dict[str, Task] = {}
    for batch in batches:
        for task in await apply(uow_factory, project, batch):
            changed[task.id] = task
    expected = expected_tasks(events)
    assert await all_tasks(uow_factory, project) == expected
    # The last returned version of every task is its stored state.
    assert changed == expected
    # The statistics kept with every write are the aggregate of the final tasks.
    await assert_stats(uow_factory, project, expected.values())


async def assert_stats(factory: UnitOfWorkFactory, project_id: int, tasks: Iterable[Task]) -> None:
    """The project's statistics are exactly the aggregate of ``tasks``."""
    expected = aggregate(tasks)
    async with factory() as uow:
        assert dict(await uow.tasks.state_counts(project_id)) == expected.states
        finishes = await uow.tasks.finish_counts(project_id, datetime.min.replace(tzinfo=UTC))
    assert {(c.minute, c.state): c.count for c in finishes} == expected.finishes
    assert [(c.minute, c.state) for c in finishes] == sorted(expected.finishes)


# -- list, cursor, counts ------------------------------------------------------------------


def _catalogue() -> list[TaskEvent]:
    """Tasks for every filter: names with LIKE wildcards, mixed case, queues, states, retries."""
    events: list[TaskEvent] = []
    names = ["app.Reports.Build", "app.mail.send", "100%_done", "app.mail.send_bulk", "ÄPP.ünï"]
    outcomes = [EventKind.SUCCEEDED, EventKind.FAILED, EventKind.REVOKED]

    def task_id_of(index: int) -> str:
        return f"{'ab' if index % 2 else 'AB'}{index:02d}{'%' if index % 5 == 0 else '_'}"

    for index in range(24):
        task_id = task_id_of(index)
        task_events = lifecycle(
            task_id,
            # Pairs of tasks share a first_seen_at, so ties are ordered by id.
            index // 2,
            name=names[index % len(names)],
            queue=[None, "default", "mail"][index % 3],
            worker=f"celery@w{index % 2}",
            outcome=outcomes[index % 3],
        )
        if index % 4 == 1:
            # Some retry an earlier task; only their sent event (always kept) says so.
            sent = attrs.evolve(task_events[0], retry_of=task_id_of(index // 8 * 8))
            task_events = [sent, *task_events[1:]]
        # Leave some tasks unfinished, in different states.
        events.extend(task_events[: 4 - index % 4] if index % 7 else task_events)
    return events


_FILTERS = [
    TaskFilter(),
    TaskFilter(states=[TaskState.FAILED]),
    TaskFilter(states=[TaskState.PENDING, TaskState.STARTED, TaskState.SUCCEEDED]),
    TaskFilter(name="app.mail.send"),
    TaskFilter(queue="mail"),
    TaskFilter(worker="celery@w1"),
    TaskFilter(since=at(3)),
    TaskFilter(until=at(3)),
    TaskFilter(since=at(2), until=at(9.5)),
    TaskFilter(text="MAIL"),
    TaskFilter(text="reports.b"),
    TaskFilter(text="ab1"),
    TaskFilter(text="AB0"),
    TaskFilter(text="%"),
    TaskFilter(text="_"),
    TaskFilter(text="0%_"),
    TaskFilter(text="ab01_"),
    TaskFilter(text="äpp"),
    TaskFilter(text="nothing matches this"),
    TaskFilter(retry_of="AB00%"),
    TaskFilter(retry_of="AB08_"),
    TaskFilter(retry_of="AB08_", states=[TaskState.FAILED, TaskState.STARTED]),
    TaskFilter(retry_of="ab08_"),  # ids are case-sensitive
    TaskFilter(states=[TaskState.SUCCEEDED], queue="default", text="app"),
]


@pytest.mark.parametrize("selection", _FILTERS, ids=repr)
async def test_list_filters_like_the_reference(
    uow_factory: UnitOfWorkFactory, selection: TaskFilter
) -> None:
    """Each filter selects exactly what TaskFilter.matches selects, newest first."""
    project = await new_project(uow_factory)
    events = _catalogue()
    await apply(uow_factory, project, events)
    reference = sorted(
        (task for task in expected_tasks(events).values() if selection.matches(task)),
        key=lambda task: (task.first_seen_at, task.id),
        reverse=True,
    )
    async with uow_factory() as uow:
        page = await uow.tasks.list(project, TaskQuery(filter=selection, limit=500))
        counted = await uow.tasks.count_matching(project, selection, 500)
        capped = await uow.tasks.count_matching(project, selection, 2)
    assert [task.id for task in page.items] == [task.id for task in reference]
    assert page.next_cursor is None
    assert (counted, capped) == (len(reference), min(2, len(reference)))


@pytest.mark.parametrize("limit", [1, 3, 7, 24])
@pytest.mark.parametrize(
    "selection", [TaskFilter(), TaskFilter(states=[TaskState.SUCCEEDED, TaskState.PENDING])]
)
async def test_cursor_walks_every_page_exactly_once(
    uow_factory: UnitOfWorkFactory, limit: int, selection: TaskFilter
) -> None:
    """Following next_cursor visits each matching task once, in list order, then stops."""
    project = await new_project(uow_factory)
    events = _catalogue()
    await apply(uow_factory, project, events)
    reference = sorted(
        (task.id for task in expected_tasks(events).values() if selection.matches(task)),
        key=lambda task_id: (expected_tasks(events)[task_id].first_seen_at, task_id),
        reverse=True,
    )
    seen: list[str] = []
    cursor = None
    async with uow_factory() as uow:
        for _ in range(100):
            page = await uow.tasks.list(
                project, TaskQuery(filter=selection, limit=limit, cursor=cursor)
            )
            assert len(page.items) <= limit
            seen.extend(task.id for task in page.items)
            if page.next_cursor is None:
                break
            assert len(page.items) == limit
            assert page.next_cursor == TaskCursor.after(page.items[-1])
            cursor = page.next_cursor
    assert seen == reference


async def test_cursor_from_the_api_round_trips(uow_factory: UnitOfWorkFactory) -> None:
    """An encoded and decoded cursor continues where the page ended."""
    project = await new_project(uow_factory)
    await apply(uow_factory, project, _catalogue())
    async with uow_factory() as uow:
        first = await uow.tasks.list(project, TaskQuery(limit=5))
        assert first.next_cursor is not None
        cursor = TaskCursor.decode(first.next_cursor.encode())
        second = await uow.tasks.list(project, TaskQuery(limit=5, cursor=cursor))
        both = await uow.tasks.list(project, TaskQuery(limit=10))
    assert [t.id for t in first.items + list(second.items)] == [t.id for t in both.items]


async def test_list_of_an_empty_project(uow_factory: UnitOfWorkFactory) -> None:
    """No tasks: an empty page and no next cursor."""
    project = await new_project(uow_factory)
    async with uow_factory() as uow:
        page = await uow.tasks.list(project, TaskQuery())
    assert list(page.items) == []
    assert page.next_cursor is None


async def test_list_exactly_one_page(uow_factory: UnitOfWorkFactory) -> None:
    """When the tasks exactly fill the page there is no next cursor."""
    project = await new_project(uow_factory)
    await apply(uow_factory, project, lifecycle("t1", 0) + lifecycle("t2", 1))
    async with uow_factory() as uow:
        page = await uow.tasks.list(project, TaskQuery(limit=2))
    assert [task.id for task in page.items] == ["t2", "t1"]
    assert page.next_cursor is None


def _retry(task_id: str, start: float, retry_of: str, *, carrier: str = "sent") -> list[TaskEvent]:
    """A task z4j re-published from ``retry_of``; only the ``carrier`` event says so."""
    return [
        attrs.evolve(event, retry_of=retry_of if event.kind.value == carrier else None)
        for event in lifecycle(task_id, start)
    ]


async def test_retries_lists_the_tasks_that_retried_one_oldest_first(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """retries() finds tasks by retry_of, ordered by (first_seen_at, id), in one project only."""
    project = await new_project(uow_factory)
    other = await new_project(uow_factory)
    events = [
        *lifecycle("orig", 0, outcome=EventKind.FAILED),
        *_retry("r-late", 5, "orig"),
        *_retry("r-b", 3, "orig", carrier="received"),
        *_retry("r-a", 3, "orig", carrier="succeeded"),
        # A retry of a retry belongs to the task it retried.
        *_retry("rr", 6, "r-late"),
    ]
    # retry_of arrives in a later batch than the task's first event: it still links.
    await apply(uow_factory, project, events[::2])
    await apply(uow_factory, project, events[1::2])
    await apply(uow_factory, other, _retry("elsewhere", 1, "orig"))
    expected = expected_tasks(events)
    async with uow_factory() as uow:
        retries = await uow.tasks.retries(project, "orig")
        assert [task.id for task in retries] == ["r-a", "r-b", "r-late"]
        assert list(retries) == [expected["r-a"], expected["r-b"], expected["r-late"]]
        assert [t.id for t in await uow.tasks.retries(project, "orig", limit=2)] == ["r-a", "r-b"]
        assert [t.id for t in await uow.tasks.retries(project, "r-late")] == ["rr"]
        assert list(await uow.tasks.retries(project, "r-a")) == []
        assert list(await uow.tasks.retries(project, "unknown")) == []
        assert [t.id for t in await uow.tasks.retries(other, "orig")] == ["elsewhere"]
        with pytest.raises(InvalidInput):
            await uow.tasks.retries(project, "orig", limit=0)
    stored = await all_tasks(uow_factory, project)
    assert stored["orig"].retry_of is None
    assert stored["r-a"].retry_of == "orig"


def _in_canvas(
    task_id: str,
    start: float,
    root_id: str | None,
    *,
    parent_id: str | None = None,
    group_id: str | None = None,
    chord_id: str | None = None,
) -> list[TaskEvent]:
    """A task's lifecycle whose sent event carries its canvas links."""
    links = {"root_id": root_id, "parent_id": parent_id, "group_id": group_id, "chord_id": chord_id}
    return [
        attrs.evolve(event, **links) if event.kind is EventKind.SENT else event
        for event in lifecycle(task_id, start)
    ]


def _chord_from_outside(prefix: str, start: float, headers: int = 3) -> list[TaskEvent]:
    """``chord([add] * headers)(total)`` applied outside any task, as a real worker stores it.

    Each header task is a root of its own; the callback names the header that
    finished last as its root and parent, and carries the header's group id.
    """
    group, callback = f"{prefix}-G", f"{prefix}-cb"
    header_ids = [f"{prefix}-h{n}" for n in range(1, headers + 1)]
    events = [
        event
        for n, header in enumerate(header_ids)
        for event in _in_canvas(header, start + n, header, group_id=group, chord_id=callback)
    ]
    last = header_ids[-1]
    return [
        *events,
        *_in_canvas(callback, start + headers, last, parent_id=last, group_id=group),
    ]


async def _canvas_ids(
    factory: UnitOfWorkFactory, project: int, task_id: str, limit: int = 100
) -> list[str]:
    async with factory() as uow:
        return [task.id for task in await uow.tasks.canvas(project, task_id, limit)]


async def _apply_in_two_batches(
    factory: UnitOfWorkFactory, project: int, events: Sequence[TaskEvent]
) -> None:
    """Every other event first: a link may arrive in a later batch than the task."""
    await apply(factory, project, events[1::2])
    await apply(factory, project, events[::2])


async def test_canvas_of_a_chord_applied_from_outside_a_task_is_whole_from_any_of_its_tasks(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Header tasks that are their own roots are found through the group and the callback."""
    project = await new_project(uow_factory)
    other = await new_project(uow_factory)
    events = _chord_from_outside("c", 1)
    # Unrelated: another chord applied from outside, a lone task, a group's lone member.
    unrelated = [
        *_chord_from_outside("d", 0, headers=2),
        *_in_canvas("alone", 2, "alone"),
        *_in_canvas("solo", 3, "solo", group_id="solo-G"),
    ]
    await _apply_in_two_batches(uow_factory, project, [*events, *unrelated])
    # The same ids in another project are another canvas.
    await apply(uow_factory, other, _chord_from_outside("c", 5, headers=2))
    expected = expected_tasks(events)
    whole = ["c-h1", "c-h2", "c-h3", "c-cb"]
    for task_id in whole:
        assert await _canvas_ids(uow_factory, project, task_id) == whole, task_id
    async with uow_factory() as uow:
        assert list(await uow.tasks.canvas(project, "c-h2", 100)) == [expected[i] for i in whole]
    assert await _canvas_ids(uow_factory, project, "d-cb") == ["d-h1", "d-h2", "d-cb"]
    assert await _canvas_ids(uow_factory, project, "alone") == ["alone"]
    assert await _canvas_ids(uow_factory, project, "solo") == ["solo"]
    assert await _canvas_ids(uow_factory, other, "c-h1") == ["c-h1", "c-h2", "c-cb"]
    assert await _canvas_ids(uow_factory, project, "nobody") == []


async def test_canvas_of_a_group_applied_from_outside_a_task(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """``group([add] * 3)()`` outside a task: three roots, one group id, one canvas."""
    project = await new_project(uow_factory)
    members = ["g-m1", "g-m2", "g-m3"]
    events = [
        event
        for n, member in enumerate(members)
        for event in _in_canvas(member, n, member, group_id="g-G")
    ]
    # Another group applied from outside, with members at the same times.
    others = [
        event
        for n, member in enumerate(["k-m1", "k-m2"])
        for event in _in_canvas(member, n, member, group_id="k-G")
    ]
    await _apply_in_two_batches(uow_factory, project, [*events, *others])
    for member in members:
        assert await _canvas_ids(uow_factory, project, member) == members
    assert await _canvas_ids(uow_factory, project, "k-m2") == ["k-m1", "k-m2"]


async def test_canvas_of_chains_with_a_chord_inside(uow_factory: UnitOfWorkFactory) -> None:
    """``a | chord([b] * 3, c) | d`` and ``chord([h] * 2, cb) | n``, applied from outside.

    In the first every task names ``a`` as root; in the second the header
    tasks are their own roots and the rest of the chain names the callback's.
    Tasks naming no root at all are their own roots too.
    """
    project = await new_project(uow_factory)
    headers = ["a-b1", "a-b2", "a-b3"]
    first = [
        *_in_canvas("a", 0, "a"),
        *(
            event
            for n, header in enumerate(headers)
            for event in _in_canvas(
                header, 1 + n / 10, "a", parent_id="a", group_id="a-G", chord_id="a-c"
            )
        ),
        *_in_canvas("a-c", 2, "a", parent_id="a-b3", group_id="a-G"),
        *_in_canvas("a-d", 3, "a", parent_id="a-c"),
    ]
    second = [
        *_chord_from_outside("s", 4, headers=2),
        *_in_canvas("s-n", 7, "s-h2", parent_id="s-cb"),
    ]
    legacy = [*_in_canvas("q", 8, None), *_in_canvas("q-child", 9, "q", parent_id="q")]
    await _apply_in_two_batches(uow_factory, project, [*first, *second, *legacy])
    for task_id in ("a", "a-b2", "a-c", "a-d"):
        assert await _canvas_ids(uow_factory, project, task_id) == [
            "a",
            "a-b1",
            "a-b2",
            "a-b3",
            "a-c",
            "a-d",
        ]
    for task_id in ("s-h1", "s-h2", "s-cb", "s-n"):
        assert await _canvas_ids(uow_factory, project, task_id) == [
            "s-h1",
            "s-h2",
            "s-cb",
            "s-n",
        ]
    for task_id in ("q", "q-child"):
        assert await _canvas_ids(uow_factory, project, task_id) == ["q", "q-child"]


async def test_canvas_links_to_tasks_not_stored_lead_nowhere(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A root, parent or callback that was never stored is not a task of the canvas, and the
    tasks linked through it are still found (here a chord whose callback is not sent yet)."""
    project = await new_project(uow_factory)
    events = [
        *_in_canvas("o-1", 0, "ghost", parent_id="ghost"),
        *_in_canvas("o-2", 1, "ghost", parent_id="o-1", group_id="o-G", chord_id="o-cb"),
        *_in_canvas("o-3", 2, "o-3", group_id="o-G", chord_id="o-cb"),
    ]
    await apply(uow_factory, project, events)
    for task_id in ("o-1", "o-2", "o-3"):
        assert await _canvas_ids(uow_factory, project, task_id) == ["o-1", "o-2", "o-3"]


async def test_canvas_stops_at_the_limit_nearest_rounds_first_oldest_first_within_one(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """At most ``limit`` tasks: the task, then each round's new tasks oldest first while they fit.

    Asking for one more than is drawn therefore still tells a canvas that was cut.
    """
    project = await new_project(uow_factory)
    # A chord applied from outside with five header tasks; the callback came first
    # in time (its first event was seen before the headers' ones).
    events = [*_chord_from_outside("w", 10, headers=5)]
    events = [
        attrs.evolve(event, timestamp=at(0)) if event.id == "w-cb:sent" else event
        for event in events
    ]
    await apply(uow_factory, project, events)
    # From the callback, one round finds the five headers: the oldest two fit.
    assert await _canvas_ids(uow_factory, project, "w-cb", limit=3) == ["w-cb", "w-h1", "w-h2"]
    # From the youngest header, the first round finds all the others.
    assert await _canvas_ids(uow_factory, project, "w-h5", limit=3) == ["w-cb", "w-h1", "w-h5"]
    # The task itself is always there, however small the limit.
    assert await _canvas_ids(uow_factory, project, "w-h4", limit=1) == ["w-h4"]
    assert len(await _canvas_ids(uow_factory, project, "w-h4", limit=6)) == 6
    assert len(await _canvas_ids(uow_factory, project, "w-h4", limit=7)) == 6
    async with uow_factory() as uow:
        with pytest.raises(InvalidInput):
            await uow.tasks.canvas(project, "w-cb", limit=0)
        with pytest.raises(InvalidInput):
            await uow.tasks.canvas(project, "nobody", limit=0)


async def test_canvas_gathers_in_rounds_up_to_the_round_limit(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """Bad link data: a line of parents, each its own root, is walked one round per step, and
    no further than ``MAX_ROUNDS`` rounds.

    Upwards only: a task's children are found through the root Celery gives
    them, and these name none but their own.
    """
    project = await new_project(uow_factory)
    length = MAX_ROUNDS + 3
    line = [f"line-{n:03d}" for n in range(length)]
    events = [
        event
        for n, task_id in enumerate(line)
        for event in _in_canvas(task_id, n, task_id, parent_id=line[n - 1] if n else None)
    ]
    await apply(uow_factory, project, events)
    assert await _canvas_ids(uow_factory, project, line[-1], limit=1000) == line[-MAX_ROUNDS - 1 :]
    assert await _canvas_ids(uow_factory, project, line[5], limit=1000) == line[:6]


async def test_queue_counts(uow_factory: UnitOfWorkFactory) -> None:
    """Counts per (queue, state), ordered by queue then state, zero counts omitted."""
    project = await new_project(uow_factory)
    events = _catalogue()
    await apply(uow_factory, project, events)
    counts: dict[tuple[str | None, TaskState], int] = {}
    for task in expected_tasks(events).values():
        counts[task.queue, task.state] = counts.get((task.queue, task.state), 0) + 1
    expected = [
        QueueCount(queue=queue, state=state, count=n)
        for (queue, state), n in sorted(counts.items(), key=lambda i: (i[0][0] or "", i[0][1]))
    ]
    async with uow_factory() as uow:
        assert list(await uow.tasks.queue_counts(project)) == expected
        assert all(count.count > 0 for count in expected)
        assert list(await uow.tasks.queue_counts(project + 1000)) == []


async def test_stats_follow_every_write_and_read_from_a_minute_on(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """State and finish counts are the aggregate of the stored tasks after each batch;
    ``finish_counts`` starts at ``since``; a rolled back batch changes none of them."""
    project = await new_project(uow_factory)
    events = _catalogue()
    applied: list[TaskEvent] = []
    for start in range(0, len(events), 17):
        batch = events[start : start + 17]
        await apply(uow_factory, project, batch)
        applied.extend(batch)
        await assert_stats(uow_factory, project, expected_tasks(applied).values())
    # A later attempt starts two finished tasks again: they leave their minute.
    again = [
        TaskEvent(
            id=f"again-{i}", task_id=task_id, kind=EventKind.STARTED, timestamp=at(60), attempt=1
        )
        for i, task_id in enumerate(["AB00%", "ab01_"])
    ]
    await apply(uow_factory, project, again)
    applied.extend(again)
    await assert_stats(uow_factory, project, expected_tasks(applied).values())
    async with uow_factory() as uow:
        await uow.tasks.apply_events(project, lifecycle("rolled-back", 30))
        # Leaving without commit discards the tasks and their counts together.
    await assert_stats(uow_factory, project, expected_tasks(applied).values())
    async with uow_factory() as uow:
        # The catalogue's tasks all finish in T0's minute; a minute is read if it
        # starts at ``since`` or later.
        assert [c.minute for c in await uow.tasks.finish_counts(project, T0)] != []
        assert list(await uow.tasks.finish_counts(project, at(1))) == []
        assert dict(await uow.tasks.state_counts(project + 1000)) == {}
        assert list(await uow.tasks.finish_counts(project + 1000, T0)) == []


@pytest.mark.parametrize("step_minutes", [1, 2, 15, 60])
@pytest.mark.parametrize("since_offset", [timedelta(0), timedelta(seconds=-89.5)])
async def test_finish_counts_are_summed_per_step_from_since(
    uow_factory: UnitOfWorkFactory, step_minutes: int, since_offset: timedelta
) -> None:
    """Buckets of ``step`` counted from ``since`` (even one off the minute) hold the sums
    of their minutes, as :func:`~z4j_domain.stats.bucket_start` places them."""
    project = await new_project(uow_factory)
    events = []
    for index in range(70):
        # Finishes spread over 70 minutes, some minutes holding several.
        events += lifecycle(
            f"t{index}",
            index * 53.0,
            outcome=[EventKind.SUCCEEDED, EventKind.FAILED, EventKind.REVOKED][index % 3],
        )
    await apply(uow_factory, project, events)
    since = T0 + timedelta(minutes=7) + since_offset
    step = timedelta(minutes=step_minutes)
    expected: dict[tuple[datetime, TaskState], int] = {}
    for (minute, state), n in aggregate(expected_tasks(events).values()).finishes.items():
        if minute >= since:
            key = (bucket_start(minute, since, step), state)
            expected[key] = expected.get(key, 0) + n
    async with uow_factory() as uow:
        found = await uow.tasks.finish_counts(project, since, step)
        with pytest.raises(InvalidInput):
            await uow.tasks.finish_counts(project, since, timedelta(seconds=90))
    assert [(c.minute, c.state, c.count) for c in found] == [
        (start, state, n) for (start, state), n in sorted(expected.items())
    ]
    assert sum(c.count for c in found) > 0


async def test_recent_failures_are_the_last_failed_tasks(uow_factory: UnitOfWorkFactory) -> None:
    """The newest failed tasks by (first_seen_at, id), as narrow samples, at most ``limit``."""
    project = await new_project(uow_factory)
    events = _catalogue()
    await apply(uow_factory, project, events)
    failed = sorted(
        (t for t in expected_tasks(events).values() if t.state is TaskState.FAILED),
        key=lambda t: (t.first_seen_at, t.id),
        reverse=True,
    )
    assert len(failed) == 3
    async with uow_factory() as uow:
        found = await uow.tasks.recent_failures(project, 2)
        everything = await uow.tasks.recent_failures(project, 1000)
        with pytest.raises(InvalidInput):
            await uow.tasks.recent_failures(project, 0)
    assert [s.task_id for s in found] == [t.id for t in failed[:2]]
    assert [(s.task_id, s.name, s.exception, s.finished_at) for s in everything] == [
        (t.id, t.name, t.exception, t.finished_at) for t in failed
    ]


async def test_count_tasks(uow_factory: UnitOfWorkFactory) -> None:
    """count() counts one project's tasks, or all of them."""
    first = await new_project(uow_factory)
    second = await new_project(uow_factory)
    await apply(uow_factory, first, lifecycle("t1", 0) + lifecycle("t2", 0))
    await apply(uow_factory, second, lifecycle("t1", 0))
    async with uow_factory() as uow:
        assert await uow.tasks.count(first) == 2
        assert await uow.tasks.count(second) == 1
        assert await uow.tasks.count() == 3


async def test_timeline_is_in_fold_order(uow_factory: UnitOfWorkFactory) -> None:
    """A task's events come back by (attempt, rank, clock, timestamp, id), whatever arrived when."""
    project = await new_project(uow_factory)
    events = [
        *lifecycle("t1", 0, outcome=EventKind.FAILED),
        TaskEvent(id="r1", task_id="t1", kind=EventKind.RECEIVED, timestamp=at(9), attempt=1),
        TaskEvent(id="s1", task_id="t1", kind=EventKind.SENT, timestamp=at(8), attempt=1),
        TaskEvent(id="l0", task_id="t1", kind=EventKind.LOST, timestamp=at(7)),
        TaskEvent(id="x", task_id="other", kind=EventKind.SENT, timestamp=at(0)),
    ]
    shuffled = events[:]
    random.Random(4).shuffle(shuffled)
    await apply(uow_factory, project, shuffled[:4])
    await apply(uow_factory, project, shuffled[4:])
    async with uow_factory() as uow:
        timeline = await uow.events.timeline(project, "t1")
        assert await uow.events.timeline(project, "unknown") == []
    assert list(timeline) == sorted((e for e in events if e.task_id == "t1"), key=lambda e: e.key)


# -- workers -------------------------------------------------------------------------------


def _worker(hostname: str, **changes: object) -> Worker:
    values: dict[str, object] = {
        "hostname": hostname,
        "status": WorkerStatus.ONLINE,
        "first_seen_at": at(0),
        "last_heartbeat_at": at(30),
        "pool": "prefork",
        "concurrency": 4,
        "active": 1,
        "processed": 10_000_000_000,
        "loadavg": (0.5, 1.0, 1.25),
        "queues": ("default", "mail"),
        "software": "celery 5.4",
    }
    values.update(changes)
    return Worker(**values)  # type: ignore[arg-type]


async def test_workers_save_get_list_count(uow_factory: UnitOfWorkFactory) -> None:
    """Workers are stored per project by hostname, replaced on save, listed by hostname."""
    project = await new_project(uow_factory)
    other = await new_project(uow_factory)
    async with uow_factory() as uow:
        await uow.workers.save(project, _worker("celery@b"))
        await uow.workers.save(project, _worker("celery@a", pool=None, loadavg=(), queues=()))
        await uow.workers.save(project, _worker("celery@b", status=WorkerStatus.OFFLINE, active=0))
        await uow.workers.save(other, _worker("celery@a"))
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.workers.get(project, "celery@b") == _worker(
            "celery@b", status=WorkerStatus.OFFLINE, active=0
        )
        assert await uow.workers.get(project, "celery@zzz") is None
        assert [w.hostname for w in await uow.workers.list(project)] == ["celery@a", "celery@b"]
        assert next(iter(await uow.workers.list(project))) == _worker(
            "celery@a", pool=None, loadavg=(), queues=()
        )
        assert await uow.workers.count(project) == 2
        assert await uow.workers.count(other) == 1
        assert await uow.workers.count() == 3
        minimal = Worker(hostname="celery@min", status="online", first_seen_at=at(1))
        await uow.workers.save(other, minimal)
        assert await uow.workers.get(other, "celery@min") == minimal


# -- projects, users, API keys, agents --------------------------------------------------------


async def test_projects(uow_factory: UnitOfWorkFactory) -> None:
    """Projects are created with fresh ids, found by slug, listed by slug, counted."""
    async with uow_factory() as uow:
        beta = await uow.projects.create(slug="beta", name="Beta", created_at=at(1))
        alpha = await uow.projects.create(slug="alpha", name="Alpha", created_at=at(2))
        await uow.commit()
    assert alpha.id != beta.id
    async with uow_factory() as uow:
        assert await uow.projects.get_by_slug("alpha") == alpha
        assert await uow.projects.get_by_slug("gamma") is None
        assert list(await uow.projects.list()) == [alpha, beta]
        assert await uow.projects.count() == 2


async def test_duplicate_project_slug_conflicts_and_the_unit_stays_usable(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A taken slug raises Conflict; the unit of work can carry on and commit."""
    await new_project(uow_factory, "taken")
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.projects.create(slug="taken", name="Again", created_at=at(0))
        await uow.projects.create(slug="other", name="Other", created_at=at(0))
        await uow.commit()
    async with uow_factory() as uow:
        assert [p.slug for p in await uow.projects.list()] == ["other", "taken"]


async def test_users(uow_factory: UnitOfWorkFactory) -> None:
    """Users are created, found by id and email, counted; a taken email conflicts."""
    async with uow_factory() as uow:
        admin = await uow.users.create(
            email="admin@example.com", password_hash="h", is_admin=True, created_at=at(0)
        )
        viewer = await uow.users.create(
            email="viewer@example.com", password_hash=None, is_admin=False, created_at=at(1)
        )
        with pytest.raises(Conflict):
            await uow.users.create(
                email="admin@example.com", password_hash=None, is_admin=False, created_at=at(2)
            )
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.users.get(admin.id) == admin
        assert await uow.users.get_by_email("viewer@example.com") == viewer
        assert await uow.users.get_by_email("nobody@example.com") is None
        assert await uow.users.get(admin.id + viewer.id + 1000) is None
        assert await uow.users.count() == 2


async def test_api_keys(uow_factory: UnitOfWorkFactory) -> None:
    """Keys belong to an existing user, are found by hash and record their last use."""
    async with uow_factory() as uow:
        user = await uow.users.create(
            email="a@example.com", password_hash=None, is_admin=False, created_at=at(0)
        )
        key = await uow.api_keys.create(
            user_id=user.id, name="ci", key_hash="f" * 64, prefix="z4j_abcd", created_at=at(1)
        )
        with pytest.raises(Conflict):
            await uow.api_keys.create(
                user_id=user.id + 1000, name="x", key_hash="e" * 64, prefix="z4j_", created_at=at(1)
            )
        await uow.commit()
    assert key.last_used_at is None
    assert key.is_active
    async with uow_factory() as uow:
        assert await uow.api_keys.get_by_hash("f" * 64) == key
        assert await uow.api_keys.get_by_hash("0" * 64) is None
        await uow.api_keys.touch(key.id, at(60))
        await uow.api_keys.touch(key.id + 1000, at(60))
        await uow.commit()
    async with uow_factory() as uow:
        touched = await uow.api_keys.get_by_hash("f" * 64)
    assert touched is not None
    assert touched.last_used_at == at(60)


async def test_agents_count_starts_at_zero(uow_factory: UnitOfWorkFactory) -> None:
    """With no agent minted, there are none to count."""
    project = await new_project(uow_factory)
    async with uow_factory() as uow:
        assert await uow.agents.count() == 0
        assert await uow.agents.count(project) == 0


async def _mint(factory: UnitOfWorkFactory, project_id: int, name: str, token_hash: str) -> Agent:
    async with factory() as uow:
        agent = await uow.agents.create(
            project_id=project_id,
            name=name,
            token_hash=token_hash,
            secret_salt=f"salt-{name}",
            created_at=at(1),
        )
        await uow.commit()
    return agent


async def test_agents_are_created_found_listed_and_counted(uow_factory: UnitOfWorkFactory) -> None:
    """Agents get fresh ids, are found by token hash and by name, listed by name."""
    project = await new_project(uow_factory)
    other = await new_project(uow_factory)
    worker = await _mint(uow_factory, project, "workers", "a" * 64)
    beat = await _mint(uow_factory, project, "beat", "b" * 64)
    elsewhere = await _mint(uow_factory, other, "workers", "c" * 64)
    assert len({worker.id, beat.id, elsewhere.id}) == 3
    assert worker.secret_salt == "salt-workers"
    assert worker.is_active
    assert worker.last_seen_at is None
    async with uow_factory() as uow:
        assert await uow.agents.get_by_token_hash("a" * 64) == worker
        assert await uow.agents.get_by_token_hash("0" * 64) is None
        assert await uow.agents.get_by_name(project, "beat") == beat
        assert await uow.agents.get_by_name(other, "beat") is None
        assert list(await uow.agents.list(project)) == [beat, worker]
        assert list(await uow.agents.list(other)) == [elsewhere]
        assert await uow.agents.count(project) == 2
        assert await uow.agents.count() == 3
        assert await uow.projects.get(project) is not None
        assert await uow.projects.get(project + other + 1000) is None


async def test_duplicate_agent_name_conflicts_and_the_unit_stays_usable(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A name taken in the project (or a missing project) raises Conflict; the unit carries on."""
    project = await new_project(uow_factory)
    await _mint(uow_factory, project, "workers", "a" * 64)
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.agents.create(
                project_id=project,
                name="workers",
                token_hash="d" * 64,
                secret_salt="s",
                created_at=at(2),
            )
        with pytest.raises(Conflict):
            await uow.agents.create(
                project_id=project + 1000,
                name="x",
                token_hash="e" * 64,
                secret_salt="s",
                created_at=at(2),
            )
        await uow.agents.create(
            project_id=project, name="beat", token_hash="f" * 64, secret_salt="s", created_at=at(2)
        )
        await uow.commit()
    async with uow_factory() as uow:
        assert [a.name for a in await uow.agents.list(project)] == ["beat", "workers"]


async def test_agents_revoke_and_touch(uow_factory: UnitOfWorkFactory) -> None:
    """Revoking keeps the agent (listed, found) but stops counting it; touch records last seen."""
    project = await new_project(uow_factory)
    agent = await _mint(uow_factory, project, "workers", "a" * 64)
    async with uow_factory() as uow:
        await uow.agents.touch(agent.id, at(30))
        await uow.agents.revoke(agent.id, at(60))
        await uow.agents.revoke(agent.id, at(90))  # the first revocation stands
        await uow.agents.revoke(agent.id + 1000, at(60))
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.agents.get_by_token_hash("a" * 64)
        assert stored is not None
        assert stored.last_seen_at == at(30)
        assert stored.revoked_at == at(60)
        assert not stored.is_active
        assert await uow.agents.count(project) == 0
        assert [a.name for a in await uow.agents.list(project)] == ["workers"]


# -- settings --------------------------------------------------------------------------------


async def test_settings(uow_factory: UnitOfWorkFactory) -> None:
    """Settings store JSON values by key: get, replace, delete."""
    value = {"retention_days": 30, "patterns": ["password", "token"], "nested": {"on": True}}
    async with uow_factory() as uow:
        assert await uow.settings.get("missing") is None
        await uow.settings.set("redaction", value)
        await uow.settings.set("flag", False)
        await uow.settings.set("number", 0)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.settings.get("redaction") == value
        assert await uow.settings.get("flag") is False
        assert await uow.settings.get("number") == 0
        await uow.settings.set("redaction", ["replaced"])
        assert await uow.settings.get("redaction") == ["replaced"]
        assert await uow.settings.delete("flag") is True
        assert await uow.settings.delete("flag") is False
        assert await uow.settings.get("flag") is None
        await uow.settings.set("number", None)
        assert await uow.settings.get("number") is None
        assert await uow.settings.delete("number") is False
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.settings.get("redaction") == ["replaced"]


async def test_settings_values_are_copies(uow_factory: UnitOfWorkFactory) -> None:
    """Changing a value after set() or after get() does not change what is stored."""
    value = {"list": [1]}
    async with uow_factory() as uow:
        await uow.settings.set("k", value)
        value["list"].append(2)
        read = await uow.settings.get("k")
        read["list"].append(3)
        assert await uow.settings.get("k") == {"list": [1]}


# -- transactions and isolation -------------------------------------------------------------


async def test_commit_makes_changes_visible(uow_factory: UnitOfWorkFactory) -> None:
    """Other units of work see changes only once they are committed."""
    project = await new_project(uow_factory)
    async with uow_factory() as writer:
        await writer.tasks.apply_events(project, lifecycle("t1", 0))
        await writer.settings.set("k", 1)
        async with uow_factory() as reader:
            assert await reader.tasks.get(project, "t1") is None
        await writer.commit()
        async with uow_factory() as reader:
            assert await reader.tasks.get(project, "t1") is not None
            assert await reader.settings.get("k") == 1


async def test_rollback_and_leaving_without_commit_discard(uow_factory: UnitOfWorkFactory) -> None:
    """rollback() discards; so does leaving the block without committing; the unit goes on."""
    project = await new_project(uow_factory)
    async with uow_factory() as uow:
        await uow.tasks.apply_events(project, lifecycle("t1", 0))
        await uow.rollback()
        assert await uow.tasks.get(project, "t1") is None
        await uow.tasks.apply_events(project, lifecycle("t2", 0))
        await uow.commit()
        await uow.tasks.apply_events(project, lifecycle("t3", 0))

    async def fail_inside() -> None:
        async with uow_factory() as uow:
            await uow.settings.set("k", 1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_inside()
    async with uow_factory() as uow:
        assert sorted((await all_tasks(uow_factory, project)).keys()) == ["t2"]
        assert await uow.settings.get("k") is None
        # The rolled-back events were not recorded: applying them again changes t1.
        assert [t.id for t in await uow.tasks.apply_events(project, lifecycle("t1", 0))] == ["t1"]


async def test_projects_are_isolated(uow_factory: UnitOfWorkFactory) -> None:
    """Tasks, events and workers of one project are never visible from another."""
    first = await new_project(uow_factory)
    second = await new_project(uow_factory)
    await apply(uow_factory, first, lifecycle("t1", 0))
    # The same event ids and task id in another project are a different task.
    other_events = lifecycle("t1", 100, name="other.name", queue="other")
    assert [t.id for t in await apply(uow_factory, second, other_events)] == ["t1"]
    await apply(uow_factory, first, lifecycle("only-first", 1))
    async with uow_factory() as uow:
        await uow.workers.save(first, _worker("celery@w"))
        assert await uow.tasks.get(second, "only-first") is None
        second_task = await uow.tasks.get(second, "t1")
        assert second_task == expected_tasks(other_events)["t1"]
        page = await uow.tasks.list(second, TaskQuery())
        assert [t.id for t in page.items] == ["t1"]
        assert [t.id for t in (await uow.tasks.list(first, TaskQuery())).items] == [
            "only-first",
            "t1",
        ]
        assert [qc.queue for qc in await uow.tasks.queue_counts(second)] == ["other"]
        assert await uow.events.timeline(second, "only-first") == []
        assert await uow.workers.get(second, "celery@w") is None
        assert await uow.workers.list(second) == []
