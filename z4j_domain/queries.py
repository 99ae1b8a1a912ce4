"""Task search: filters, keyset cursors and pages, shared by the API and bulk actions.

Tasks are listed newest first by ``(first_seen_at, id)``, both descending. A
cursor is the position of the last task of a page in that order, so a page
deep into the list costs the same as the first one and concurrent inserts never
shift what the next page shows.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, optional_aware_utc
from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import MAX_ID_LENGTH, Task, TaskState

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "QueueCount",
    "TaskCursor",
    "TaskFilter",
    "TaskPage",
    "TaskQuery",
]

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500
_MAX_TEXT: Final = 200
#: The text parameters of a filter and their longest accepted value.
_TEXT_PARAMS: Final = {
    "name": _MAX_TEXT,
    "queue": _MAX_TEXT,
    "worker": _MAX_TEXT,
    "text": _MAX_TEXT,
    "retry_of": MAX_ID_LENGTH,
}


def _states(value: Any) -> frozenset[TaskState]:
    return frozenset(TaskState(v) for v in value)


@attrs.frozen(kw_only=True)
class TaskFilter:
    """Which tasks to select; every criterion given must hold (an empty filter selects all).

    ``since`` / ``until`` bound ``first_seen_at`` (inclusive / exclusive);
    ``text`` matches a substring of the name or a prefix of the id;
    ``retry_of`` selects the tasks z4j re-published from that task.
    """

    states: frozenset[TaskState] = attrs.field(default=frozenset(), converter=_states)
    name: str | None = None
    queue: str | None = None
    worker: str | None = None
    since: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    until: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    text: str | None = None
    retry_of: str | None = None

    def matches(self, task: Task) -> bool:
        """Whether ``task`` is selected (the reference semantics every repository follows)."""
        if self.states and task.state not in self.states:
            return False
        if self.name is not None and task.name != self.name:
            return False
        if self.queue is not None and task.queue != self.queue:
            return False
        if self.worker is not None and task.worker != self.worker:
            return False
        if self.retry_of is not None and task.retry_of != self.retry_of:
            return False
        if self.since is not None and task.first_seen_at < self.since:
            return False
        if self.until is not None and task.first_seen_at >= self.until:
            return False
        if self.text is not None:
            needle = self.text.lower()
            in_name = task.name is not None and needle in task.name.lower()
            if not in_name and not task.id.startswith(self.text):
                return False
        return True

    def to_params(self) -> dict[str, Any]:
        """The filter as :meth:`from_params` reads it (JSON types; unset criteria left out)."""
        params: dict[str, Any] = {}
        if self.states:
            params["state"] = sorted(state.value for state in self.states)
        for field in _TEXT_PARAMS:
            value = getattr(self, field)
            if value is not None:
                params[field] = value
        for field in ("since", "until"):
            when = getattr(self, field)
            if when is not None:
                params[field] = utc_isoformat(when)
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TaskFilter:
        """Parse the task list's filter parameters (query string or JSON body).

        ``state`` may be a comma-separated string or a list. Unknown states, bad
        timestamps and over-long text raise :class:`InvalidInput` naming the
        parameter, so the API can answer 400 with a useful message.
        """
        raw_state = params.get("state")
        states: set[TaskState] = set()
        if raw_state not in (None, ""):
            parts = raw_state.split(",") if isinstance(raw_state, str) else raw_state
            if not isinstance(parts, (list, tuple)):
                raise InvalidInput("state must be a string or a list of strings")
            for part in parts:
                try:
                    states.add(TaskState(str(part).strip().lower()))
                except ValueError:
                    allowed = ", ".join(s.value for s in TaskState)
                    raise InvalidInput(
                        f"unknown state {part!r}; expected one of: {allowed}"
                    ) from None
        values: dict[str, Any] = {"states": states}
        for field, longest in _TEXT_PARAMS.items():
            value = params.get(field)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise InvalidInput(f"{field} must be a string")
            if len(value) > longest:
                raise InvalidInput(f"{field} is longer than {longest} characters")
            values[field] = value
        for field in ("since", "until"):
            value = params.get(field)
            if value in (None, ""):
                continue
            values[field] = _parse_timestamp(field, value)
        result = cls(**values)
        if result.since and result.until and result.since >= result.until:
            raise InvalidInput("since must be earlier than until")
        return result


def _parse_timestamp(field: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field} is not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field} needs a timezone offset, e.g. {value}+00:00 or {value}Z")
    return parsed


@attrs.frozen(kw_only=True)
class TaskCursor:
    """A position in the task list: the sort key of the last task already shown."""

    first_seen_at: datetime = attrs.field(converter=aware_utc)
    task_id: str

    @classmethod
    def after(cls, task: Task) -> TaskCursor:
        """The cursor of the page that follows ``task``."""
        return cls(first_seen_at=task.first_seen_at, task_id=task.id)

    def is_after(self, task: Task) -> bool:
        """Whether ``task`` comes after this position in list order (newest first)."""
        return (task.first_seen_at, task.id) < (self.first_seen_at, self.task_id)

    def encode(self) -> str:
        """An opaque, URL-safe string for the API."""
        raw = json.dumps([utc_isoformat(self.first_seen_at), self.task_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> TaskCursor:
        """Parse :meth:`encode`'s output; anything else raises :class:`InvalidInput`."""
        try:
            if len(value) > 2048:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            when, task_id = json.loads(raw)
            if not isinstance(when, str) or not isinstance(task_id, str) or not task_id:
                raise ValueError("wrong shape")
            parsed = datetime.fromisoformat(when)
            return cls(first_seen_at=parsed, task_id=task_id)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput("invalid cursor: pass next_cursor from a previous page") from None


def _page_size(_instance: Any, _attribute: Any, value: int) -> None:
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {value}")


@attrs.frozen(kw_only=True)
class TaskQuery:
    """One page request: a filter, a page size and where to start."""

    filter: TaskFilter = TaskFilter()
    limit: int = attrs.field(default=DEFAULT_PAGE_SIZE, validator=_page_size)
    cursor: TaskCursor | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TaskQuery:
        """Parse filter, ``limit`` and ``cursor`` parameters; raise :class:`InvalidInput`."""
        raw_limit = params.get("limit")
        limit = DEFAULT_PAGE_SIZE
        if raw_limit not in (None, ""):
            try:
                limit = int(raw_limit)
            except (TypeError, ValueError):
                raise InvalidInput(f"limit must be an integer, got {raw_limit!r}") from None
        raw_cursor = params.get("cursor")
        cursor = None
        if raw_cursor not in (None, ""):
            if not isinstance(raw_cursor, str):
                raise InvalidInput("cursor must be a string")
            cursor = TaskCursor.decode(raw_cursor)
        return cls(filter=TaskFilter.from_params(params), limit=limit, cursor=cursor)


@attrs.frozen(kw_only=True)
class TaskPage:
    """A page of tasks and the cursor of the next page (``None`` on the last one)."""

    items: Sequence[Task]
    next_cursor: TaskCursor | None


@attrs.frozen(kw_only=True)
class QueueCount:
    """How many tasks of a queue are in a state (``queue`` is ``None`` when unknown)."""

    queue: str | None
    state: TaskState
    count: int
