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
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, non_empty, non_negative, optional_aware_utc
from z4j_domain.encoding import canonical_json, storable_json, storable_text
from z4j_domain.errors import InvalidInput
from z4j_domain.redaction import REDACTED, TRUNCATED
from z4j_domain.tasks import JSONValue, Task

__all__ = [
    "CANCEL_SIGNALS",
    "DEFAULT_COMMAND_TIMEOUT",
    "MAX_PART_BYTES",
    "MAX_PART_ITEMS",
    "MAX_PROBLEMS",
    "Action",
    "Command",
    "CommandKind",
    "CommandPart",
    "CommandStatus",
    "ItemOutcome",
    "ItemReport",
    "PartReport",
    "PartStatus",
    "Progress",
    "RetryItem",
    "RetryPlan",
    "check_retry_overrides",
    "contains_marker",
    "plan_retry",
    "retry_task_id",
]

#: The signals a cancel may terminate a running task with.
CANCEL_SIGNALS: Final = frozenset({"SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGUSR1"})
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
    #: A change to one Celery Beat schedule entry (see :mod:`z4j_domain.beat`).
    SCHEDULE = "schedule"


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

    def item(self, new_task_id: str) -> RetryItem:
        """What the agent is sent: this plan, published as ``new_task_id``."""
        return RetryItem(
            task_id=self.task_id,
            new_task_id=new_task_id,
            name=self.name,
            queue=self.queue,
            routing_key=self.routing_key,
            args=self.args,
            kwargs=self.kwargs,
            recover_arguments=self.recover_arguments,
            countdown=self.countdown,
            eta=self.eta,
        )


def check_retry_overrides(
    *, queue: str | None = None, countdown: float | None = None, eta: datetime | None = None
) -> None:
    """Raise :class:`InvalidInput` unless a retry's overrides are valid (see :func:`plan_retry`)."""
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
    check_retry_overrides(queue=queue, countdown=countdown, eta=eta)
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


# --- The wire: what brain and agent say about a command --------------------------------

#: Most items one part of a command carries; a bulk action is sent as many parts.
MAX_PART_ITEMS: Final = 200
#: About the most bytes of items one part carries (frames are limited to 4 MiB).
MAX_PART_BYTES: Final = 1_000_000
#: Most characters of a reason an agent reports for one item.
_MAX_REASON: Final = 2_000
_UUID_NAMESPACE: Final = uuid.UUID("5c0e5c1e-7a0b-4c1e-9a1d-2f4a6b8c0d1e")


class Action(enum.StrEnum):
    """What an agent is asked to do; bulk commands are sent as parts of these."""

    RETRY = "retry"
    CANCEL = "cancel"
    PURGE = "purge"
    #: Create, update, delete, enable, disable or trigger one beat schedule entry.
    SCHEDULE = "schedule"

    @classmethod
    def of(cls, kind: CommandKind) -> Action:
        """The action that carries out a command of ``kind``."""
        return _ACTIONS[CommandKind(kind)]


_ACTIONS: Final = {
    CommandKind.RETRY: Action.RETRY,
    CommandKind.BULK_RETRY: Action.RETRY,
    CommandKind.CANCEL: Action.CANCEL,
    CommandKind.BULK_CANCEL: Action.CANCEL,
    CommandKind.PURGE: Action.PURGE,
    CommandKind.SCHEDULE: Action.SCHEDULE,
}


class ItemOutcome(enum.StrEnum):
    """What became of one task of a command part."""

    #: Retry: the new task is on the broker.
    PUBLISHED = "published"
    #: Cancel: the revoke went out to the workers.
    REVOKED = "revoked"
    #: Cancel with terminate: the revoke went out, and the worker running it was told to kill it.
    TERMINATED = "terminated"
    #: Not done, on purpose; the reason says why (nothing was published or revoked).
    REFUSED = "refused"
    #: Tried, and it went wrong; the reason says what.
    FAILED = "failed"

    @property
    def is_success(self) -> bool:
        """Whether the action was carried out for the task."""
        return self in (ItemOutcome.PUBLISHED, ItemOutcome.REVOKED, ItemOutcome.TERMINATED)


class PartStatus(enum.StrEnum):
    """An agent's report on one part: taken on, done (per-item outcomes), or failed as a whole."""

    ACKED = "acked"
    DONE = "done"
    FAILED = "failed"


def retry_task_id(command_id: str, task_id: str) -> str:
    """The id a command's retry of ``task_id`` publishes the new task under.

    Derived, not random: a part sent twice (after a reconnect) names the same
    new task, so the brain knows it before the agent answers and an agent can
    tell a repeat from a new request.
    """
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{command_id}/{task_id}"))


