"""Celery signals in, z4j task events out.

The signal handlers run on the task's own thread (or the worker's consumer
loop), so they do as little as they can: read a handful of attributes and hand
a :data:`RawEvent` tuple, holding references to the task's own objects, to
``emit``. Everything that costs (JSON-safety, size limits, redaction, the event id, the
event's dict) happens later, off the task's thread, in :func:`materialize`.

**Attempts.** A task's ``attempt`` is ``2 * retries``, plus one when the
broker *redelivered* the message (``delivery_info["redelivered"]``: set by
AMQP natively and by kombu's Redis transport when it restores the unacked
messages of a lost worker, e.g. an ``acks_late`` task whose worker was
killed). So a redelivered run outranks what was reported of the run it
replaces (a ``lost`` verdict included), and the next Celery retry, attempt
``2 * (retries + 1)``, outranks both. ``retries`` stays Celery's own count.
``sent`` events carry ``2 * retries``: a published message is never a
redelivery.

**Retries by z4j.** A task that z4j re-published (a retry from the
dashboard, under a new task id) carries the original task's id in the
:data:`~z4j_domain.tasks.RETRY_OF_HEADER` message header; every event read
from the message (``sent``, ``received``, the task's own run, ``rejected``)
reports it as ``retry_of``. Celery's protocol 2 keeps a custom header in the
message headers, which become the worker's ``Request.request_dict`` and, in
the process that runs the task, attributes of ``task.request``.

**Redaction.** :func:`materialize` cuts payloads to size first (JSON-safe
values, :mod:`~z4j_agent_celery.payload`), then redacts them with the policy
it is given (:func:`redact_event_dict`: the rules of
:func:`~z4j_domain.redaction.redact_event`, on the event's dict), so the
event's ``redacted`` / ``truncated`` / ``arguments_*`` flags say what either
step did. A task declared with ``@app.task(z4j_fully_redacted=True)`` (Celery
keeps unknown task options as class attributes) is redacted whole: its
arguments' values and its result are replaced. The main process's second
pass (see :mod:`~z4j_agent_celery.runtime`) is :func:`redact_event_dict`
again.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from time import perf_counter, time
from typing import Any, Final

from z4j_agent_celery.payload import TRUNCATED, TRUNCATED_KEY, Cut, bounded_text, limit_payload
from z4j_domain.encoding import storable_json, storable_text, utc_isoformat
from z4j_domain.redaction import (
    DEFAULT_POLICY,
    RedactionPolicy,
    redact_task_payload,
)
from z4j_domain.tasks import (
    MAX_ID_LENGTH,
    PAYLOAD_FLAGS,
    RETRY_OF_HEADER,
    EventKind,
    optional_id,
    optional_text,
)

__all__ = [
    "FULLY_REDACTED_OPTION",
    "SIGNALS",
    "Capture",
    "RawEvent",
    "attempt_of",
    "chord_id_of",
    "materialize",
    "redact_event_dict",
]

#: (kind, task id, UNIX timestamp, fields): what a signal handler hands on.
RawEvent = tuple[str, str, float, dict[str, Any]]

#: Longest exception repr and traceback text kept, in characters.
MAX_EXCEPTION_CHARS: Final = 2_000
MAX_TRACEBACK_CHARS: Final = 16_000

#: Text fields of an event, and its optional ids (besides ``chord_id`` and ``retry_of``).
_TEXT_FIELDS: Final = ("name", "queue", "routing_key", "worker")
_ID_FIELDS: Final = ("root_id", "parent_id", "group_id")
#: The task option (``@app.task(z4j_fully_redacted=True)``) that redacts a task whole.
FULLY_REDACTED_OPTION: Final = "z4j_fully_redacted"

#: The Celery signals a :class:`Capture` listens to, by handler method.
SIGNALS: Final = {
    "task_received": "on_received",
    "task_prerun": "on_prerun",
    "task_success": "on_success",
    "task_failure": "on_failure",
    "task_retry": "on_retry",
    "task_postrun": "on_postrun",
    "task_revoked": "on_revoked",
    "task_rejected": "on_rejected",
    "task_unknown": "on_unknown",
    "after_task_publish": "on_published",
}


def chord_id_of(chord: Any) -> str | None:
    """The task id of a chord's callback, from the ``chord`` a header task carries."""
    if isinstance(chord, Mapping):
        options = chord.get("options")
        if isinstance(options, Mapping):
            task_id = options.get("task_id")
            if isinstance(task_id, str) and task_id:
                return task_id
    return None


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _when(value: Any) -> datetime | None:
    """An eta/expires as an aware datetime (naive ones are taken as UTC), else ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def _retry_of(value: Any) -> str | None:
    """A ``z4j_retry_of`` header's value if it can be an id; anything else is dropped.

    The header is z4j's own, but a message may come from anywhere: a value
    that no task id can be must not cost the event.
    """
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    return None


def _retries(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def attempt_of(retries: int, redelivered: bool) -> int:
    """The delivery attempt of a run: ``2 * retries``, plus one for a broker redelivery."""
    return 2 * retries + (1 if redelivered else 0)


def _exception_text(exception: Any) -> tuple[str | None, bool]:
    """The exception's text (its ``repr``, or itself if a string), and whether it was cut."""
    if exception is None:
        return None, False
    if isinstance(exception, str):
        text = exception
    else:
        try:
            text = repr(exception)
        except Exception:  # a broken __repr__ must not lose the event
            text = f"<{type(exception).__qualname__}>"
    return bounded_text(text, MAX_EXCEPTION_CHARS), len(text) > MAX_EXCEPTION_CHARS


