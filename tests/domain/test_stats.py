"""Task statistics: the aggregates, their deltas, the chart and the failure groups."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import multi_task_events, state_events
from z4j_domain.stats import (
    UNKNOWN_EXCEPTION,
    FailureSample,
    FinishCount,
    StatsDelta,
    Window,
    aggregate,
    exception_type,
    finish_minute,
    group_failures,
    stats_delta,
    throughput,
)
from z4j_domain.tasks import Task, TaskEvent, TaskState, apply

NOW = datetime(2026, 11, 29, 15, 7, 42, 123456, tzinfo=UTC)


def _write_in_batches(
    events: list[TaskEvent], cuts: list[int]
) -> tuple[dict[str, Task], list[StatsDelta]]:
    """Fold ``events`` in batches (cut at ``cuts``) as a repository writes them: each
    batch replaces the tasks it changed. Returns the final tasks and each batch's delta."""
    stored: dict[str, Task] = {}
    deltas = []
    bounds = sorted({0, len(events), *(min(cut, len(events)) for cut in cuts)})
    for start, end in itertools.pairwise(bounds):
        before: dict[str, Task | None] = {}
        current = dict(stored)
        for event in events[start:end]:
            before.setdefault(event.task_id, stored.get(event.task_id))
            current[event.task_id] = apply(current.get(event.task_id), event)
        pairs = [(before[t], current[t]) for t in before if current[t] != before[t]]
        deltas.append(stats_delta(pairs))
        stored = current
    return stored, deltas


@st.composite
def _batched_events(draw: st.DrawFn) -> tuple[list[TaskEvent], list[int]]:
    """Events of several tasks, interleaved, and where to cut them into write batches.

    The events carry only what decides a task's state and finish time, all that the
    statistics read; every cut falls inside the events (or at their ends).
    """
    events = draw(multi_task_events(events=state_events))
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(events)), max_size=5))
    return events, cuts


@given(_batched_events())
def test_any_batching_sums_to_the_aggregate_which_counts_tasks_once_and_finishes_by_minute(
    batched: tuple[list[TaskEvent], list[int]],
) -> None:
    """The deltas of any batching of the writes add up to the aggregate of the final tasks;
    that aggregate counts every task once by state, and only finished ones by minute."""
    events, cuts = batched
    stored, deltas = _write_in_batches(events, cuts)
    states: Counter[TaskState] = Counter()
    finishes: Counter[tuple[datetime, TaskState]] = Counter()
    for delta in deltas:
        states.update(delta.states)
        finishes.update(delta.finishes)
    expected = aggregate(stored.values())
    assert {k: v for k, v in states.items() if v} == expected.states
    assert {k: v for k, v in finishes.items() if v} == expected.finishes

    tasks: dict[str, Task] = {}
    for event in events:
        tasks[event.task_id] = apply(tasks.get(event.task_id), event)
    assert stored == tasks
    total = aggregate(tasks.values())
    assert sum(total.states.values()) == len(tasks)
    assert all(n > 0 for n in total.states.values())
    finished = [t for t in tasks.values() if t.state.is_terminal]
    assert sum(total.finishes.values()) == len(finished)
    for minute, state in total.finishes:
        assert state.is_terminal
        assert minute == finish_minute(minute)


def test_a_task_that_runs_again_leaves_the_minute_it_had_finished_in() -> None:
    failed = TaskEvent(id="e1", task_id="t", kind="failed", timestamp=NOW, attempt=0)
    started = TaskEvent(
        id="e2", task_id="t", kind="started", timestamp=NOW + timedelta(minutes=3), attempt=1
    )
    first = apply(None, failed)
    second = apply(first, started)
    delta = stats_delta([(first, second)])
    assert delta.states == {TaskState.FAILED: -1, TaskState.STARTED: 1}
    assert delta.finishes == {(finish_minute(NOW), TaskState.FAILED): -1}
    assert not stats_delta([(second, second)])


