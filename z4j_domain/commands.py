"""Commands operators send to workers through an agent: retry, cancel, bulk actions, purge.

A :class:`Command` is stored before anything is sent, so it survives a brain
restart and an agent that is offline: it waits as ``pending`` until a
connected agent of its project takes it (``delivered``), which acknowledges it
(``acked``) and reports an outcome (``succeeded`` or ``failed``); one that no
agent finishes before its deadline ends ``timed_out``. Transitions are pure
functions that never move a finished command, so a late or repeated report
changes nothing.

:func:`plan_retry` decides what a retry publishes. It never puts a redaction
or truncation marker into a command: arguments that may hold one are left for
the agent to recover from the result backend, or the retry is refused.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, optional_aware_utc
from z4j_domain.encoding import canonical_json, storable_json, storable_text
from z4j_domain.errors import InvalidInput
from z4j_domain.redaction import REDACTED, TRUNCATED
from z4j_domain.tasks import JSONValue, Task

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "Command",
    "CommandKind",
    "CommandStatus",
    "RetryPlan",
    "contains_marker",
    "plan_retry",
]

#: How long a command may wait for an agent and run before it is ``timed_out``.
DEFAULT_COMMAND_TIMEOUT: Final = timedelta(minutes=10)
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,200}")
_MAX_PARAMS_BYTES: Final = 256 * 1024
_MAX_COUNTDOWN: Final = 366 * 86_400
# What every marker z4j ever wrote contains: the domain's two, and the Celery
# agent's own cuts, which say what was cut ("[z4j truncated 5000 chars]") or
# mark a cut mapping by a key ("__z4j_truncated__"). Agents from before the
# payload flags existed (and rows stored then) have such markers and no flag.
# The last one is what storable_json leaves of a value nested too deep to store.
_MARKER_FRAGMENTS: Final = (
    REDACTED[:-1],
    TRUNCATED[:-1],
    "__z4j_truncated__",
    "<nested deeper than ",
)


class CommandKind(enum.StrEnum):
    """What a command does."""

    RETRY = "retry"
    CANCEL = "cancel"
    BULK_RETRY = "bulk_retry"
    BULK_CANCEL = "bulk_cancel"
    PURGE = "purge"


class CommandStatus(enum.StrEnum):
    """Where a command stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    ACKED = "acked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"

    @property
    def is_finished(self) -> bool:
        """Whether the command has its outcome (nothing moves it any more)."""
        return self in _FINISHED


_FINISHED: Final = frozenset(
    {CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.TIMED_OUT}
)


