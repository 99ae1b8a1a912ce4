"""Task filters, cursors and page requests: parsing, validation and matching."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import BASE_TIME, task_events
from z4j_domain.errors import InvalidInput
from z4j_domain.queries import MAX_PAGE_SIZE, TaskCursor, TaskFilter, TaskQuery
from z4j_domain.tasks import Task, TaskEvent, TaskState


def test_filter_parses_every_parameter() -> None:
    """All filter parameters are read, states from a comma-separated list."""
    parsed = TaskFilter.from_params(
        {
            "state": "failed, started",
            "name": "app.add",
            "queue": "celery",
            "worker": "w1@host",
            "since": "2026-03-01T00:00:00Z",
            "until": "2026-03-02T00:00:00+02:00",
            "text": "add",
            "retry_of": "t-orig",
        }
    )
    assert parsed.states == {TaskState.FAILED, TaskState.STARTED}
    assert parsed.name == "app.add"
    assert parsed.retry_of == "t-orig"
    assert parsed.since is not None
    assert parsed.since.isoformat() == "2026-03-01T00:00:00+00:00"
    assert parsed.until is not None
    assert parsed.until.isoformat() == "2026-03-01T22:00:00+00:00"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "finished"}, "unknown state 'finished'"),
        ({"since": "yesterday"}, "since is not an ISO 8601 timestamp"),
        ({"until": "2026-03-01T00:00:00"}, "until needs a timezone offset"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since must be"),
        ({"name": "x" * 201}, "name is longer than 200"),
        ({"name": 5}, "name must be a string"),
        ({"retry_of": "x" * 256}, "retry_of is longer than 255"),
        ({"retry_of": ["t"]}, "retry_of must be a string"),
        ({"state": {"a": 1}}, "state must be a string or a list"),
    ],
)
def test_bad_filter_values_are_refused_with_a_message(
    params: dict[str, object], message: str
) -> None:
    """Each invalid value raises InvalidInput that names the parameter."""
    with pytest.raises(InvalidInput, match=message):
        TaskFilter.from_params(params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": "0"}, f"limit must be between 1 and {MAX_PAGE_SIZE}"),
        ({"limit": str(MAX_PAGE_SIZE + 1)}, "limit must be between"),
        ({"cursor": "not-a-cursor"}, "invalid cursor"),
    ],
)
def test_bad_page_parameters_are_refused(params: dict[str, object], message: str) -> None:
    """Bad limits and cursors raise InvalidInput with a message."""
    with pytest.raises(InvalidInput, match=message):
        TaskQuery.from_params(params)


@given(
    when=st.datetimes(timezones=st.just(BASE_TIME.tzinfo)),
    task_id=st.text(min_size=1, max_size=60),
)
def test_cursors_round_trip(when: object, task_id: str) -> None:
    """decode(encode(c)) == c for any position."""
    cursor = TaskCursor(first_seen_at=when, task_id=task_id)  # type: ignore[arg-type]
    assert TaskCursor.decode(cursor.encode()) == cursor


@given(garbage=st.text(max_size=300))
def test_any_garbage_cursor_is_invalid_input_never_a_crash(garbage: str) -> None:
    """Whatever a client sends as a cursor, the only failure is InvalidInput."""
    with contextlib.suppress(InvalidInput):
        TaskCursor.decode(garbage)


@given(event=task_events(), states=st.sets(st.sampled_from(TaskState)))
def test_state_filter_matches_exactly_the_listed_states(
    event: object, states: set[TaskState]
) -> None:
    """A task matches a state filter iff its state is listed (or the filter is empty)."""
    task = Task.from_event(event)  # type: ignore[arg-type]
    assert TaskFilter(states=states).matches(task) == (not states or task.state in states)


def _task(task_id: str = "abc-123", name: str | None = None) -> Task:
    event = TaskEvent(id="e1", task_id=task_id, kind="sent", timestamp=BASE_TIME, name=name)
    return Task.from_event(event)


def test_text_matches_name_substring_or_id_prefix() -> None:
    """Text search: case-insensitive substring of the name, or a prefix of the id."""
    task = _task(name="app.SendMail")
    assert TaskFilter(text="sendmail").matches(task)
    assert TaskFilter(text="abc").matches(task)
    assert not TaskFilter(text="123").matches(task)
    assert not TaskFilter(text="x").matches(_task(name=None))


@given(event=task_events(), wanted=st.sampled_from(["original-1", "original-2", "other"]))
def test_retry_of_filter_matches_exactly_the_retries_of_that_task(
    event: TaskEvent, wanted: str
) -> None:
    """retry_of is an exact match; a task that retries nothing never matches."""
    task = Task.from_event(event)
    assert TaskFilter(retry_of=wanted).matches(task) == (task.retry_of == wanted)


def test_time_window_is_inclusive_exclusive() -> None:
    """since is inclusive and until exclusive, both on first_seen_at."""
    task = _task()
    assert TaskFilter(since=BASE_TIME).matches(task)
    assert not TaskFilter(until=BASE_TIME).matches(task)
    assert TaskFilter(until=BASE_TIME + timedelta(microseconds=1)).matches(task)


@given(
    states=st.frozensets(st.sampled_from(list(TaskState))),
    name=st.none() | st.text(min_size=1, max_size=50),
    queue=st.none() | st.text(min_size=1, max_size=50),
    worker=st.none() | st.text(min_size=1, max_size=50),
    text=st.none() | st.text(min_size=1, max_size=50),
    retry_of=st.none() | st.text(min_size=1, max_size=255),
    since=st.none() | st.integers(0, 10_000),
    span=st.none() | st.integers(1, 10_000),
)
def test_filters_round_trip_through_their_params(
    states: frozenset[TaskState],
    name: str | None,
    queue: str | None,
    worker: str | None,
    text: str | None,
    retry_of: str | None,
    since: int | None,
    span: int | None,
) -> None:
    """A bulk command stores its filter as params; reading them back selects the same tasks."""
    start = None if since is None else BASE_TIME + timedelta(seconds=since)
    end = None if span is None else BASE_TIME + timedelta(seconds=(since or 0) + span)
    original = TaskFilter(
        states=states,
        name=name,
        queue=queue,
        worker=worker,
        text=text,
        retry_of=retry_of,
        since=start,
        until=end,
    )
    assert TaskFilter.from_params(original.to_params()) == original