def test_the_hour_has_sixty_one_minute_bars_the_last_holding_now() -> None:
    points = throughput([], Window.HOUR, NOW)
    assert len(points) == 60
    assert points[-1].start == finish_minute(NOW)
    assert points[0].start == finish_minute(NOW) - timedelta(minutes=59)
    assert all(p.total == 0 and p.failure_rate is None for p in points)


def test_the_day_has_ninety_six_quarter_hour_bars() -> None:
    points = throughput([], Window.DAY, NOW)
    assert len(points) == 96
    assert points[-1].start == datetime(2026, 11, 29, 15, 0, tzinfo=UTC)
    assert points[1].start - points[0].start == timedelta(minutes=15)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-200, max_value=1500),
            st.sampled_from([s for s in TaskState if s.is_terminal]),
            st.integers(min_value=1, max_value=1000),
        ),
        max_size=40,
    ),
    st.sampled_from(list(Window)),
)
def test_a_chart_holds_exactly_the_finishes_inside_its_window(
    raw: list[tuple[int, TaskState, int]], window: Window
) -> None:
    counts = [
        FinishCount(minute=finish_minute(NOW) - timedelta(minutes=back), state=state, count=n)
        for back, state, n in raw
    ]
    points = throughput(counts, window, NOW)
    start = window.start(NOW)
    # The last bar holds now, and the rest of its step (a clock a little ahead).
    inside = [c for c in counts if start <= c.minute < start + window.span]
    assert start + window.span - window.step <= NOW < start + window.span
    assert sum(p.total for p in points) == sum(c.count for c in inside)
    assert sum(p.failed for p in points) == sum(
        c.count for c in inside if c.state is TaskState.FAILED
    )
    for point in points:
        if point.failure_rate is not None:
            assert 0.0 <= point.failure_rate <= 1.0
            assert point.failure_rate == point.failed / (point.succeeded + point.failed)


def test_the_exception_type_is_read_from_the_text() -> None:
    assert exception_type("ValueError('boom')") == "ValueError"
    assert exception_type("KeyError: 'x'") == "KeyError"
    assert exception_type("celery.exceptions.TimeLimitExceeded(30)") == (
        "celery.exceptions.TimeLimitExceeded"
    )
    assert exception_type("  OSError(2)") == "OSError"
    assert exception_type(None) == UNKNOWN_EXCEPTION
    assert exception_type("") == UNKNOWN_EXCEPTION
    assert exception_type("('tuple',)") == UNKNOWN_EXCEPTION


def test_failures_are_grouped_by_type_largest_group_first_with_the_latest_example() -> None:
    def sample(n: int, exception: str | None, name: str, minutes: int | None) -> FailureSample:
        at = None if minutes is None else NOW - timedelta(minutes=minutes)
        return FailureSample(task_id=f"t{n}", name=name, exception=exception, finished_at=at)

    groups = group_failures(
        [
            sample(1, "KeyError('a')", "app.b", 5),
            sample(2, "ValueError('x')", "app.a", 1),
            sample(3, "KeyError('b')", "app.a", 2),
            sample(4, "KeyError('c')", "app.a", None),
            sample(5, None, "app.c", 3),
        ]
    )
    assert [(g.exception_type, g.count) for g in groups] == [
        ("KeyError", 3),
        ("ValueError", 1),
        (UNKNOWN_EXCEPTION, 1),
    ]
    assert groups[0].latest.task_id == "t3"
    assert groups[0].names == ["app.a", "app.b"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ValueError('v')", "KeyError('k')", "boom", None]),
            st.sampled_from(["a", "b", None]),
        ),
        max_size=30,
    )
)
def test_every_failure_lands_in_exactly_one_group(raw: list[tuple[str | None, str | None]]) -> None:
    samples = [
        FailureSample(task_id=f"t{i}", name=name, exception=exc, finished_at=NOW)
        for i, (exc, name) in enumerate(raw)
    ]
    groups = group_failures(samples)
    assert sum(g.count for g in groups) == len(samples)
    assert len({g.exception_type for g in groups}) == len(groups)
    assert [g.count for g in groups] == sorted((g.count for g in groups), reverse=True)