def _text(value: Any) -> str | None:
    """An optional text field as a ``TaskEvent`` holds it (``None`` when empty)."""
    return optional_text(_str_or_none(value))


def _event_id(value: Any) -> str | None:
    """An optional id as a ``TaskEvent`` holds it; too long an id raises."""
    return optional_id(_str_or_none(value))


def materialize(
    raw: RawEvent, *, max_payload_bytes: int, policy: RedactionPolicy = DEFAULT_POLICY
) -> dict[str, Any]:
    """The event dict of a raw event: what ``event_to_dict`` gives for its ``TaskEvent``.

    Payloads are cut to size, then redacted under ``policy``; the raw event's
    ``fully_redacted`` field (the task's option in code) redacts them whole.
    Built directly, with the event's own normalizing rules, rather than
    through a :class:`~z4j_domain.tasks.TaskEvent` and back: this runs for every event in the
    worker, and the brain builds (and validates) the domain event anyway.
    Raises when no valid event can be built (an id longer than
    :data:`~z4j_domain.tasks.MAX_ID_LENGTH`, an unknown kind).
    """
    kind, task_id, timestamp, fields = raw
    retries = _retries(fields.get("retries"))
    event_id = _event_id(task_id)
    if event_id is None:
        raise ValueError("an event needs a task id")
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "task_id": event_id,
        "kind": EventKind(kind).value,
        "timestamp": utc_isoformat(datetime.fromtimestamp(timestamp, UTC)),
        "attempt": attempt_of(retries, fields.get("redelivered") is True),
        "clock": 0,
        "retries": retries,
    }
    for name in _TEXT_FIELDS:
        text = _text(fields.get(name))
        if text is not None:
            event[name] = text
    for name in _ID_FIELDS:
        text = _event_id(fields.get(name))
        if text is not None:
            event[name] = text
    arguments_cut = Cut()
    if "args" in fields:
        args = fields["args"]
        args = limit_payload(
            list(args) if isinstance(args, (list, tuple)) else [args],
            max_payload_bytes,
            cut=arguments_cut,
        )
        event["args"] = storable_json(args if isinstance(args, list) else [args])
    if "kwargs" in fields:
        kwargs = limit_payload(fields["kwargs"] or {}, max_payload_bytes, cut=arguments_cut)
        if not isinstance(kwargs, dict):
            kwargs = {TRUNCATED_KEY: kwargs} if str(kwargs).startswith(TRUNCATED) else {}
        event["kwargs"] = storable_json(kwargs)
    truncated = arguments_cut.cut
    if "result" in fields:
        result_cut = Cut()
        result = storable_json(limit_payload(fields["result"], max_payload_bytes, cut=result_cut))
        if result is not None:
            event["result"] = result
        truncated = truncated or result_cut.cut
    if "exception" in fields:
        exception, exception_cut = _exception_text(fields["exception"])
        if exception:
            event["exception"] = storable_text(exception)
        truncated = truncated or exception_cut
    traceback = fields.get("traceback")
    if isinstance(traceback, str) and traceback:
        bounded = bounded_text(traceback, MAX_TRACEBACK_CHARS, keep_tail=True)
        event["traceback"] = storable_text(bounded)
        truncated = truncated or bounded is not traceback
    runtime = fields.get("runtime")
    if isinstance(runtime, float) and 0 <= runtime < math.inf:
        event["runtime"] = runtime
    for name, value in (
        ("chord_id", chord_id_of(fields.get("chord"))),
        ("retry_of", _retry_of(fields.get("retry_of"))),
    ):
        text = _event_id(value)
        if text is not None:
            event[name] = text
    for name in ("eta", "expires"):
        when = _when(fields.get(name))
        if when is not None:
            event[name] = utc_isoformat(when.astimezone(UTC))
    if truncated:
        event["truncated"] = True
    if arguments_cut.cut:
        event["arguments_truncated"] = True
    return redact_event_dict(event, policy, fully_redacted=fields.get("fully_redacted") is True)


