"""Turning whatever a task was given or returned into bounded, JSON-safe values.

Arguments and results stay *structured* (lists, objects, numbers) wherever
JSON can say them; anything else becomes its ``repr`` string. Long strings,
big containers and deep nesting are cut, and a whole payload whose encoding is
still larger than the limit is replaced by one marker. Every cut leaves a
marker that starts with :data:`TRUNCATED`, so the brain (and a later retry)
can tell a cut value from a real one. A caller that must know whether anything
was cut (the event's ``truncated`` flags) passes a :class:`Cut`, which every
cut sets; nothing else is returned or recomputed for it.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "TRUNCATED",
    "Cut",
    "bounded_text",
    "json_safe",
    "limit_payload",
]

#: Prefix of every marker that replaces a cut value.
TRUNCATED: Final = "[z4j truncated"
#: Containers deeper than this are cut.
MAX_DEPTH: Final = 16
#: Containers with more items than this keep the first ones and a marker.
MAX_ITEMS: Final = 256
#: Key under which a cut mapping records how many items it lost.
TRUNCATED_KEY: Final = "__z4j_truncated__"

_PLAIN: Final = (str, int, bool, type(None))


class Cut:
    """Set by :func:`json_safe` and :func:`limit_payload` when they cut anything."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


def bounded_text(text: str, limit: int, *, keep_tail: bool = False) -> str:
    """``text`` cut to about ``limit`` characters with a marker saying how long it was.

    ``keep_tail`` keeps the beginning and the end (tracebacks: the end is where
    the exception is); otherwise the beginning.
    """
    if len(text) <= limit:
        return text
    marker = f"{TRUNCATED} {len(text)} chars]"
    if keep_tail:
        head = limit // 4
        tail = limit - head
        return f"{text[:head]}\n{marker}\n{text[-tail:]}"
    return text[:limit] + marker


def _safe_repr(value: Any, limit: int, cut: Cut | None = None) -> str:
    try:
        text = repr(value)
    except Exception as error:  # a broken __repr__ must not lose the event
        text = f"<{type(value).__qualname__} (repr failed: {type(error).__name__})>"
    if cut is not None and len(text) > limit:
        cut.cut = True
    return bounded_text(text, limit)


def _key(key: Any, limit: int, cut: Cut | None) -> str:
    if isinstance(key, str):
        if cut is not None and len(key) > limit:
            cut.cut = True
        return bounded_text(key, limit)
    if isinstance(key, (int, float, bool)) or key is None:
        return json.dumps(key)
    return _safe_repr(key, limit, cut)


def json_safe(
    value: Any, *, string_limit: int = 4096, depth: int = 0, cut: Cut | None = None
) -> Any:
    """A JSON-safe copy of ``value``: JSON types kept, everything else a ``repr`` string.

    Tuples and sets become lists, dict keys strings, datetimes ISO 8601 strings,
    non-finite floats their ``repr``; strings longer than ``string_limit``,
    containers with more than :data:`MAX_ITEMS` items and nesting deeper than
    :data:`MAX_DEPTH` are cut with a marker (so are long keys and long
    ``repr`` strings), and each cut sets ``cut.cut`` when a ``cut`` is given.
    """
    kind = type(value)
    if kind in _PLAIN:
        if kind is str and len(value) > string_limit:
            if cut is not None:
                cut.cut = True
            return bounded_text(value, string_limit)
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple, set, frozenset, dict)) and depth >= MAX_DEPTH:
        if cut is not None:
            cut.cut = True
        return f"{TRUNCATED} nesting deeper than {MAX_DEPTH}] " + _safe_repr(value, 200)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                if cut is not None:
                    cut.cut = True
                out[TRUNCATED_KEY] = len(value) - MAX_ITEMS
                break
            out[_key(key, string_limit, cut)] = json_safe(
                item, string_limit=string_limit, depth=depth + 1, cut=cut
            )
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        if isinstance(value, (set, frozenset)):
            try:
                items.sort()
            except TypeError:
                items.sort(key=repr)
        converted = [
            json_safe(item, string_limit=string_limit, depth=depth + 1, cut=cut)
            for item in items[:MAX_ITEMS]
        ]
        if len(items) > MAX_ITEMS:
            if cut is not None:
                cut.cut = True
            converted.append(f"{TRUNCATED} {len(items) - MAX_ITEMS} more items]")
        return converted
    # Subclasses of the JSON types (enums, str subclasses, ...) as their plain value.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_safe(float(value))
    if isinstance(value, str):
        return json_safe(str.__str__(value), string_limit=string_limit, cut=cut)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    return _safe_repr(value, string_limit, cut)


#: One encoder for every size check (``json.dumps`` with options builds one per call).
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encoded_size(value: Any) -> int:
    text = _COMPACT.encode(value)
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def limit_payload(value: Any, max_bytes: int, *, cut: Cut | None = None) -> Any:
    """``json_safe(value)``, or a marker string if its JSON encoding exceeds ``max_bytes``.

    Individual strings are first cut to ``max_bytes`` characters, so one long
    string does not hide the rest of the structure when it alone is too big.
    Any cut sets ``cut.cut`` when a ``cut`` is given.
    """
    safe = json_safe(value, string_limit=max(64, max_bytes // 4), cut=cut)
    if not safe and max_bytes >= 2 and type(safe) in (list, dict):
        return safe  # "[]" or "{}": most tasks' args or kwargs, no need to measure
    size = _encoded_size(safe)
    if size <= max_bytes:
        return safe
    if cut is not None:
        cut.cut = True
    return f"{TRUNCATED} {size} bytes of JSON, limit {max_bytes}]"
