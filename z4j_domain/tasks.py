"""Tasks and their lifecycle events, and the fold that turns events into state.

A task's stored state is a *fold* of its events. The fold is built as a join
(a semilattice merge): :func:`merge` is commutative, associative and
idempotent, and :func:`apply` is ``merge(task, Task.from_event(event))``. So
any arrival order of the same set of events yields the same task, and an event
delivered twice changes nothing.

How each field is joined:

* **State and outcome** (``state``, ``result``, ``exception``, ``traceback``,
  ``runtime``, ``finished_at``) come from the single event with the greatest
  :class:`EventKey`: delivery attempt first, then the rank of its kind
  (sent < received < started < lost < a real terminal event), then Celery's
  logical clock, timestamp and event id. A late ``received`` therefore never
  regresses a ``succeeded`` of the same attempt, a reconciler's ``lost`` is
  overridden by a real outcome of the same attempt that arrives after all, and
  a later attempt (a retry, a redelivery after a crash) starts the task again.
* **Per-attempt fields** (queue, worker, arguments, eta, ...) take the value
  carried by the highest attempt that carried one; ``field_attempts`` records
  which attempt that was.
* **Per-task fields** (name and the canvas links) keep whichever value any
  event carried.

Ties between different values of one field at the same attempt (which Celery
never produces) are broken by a total order on the values, so even then the
result does not depend on arrival order.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, non_empty, non_negative, optional_aware_utc
from z4j_domain.encoding import canonical_json
from z4j_domain.errors import InvalidInput

__all__ = [
    "EventKey",
    "EventKind",
    "JSONValue",
    "Task",
    "TaskEvent",
    "TaskState",
    "apply",
    "fold",
    "merge",
]

#: A JSON-compatible value: what args, kwargs and results are stored as.
JSONValue = Any


class TaskState(enum.StrEnum):
    """Where a task is in its lifecycle; the values are the API's lower-case names."""

    PENDING = "pending"
    RECEIVED = "received"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    REVOKED = "revoked"
    REJECTED = "rejected"
    LOST = "lost"

    @property
    def is_terminal(self) -> bool:
        """Whether nothing more is expected of the current delivery attempt."""
        return self not in _ACTIVE_STATES


_ACTIVE_STATES: Final = frozenset({TaskState.PENDING, TaskState.RECEIVED, TaskState.STARTED})


class EventKind(enum.StrEnum):
    """What happened to a task: Celery's lifecycle plus the reconciler's verdicts."""

    SENT = "sent"
    RECEIVED = "received"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    REVOKED = "revoked"
    REJECTED = "rejected"
    #: Reconciler verdict: the task's worker went away and nobody reports it.
    LOST = "lost"

    @property
    def state(self) -> TaskState:
        """The task state an event of this kind leads to."""
        return _STATE_OF_KIND[self]

    @property
    def rank(self) -> int:
        """Precedence of this kind within one delivery attempt."""
        return _RANK_OF_KIND[self]


_STATE_OF_KIND: Final = {
    EventKind.SENT: TaskState.PENDING,
    EventKind.RECEIVED: TaskState.RECEIVED,
    EventKind.STARTED: TaskState.STARTED,
    EventKind.SUCCEEDED: TaskState.SUCCEEDED,
    EventKind.FAILED: TaskState.FAILED,
    EventKind.RETRIED: TaskState.RETRIED,
    EventKind.REVOKED: TaskState.REVOKED,
    EventKind.REJECTED: TaskState.REJECTED,
    EventKind.LOST: TaskState.LOST,
}

# A verdict (lost) outranks progress but yields to any real outcome of the same
# attempt: a worker that was only partitioned may still report success.
_RANK_OF_KIND: Final = {
    EventKind.SENT: 0,
    EventKind.RECEIVED: 1,
    EventKind.STARTED: 2,
    EventKind.LOST: 3,
    EventKind.SUCCEEDED: 4,
    EventKind.FAILED: 4,
    EventKind.RETRIED: 4,
    EventKind.REVOKED: 4,
    EventKind.REJECTED: 4,
}

_KIND_OF_STATE: Final = {state: kind for kind, state in _STATE_OF_KIND.items()}


