"""JSON-ready dictionaries of domain values, through one cattrs converter.

``*_to_dict`` produce plain JSON types (datetimes as ISO 8601 in UTC);
``*_from_dict`` accept the same and raise :class:`~z4j_domain.errors.InvalidInput`
with a readable reason on anything malformed.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

import attrs
import cattrs
from cattrs.errors import ClassValidationError

from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import PAYLOAD_FLAGS, Task, TaskEvent
from z4j_domain.workers import Worker

__all__ = [
    "TASK_API_FIELDS",
    "TASK_SUMMARY_FIELDS",
    "converter",
    "event_from_dict",
    "event_to_dict",
    "task_summary_to_dict",
    "task_to_dict",
    "worker_to_dict",
]

#: The fields of a task in the API, in the order they are documented.
TASK_API_FIELDS: Final = (
    "id",
    "name",
    "state",
    "queue",
    "routing_key",
    "worker",
    "args",
    "kwargs",
    "result",
    "exception",
    "traceback",
    "retries",
    "attempt",
    "eta",
    "expires",
    "sent_at",
    "received_at",
    "started_at",
    "finished_at",
    "runtime",
    "root_id",
    "parent_id",
    "group_id",
    "chord_id",
    "retry_of",
    "first_seen_at",
    "updated_at",
    "redacted",
    "truncated",
    "arguments_redacted",
    "arguments_truncated",
)

#: The fields of a task where the API only points at it (a task detail's ``retried_by``).
TASK_SUMMARY_FIELDS: Final = (
    "id",
    "name",
    "state",
    "attempt",
    "first_seen_at",
    "sent_at",
    "received_at",
    "started_at",
    "finished_at",
)


def _parse_datetime(value: Any, _type: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 string, got {type(value).__name__}")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _identity(value: Any, _type: Any) -> Any:
    return value


converter: Final = cattrs.Converter(forbid_extra_keys=True)
converter.register_unstructure_hook(datetime, utc_isoformat)
converter.register_unstructure_hook(enum.StrEnum, lambda member: member.value)
converter.register_structure_hook(datetime, _parse_datetime)
# JSON payloads (args, result) are kept as they are: structured, not reprs.
converter.register_structure_hook(Any, _identity)


def _describe(error: BaseException) -> str:
    if isinstance(error, ClassValidationError):
        return "; ".join(_describe(e) for e in error.exceptions)
    notes = getattr(error, "__notes__", None) or []
    where = f" ({notes[0]})" if notes else ""
    return f"{error}{where}"


_EVENT_FIELDS: Final = tuple(field.name for field in attrs.fields(TaskEvent))


def event_to_dict(event: TaskEvent) -> dict[str, Any]:
    """The event as a JSON-ready dict, ``None`` fields and unset flags left out.

    Written out rather than left to the converter: it runs once per ingested
    event, and a direct walk over the fields is several times faster. The
    converter's structure hook reads the result back (a round-trip test holds
    the two together).
    """
    out: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = getattr(event, name)
        if value is None or (value is False and name in PAYLOAD_FLAGS):
            continue
        if isinstance(value, datetime):
            value = utc_isoformat(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        out[name] = value
    return out


def event_from_dict(data: Any) -> TaskEvent:
    """Build a :class:`TaskEvent` from its dict form, or raise :class:`InvalidInput`."""
    if not isinstance(data, dict):
        raise InvalidInput("an event must be a JSON object")
    try:
        return converter.structure(data, TaskEvent)
    except (ClassValidationError, ValueError, TypeError, KeyError) as error:
        raise InvalidInput(f"invalid event: {_describe(error)}") from None


def task_to_dict(task: Task) -> dict[str, Any]:
    """The task as the API shows it (the fold's bookkeeping left out)."""
    raw: dict[str, Any] = converter.unstructure(task)
    raw["attempt"] = task.attempt
    if raw["retries"] is None:
        raw["retries"] = 0
    return {name: raw[name] for name in TASK_API_FIELDS}


def task_summary_to_dict(task: Task) -> dict[str, Any]:
    """The task as the API lists it where it only points at it: :data:`TASK_SUMMARY_FIELDS`."""
    full = task_to_dict(task)
    return {name: full[name] for name in TASK_SUMMARY_FIELDS}


def worker_to_dict(worker: Worker) -> dict[str, Any]:
    """The worker as the API shows it."""
    raw: dict[str, Any] = converter.unstructure(worker)
    return raw
