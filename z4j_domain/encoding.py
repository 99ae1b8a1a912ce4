"""The one canonical byte encoding for everything z4j hashes, signs or compares."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = ["canonical_json", "utc_isoformat"]


def utc_isoformat(value: datetime) -> str:
    """Render an aware datetime as ISO 8601 in UTC with microseconds and ``+00:00``."""
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be encoded canonically")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_isoformat(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=canonical_json)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not canonically encodable")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` as compact, key-sorted UTF-8 JSON; datetimes become UTC ISO strings.

    Two values encode to the same bytes exactly when they are the same JSON
    document, so the encoding doubles as a total order for arbitrary JSON values.
    """
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=True,
        default=_default,
    ).encode("utf-8")