@attrs.frozen(kw_only=True, order=True)
class EventKey:
    """The total order of a task's events that decides its state.

    Compared field by field: delivery attempt, rank of the kind within the
    attempt, Celery's logical clock, timestamp, and finally the event id so
    that two distinct events never tie.
    """

    attempt: int
    rank: int
    clock: int
    timestamp: datetime
    event_id: str


def _optional_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


@attrs.frozen(kw_only=True)
class TaskEvent:
    """One observation of a task, as an agent (or the reconciler) reports it.

    Only ``id``, ``task_id``, ``kind`` and ``timestamp`` are required; every
    other field is carried when the source knows it and left ``None`` otherwise.
    ``attempt`` is the delivery attempt: it grows with each Celery retry and each
    redelivery, and the fold lets a higher attempt start the task again.
    """

    id: str = attrs.field(validator=non_empty)
    task_id: str = attrs.field(validator=non_empty)
    kind: EventKind = attrs.field(converter=EventKind)
    timestamp: datetime = attrs.field(converter=aware_utc)
    attempt: int = attrs.field(default=0, validator=non_negative)
    clock: int = attrs.field(default=0, validator=non_negative)
    name: str | None = attrs.field(default=None, converter=_optional_str)
    queue: str | None = attrs.field(default=None, converter=_optional_str)
    routing_key: str | None = attrs.field(default=None, converter=_optional_str)
    worker: str | None = attrs.field(default=None, converter=_optional_str)
    args: list[JSONValue] | None = None
    kwargs: dict[str, JSONValue] | None = None
    result: JSONValue = None
    exception: str | None = None
    traceback: str | None = None
    runtime: float | None = attrs.field(default=None, validator=non_negative)
    retries: int | None = attrs.field(default=None, validator=non_negative)
    eta: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    expires: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    root_id: str | None = attrs.field(default=None, converter=_optional_str)
    parent_id: str | None = attrs.field(default=None, converter=_optional_str)
    group_id: str | None = attrs.field(default=None, converter=_optional_str)
    chord_id: str | None = attrs.field(default=None, converter=_optional_str)

    @property
    def key(self) -> EventKey:
        """This event's place in the order that decides a task's state."""
        return EventKey(
            attempt=self.attempt,
            rank=self.kind.rank,
            clock=self.clock,
            timestamp=self.timestamp,
            event_id=self.id,
        )


#: Fields whose value belongs to one delivery attempt; a higher attempt's value wins.
PER_ATTEMPT_FIELDS: Final = (
    "queue",
    "routing_key",
    "worker",
    "args",
    "kwargs",
    "retries",
    "eta",
    "expires",
    "sent_at",
    "received_at",
    "started_at",
)
#: Fields that describe the task itself and never change once known.
PER_TASK_FIELDS: Final = ("name", "root_id", "parent_id", "group_id", "chord_id")
#: Fields that belong to the event that decided the state.
OUTCOME_FIELDS: Final = ("result", "exception", "traceback", "runtime", "finished_at")

_TIMESTAMP_FIELD_OF_KIND: Final = {
    EventKind.SENT: "sent_at",
    EventKind.RECEIVED: "received_at",
    EventKind.STARTED: "started_at",
}


def _frozen_attempts(value: Mapping[str, int]) -> Mapping[str, int]:
    # Canonical form: attempt 0 is the default and is never stored.
    return {k: v for k, v in sorted(value.items()) if v}


