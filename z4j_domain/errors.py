"""The domain's error hierarchy: every error the domain raises is a ``Z4jError``."""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidInput",
    "NotFound",
    "Z4jError",
]


class Z4jError(Exception):
    """Base class of every error z4j raises on purpose."""


class InvalidInput(Z4jError, ValueError):
    """A caller passed a value the domain refuses (bad filter, cursor, event)."""


class NotFound(Z4jError, LookupError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class Conflict(Z4jError):
    """The change collides with what is already stored (duplicate slug, email)."""
