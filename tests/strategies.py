"""Hypothesis strategies for domain values, shared by every test module.

Pools of values are deliberately small (a few timestamps, names, workers) so that
generated events collide: equal timestamps, the same field carried with
different values at the same attempt, duplicate kinds. That is where an
order-dependent fold would show itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from z4j_domain.tasks import EventKind, TaskEvent

BASE_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

timestamps = st.integers(min_value=0, max_value=6).map(lambda s: BASE_TIME + timedelta(seconds=s))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


ANY_KIND = st.sampled_from(EventKind)
SMALL_ATTEMPTS = st.integers(min_value=0, max_value=2)


@st.composite
def task_events(
    draw: st.DrawFn,
    *,
    task_id: str = "task-1",
    event_id: str | None = None,
    kinds: st.SearchStrategy[EventKind] = ANY_KIND,
    attempts: st.SearchStrategy[int] = SMALL_ATTEMPTS,
) -> TaskEvent:
    """One event of ``task_id`` with a random selection of optional fields."""
    return TaskEvent(
        id=event_id or draw(st.uuids()).hex,
        task_id=task_id,
        kind=draw(kinds),
        timestamp=draw(timestamps),
        attempt=draw(attempts),
        clock=draw(st.integers(min_value=0, max_value=3)),
        name=draw(_maybe(st.sampled_from(["app.add", "app.mul"]))),
        queue=draw(_maybe(st.sampled_from(["celery", "priority"]))),
        routing_key=draw(_maybe(st.sampled_from(["celery", "priority"]))),
        worker=draw(_maybe(st.sampled_from(["w1@host", "w2@host"]))),
        args=draw(_maybe(st.lists(json_scalars, max_size=3))),
        kwargs=draw(_maybe(st.dictionaries(st.sampled_from(["a", "b"]), json_scalars, max_size=2))),
        result=draw(json_values),
        exception=draw(_maybe(st.sampled_from(["ValueError('x')", "KeyError('y')"]))),
        traceback=draw(_maybe(st.sampled_from(["Traceback (most recent call last): ..."]))),
        runtime=draw(_maybe(st.floats(min_value=0, max_value=100, allow_nan=False))),
        retries=draw(_maybe(st.integers(min_value=0, max_value=3))),
        eta=draw(_maybe(timestamps)),
        expires=draw(_maybe(timestamps)),
        root_id=draw(_maybe(st.sampled_from(["root-1", "root-2"]))),
        parent_id=draw(_maybe(st.sampled_from(["parent-1"]))),
        group_id=draw(_maybe(st.sampled_from(["group-1", "group-2"]))),
        chord_id=draw(_maybe(st.sampled_from(["chord-1"]))),
    )


@st.composite
def event_sets(
    draw: st.DrawFn, *, task_id: str = "task-1", min_size: int = 1, max_size: int = 8, **kwargs: Any
) -> list[TaskEvent]:
    """A set of distinct events (unique ids) of one task."""
    size = draw(st.integers(min_value=min_size, max_value=max_size))
    return [
        draw(task_events(task_id=task_id, event_id=f"{task_id}-e{i}", **kwargs))
        for i in range(size)
    ]


@st.composite
def multi_task_events(
    draw: st.DrawFn, *, max_tasks: int = 5, max_events: int = 6
) -> list[TaskEvent]:
    """Events of several tasks, interleaved."""
    n_tasks = draw(st.integers(min_value=1, max_value=max_tasks))
    events: list[TaskEvent] = []
    for t in range(n_tasks):
        events.extend(draw(event_sets(task_id=f"task-{t}", max_size=max_events)))
    return draw(st.permutations(events))
