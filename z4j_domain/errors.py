"""The domain's error hierarchy: every error the domain raises is a ``Z4jError``."""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidInput",
    "NotFound",
    "PreviewUnavailable",
    "Transient",
    "Z4jError",
]


class Z4jError(Exception):
    """Base class of every error z4j raises on purpose."""


class InvalidInput(Z4jError, ValueError):
    """A caller passed a value the domain refuses (bad filter, cursor, event)."""


class PreviewUnavailable(InvalidInput):
    """The value is valid but z4j cannot compute what was asked of it (a solar schedule's times).

    An :class:`InvalidInput`, so that a shell answers it as a refused request
    (with this message), not as a failure of its own.
    """


class NotFound(Z4jError, LookupError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class Conflict(Z4jError):
    """The change collides with what is already stored (duplicate slug, email)."""


class Transient(Z4jError):
    """The operation failed for now and may succeed if run again as it was.

    For example two database transactions each waiting for the other (a
    deadlock), one of which the database aborted. Nothing of the failed
    attempt is kept; the caller may retry it.
    """
