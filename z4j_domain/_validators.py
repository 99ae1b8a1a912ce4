"""attrs validators and converters shared by the domain's value types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def aware_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; reject naive datetimes (they have no meaning on the wire)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} is not allowed: give it a timezone")
    return value.astimezone(UTC)


def optional_aware_utc(value: datetime | None) -> datetime | None:
    """Like :func:`aware_utc`, letting ``None`` through."""
    return None if value is None else aware_utc(value)


def non_negative(_instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator: the value is ``None`` or ``>= 0``."""
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def non_empty(_instance: Any, attribute: Any, value: str) -> None:
    """attrs validator: a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string")