def redact_event_dict(
    event: dict[str, Any], policy: RedactionPolicy, *, fully_redacted: bool = False
) -> dict[str, Any]:
    """:func:`~z4j_domain.redaction.redact_event` on an event dict (``event_to_dict`` form).

    The same rules and flag handling, without building a :class:`TaskEvent`:
    flags already set stay set, and ``event`` itself is returned when nothing
    changed. A second pass over an event redacted before changes nothing but
    what the new ``policy`` adds.
    """
    payload = redact_task_payload(
        policy,
        name=event.get("name"),
        whole=fully_redacted,
        args=event.get("args"),
        kwargs=event.get("kwargs"),
        result=event.get("result"),
        exception=event.get("exception"),
        traceback=event.get("traceback"),
    )
    if not (payload.redacted or payload.truncated):
        return event
    out = dict(event)
    for name in ("args", "kwargs", "result", "exception", "traceback"):
        value = getattr(payload, name)
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    for flag in PAYLOAD_FLAGS:
        if getattr(payload, flag):
            out[flag] = True
    return out


def _routing_key(delivery_info: Any) -> str | None:
    if isinstance(delivery_info, Mapping):
        key = delivery_info.get("routing_key")
        return key if isinstance(key, str) and key else None
    return None


def _redelivered(delivery_info: Any) -> bool:
    return isinstance(delivery_info, Mapping) and delivery_info.get("redelivered") is True


def _header(headers: Any, name: str) -> Any:
    return headers.get(name) if isinstance(headers, Mapping) else None


def _context_retry_of(request: Any) -> Any:
    """The ``z4j_retry_of`` header as the task's context holds it.

    A worker builds the context from the message headers, so a custom header
    is an attribute; ``Task.apply(headers=...)`` (eager) keeps it in ``headers``.
    """
    value = getattr(request, RETRY_OF_HEADER, None)
    if value is None:
        value = _header(getattr(request, "headers", None), RETRY_OF_HEADER)
    return value


def _fully_redacted(task: Any) -> bool:
    """Whether ``task`` was declared with ``z4j_fully_redacted=True``."""
    try:
        return getattr(task, FULLY_REDACTED_OPTION, False) is True
    except Exception:  # an exotic task object must not lose the event
        return False