def _text_field(data: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 1_000:
        raise InvalidInput(f"{key!r} must be a non-empty string of at most 1000 characters")
    return value


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{key!r} must be a number")
    return float(value)


@attrs.frozen(kw_only=True)
class RetryItem:
    """One task of a retry part as the agent receives it: what to publish, under which id.

    ``args``/``kwargs`` are ``None`` exactly when ``recover_arguments`` is set;
    given ones never hold a marker (:meth:`from_dict` refuses them).
    """

    task_id: str
    new_task_id: str
    name: str
    queue: str | None = None
    routing_key: str | None = None
    args: list[JSONValue] | None = None
    kwargs: dict[str, JSONValue] | None = None
    recover_arguments: bool = False
    countdown: float | None = None
    eta: datetime | None = attrs.field(default=None, converter=optional_aware_utc)

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON."""
        item: dict[str, Any] = {
            "task_id": self.task_id,
            "new_task_id": self.new_task_id,
            "name": self.name,
            "queue": self.queue,
            "routing_key": self.routing_key,
            "recover_arguments": self.recover_arguments,
        }
        if not self.recover_arguments:
            item["args"] = self.args if self.args is not None else []
            item["kwargs"] = self.kwargs if self.kwargs is not None else {}
        if self.countdown is not None:
            item["countdown"] = self.countdown
        if self.eta is not None:
            item["eta"] = self.eta.isoformat()
        return item

    @classmethod
    def from_dict(cls, data: Any) -> RetryItem:
        """Validate an item received from the brain; raise :class:`InvalidInput`."""
        if not isinstance(data, Mapping):
            raise InvalidInput("a retry item must be a JSON object")
        recover = data.get("recover_arguments", False)
        if not isinstance(recover, bool):
            raise InvalidInput("'recover_arguments' must be true or false")
        args = data.get("args")
        kwargs = data.get("kwargs")
        if recover:
            args, kwargs = None, None
        else:
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise InvalidInput("a retry item needs 'args' (a list) and 'kwargs' (an object)")
            if contains_marker(args) or contains_marker(kwargs):
                raise InvalidInput(
                    "the arguments hold a redaction or truncation marker; z4j never publishes one"
                )
        eta_text = data.get("eta")
        eta = None
        if eta_text is not None:
            try:
                eta = aware_utc(datetime.fromisoformat(eta_text))
            except (TypeError, ValueError):
                raise InvalidInput("'eta' must be an ISO 8601 time with a timezone") from None
        fields = {
            key: _text_field(data, key, required=key in ("task_id", "new_task_id", "name"))
            for key in ("task_id", "new_task_id", "name", "queue", "routing_key")
        }
        if contains_marker(list(fields.values())):
            raise InvalidInput("the task's id, name, queue or routing key holds a marker")
        countdown = _number(data, "countdown")
        if countdown is not None and eta is not None:
            raise InvalidInput("give countdown or eta, not both")
        return cls(
            **fields,  # type: ignore[arg-type]
            args=args,
            kwargs=kwargs,
            recover_arguments=recover,
            countdown=countdown,
            eta=eta,
        )


def _items(value: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class CommandPart:
    """brain -> agent: one part of a command (a single action is one part of one item).

    ``items`` are :class:`RetryItem` dicts for a retry, ``{"task_id"}`` for a
    cancel, none for a purge or a schedule change; ``options`` hold the rest
    (cancel: ``terminate``, ``signal``; purge: ``queue``, ``confirm_depth``;
    schedule: a :class:`~z4j_domain.beat.ScheduleRequest`). An agent runs a part once:
    the same ``(command_id, part)`` again is answered with the first outcome.
    """

    command_id: str = attrs.field(validator=non_empty)
    action: Action = attrs.field(converter=Action)
    part: int = attrs.field(validator=non_negative)
    items: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_items)
    options: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        """What an agent dedupes by."""
        return (self.command_id, self.part)

    def report(
        self,
        status: PartStatus,
        outcomes: Iterable[ItemReport] = (),
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> PartReport:
        """The agent's report on this part."""
        return PartReport(
            command_id=self.command_id,
            action=self.action,
            part=self.part,
            status=status,
            outcomes=tuple(outcomes),
            result=result,
            error=error,
        )

    def body(self) -> dict[str, Any]:
        """The ``command`` frame body."""
        return {
            "id": self.command_id,
            "command": self.action.value,
            "part": self.part,
            "items": [dict(item) for item in self.items],
            "options": dict(self.options),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CommandPart:
        """Validate a ``command`` frame body; raise :class:`InvalidInput`."""
        try:
            action = Action(str(body.get("command")))
        except ValueError:
            raise InvalidInput(f"unknown command {body.get('command')!r}") from None
        command_id = _text_field(body, "id")
        part = body.get("part")
        items = body.get("items", [])
        options = body.get("options", {})
        if type(part) is not int or part < 0:
            raise InvalidInput("'part' must be a non-negative integer")
        if (
            not isinstance(items, list)
            or len(items) > MAX_PART_ITEMS
            or not all(isinstance(item, dict) for item in items)
        ):
            raise InvalidInput(f"'items' must be a list of at most {MAX_PART_ITEMS} objects")
        if not isinstance(options, dict):
            raise InvalidInput("'options' must be an object")
        return cls(
            command_id=command_id or "", action=action, part=part, items=items, options=options
        )


@attrs.frozen(kw_only=True)
class ItemReport:
    """One task's outcome in a part."""

    task_id: str
    outcome: ItemOutcome = attrs.field(converter=ItemOutcome)
    new_task_id: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON (``None`` fields left out)."""
        data: dict[str, Any] = {"task_id": self.task_id, "outcome": self.outcome.value}
        if self.new_task_id is not None:
            data["new_task_id"] = self.new_task_id
        if self.reason is not None:
            data["reason"] = self.reason
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ItemReport:
        """Validate one item report; raise :class:`InvalidInput`."""
        if not isinstance(data, Mapping):
            raise InvalidInput("an item report must be a JSON object")
        try:
            outcome = ItemOutcome(str(data.get("outcome")))
        except ValueError:
            raise InvalidInput(f"unknown item outcome {data.get('outcome')!r}") from None
        reason = data.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("'reason' must be a string")
        return cls(
            task_id=_text_field(data, "task_id") or "",
            outcome=outcome,
            new_task_id=_text_field(data, "new_task_id", required=False),
            reason=None if reason is None else storable_text(reason[:_MAX_REASON]),
        )


@attrs.frozen(kw_only=True)
class PartReport:
    """agent -> brain (``command_result``): a part taken on, done, or failed as a whole.

    ``outcomes`` (done) has one report per item; ``result`` carries what a
    part without items found (a purge: queue, depth, purged); ``error`` says
    why a failed part failed.
    """

    command_id: str = attrs.field(validator=non_empty)
    action: Action = attrs.field(converter=Action)
    part: int = attrs.field(validator=non_negative)
    status: PartStatus = attrs.field(converter=PartStatus)
    outcomes: tuple[ItemReport, ...] = attrs.field(default=(), converter=tuple[ItemReport, ...])
    result: Mapping[str, Any] | None = attrs.field(default=None, converter=_optional_result)
    error: str | None = attrs.field(default=None, converter=_optional_text)

    def body(self) -> dict[str, Any]:
        """The ``command_result`` frame body."""
        body: dict[str, Any] = {
            "id": self.command_id,
            "command": self.action.value,
            "part": self.part,
            "status": self.status.value,
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }
        if self.result is not None:
            body["result"] = dict(self.result)
        if self.error is not None:
            body["error"] = self.error
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PartReport:
        """Validate a ``command_result`` body; raise :class:`InvalidInput`."""
        try:
            action = Action(str(body.get("command")))
            status = PartStatus(str(body.get("status")))
        except ValueError:
            raise InvalidInput("unknown command or status in a command result") from None
        part = body.get("part")
        if type(part) is not int or part < 0:
            raise InvalidInput("'part' must be a non-negative integer")
        outcomes = body.get("outcomes", [])
        if not isinstance(outcomes, list) or len(outcomes) > MAX_PART_ITEMS:
            raise InvalidInput(f"'outcomes' must be a list of at most {MAX_PART_ITEMS} reports")
        result = body.get("result")
        if result is not None and not isinstance(result, dict):
            raise InvalidInput("'result' must be an object")
        error = body.get("error")
        if error is not None and not isinstance(error, str):
            raise InvalidInput("'error' must be a string")
        return cls(
            command_id=_text_field(body, "id") or "",
            action=action,
            part=part,
            status=status,
            outcomes=tuple(ItemReport.from_dict(item) for item in outcomes),
            result=result,
            error=None if error is None else error[:_MAX_REASON],
        )


#: Most refused or failed tasks a bulk command's result names (its counts cover every task).
MAX_PROBLEMS: Final = 50


def _counts(value: Mapping[str, int]) -> Mapping[str, int]:
    return {ItemOutcome(key).value: int(count) for key, count in sorted(value.items())}


@attrs.frozen(kw_only=True)
class Progress:
    """How far a bulk command got: the result it shows while it runs and once it is done.

    ``total`` is how many tasks it was sent to act on (known when it starts),
    ``done`` how many have an outcome, ``outcomes`` the count of each, and
    ``problems`` the first :data:`MAX_PROBLEMS` refused or failed tasks with
    their reasons.
    """

    total: int | None = None
    done: int = 0
    outcomes: Mapping[str, int] = attrs.field(factory=dict, converter=_counts)
    problems: tuple[Mapping[str, Any], ...] = ()

    def add(self, reports: Iterable[ItemReport]) -> Progress:
        """This progress with ``reports`` counted."""
        outcomes = dict(self.outcomes)
        problems = list(self.problems)
        done = self.done
        for report in reports:
            done += 1
            outcomes[report.outcome.value] = outcomes.get(report.outcome.value, 0) + 1
            if not report.outcome.is_success and len(problems) < MAX_PROBLEMS:
                problems.append(report.to_dict())
        return attrs.evolve(self, done=done, outcomes=outcomes, problems=tuple(problems))

    def to_dict(self) -> dict[str, Any]:
        """The progress as a command's ``result``."""
        return {
            "total": self.total,
            "done": self.done,
            "outcomes": dict(self.outcomes),
            "problems": [dict(problem) for problem in self.problems],
        }
