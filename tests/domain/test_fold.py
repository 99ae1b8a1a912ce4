"""Properties of the task fold: order, duplicates and redelivery never change the result."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import BASE_TIME, event_sets, task_events
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import (
    OUTCOME_FIELDS,
    PAYLOAD_FLAGS,
    PER_ATTEMPT_FIELDS,
    PER_TASK_FIELDS,
    EventKind,
    Task,
    TaskEvent,
    TaskState,
    apply,
    fold,
    merge,
    restore_task,
)

NON_TERMINAL = st.sampled_from([EventKind.SENT, EventKind.RECEIVED, EventKind.STARTED])
REAL_TERMINAL = st.sampled_from(
    [
        EventKind.SUCCEEDED,
        EventKind.FAILED,
        EventKind.RETRIED,
        EventKind.REVOKED,
        EventKind.REJECTED,
    ]
)


@given(data=st.data(), events=event_sets())
def test_every_arrival_order_gives_the_same_task(
    data: st.DataObject, events: list[TaskEvent]
) -> None:
    """Folding the same set of events in any order yields an identical task."""
    shuffled = data.draw(st.permutations(events))
    assert fold(shuffled) == fold(events)


@given(data=st.data(), events=event_sets())
def test_the_one_pass_fold_equals_applying_events_one_by_one(
    data: st.DataObject, events: list[TaskEvent]
) -> None:
    """fold's fast path gives exactly what apply gives, from scratch or onto a stored task."""
    one_by_one = None
    for event in events:
        one_by_one = apply(one_by_one, event)
    assert fold(events) == one_by_one
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    assert fold(events[cut:], fold(events[:cut])) == one_by_one


@given(events=event_sets(min_size=2))
def test_folding_events_of_two_tasks_together_is_refused(events: list[TaskEvent]) -> None:
    """A batch handed to fold must be one task's."""
    stray = attrs.evolve(events[-1], task_id="someone-else")
    with pytest.raises(InvalidInput):
        fold([*events[:-1], stray])


@given(data=st.data(), events=event_sets())
def test_an_event_applied_twice_changes_nothing(
    data: st.DataObject, events: list[TaskEvent]
) -> None:
    """Applying an event a second time, immediately or much later, is a no-op."""
    task = fold(events)
    assert task is not None
    again = data.draw(st.sampled_from(events))
    assert apply(task, again) == task
    redelivered = data.draw(st.lists(st.sampled_from(events), max_size=len(events) * 2))
    assert fold(events + redelivered) == task


@given(data=st.data(), events=event_sets(min_size=2))
def test_merge_of_any_split_equals_the_whole_fold(
    data: st.DataObject, events: list[TaskEvent]
) -> None:
    """Folding two halves separately and merging them equals folding everything."""
    cut = data.draw(st.integers(min_value=1, max_value=len(events) - 1))
    left, right = fold(events[:cut]), fold(events[cut:])
    assert left is not None
    assert right is not None
    assert merge(left, right) == merge(right, left) == fold(events)


@given(events=event_sets())
def test_the_state_comes_from_the_greatest_event(events: list[TaskEvent]) -> None:
    """State and outcome are those of the event with the greatest key."""
    task = fold(events)
    assert task is not None
    decider = max(events, key=lambda e: e.key)
    assert task.state == decider.kind.state
    assert task.state_key == decider.key
    assert task.attempt == max(e.attempt for e in events)
    for name in OUTCOME_FIELDS:
        expected = decider.timestamp if name == "finished_at" else getattr(decider, name)
        if name == "finished_at" and not decider.kind.state.is_terminal:
            expected = None
        assert getattr(task, name) == expected, name


@given(
    data=st.data(),
    terminal=task_events(kinds=REAL_TERMINAL, event_id="terminal"),
)
def test_late_non_terminal_events_of_the_same_attempt_never_regress_a_terminal_state(
    data: st.DataObject, terminal: TaskEvent
) -> None:
    """A received or started that arrives after the outcome leaves the outcome in place."""
    late = data.draw(
        event_sets(kinds=NON_TERMINAL, attempts=st.integers(0, terminal.attempt), min_size=1)
    )
    task = fold([terminal, *late])
    assert task is not None
    assert task.state == terminal.kind.state
    assert task.state.is_terminal


