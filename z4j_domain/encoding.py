"""The one canonical byte encoding for everything z4j hashes, signs or compares."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["canonical_json", "storable_json", "storable_text", "utc_isoformat"]


def utc_isoformat(value: datetime) -> str:
    """Render an aware datetime as ISO 8601 in UTC with microseconds and ``+00:00``."""
    tz = value.tzinfo
    if tz is None:
        raise ValueError("naive datetime cannot be encoded canonically")
    # Domain datetimes are UTC already; converting them again is most of the cost.
    utc = value if tz is UTC else value.astimezone(UTC)
    return utc.isoformat(timespec="microseconds")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_isoformat(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=canonical_json)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not canonically encodable")


#: One encoder for every call: ``json.dumps`` with options builds a new one each time,
#: a quarter of the cost of encoding an event. Encoding keeps no state: thread-safe.
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=True,
    default=_default,
)


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as compact, key-sorted UTF-8 JSON; datetimes become UTC ISO strings.

    Two values encode to the same bytes exactly when they are the same JSON
    document, so the encoding doubles as a total order for arbitrary JSON values.
    """
    return _CANONICAL.encode(value).encode("utf-8")


#: Nesting deeper than this is cut off (replaced by a marker string) when stored.
MAX_JSON_DEPTH: Final = 64
_NON_FINITE: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}


def storable_text(value: str) -> str:
    """``value`` with NUL characters replaced by U+FFFD: no SQL text type can hold NUL."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def storable_json(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` that every backend stores and reads back unchanged.

    JSON has no NaN or infinities and PostgreSQL's ``jsonb`` refuses them and
    NUL characters, so a single odd value in one task's arguments would
    otherwise fail a whole batch of events. Non-finite floats become the
    strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; NULs become U+FFFD;
    tuples become lists; non-string keys become strings; anything else that is
    not JSON becomes its ``repr``. Values that need no change are returned as
    they are (the common case costs one walk, no copy).
    """
    if value is None or value is True or value is False or type(value) is int:
        return value
    if type(value) is str:
        return storable_text(value)
    if type(value) is float:
        if math.isnan(value):
            return "NaN"
        return _NON_FINITE.get(value, value)
    if _depth >= MAX_JSON_DEPTH:
        return f"<nested deeper than {MAX_JSON_DEPTH} levels>"
    if isinstance(value, (list, tuple)):
        items = [storable_json(item, _depth + 1) for item in value]
        if type(value) is list and all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            new_key = storable_text(key) if type(key) is str else str(key)
            new_item = storable_json(item, _depth + 1)
            changed = changed or new_key is not key or new_item is not item
            out[new_key] = new_item
        return out if changed or type(value) is not dict else value
    if isinstance(value, (int, float, str)):  # subclasses (enums, bools handled above)
        return storable_json(json.loads(json.dumps(value)), _depth)
    return storable_text(repr(value))
