"""Dict forms of events and tasks: round trips, and clear errors on malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import event_sets, json_values, task_events
from z4j_domain.errors import InvalidInput
from z4j_domain.serialization import (
    TASK_API_FIELDS,
    TASK_SUMMARY_FIELDS,
    event_from_dict,
    event_to_dict,
    task_summary_to_dict,
    task_to_dict,
)
from z4j_domain.tasks import TaskEvent, fold


@given(event=task_events())
def test_events_round_trip_through_json(event: TaskEvent) -> None:
    """An event survives to_dict -> JSON text -> from_dict unchanged."""
    wire = json.loads(json.dumps(event_to_dict(event)))
    assert event_from_dict(wire) == event


@given(
    data=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["id", "task_id", "kind", "timestamp", "attempt", "args", "bogus"]),
            json_values,
        ),
    )
)
def test_malformed_events_raise_invalid_input_only(data: Any) -> None:
    """Any JSON value either is a valid event or raises InvalidInput: nothing else escapes."""
    message = None
    try:
        event_from_dict(data)
    except InvalidInput as error:
        message = str(error)
    assert message is None or message.startswith("invalid event") or "JSON object" in message


def test_unknown_fields_are_named_in_the_error() -> None:
    """An extra key is refused rather than silently dropped."""
    bad = {"id": "e", "task_id": "t", "kind": "sent", "timestamp": "2026-01-01T00:00:00Z", "x": 1}
    with pytest.raises(InvalidInput, match="x"):
        event_from_dict(bad)


@given(events=event_sets())
def test_task_dict_has_exactly_the_api_fields_in_json_types(events: list[TaskEvent]) -> None:
    """The API view lists the documented fields, JSON-encodable, states in lower case."""
    task = fold(events)
    assert task is not None
    view = task_to_dict(task)
    assert tuple(view) == TASK_API_FIELDS
    assert view["state"] == task.state.value
    assert isinstance(view["retries"], int)
    json.dumps(view)


@given(events=event_sets())
def test_a_task_summary_is_the_api_view_cut_to_the_summary_fields(
    events: list[TaskEvent],
) -> None:
    """Where the API only points at a task, it shows the same values, fewer fields."""
    task = fold(events)
    assert task is not None
    summary = task_summary_to_dict(task)
    assert tuple(summary) == TASK_SUMMARY_FIELDS
    assert set(TASK_SUMMARY_FIELDS) <= set(TASK_API_FIELDS)
    full = task_to_dict(task)
    assert all(summary[name] == full[name] for name in TASK_SUMMARY_FIELDS)