@given(data=st.data(), events=event_sets())
def test_a_later_delivery_starts_the_task_again(
    data: st.DataObject, events: list[TaskEvent]
) -> None:
    """After any history, a start of a higher attempt makes the task started again."""
    highest = max(e.attempt for e in events)
    restart = data.draw(
        task_events(
            event_id="restart",
            kinds=st.just(EventKind.STARTED),
            attempts=st.integers(highest + 1, highest + 3),
        )
    )
    task = fold([*events, restart])
    assert task is not None
    assert task.state is TaskState.STARTED
    assert task.attempt == restart.attempt
    assert task.exception == restart.exception


@given(events=event_sets())
def test_fields_survive_from_whichever_event_carried_them(events: list[TaskEvent]) -> None:
    """A field known from any event is kept; per-attempt fields come from the latest attempt."""
    task = fold(events)
    assert task is not None
    for name in PER_TASK_FIELDS:
        carried = {getattr(e, name) for e in events} - {None}
        assert (getattr(task, name) in carried) if carried else getattr(task, name) is None, name
    for name in ("queue", "routing_key", "worker", "args", "kwargs", "retries", "eta", "expires"):
        carriers = [e for e in events if getattr(e, name) is not None]
        if not carriers:
            assert getattr(task, name) is None, name
            continue
        top = max(e.attempt for e in carriers)
        assert getattr(task, name) in [getattr(e, name) for e in carriers if e.attempt == top], name
        assert task.field_attempts.get(name, 0) == top, name


@given(data=st.data(), events=event_sets())
def test_retry_of_survives_from_any_event_in_any_order(
    data: st.DataObject, events: list[TaskEvent]
) -> None:
    """The one event that says which task this one retries is enough, wherever it lands.

    Only the ``sent`` event may carry the header (a worker that predates it
    reports nothing), and a later attempt or a terminal event never erases it.
    """
    carrier = data.draw(st.integers(min_value=0, max_value=len(events) - 1))
    marked = [
        attrs.evolve(event, retry_of="original" if index == carrier else None)
        for index, event in enumerate(events)
    ]
    order = data.draw(st.permutations(marked))
    task = fold(order)
    assert task is not None
    assert task.retry_of == "original"
    one_by_one = None
    for event in order:
        one_by_one = apply(one_by_one, event)
    assert one_by_one is not None
    assert one_by_one.retry_of == "original"
    cut = data.draw(st.integers(min_value=0, max_value=len(order)))
    assert fold(order[cut:], fold(order[:cut])) == task
    unmarked = fold([attrs.evolve(event, retry_of=None) for event in order])
    assert unmarked is not None
    assert unmarked.retry_of is None


@given(events=event_sets())
def test_payload_flags_stay_set_once_any_event_set_them(events: list[TaskEvent]) -> None:
    """What redaction or a limit did to any event's payload is never forgotten."""
    task = fold(events)
    assert task is not None
    for name in PAYLOAD_FLAGS:
        assert getattr(task, name) == any(getattr(e, name) for e in events), name


@given(events=event_sets())
def test_first_seen_and_updated_span_all_events(events: list[TaskEvent]) -> None:
    """first_seen_at is the earliest event timestamp, updated_at the latest."""
    task = fold(events)
    assert task is not None
    assert task.first_seen_at == min(e.timestamp for e in events)
    assert task.updated_at == max(e.timestamp for e in events)


@given(event=task_events())
def test_bookkeeping_of_untouched_fields_stays_canonical(event: TaskEvent) -> None:
    """field_attempts only records non-default attempts of fields that have a value."""
    task = Task.from_event(event)
    for name, attempt in task.field_attempts.items():
        assert name in PER_ATTEMPT_FIELDS
        assert attempt > 0
        assert getattr(task, name) is not None


def _event(kind: str, seconds: float, *, attempt: int = 0, **fields: object) -> TaskEvent:
    return TaskEvent(
        id=f"{kind}-{attempt}-{seconds}",
        task_id="t1",
        kind=EventKind(kind),
        timestamp=BASE_TIME + timedelta(seconds=seconds),
        attempt=attempt,
        **fields,  # type: ignore[arg-type]
    )