@attrs.frozen(kw_only=True)
class Task:
    """The current state of one task: the fold of every event seen for it.

    Build one with :meth:`Task.from_event` or :func:`fold`, and change it only
    through :func:`apply` / :func:`merge`. ``state_key`` and ``field_attempts``
    are the fold's bookkeeping: storing them with the task is what lets a
    repository fold new events into a stored row without re-reading history.
    """

    id: str = attrs.field(validator=non_empty)
    state: TaskState = attrs.field(converter=TaskState)
    name: str | None = None
    queue: str | None = None
    routing_key: str | None = None
    worker: str | None = None
    args: list[JSONValue] | None = None
    kwargs: dict[str, JSONValue] | None = None
    result: JSONValue = None
    exception: str | None = None
    traceback: str | None = None
    retries: int | None = None
    eta: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    expires: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    sent_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    received_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    started_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    finished_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    runtime: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    chord_id: str | None = None
    #: Earliest timestamp of any event: when the task was first seen anywhere.
    first_seen_at: datetime = attrs.field(converter=aware_utc)
    #: Latest timestamp of any event.
    updated_at: datetime = attrs.field(converter=aware_utc)
    state_key: EventKey
    field_attempts: Mapping[str, int] = attrs.field(factory=dict, converter=_frozen_attempts)

    @property
    def attempt(self) -> int:
        """The delivery attempt the current state belongs to."""
        return self.state_key.attempt

    @classmethod
    def from_event(cls, event: TaskEvent) -> Task:
        """The task as known from this one event alone."""
        values: dict[str, Any] = {
            "queue": event.queue,
            "routing_key": event.routing_key,
            "worker": event.worker,
            "args": event.args,
            "kwargs": event.kwargs,
            "retries": event.retries,
            "eta": event.eta,
            "expires": event.expires,
            "sent_at": None,
            "received_at": None,
            "started_at": None,
        }
        timestamp_field = _TIMESTAMP_FIELD_OF_KIND.get(event.kind)
        if timestamp_field is not None:
            values[timestamp_field] = event.timestamp
        terminal = event.kind.state.is_terminal
        return cls(
            id=event.task_id,
            state=event.kind.state,
            name=event.name,
            root_id=event.root_id,
            parent_id=event.parent_id,
            group_id=event.group_id,
            chord_id=event.chord_id,
            result=event.result,
            exception=event.exception,
            traceback=event.traceback,
            runtime=event.runtime,
            finished_at=event.timestamp if terminal else None,
            first_seen_at=event.timestamp,
            updated_at=event.timestamp,
            state_key=event.key,
            field_attempts={k: event.attempt for k, v in values.items() if v is not None},
            **values,
        )


def _order_key(value: Any) -> Any:
    # Datetimes and numbers order naturally; anything else (JSON documents,
    # mixed types) by its canonical encoding, which is a total order.
    if isinstance(value, datetime):
        return (0, value, b"")
    return (1, None, canonical_json(value))


def _join_values(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a if _order_key(a) >= _order_key(b) else b


def merge(a: Task, b: Task) -> Task:
    """Join two partial views of the same task; commutative, associative, idempotent."""
    if a.id != b.id:
        raise InvalidInput(f"cannot merge task {a.id!r} with task {b.id!r}")
    if a is b:
        return a
    decider = a if a.state_key >= b.state_key else b
    changes: dict[str, Any] = {
        "state": decider.state,
        "state_key": decider.state_key,
        "first_seen_at": min(a.first_seen_at, b.first_seen_at),
        "updated_at": max(a.updated_at, b.updated_at),
    }
    for name in OUTCOME_FIELDS:
        changes[name] = getattr(decider, name)
    for name in PER_TASK_FIELDS:
        changes[name] = _join_values(getattr(a, name), getattr(b, name))
    attempts: dict[str, int] = {}
    for name in PER_ATTEMPT_FIELDS:
        va, vb = getattr(a, name), getattr(b, name)
        ta, tb = a.field_attempts.get(name, 0), b.field_attempts.get(name, 0)
        if vb is None or (va is not None and ta > tb):
            value, attempt = va, ta
        elif va is None or tb > ta:
            value, attempt = vb, tb
        else:
            value, attempt = _join_values(va, vb), ta
        changes[name] = value
        if value is not None:
            attempts[name] = attempt
    changes["field_attempts"] = attempts
    return attrs.evolve(a, **changes)


def apply(task: Task | None, event: TaskEvent) -> Task:
    """Fold one event into a task (``None`` when the task is not known yet)."""
    incoming = Task.from_event(event)
    return incoming if task is None else merge(task, incoming)


def fold(events: Iterable[TaskEvent], task: Task | None = None) -> Task | None:
    """Fold events (of one task) into ``task``, in any order."""
    for event in events:
        task = apply(task, event)
    return task


def kind_of_state(state: TaskState) -> EventKind:
    """The event kind that leads to ``state`` (the inverse of :attr:`EventKind.state`)."""
    return _KIND_OF_STATE[state]