class Capture:
    """Signal handlers that turn Celery's lifecycle into raw events for ``emit``.

    ``queue`` is reported as the routing key: under Celery's default direct
    routing the routing key is the queue's name, and the worker is not told
    the queue a message came from. ``tasks`` (the app's task registry, name ->
    task) lets ``sent`` events honour a task's ``z4j_fully_redacted`` option;
    every other handler is given the task object by Celery.
    """

    def __init__(
        self,
        emit: Callable[[RawEvent], None],
        *,
        hostname: str | None = None,
        tasks: Mapping[str, Any] | None = None,
    ) -> None:
        self.emit = emit
        self.hostname = hostname
        self.tasks = tasks
        # task id -> perf_counter() at prerun, per process (a prefork child has its own copy).
        self._started: dict[str, float] = {}

    def connect(self) -> None:
        """Connect every handler to its Celery signal."""
        from celery import signals

        for signal_name, method in SIGNALS.items():
            getattr(signals, signal_name).connect(
                getattr(self, method), weak=False, dispatch_uid=f"z4j-agent-{signal_name}"
            )

    def disconnect(self) -> None:
        """Undo :meth:`connect`."""
        from celery import signals

        for signal_name, method in SIGNALS.items():
            getattr(signals, signal_name).disconnect(
                getattr(self, method), dispatch_uid=f"z4j-agent-{signal_name}"
            )

    # -- task context (Celery's Context, in the process that runs the task) ---------------

    def _context_fields(self, task: Any, request: Any) -> dict[str, Any]:
        def getter(name: str) -> Any:
            return getattr(request, name, None)

        delivery_info = getter("delivery_info")
        routing_key = _routing_key(delivery_info)
        return {
            "name": getattr(task, "name", None) or getter("task"),
            "worker": getter("hostname") or self.hostname,
            "retries": getter("retries"),
            "redelivered": _redelivered(delivery_info),
            "fully_redacted": _fully_redacted(task),
            "queue": routing_key,
            "routing_key": routing_key,
            "root_id": getter("root_id"),
            "parent_id": getter("parent_id"),
            "group_id": getter("group"),
            "chord": getter("chord"),
            "retry_of": _context_retry_of(request),
        }

    def on_prerun(
        self, sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any
    ) -> None:
        """``task_prerun``: the task starts."""
        if not task_id:
            return
        self._started[task_id] = perf_counter()
        task = task or sender
        self.emit(("started", task_id, time(), self._context_fields(task, task.request)))

    def on_success(self, sender: Any = None, result: Any = None, **_: Any) -> None:
        """``task_success``: the task returned ``result``."""
        request = sender.request
        task_id = request.id
        if not task_id:
            return
        fields = self._context_fields(sender, request)
        fields["result"] = result
        started = self._started.pop(task_id, None)
        if started is not None:
            fields["runtime"] = perf_counter() - started
        self.emit(("succeeded", task_id, time(), fields))

    def on_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        """``task_failure``: the task raised ``exception``."""
        if not task_id:
            return
        request = getattr(sender, "request", None)
        fields = (
            self._context_fields(sender, request)
            if request is not None and request.id == task_id
            else {
                "name": getattr(sender, "name", None),
                "worker": self.hostname,
                "fully_redacted": _fully_redacted(sender),
            }
        )
        fields["exception"] = exception
        fields["traceback"] = getattr(einfo, "traceback", None)
        started = self._started.pop(task_id, None)
        if started is not None:
            fields["runtime"] = perf_counter() - started
        self.emit(("failed", task_id, time(), fields))

    def on_retry(
        self,
        sender: Any = None,
        request: Any = None,
        reason: Any = None,
        einfo: Any = None,
        **_: Any,
    ) -> None:
        """``task_retry``: the task asked to be retried (a new attempt follows)."""
        task_id = getattr(request, "id", None)
        if not task_id:
            return
        fields = self._context_fields(sender, request)
        fields["exception"] = getattr(reason, "exc", None) or reason
        fields["traceback"] = getattr(einfo, "traceback", None)
        started = self._started.pop(task_id, None)
        if started is not None:
            fields["runtime"] = perf_counter() - started
        self.emit(("retried", task_id, time(), fields))

    def on_postrun(self, task_id: str | None = None, **_: Any) -> None:
        """``task_postrun``: forget the start time whatever the outcome."""
        if task_id:
            self._started.pop(task_id, None)

    def on_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: bool = False,
        signum: Any = None,
        expired: bool = False,
        **_: Any,
    ) -> None:
        """``task_revoked``: revoked before it ran, terminated, or expired."""
        task_id = getattr(request, "id", None)
        if not task_id:
            return
        fields = self._context_fields(sender, request)
        if expired:
            fields["exception"] = "revoked: expired"
        elif terminated:
            fields["exception"] = f"revoked: terminated (signal {signum})"
        else:
            fields["exception"] = "revoked"
        self.emit(("revoked", task_id, time(), fields))

    # -- worker consumer (main process): messages before they are tasks ------------------

    def on_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        """``task_received``: the worker took the message (main process)."""
        task_id = getattr(request, "id", None)
        if not task_id:
            return
        request_dict = request.request_dict
        delivery_info = request.delivery_info
        routing_key = _routing_key(delivery_info)
        self.emit(
            (
                "received",
                task_id,
                time(),
                {
                    "name": request.name,
                    "worker": request.hostname or self.hostname,
                    "retries": request_dict.get("retries"),
                    "redelivered": _redelivered(delivery_info),
                    "fully_redacted": _fully_redacted(getattr(request, "task", None)),
                    "queue": routing_key,
                    "routing_key": routing_key,
                    "root_id": request.root_id,
                    "parent_id": request.parent_id,
                    "group_id": request_dict.get("group"),
                    "chord": request.chord,
                    "retry_of": request_dict.get(RETRY_OF_HEADER),
                    "args": request.args,
                    "kwargs": request.kwargs,
                    "eta": request.eta,
                    "expires": request.expires,
                },
            )
        )

    def _rejected(self, message: Any, exc: Any, name: Any = None, task_id: Any = None) -> None:
        headers = getattr(message, "headers", None) or {}
        task_id = task_id or headers.get("id")
        if not isinstance(task_id, str) or not task_id:
            return  # nothing to attach the event to
        delivery_info = getattr(message, "delivery_info", None)
        routing_key = _routing_key(delivery_info)
        self.emit(
            (
                "rejected",
                task_id,
                time(),
                {
                    "name": name or headers.get("task"),
                    "worker": self.hostname,
                    "retries": headers.get("retries"),
                    "redelivered": _redelivered(delivery_info),
                    "queue": routing_key,
                    "routing_key": routing_key,
                    "root_id": headers.get("root_id"),
                    "parent_id": headers.get("parent_id"),
                    "group_id": headers.get("group"),
                    "retry_of": headers.get(RETRY_OF_HEADER),
                    "exception": exc if exc is not None else "rejected: unknown message",
                },
            )
        )

    def on_rejected(
        self, sender: Any = None, message: Any = None, exc: Any = None, **_: Any
    ) -> None:
        """``task_rejected``: an invalid or unknown-format message was rejected."""
        self._rejected(message, exc)

    def on_unknown(
        self,
        sender: Any = None,
        message: Any = None,
        exc: Any = None,
        name: Any = None,
        id: Any = None,  # Celery's argument name
        **_: Any,
    ) -> None:
        """``task_unknown``: a message for a task this worker does not know."""
        self._rejected(message, exc, name=name, task_id=id)

    # -- any process that publishes ------------------------------------------------------

    def on_published(
        self,
        sender: Any = None,
        body: Any = None,
        headers: Any = None,
        routing_key: Any = None,
        **_: Any,
    ) -> None:
        """``after_task_publish``: a task message was sent (protocol 2 messages only)."""
        if not isinstance(headers, Mapping) or not isinstance(body, tuple) or len(body) != 3:
            return
        task_id = headers.get("id")
        if not isinstance(task_id, str) or not task_id:
            return
        args, kwargs, embed = body
        key = routing_key if isinstance(routing_key, str) and routing_key else None
        name = headers.get("task") or sender
        tasks = self.tasks
        self.emit(
            (
                "sent",
                task_id,
                time(),
                {
                    "name": name,
                    "fully_redacted": tasks is not None
                    and isinstance(name, str)
                    and _fully_redacted(tasks.get(name)),
                    "retries": headers.get("retries"),
                    "queue": key,
                    "routing_key": key,
                    "root_id": headers.get("root_id"),
                    "parent_id": headers.get("parent_id"),
                    "group_id": headers.get("group"),
                    "retry_of": headers.get(RETRY_OF_HEADER),
                    "chord": embed.get("chord") if isinstance(embed, Mapping) else None,
                    "args": args,
                    "kwargs": kwargs,
                    "eta": headers.get("eta"),
                    "expires": headers.get("expires"),
                },
            )
        )