CELERY_RETRY_HISTORY = [
    _event("sent", 0, name="app.charge", args=[1], queue="billing"),
    _event("received", 1, worker="w1"),
    _event("started", 2, worker="w1"),
    _event("retried", 3, exception="Timeout()", retries=0),
    _event("received", 13, attempt=1, worker="w2", args=[1], retries=1, queue="billing"),
    _event("started", 14, attempt=1, worker="w2"),
    _event("succeeded", 15, attempt=1, result={"charged": True}, runtime=1.0),
]


@given(order=st.permutations(CELERY_RETRY_HISTORY))
def test_a_retried_task_ends_succeeded_with_the_second_attempts_details(
    order: list[TaskEvent],
) -> None:
    """The retry scenario Celery produces folds to the second attempt's success in any order."""
    task = fold(order)
    assert task is not None
    assert task.state is TaskState.SUCCEEDED
    assert task.worker == "w2"
    assert task.retries == 1
    assert task.result == {"charged": True}
    assert task.exception is None
    assert task.name == "app.charge"
    assert task.started_at == BASE_TIME + timedelta(seconds=14)
    assert task.sent_at == BASE_TIME  # attempt 1 was never "sent": attempt 0's value stays
    assert task.finished_at == BASE_TIME + timedelta(seconds=15)


def test_a_real_outcome_overrides_the_reconcilers_lost_verdict() -> None:
    """A worker that was only partitioned may still report success for the same attempt."""
    lost = _event("lost", 60, exception="worker w1 went offline", worker="w1")
    succeeded = _event("succeeded", 30, result=3)
    assert fold([lost, succeeded]) == fold([succeeded, lost])
    task = fold([_event("started", 1, worker="w1"), lost, succeeded])
    assert task is not None
    assert task.state is TaskState.SUCCEEDED


def test_a_lost_task_that_is_redelivered_leaves_lost() -> None:
    """acks_late redelivery on another worker is a new attempt and starts the task again."""
    task = fold(
        [
            _event("started", 1, worker="w1"),
            _event("lost", 60, exception="worker w1 went offline", worker="w1"),
            _event("started", 70, attempt=1, worker="w2"),
        ]
    )
    assert task is not None
    assert task.state is TaskState.STARTED
    assert task.worker == "w2"


def test_merging_different_tasks_is_refused() -> None:
    """Two tasks with different ids cannot be merged."""
    a = Task.from_event(_event("sent", 0))
    b = attrs.evolve(a, id="other")
    with pytest.raises(InvalidInput):
        merge(a, b)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timestamp", BASE_TIME.replace(tzinfo=None), "naive datetime"),
        ("attempt", -1, "attempt must be >= 0"),
        ("task_id", "", "an id must be a non-empty string"),
        ("task_id", "x" * 256, "at most 255 characters"),
        ("retry_of", "x" * 256, "at most 255 characters"),
        ("retry_of", 7, "expected a string"),
        ("runtime", float("nan"), "runtime must be a finite number"),
        ("args", {"a": 1}, "args must be a list"),
        ("kind", "exploded", "is not a valid EventKind"),
    ],
)
def test_invalid_events_are_refused_with_a_reason(field: str, value: object, message: str) -> None:
    """Constructing an event validates it and says what is wrong."""
    fields: dict[str, object] = {
        "id": "e",
        "task_id": "t",
        "kind": "sent",
        "timestamp": BASE_TIME,
        field: value,
    }
    with pytest.raises((ValueError, TypeError), match=message):
        TaskEvent(**fields)  # type: ignore[arg-type]


@given(events=event_sets())
def test_restore_task_rebuilds_a_task_from_its_own_values(events: list[TaskEvent]) -> None:
    """What a repository stored comes back equal, without re-validation."""
    task = fold(events)
    assert task is not None
    values = {field.name: getattr(task, field.name) for field in attrs.fields(Task)}
    assert restore_task(**values) == task


def test_restore_task_wants_every_field() -> None:
    task = fold([_event("sent", 1)])
    assert task is not None
    values = {field.name: getattr(task, field.name) for field in attrs.fields(Task)}
    del values["queue"]
    with pytest.raises(InvalidInput, match="restore_task"):
        restore_task(**values)
