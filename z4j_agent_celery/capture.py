"""Celery signals in, z4j task events out.

The signal handlers run on the task's own thread (or the worker's consumer
loop), so they do as little as they can: read a handful of attributes and hand
a :data:`RawEvent` tuple, holding references to the task's own objects, to
``emit``. Everything that costs (JSON-safety, size limits, the event id, the
:class:`~z4j_domain.tasks.TaskEvent`) happens later, off the task's thread, in
:func:`materialize`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from time import perf_counter, time
from typing import Any, Final

from z4j_agent_celery.payload import TRUNCATED, TRUNCATED_KEY, bounded_text, limit_payload
from z4j_domain.serialization import event_to_dict
from z4j_domain.tasks import TaskEvent

__all__ = [
    "SIGNALS",
    "Capture",
    "RawEvent",
    "chord_id_of",
    "materialize",
]

#: (kind, task id, UNIX timestamp, fields): what a signal handler hands on.
RawEvent = tuple[str, str, float, dict[str, Any]]

#: Longest exception repr and traceback text kept, in characters.
MAX_EXCEPTION_CHARS: Final = 2_000
MAX_TRACEBACK_CHARS: Final = 16_000

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


def _retries(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _exception_text(exception: Any) -> str | None:
    if exception is None:
        return None
    if isinstance(exception, str):
        return bounded_text(exception, MAX_EXCEPTION_CHARS)
    try:
        text = repr(exception)
    except Exception:  # a broken __repr__ must not lose the event
        text = f"<{type(exception).__qualname__}>"
    return bounded_text(text, MAX_EXCEPTION_CHARS)


def materialize(raw: RawEvent, *, max_payload_bytes: int) -> dict[str, Any]:
    """The event dict (``event_to_dict`` of a :class:`TaskEvent`) for a raw event."""
    kind, task_id, timestamp, fields = raw
    values: dict[str, Any] = {}
    for name in ("name", "queue", "routing_key", "worker", "root_id", "parent_id", "group_id"):
        value = fields.get(name)
        if value is not None:
            values[name] = _str_or_none(value)
    retries = _retries(fields.get("retries"))
    if "args" in fields:
        args = fields["args"]
        args = limit_payload(
            list(args) if isinstance(args, (list, tuple)) else [args], max_payload_bytes
        )
        values["args"] = args if isinstance(args, list) else [args]
    if "kwargs" in fields:
        kwargs = limit_payload(fields["kwargs"] or {}, max_payload_bytes)
        if not isinstance(kwargs, dict):
            kwargs = {TRUNCATED_KEY: kwargs} if str(kwargs).startswith(TRUNCATED) else {}
        values["kwargs"] = kwargs
    if "result" in fields:
        values["result"] = limit_payload(fields["result"], max_payload_bytes)
    if "exception" in fields:
        values["exception"] = _exception_text(fields["exception"])
    traceback = fields.get("traceback")
    if isinstance(traceback, str) and traceback:
        values["traceback"] = bounded_text(traceback, MAX_TRACEBACK_CHARS, keep_tail=True)
    runtime = fields.get("runtime")
    if isinstance(runtime, float) and runtime >= 0:
        values["runtime"] = runtime
    chord_id = chord_id_of(fields.get("chord"))
    if chord_id is not None:
        values["chord_id"] = chord_id
    eta = _when(fields.get("eta"))
    if eta is not None:
        values["eta"] = eta
    expires = _when(fields.get("expires"))
    if expires is not None:
        values["expires"] = expires
    event = TaskEvent(
        id=str(uuid.uuid4()),
        task_id=task_id,
        kind=kind,
        timestamp=datetime.fromtimestamp(timestamp, UTC),
        attempt=retries,
        retries=retries,
        **values,
    )
    return event_to_dict(event)


def _routing_key(delivery_info: Any) -> str | None:
    if isinstance(delivery_info, Mapping):
        key = delivery_info.get("routing_key")
        return key if isinstance(key, str) and key else None
    return None


class Capture:
    """Signal handlers that turn Celery's lifecycle into raw events for ``emit``.

    ``queue`` is reported as the routing key: under Celery's default direct
    routing the routing key is the queue's name, and the worker is not told
    the queue a message came from.
    """

    def __init__(self, emit: Callable[[RawEvent], None], *, hostname: str | None = None) -> None:
        self.emit = emit
        self.hostname = hostname
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

        routing_key = _routing_key(getter("delivery_info"))
        return {
            "name": getattr(task, "name", None) or getter("task"),
            "worker": getter("hostname") or self.hostname,
            "retries": getter("retries"),
            "queue": routing_key,
            "routing_key": routing_key,
            "root_id": getter("root_id"),
            "parent_id": getter("parent_id"),
            "group_id": getter("group"),
            "chord": getter("chord"),
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
            else {"name": getattr(sender, "name", None), "worker": self.hostname}
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
        routing_key = _routing_key(request.delivery_info)
        self.emit(
            (
                "received",
                task_id,
                time(),
                {
                    "name": request.name,
                    "worker": request.hostname or self.hostname,
                    "retries": request_dict.get("retries"),
                    "queue": routing_key,
                    "routing_key": routing_key,
                    "root_id": request.root_id,
                    "parent_id": request.parent_id,
                    "group_id": request_dict.get("group"),
                    "chord": request.chord,
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
        routing_key = _routing_key(getattr(message, "delivery_info", None))
        self.emit(
            (
                "rejected",
                task_id,
                time(),
                {
                    "name": name or headers.get("task"),
                    "worker": self.hostname,
                    "retries": headers.get("retries"),
                    "queue": routing_key,
                    "routing_key": routing_key,
                    "root_id": headers.get("root_id"),
                    "parent_id": headers.get("parent_id"),
                    "group_id": headers.get("group"),
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
        self.emit(
            (
                "sent",
                task_id,
                time(),
                {
                    "name": headers.get("task") or sender,
                    "retries": headers.get("retries"),
                    "queue": key,
                    "routing_key": key,
                    "root_id": headers.get("root_id"),
                    "parent_id": headers.get("parent_id"),
                    "group_id": headers.get("group"),
                    "chord": embed.get("chord") if isinstance(embed, Mapping) else None,
                    "args": args,
                    "kwargs": kwargs,
                    "eta": headers.get("eta"),
                    "expires": headers.get("expires"),
                },
            )
        )
