"""Arguments and results become bounded, JSON-safe, still structured values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from z4j_agent_celery.payload import (
    MAX_DEPTH,
    MAX_ITEMS,
    TRUNCATED,
    TRUNCATED_KEY,
    Cut,
    bounded_text,
    json_safe,
    limit_payload,
)


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


class LongRepr:
    def __repr__(self) -> str:
        return "r" * 500


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def test_json_values_stay_structured() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    assert json_safe(value) == value


def test_other_values_are_converted() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    converted = json_safe(
        {
            "tuple": (1, 2),
            "set": {3, 1, 2},
            "opaque": Opaque(),
            "when": when,
            "decimal": Decimal("1.50"),
            "nan": float("nan"),
            "bytes": b"\x00",
            1: "int key",
            (1, 2): "tuple key",
            "broken": BrokenRepr(),
        }
    )
    assert converted["tuple"] == [1, 2]
    assert converted["set"] == [1, 2, 3]
    assert converted["opaque"] == "<Opaque>"
    assert converted["when"] == when.isoformat()
    assert converted["decimal"] == "1.50"
    assert converted["nan"] == "nan"
    assert converted["bytes"] == "b'\\x00'"
    assert converted["1"] == "int key"
    assert converted["(1, 2)"] == "tuple key"
    assert "repr failed" in converted["broken"]
    json.dumps(converted, allow_nan=False)


def test_long_strings_big_containers_and_deep_nesting_are_cut_with_markers() -> None:
    assert json_safe("x" * 100, string_limit=10) == "x" * 10 + f"{TRUNCATED} 100 chars]"
    cut = json_safe(list(range(MAX_ITEMS + 5)))
    assert cut[:MAX_ITEMS] == list(range(MAX_ITEMS))
    assert cut[-1] == f"{TRUNCATED} 5 more items]"
    mapping = json_safe({str(i): i for i in range(MAX_ITEMS + 1)})
    assert mapping[TRUNCATED_KEY] == 1
    deep: Any = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    text = json.dumps(json_safe(deep))
    assert TRUNCATED in text


def test_a_payload_over_the_limit_becomes_one_marker() -> None:
    assert limit_payload([1, 2, 3], 100) == [1, 2, 3]
    marker = limit_payload(["x" * 100] * 5000, 1000)
    assert isinstance(marker, str)
    assert marker.startswith(TRUNCATED)


def test_bounded_text_can_keep_the_tail() -> None:
    text = "head " + "m" * 1000 + " tail"
    cut = bounded_text(text, 100, keep_tail=True)
    assert cut.startswith("head")
    assert cut.endswith("tail")
    assert TRUNCATED in cut
    assert len(cut) < 200


anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=5),
        st.datetimes(),
        st.decimals(),
        st.builds(Opaque),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.frozensets(st.integers(), max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=5),
    ),
    max_leaves=30,
)


@given(anything)
def test_the_result_is_always_strict_json(value: Any) -> None:
    """Whatever goes in, the output encodes as strict JSON (no NaN) and is idempotent."""
    safe = json_safe(value)
    text = json.dumps(safe, allow_nan=False)
    assert json_safe(json.loads(text)) == json.loads(text)


@pytest.mark.parametrize(
    ("value", "was_cut"),
    [
        ({"a": [1, "x" * 60], "b": None}, False),
        ("x" * 65, True),  # one string over the limit
        ({"k" * 70: 1}, True),  # a key over the limit
        ([Opaque()] * 3, False),
        ([LongRepr()], True),
        (list(range(MAX_ITEMS + 1)), True),
        ({str(i): i for i in range(MAX_ITEMS + 1)}, True),
        (nested(MAX_DEPTH + 1), True),
        (nested(MAX_DEPTH - 1), False),
        (["y" * 60] * 50, True),  # every string fits; the whole is over the limit
    ],
)
def test_a_cut_reports_whether_anything_was_cut(value: Any, was_cut: bool) -> None:
    cut = Cut()
    limited = limit_payload(value, 256, cut=cut)
    assert cut.cut is was_cut
    assert (TRUNCATED in json.dumps(limited)) is was_cut
    assert limit_payload(value, 256) == limited  # the flag changes nothing else


@given(anything)
def test_the_cut_flag_agrees_with_the_markers(value: Any) -> None:
    cut = Cut()
    safe = json_safe(value, string_limit=8, cut=cut)
    assert cut.cut is (TRUNCATED in json.dumps(safe))