def _params(value: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput("command parameters must be a mapping")
    encoded = canonical_json(storable_json(dict(value)))
    if len(encoded) > _MAX_PARAMS_BYTES:
        raise InvalidInput(f"command parameters are limited to {_MAX_PARAMS_BYTES} bytes")
    return _decoded(encoded)


def _decoded(encoded: bytes) -> dict[str, Any]:
    # A decoded copy: nothing nested is shared with the caller's objects.
    document: dict[str, Any] = json.loads(encoded)
    return document


def _optional_result(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput("a command's result must be a mapping")
    return _decoded(canonical_json(storable_json(dict(value))))


def _optional_text(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"expected a string, got {type(value).__name__}")
    return storable_text(value)


def _idempotency_key(_instance: Any, _attribute: Any, value: str | None) -> None:
    # fullmatch: "$" would also match before a trailing newline.
    if value is not None and (not isinstance(value, str) or not _IDEMPOTENCY_KEY.fullmatch(value)):
        raise InvalidInput("an idempotency key is 1 to 200 printable ASCII characters, no spaces")


@attrs.frozen(kw_only=True)
class Command:
    """One command of a project and where it stands.

    ``params`` are the kind's parameters as JSON; ``result`` the agent's report
    (for a retry, the new task's id). ``requested_by`` is the user's id (``None``
    for the system), ``requested_by_name`` what the audit log calls them.
    """

    id: str
    project_id: int
    kind: CommandKind = attrs.field(converter=CommandKind)
    params: Mapping[str, Any] = attrs.field(converter=_params)
    status: CommandStatus = attrs.field(default=CommandStatus.PENDING, converter=CommandStatus)
    idempotency_key: str | None = attrs.field(default=None, validator=_idempotency_key)
    requested_by: int | None = None
    requested_by_name: str
    created_at: datetime = attrs.field(converter=aware_utc)
    deadline: datetime = attrs.field(converter=aware_utc)
    agent: str | None = None
    delivered_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    acked_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    finished_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    result: Mapping[str, Any] | None = attrs.field(default=None, converter=_optional_result)
    error: str | None = attrs.field(default=None, converter=_optional_text)

    def deliver(self, agent: str, at: datetime) -> Command:
        """Handed to ``agent``; a pending command only (else unchanged)."""
        at = aware_utc(at)
        if self.status is not CommandStatus.PENDING:
            return self
        return attrs.evolve(self, status=CommandStatus.DELIVERED, agent=agent, delivered_at=at)

    def acknowledge(self, at: datetime) -> Command:
        """The agent took it on; a delivered command only (else unchanged)."""
        at = aware_utc(at)
        if self.status is not CommandStatus.DELIVERED:
            return self
        return attrs.evolve(self, status=CommandStatus.ACKED, acked_at=at)

    def finish(
        self, at: datetime, *, result: Mapping[str, Any] | None = None, error: str | None = None
    ) -> Command:
        """The agent's outcome: ``error`` makes it failed; a finished command stays as it is."""
        at = aware_utc(at)
        if self.status.is_finished:
            return self
        status = CommandStatus.FAILED if error is not None else CommandStatus.SUCCEEDED
        return attrs.evolve(self, status=status, finished_at=at, result=result, error=error)

    def expire(self, now: datetime) -> Command:
        """``timed_out`` if unfinished at its deadline (else unchanged)."""
        now = aware_utc(now)
        if self.status.is_finished or now < self.deadline:
            return self
        return attrs.evolve(
            self,
            status=CommandStatus.TIMED_OUT,
            finished_at=now,
            error=f"no agent finished it before its deadline ({self.status.value} at the time)",
        )

    def redeliverable(self) -> Command:
        """Back to pending after its agent went away before acknowledging it."""
        if self.status is not CommandStatus.DELIVERED:
            return self
        return attrs.evolve(self, status=CommandStatus.PENDING, agent=None, delivered_at=None)


def contains_marker(value: object) -> bool:
    """Whether a redaction or truncation marker appears anywhere in ``value`` (keys included).

    Every form counts: :data:`REDACTED`, :data:`TRUNCATED` and the Celery
    agent's cut markers (``"[z4j truncated 5000 chars]"``, the key
    ``"__z4j_truncated__"``), whole or inside a longer string.
    """
    if isinstance(value, str):
        return any(fragment in value for fragment in _MARKER_FRAGMENTS)
    if isinstance(value, Mapping):
        return any(contains_marker(k) or contains_marker(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains_marker(item) for item in value)
    return False


@attrs.frozen(kw_only=True)
class RetryPlan:
    """What a retry publishes; ``recover_arguments`` asks the agent to read them back.

    When ``recover_arguments`` is set, ``args`` and ``kwargs`` are ``None``: the
    stored ones may hold markers, so the agent must take the originals from the
    result backend's extended results, or fail the command saying so.
    """

    task_id: str
    name: str
    queue: str | None
    routing_key: str | None
    args: list[JSONValue] | None
    kwargs: dict[str, JSONValue] | None
    recover_arguments: bool
    countdown: float | None = None
    eta: datetime | None = attrs.field(default=None, converter=optional_aware_utc)

    def params(self) -> dict[str, Any]:
        """The retry command's parameters."""
        params: dict[str, Any] = {
            "task_id": self.task_id,
            "name": self.name,
            "queue": self.queue,
            "routing_key": self.routing_key,
            "recover_arguments": self.recover_arguments,
        }
        if not self.recover_arguments:
            params["args"] = self.args if self.args is not None else []
            params["kwargs"] = self.kwargs if self.kwargs is not None else {}
        if self.countdown is not None:
            params["countdown"] = self.countdown
        if self.eta is not None:
            params["eta"] = self.eta.isoformat()
        return params


def plan_retry(
    task: Task,
    *,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
) -> RetryPlan:
    """How to retry ``task``: its name, queue or the override, and arguments as stored or recovered.

    Raises :class:`InvalidInput` when the task cannot be retried at all (its
    name was never seen) or the overrides are invalid.
    """
    if not task.name:
        raise InvalidInput(
            f"task {task.id!r} cannot be retried: its name is unknown (no event carried it)"
        )
    if countdown is not None and eta is not None:
        raise InvalidInput("give countdown or eta, not both")
    if countdown is not None and (
        isinstance(countdown, bool)
        or not isinstance(countdown, (int, float))
        or not 0 <= countdown <= _MAX_COUNTDOWN
    ):
        raise InvalidInput("countdown is a number of seconds from 0 to a year")
    if eta is not None and (
        not isinstance(eta, datetime) or eta.tzinfo is None or eta.utcoffset() is None
    ):
        raise InvalidInput("eta must be a datetime with a timezone")
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        raise InvalidInput("queue must be a non-empty string")
    target_queue = queue if queue is not None else task.queue
    routing_key = None if queue is not None else task.routing_key
    if contains_marker([task.id, task.name, target_queue, routing_key]):
        raise InvalidInput(
            f"task {task.id!r} cannot be retried: its id, name, queue or routing key holds"
            " a redaction or truncation marker"
        )
    marked = (
        task.arguments_redacted
        or task.arguments_truncated
        or contains_marker(task.args)
        or contains_marker(task.kwargs)
    )
    return RetryPlan(
        task_id=task.id,
        name=task.name,
        queue=target_queue,
        routing_key=routing_key,
        args=None if marked else list(task.args or []),
        kwargs=None if marked else dict(task.kwargs or {}),
        recover_arguments=marked,
        countdown=countdown,
        eta=eta,
    )
