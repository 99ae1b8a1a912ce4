"""The storable form of JSON payloads: what every backend keeps and reads back unchanged."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from z4j_domain.encoding import MAX_JSON_DEPTH, canonical_json, storable_json
from z4j_domain.tasks import TaskEvent

anything_jsonish: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and infinities included on purpose
        st.text(),  # NUL included
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=4),
    ),
    max_leaves=20,
)


@given(value=anything_jsonish)
def test_storable_json_is_strict_json_without_nul_and_round_trips(value: Any) -> None:
    """The result encodes as strict JSON (no NaN), has no NUL, and survives a round trip."""
    stored = storable_json(value)
    text = json.dumps(stored, allow_nan=False)
    assert "\\u0000" not in text
    assert json.loads(text) == stored


@given(value=anything_jsonish)
def test_storable_json_is_idempotent(value: Any) -> None:
    """Making a storable value storable again changes nothing."""
    once = storable_json(value)
    assert canonical_json(storable_json(once)) == canonical_json(once)


def test_values_that_need_no_change_are_returned_as_they_are() -> None:
    """The common case walks the value but copies nothing."""
    args = [1, "two", {"three": [3.0, None, True]}]
    assert storable_json(args) is args


def test_odd_values_are_made_explicit() -> None:
    """Non-finite floats, NULs, tuples, non-string keys and objects get a stated form."""
    odd = {1: (math.nan, math.inf, -math.inf), "a\x00b": datetime(2026, 1, 1, tzinfo=UTC)}
    assert storable_json(odd) == {
        "1": ["NaN", "Infinity", "-Infinity"],
        "a\ufffdb": "datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)",
    }


def test_deep_nesting_is_cut_off_not_a_crash() -> None:
    """A pathological payload is truncated at a fixed depth."""
    deep: Any = []
    for _ in range(MAX_JSON_DEPTH * 3):
        deep = [deep]
    json.dumps(storable_json(deep), allow_nan=False)


def test_events_store_their_payloads_in_storable_form() -> None:
    """An event's args, kwargs, result and texts are storable from the start."""
    event = TaskEvent(
        id="e",
        task_id="t",
        kind="failed",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        args=(math.nan,),
        kwargs={"k": "\x00"},
        result=[math.inf],
        exception="boom\x00",
    )
    assert event.args == ["NaN"]
    assert event.kwargs == {"k": "\ufffd"}
    assert event.result == ["Infinity"]
    assert event.exception == "boom\ufffd"
