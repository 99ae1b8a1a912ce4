"""The agent gateway: ``/ws/agent``, where each worker's agent streams events and heartbeats.

The conversation (every frame signed, see :mod:`z4j_domain.frames` and
:mod:`z4j_domain.protocol`):

1. The agent opens ``/ws/agent`` with ``Authorization: Bearer <Z4J_TOKEN>``. An
   unknown, revoked or missing token is refused before the upgrade with HTTP 401.
2. Agent -> ``hello`` (session ``"hello"``, seq 0) with ``protocol``, ``agent``,
   ``project``, ``hostname``, ``pid``, ``agent_version`` and ``kind``.
3. Brain -> ``welcome`` (session = a fresh nonce, the brain's seq 0) with
   ``session``, ``max_batch``, ``max_frame_bytes``, ``heartbeat_interval`` and
   ``redaction`` (the project's additions to the default redaction).
4. Agent -> ``events`` / ``heartbeat`` / ``bye`` / ``command_result`` in that
   session, seq 1, 2, ...; brain -> ``ack`` ``{"batches": [...]}`` once a
   batch's events are committed, and ``command`` frames: ``configure``
   (``{"command": "configure", "redaction": {...}}``, when the project's
   settings change) and ``probe`` (``{"id", "command": "probe", "task_ids"}``,
   from the reconciler; answered by a ``command_result``
   ``{"id", "command": "probe", "answers": [{"task_id", "active_on",
   "backend_state"}]}``), and the actions of :mod:`z4j_web.commands`
   (``{"id", "command": "retry" | "cancel" | "purge", "part", "items",
   "options"}``, see :class:`~z4j_domain.commands.CommandPart`), answered by
   ``command_result`` reports (:class:`~z4j_domain.commands.PartReport`):
   ``acked`` at once, then ``done`` or ``failed``. An agent lists the actions
   it can run in its hello's ``capabilities``.

A heartbeat is ``{"worker": {...}, "tasks": [ids] | null}``: ``tasks`` lists
what the worker holds (active, reserved, scheduled), the reconciler's activity
report. Every event is redacted again here with the project's policy before
it is stored (the agent redacted it first), keeping the agent's flags.

Both directions are keyed by the agent's secret (``Z4J_HMAC_SECRET``), which
the brain re-derives from ``Z4J_SECRET`` and the agent's stored salt. A frame
that fails any check closes the connection with an application close code
(:data:`CLOSE_CODES`) whose reason text names the check; the rejection is
logged on ``z4j.gateway`` and counted. What was committed before stays.

:class:`AgentSession` holds the protocol rules and no I/O, so it is tested
without a server; :class:`AgentConnection` runs one socket's receive and send
tasks around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Final

import attrs
from quart import Blueprint, Response, websocket

from z4j_domain.beat import ScheduleFire, SchedulerReport
from z4j_domain.commands import Action, PartReport
from z4j_domain.errors import InvalidInput
from z4j_domain.frames import (
    MAX_FRAME_BYTES,
    SUPPORTED_VERSIONS,
    Frame,
    FrameRejected,
    FrameType,
    ReplayGuard,
    decode_frame,
    encode_frame,
)
from z4j_domain.ports import Clock
from z4j_domain.protocol import HELLO_SESSION
from z4j_domain.reconciliation import DEFAULT_HEARTBEAT_INTERVAL, ProbeAnswer
from z4j_domain.redaction import RedactionSettings, redact_event
from z4j_domain.serialization import event_from_dict
from z4j_domain.tasks import TaskEvent
from z4j_domain.workers import Worker, WorkerStatus
from z4j_infra.errors import StorageError
from z4j_infra.secrets import new_token
from z4j_web import services
from z4j_web.errors import AuthenticationFailed
from z4j_web.ingest import IngestBatch, IngestClosed
from z4j_web.reconciler import parse_probe_answers
from z4j_web.runtime import Runtime, current_runtime

__all__ = [
    "CLOSE_CODES",
    "AgentConnection",
    "AgentSession",
    "Bye",
    "CommandResult",
    "EventsBatch",
    "Heartbeat",
    "ProtocolViolation",
    "ScheduleFires",
    "Schedules",
    "blueprint",
]

_log = logging.getLogger("z4j.gateway")

blueprint = Blueprint("gateway", __name__)

#: Most events an agent should put in one frame (told in ``welcome``).
MAX_BATCH: Final = 1_000
#: Most task ids a heartbeat's activity report may list.
MAX_REPORTED_TASKS: Final = 10_000
#: Commands queued for one agent before more are dropped (the reconciler sends again).
MAX_QUEUED_COMMANDS: Final = 64
#: How long a new connection may take to say hello.
HELLO_TIMEOUT: Final = 10.0
#: How long a ``bye`` (or a shutdown) waits for the connection's batches to be acknowledged.
BYE_DRAIN_TIMEOUT: Final = 10.0
#: How often a connected agent is checked for revocation (on its heartbeats), and its
#: ``last_seen_at`` recorded.
RECHECK_INTERVAL: Final = timedelta(seconds=30)

#: The WebSocket close code for each rejection reason (4000 + an HTTP-like status).
CLOSE_CODES: Final[Mapping[str, int]] = {
    "malformed": 4400,
    "unauthorized": 4401,
    "bad_signature": 4403,
    "wrong_project": 4403,
    "skew": 4408,
    "replay": 4409,
    "wrong_session": 4409,
    "too_large": 4413,
    "unsupported_version": 4426,
}
#: Normal end after the agent's ``bye``.
CLOSE_NORMAL: Final = 1000
#: The brain is stopping; the agent should reconnect (to this or another brain) later.
CLOSE_RESTART: Final = 1012
#: The brain could not commit a batch; the agent reconnects and resends it.
CLOSE_INTERNAL: Final = 1011

# What the database columns hold; checked here so one bad event cannot make a whole
# flush fail (and be resent, and fail again) on PostgreSQL.
_MAX_ID_LENGTH: Final = 255
_MAX_INT32: Final = 2**31 - 1
_MAX_INT64: Final = 2**63 - 1
_ACTIONS: Final = frozenset(action.value for action in Action)
_ID_FIELDS: Final = ("id", "task_id", "root_id", "parent_id", "group_id", "chord_id", "retry_of")


class ProtocolViolation(Exception):
    """A frame broke the protocol; ``reason`` is a :data:`CLOSE_CODES` key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def close_code(self) -> int:
        """The WebSocket close code that reports this violation."""
        return CLOSE_CODES[self.reason]

    @property
    def close_reason(self) -> str:
        """The close frame's reason text (at most 123 bytes, as the protocol allows)."""
        text = str(self)
        encoded = text.encode("utf-8")
        if len(encoded) <= 123:
            return text
        return encoded[:120].decode("utf-8", "ignore") + "..."


@attrs.frozen(kw_only=True)
class EventsBatch:
    """An ``events`` frame: its batch number, valid events, and the invalid ones' reasons."""

    number: int
    events: tuple[TaskEvent, ...]
    invalid: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Heartbeat:
    """A ``heartbeat`` frame's worker report (``first_seen_at`` still to be merged).

    A beat agent's heartbeat has no worker (``None``): it only says the agent is alive.
    """

    worker: Worker | None
    #: The ids of the tasks the worker holds, or ``None`` when it did not say.
    tasks: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class CommandResult:
    """A ``command_result`` frame: a probe's answers."""

    command: str
    answers: tuple[ProbeAnswer, ...] = ()


@attrs.frozen(kw_only=True)
class Schedules:
    """A ``schedules`` frame: a beat agent's whole scheduler."""

    report: SchedulerReport


@attrs.frozen(kw_only=True)
class ScheduleFires:
    """A ``schedule_fires`` frame: entries whose tasks beat sent."""

    fires: tuple[ScheduleFire, ...]


@attrs.frozen(kw_only=True)
class Bye:
    """A ``bye`` frame: the agent is closing on purpose."""

    reason: str
    worker: str | None


@attrs.frozen(kw_only=True)
class Hello:
    """What an agent said about itself in its ``hello``."""

    agent: str
    hostname: str
    pid: int | None
    agent_version: str | None
    kind: str | None
    #: The actions the agent can run (``retry``, ``cancel``, ``purge``); none if it did not say.
    capabilities: frozenset[str] = frozenset()


#: What one frame after the hello can ask the brain to do.
Message = EventsBatch | Heartbeat | Bye | CommandResult | PartReport | Schedules | ScheduleFires


def _reject(error: FrameRejected) -> ProtocolViolation:
    return ProtocolViolation(error.reason.value, error.detail)


def _storable(value: Any, where: str) -> None:
    """Refuse what SQL cannot store: NUL characters, NaN and infinities, at any depth."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"{where} contains a NUL character")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} is not a finite number")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, where)
            _storable(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _storable(item, f"{where}[{index}]")


def parse_event(data: Any) -> TaskEvent:
    """One event of an ``events`` body, or :class:`InvalidInput` saying what is wrong."""
    _storable(data, "event")
    event = event_from_dict(data)
    for name in _ID_FIELDS:
        value = getattr(event, name)
        if value is not None and len(value) > _MAX_ID_LENGTH:
            raise InvalidInput(f"event {name} is longer than {_MAX_ID_LENGTH} characters")
    if event.attempt > _MAX_INT32 or (event.retries or 0) > _MAX_INT32:
        raise InvalidInput("event attempt or retries is out of range")
    if event.clock > _MAX_INT64:
        raise InvalidInput("event clock is out of range")
    return event


def _optional(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ProtocolViolation("malformed", f"{key!r} has the wrong type")
    return value


def _count(body: Mapping[str, Any], key: str, limit: int = _MAX_INT64) -> int | None:
    value = _optional(body, key, int)
    if value is not None and not 0 <= value <= limit:
        raise ProtocolViolation("malformed", f"{key!r} is out of range")
    return value  # type: ignore[no-any-return]


def _text(body: Mapping[str, Any], key: str, *, limit: int = 1_000) -> str | None:
    value = _optional(body, key, str)
    if value is not None and ("\x00" in value or len(value) > limit):
        raise ProtocolViolation("malformed", f"{key!r} is too long or contains NUL")
    return value


def _capabilities(body: Mapping[str, Any]) -> frozenset[str]:
    """The actions a hello says the agent can run; unknown ones are left out."""
    value = body.get("capabilities")
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolViolation("malformed", "'capabilities' must be a list of strings")
    return frozenset(value) & _ACTIONS


def _task_ids(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    """A heartbeat's activity report: the ids of the tasks the worker holds."""
    tasks = body.get("tasks")
    if tasks is None:
        return None
    if (
        not isinstance(tasks, list)
        or len(tasks) > MAX_REPORTED_TASKS
        or not all(
            isinstance(i, str) and 0 < len(i) <= _MAX_ID_LENGTH and "\x00" not in i for i in tasks
        )
    ):
        raise ProtocolViolation(
            "malformed", f"'tasks' must be a list of at most {MAX_REPORTED_TASKS} task ids"
        )
    return tuple(tasks)


def _worker(report: Any, now: Any) -> Worker:
    if not isinstance(report, dict):
        raise ProtocolViolation("malformed", "a heartbeat's 'worker' must be a JSON object")
    hostname = _text(report, "hostname", limit=_MAX_ID_LENGTH)
    if not hostname:
        raise ProtocolViolation("malformed", "a heartbeat's worker needs a hostname")
    loadavg = report.get("loadavg") or []
    queues = report.get("queues") or []
    if not isinstance(loadavg, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in loadavg
    ):
        raise ProtocolViolation("malformed", "'loadavg' must be a list of numbers")
    if not isinstance(queues, list) or not all(
        isinstance(q, str) and "\x00" not in q for q in queues
    ):
        raise ProtocolViolation("malformed", "'queues' must be a list of strings")
    return Worker(
        hostname=hostname,
        status=WorkerStatus.ONLINE,
        first_seen_at=now,
        last_heartbeat_at=now,
        pool=_text(report, "pool"),
        concurrency=_count(report, "concurrency", _MAX_INT32),
        active=_count(report, "active", _MAX_INT32),
        processed=_count(report, "processed"),
        loadavg=loadavg,
        queues=queues,
        software=_text(report, "software"),
    )


class AgentSession:
    """One agent connection's protocol state: verification, sequences, frame building.

    Pure apart from the clock and the nonce source; raises
    :class:`ProtocolViolation` for anything the protocol does not allow.
    """

    def __init__(
        self,
        identity: services.AgentIdentity,
        clock: Clock,
        *,
        new_nonce: Callable[[], str] = new_token,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL.total_seconds(),
        redaction: RedactionSettings | None = None,
    ) -> None:
        self.identity = identity
        self._clock = clock
        self._new_nonce = new_nonce
        self._heartbeat_interval = heartbeat_interval
        self._redaction = redaction or RedactionSettings()
        self._guard = ReplayGuard(session=HELLO_SESSION)
        self._next_seq = 0
        #: The session nonce, once ``welcome`` was built.
        self.nonce: str | None = None
        #: The agent's hello, once received.
        self.hello: Hello | None = None

    @property
    def agent_name(self) -> str:
        """The agent's name as minted (what log lines call it)."""
        return self.identity.agent.name

    def _decode(self, text: str | bytes) -> Frame:
        try:
            frame = decode_frame(text, self.identity.secret)
            self._guard.check(frame, self._clock.now())
        except FrameRejected as error:
            raise _reject(error) from None
        return frame

    def frame(self, type_: FrameType, body: Mapping[str, Any]) -> str:
        """A signed brain -> agent frame of this session (the next sequence number)."""
        if self.nonce is None:
            raise RuntimeError("no session yet: handle the hello first")
        frame = Frame(
            type=type_, session=self.nonce, seq=self._next_seq, ts=self._clock.now(), body=body
        )
        self._next_seq += 1
        return encode_frame(frame, self.identity.secret)

    def ack(self, batches: list[int]) -> str:
        """The ``ack`` frame for these committed batches."""
        return self.frame(FrameType.ACK, {"batches": batches})

    def open(self, text: str | bytes) -> str:
        """Check the agent's ``hello`` and return the signed ``welcome`` to send back."""
        frame = self._decode(text)
        if frame.type is not FrameType.HELLO:
            raise ProtocolViolation("malformed", f"expected a hello frame first, got {frame.type}")
        body = frame.body
        protocol = body.get("protocol")
        if type(protocol) is not int or protocol not in SUPPORTED_VERSIONS:
            raise ProtocolViolation(
                "unsupported_version",
                f"agent speaks protocol {protocol!r};"
                f" this brain speaks {sorted(SUPPORTED_VERSIONS)}",
            )
        project = body.get("project")
        if project != self.identity.project.slug:
            raise ProtocolViolation(
                "wrong_project",
                f"agent belongs to project {self.identity.project.slug}, not {project}",
            )
        self.hello = Hello(
            agent=_text(body, "agent", limit=200) or self.agent_name,
            hostname=_text(body, "hostname", limit=_MAX_ID_LENGTH) or "",
            pid=_count(body, "pid"),
            agent_version=_text(body, "agent_version", limit=100),
            kind=_text(body, "kind", limit=100),
            capabilities=_capabilities(body),
        )
        self.nonce = self._new_nonce()
        self._guard = ReplayGuard(session=self.nonce, last_seq=0)
        return self.frame(
            FrameType.WELCOME,
            {
                "session": self.nonce,
                "max_batch": MAX_BATCH,
                "max_frame_bytes": MAX_FRAME_BYTES,
                "heartbeat_interval": self._heartbeat_interval,
                "redaction": self._redaction.to_dict(),
            },
        )

    def receive(self, text: str | bytes) -> Message | None:
        """Verify one frame after the hello and say what it asks for (``None``: nothing)."""
        if self.nonce is None:
            raise RuntimeError("no session yet: handle the hello first")
        frame = self._decode(text)
        body = frame.body
        if frame.type is FrameType.EVENTS:
            number = body.get("batch")
            events = body.get("events")
            if type(number) is not int or not 0 <= number <= _MAX_INT64:
                raise ProtocolViolation("malformed", "'batch' must be a non-negative integer")
            if not isinstance(events, list):
                raise ProtocolViolation("malformed", "'events' must be a list")
            valid: list[TaskEvent] = []
            invalid: list[str] = []
            for index, data in enumerate(events):
                try:
                    valid.append(parse_event(data))
                except InvalidInput as error:
                    invalid.append(f"event {index}: {error}")
            return EventsBatch(number=number, events=tuple(valid), invalid=tuple(invalid))
        if frame.type is FrameType.HEARTBEAT:
            now = self._clock.now()
            if body.get("worker") is None:
                return Heartbeat(worker=None, tasks=None)
            return Heartbeat(worker=_worker(body.get("worker"), now), tasks=_task_ids(body))
        if frame.type is FrameType.SCHEDULES:
            try:
                return Schedules(report=SchedulerReport.from_body(body))
            except InvalidInput as error:
                raise ProtocolViolation("malformed", f"schedules: {error}") from None
        if frame.type is FrameType.SCHEDULE_FIRES:
            try:
                return ScheduleFires(fires=ScheduleFire.from_body(body))
            except InvalidInput as error:
                raise ProtocolViolation("malformed", f"schedule fires: {error}") from None
        if frame.type is FrameType.BYE:
            reason = _text(body, "reason") or ""
            worker = _text(body, "worker", limit=_MAX_ID_LENGTH)
            return Bye(reason=reason, worker=worker or None)
        if frame.type is FrameType.COMMAND_RESULT:
            command = body.get("command")
            if isinstance(command, str) and command in _ACTIONS:
                try:
                    return PartReport.from_body(body)
                except InvalidInput as error:
                    raise ProtocolViolation("malformed", f"command result: {error}") from None
            if command != "probe":
                return None  # a command this brain never sends (a newer agent's): harmless
            try:
                answers = parse_probe_answers(body, self._clock.now())
            except InvalidInput as error:
                raise ProtocolViolation("malformed", f"probe answers: {error}") from None
            return CommandResult(command=command, answers=tuple(answers))
        raise ProtocolViolation("malformed", f"an agent does not send {frame.type} frames")


@attrs.define
class _Close:
    code: int
    reason: str


class AgentConnection:
    """One open agent socket: a receive task, a send task, and the session between them."""

    def __init__(
        self,
        runtime: Runtime,
        session: AgentSession,
        *,
        receive: Callable[[], Awaitable[str | bytes]],
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        self._runtime = runtime
        self._session = session
        self._receive = receive
        self._send = send
        self._project_id = session.identity.project.id
        # What the send task writes: ("ack", batch number) or ("command", body).
        self._outgoing: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._commands_queued = 0
        #: Batches handed to the writer and not yet acknowledged on the socket.
        self._unacked = 0
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self._failed = asyncio.Event()
        self._checked_at = runtime.clock.now()
        #: The worker reports this connection stored, by hostname (see _write_worker).
        self._workers: dict[str, Worker] = {}
        #: The entry and refusal counts of the last schedules report (logged when they change).
        self._schedule_counts: tuple[int, int] | None = None

    @property
    def _metrics(self) -> Any:
        return self._runtime.metrics

    @property
    def project_id(self) -> int:
        """The project of the connected agent."""
        return self._project_id

    @property
    def agent_name(self) -> str:
        """The agent's name as minted."""
        return self._session.agent_name

    @property
    def capabilities(self) -> frozenset[str]:
        """The actions the agent said it can run."""
        hello = self._session.hello
        return hello.capabilities if hello is not None else frozenset()

    @property
    def agent_version(self) -> str | None:
        """The agent software's version, as its hello gave it."""
        hello = self._session.hello
        return hello.agent_version if hello is not None else None

    def send_command(self, body: Mapping[str, Any]) -> bool:
        """Queue a ``command`` frame for the agent; ``False`` if too many are waiting."""
        if self._failed.is_set() or self._commands_queued >= MAX_QUEUED_COMMANDS:
            return False
        self._commands_queued += 1
        self._outgoing.put_nowait(("command", dict(body)))
        return True

    def _rejected(self, violation: ProtocolViolation) -> _Close:
        _log.warning(
            "rejected frame from agent %s: %s: %s",
            self._session.agent_name,
            violation.reason,
            violation.detail,
        )
        self._metrics.frames_rejected.labels(reason=violation.reason).inc()
        return _Close(violation.close_code, violation.close_reason)

    async def run(self) -> _Close:
        """Serve the connection until it must close; return the close code and reason."""
        try:
            hello = await asyncio.wait_for(self._receive(), HELLO_TIMEOUT)
            welcome = self._session.open(hello)
        except TimeoutError:
            violation = ProtocolViolation("malformed", f"no hello within {HELLO_TIMEOUT:.0f} s")
            return self._rejected(violation)
        except ProtocolViolation as violation:
            return self._rejected(violation)
        self._metrics.frames_accepted.labels(type="hello").inc()
        hello_info = self._session.hello
        _log.info(
            "agent %s of project %s connected from %s (pid %s, %s %s)",
            self._session.agent_name,
            self._session.identity.project.slug,
            hello_info.hostname if hello_info else "?",
            hello_info.pid if hello_info else "?",
            hello_info.kind if hello_info else "?",
            hello_info.agent_version if hello_info else "?",
        )
        await self._send(welcome)
        reconciler, dispatcher = self._runtime.reconciler, self._runtime.commands
        reconciler.connected(self)
        dispatcher.connected(self)
        try:
            return await self._serve()
        finally:
            reconciler.disconnected(self)
            dispatcher.disconnected(self)

    async def _serve(self) -> _Close:
        receiver = asyncio.ensure_future(self._receive_loop())
        sender = asyncio.ensure_future(self._send_loop())
        closing = asyncio.ensure_future(self._runtime.shutting_down.wait())
        tasks = (receiver, sender, closing)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                return receiver.result()
            if sender in done:
                return sender.result()
            # The brain is stopping: read no more, let the committed batches be
            # acknowledged, then ask the agent to come back later.
            receiver.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_acked.wait(), BYE_DRAIN_TIMEOUT)
            return _Close(CLOSE_RESTART, "the brain is shutting down; reconnect later")
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise asyncio.CancelledError

    def _committed(self, number: int, ok: bool) -> None:
        if ok:
            self._outgoing.put_nowait(("ack", number))
        else:
            self._failed.set()

    async def _receive_loop(self) -> _Close:
        while True:
            text = await self._receive()
            try:
                message = self._session.receive(text)
            except ProtocolViolation as violation:
                return self._rejected(violation)
            if isinstance(message, EventsBatch):
                self._metrics.frames_accepted.labels(type="events").inc()
                for reason in message.invalid:
                    _log.warning(
                        "skipped an invalid event from agent %s (batch %d): %s",
                        self._session.agent_name,
                        message.number,
                        reason,
                    )
                self._metrics.events_invalid.inc(len(message.invalid))
                # The brain's own pass: the project's settings may be newer than
                # the agent's, and an agent may not redact at all.
                policy = await self._runtime.redaction.policy(self._project_id)
                events = tuple(redact_event(event, policy) for event in message.events)
                try:
                    # Waits while the writer's queue is full: backpressure, not loss.
                    await self._runtime.ingest.submit(
                        IngestBatch(
                            project_id=self._project_id,
                            events=events,
                            done=functools.partial(self._committed, message.number),
                        )
                    )
                except IngestClosed:
                    return _Close(CLOSE_RESTART, "the brain is shutting down; reconnect later")
                # Counted once queued (no await since): the ack cannot have come yet.
                self._unacked += 1
                self._all_acked.clear()
            elif isinstance(message, Heartbeat):
                self._metrics.frames_accepted.labels(type="heartbeat").inc()
                if not await self._still_active():
                    return self._rejected(
                        ProtocolViolation("unauthorized", "the agent was revoked")
                    )
                if message.worker is not None:
                    await self._save_worker(message.worker)
                    self._runtime.reconciler.report(
                        self._project_id, message.worker.hostname, message.tasks
                    )
            elif isinstance(message, Schedules):
                self._metrics.frames_accepted.labels(type="schedules").inc()
                await self._store_schedules(message.report)
            elif isinstance(message, ScheduleFires):
                self._metrics.frames_accepted.labels(type="schedule_fires").inc()
                await self._store_fires(message.fires)
            elif isinstance(message, CommandResult):
                self._metrics.frames_accepted.labels(type="command_result").inc()
                self._runtime.reconciler.answered(self._project_id, message.answers)
            elif isinstance(message, PartReport):
                self._metrics.frames_accepted.labels(type="command_result").inc()
                self._runtime.commands.reported(self, message)
            elif isinstance(message, Bye):
                self._metrics.frames_accepted.labels(type="bye").inc()
                _log.info(
                    "agent %s said bye (%s)",
                    self._session.agent_name,
                    message.reason or "no reason",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._all_acked.wait(), BYE_DRAIN_TIMEOUT)
                if message.worker is not None:
                    await self._mark_offline(message.worker)
                    self._runtime.reconciler.worker_left(self._project_id, message.worker)
                return _Close(CLOSE_NORMAL, "bye")

    async def _send_loop(self) -> _Close:
        while True:
            getter = asyncio.ensure_future(self._outgoing.get())
            failed = asyncio.ensure_future(self._failed.wait())
            try:
                await asyncio.wait({getter, failed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                failed.cancel()
                if not getter.done():
                    getter.cancel()
            if not getter.done() or getter.cancelled():
                return _Close(CLOSE_INTERNAL, "the brain could not store a batch; resend it")
            items = [getter.result()]
            while not self._outgoing.empty():
                items.append(self._outgoing.get_nowait())
            # Acks first, all in one frame; then commands, one frame each.
            batches = [value for kind, value in items if kind == "ack"]
            if batches:
                await self._send(self._session.ack(batches))
                self._unacked -= len(batches)
                if self._unacked <= 0:
                    self._all_acked.set()
            for kind, value in items:
                if kind == "command":
                    self._commands_queued -= 1
                    await self._send(self._session.frame(FrameType.COMMAND, value))
                    self._metrics.commands_sent.labels(command=value.get("command", "?")).inc()
            if self._failed.is_set():
                return _Close(CLOSE_INTERNAL, "the brain could not store a batch; resend it")

    # Reads and writes below run in transactions of their own: see services.write_only.

    async def _still_active(self) -> bool:
        now = self._runtime.clock.now()
        if now - self._checked_at < RECHECK_INTERVAL:
            return True
        self._checked_at = now
        identity = self._session.identity
        try:
            async with self._runtime.uow() as uow:
                agent = await uow.agents.get_by_token_hash(identity.agent.token_hash)
            if agent is None or not agent.is_active:
                return False
            agent_id = agent.id
            await services.write_only(
                self._runtime.uow, lambda uow: uow.agents.touch(agent_id, now)
            )
        except StorageError:
            # Keep serving through a database hiccup; the next heartbeat checks again.
            _log.exception("could not re-check agent %s", identity.agent.name)
        return True

    async def _store_schedules(self, report: SchedulerReport) -> None:
        project_id, name = self._project_id, self._session.agent_name
        at = self._runtime.clock.now()
        try:
            await services.write_only(
                self._runtime.uow, lambda uow: uow.schedules.replace(project_id, name, report, at)
            )
        except StorageError:
            # The agent reports again on its next change or session; nothing else is lost.
            _log.exception("could not store the schedules of agent %s", name)
            return
        # A beat reports again as entries run; say so at INFO only when the counts change.
        counts = (len(report.entries), len(report.refused))
        _log.log(
            logging.INFO if counts != self._schedule_counts else logging.DEBUG,
            "agent %s reported its %s scheduler: %d entries, %d refused",
            name,
            report.kind.value,
            *counts,
        )
        self._schedule_counts = counts
        self._runtime.live.publish(project_id, {"type": "schedules"})

    async def _store_fires(self, fires: tuple[ScheduleFire, ...]) -> None:
        project_id, name = self._project_id, self._session.agent_name
        try:
            added = await services.write_only(
                self._runtime.uow, lambda uow: uow.schedules.add_fires(project_id, name, fires)
            )
        except StorageError:
            # The agent sends its recent fires again at its next session.
            _log.exception("could not store schedule fires of agent %s", name)
            return
        if added:
            self._runtime.live.publish(project_id, {"type": "schedules"})

    async def _stored_worker(self, hostname: str) -> Worker | None:
        known = self._workers.get(hostname)
        if known is not None:
            return known
        async with self._runtime.uow() as uow:
            return await uow.workers.get(self._project_id, hostname)

    async def _write_worker(self, worker: Worker) -> None:
        project_id = self._project_id
        await services.write_only(
            self._runtime.uow, lambda uow: uow.workers.save(project_id, worker)
        )
        self._workers[worker.hostname] = worker
        self._runtime.live.workers_changed(self._project_id, [worker])

    async def _save_worker(self, worker: Worker) -> None:
        try:
            previous = await self._stored_worker(worker.hostname)
            if previous is not None:
                worker = attrs.evolve(worker, first_seen_at=previous.first_seen_at)
            await self._write_worker(worker)
        except StorageError:
            # A lost heartbeat is harmless: the next one, seconds later, says the same.
            _log.exception("could not store a heartbeat of agent %s", self._session.agent_name)

    async def _mark_offline(self, hostname: str) -> None:
        try:
            worker = await self._stored_worker(hostname)
            if worker is not None:
                await self._write_worker(attrs.evolve(worker, status=WorkerStatus.OFFLINE))
        except StorageError:
            _log.exception("could not mark worker %s offline", hostname)


def _bearer_token() -> str:
    header = websocket.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _peer() -> str:
    address = websocket.remote_addr or "unknown"
    return str(address)


@blueprint.websocket("/ws/agent")
async def agent_socket() -> Response | None:
    """One agent's long-lived connection."""
    runtime = current_runtime()
    try:
        identity = await services.authenticate_agent(
            runtime.uow, runtime.clock, runtime.settings.secret, _bearer_token()
        )
    except AuthenticationFailed:
        _log.warning("unauthorized agent connection from %s: unknown or revoked token", _peer())
        runtime.metrics.connections_refused.labels(reason="unauthorized").inc()
        response = Response("unknown or revoked agent token\n", status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="z4j-agent"'
        return response
    except StorageError:
        _log.exception("storage failed authenticating an agent connection from %s", _peer())
        return Response("the database is unavailable; try again shortly\n", status=503)
    try:
        redaction = await runtime.redaction.settings(identity.project.id)
    except StorageError:
        _log.exception("storage failed reading the redaction settings for %s", _peer())
        return Response("the database is unavailable; try again shortly\n", status=503)
    await websocket.accept()
    heartbeat = runtime.settings.reconcile.heartbeat_interval.total_seconds()
    connection = AgentConnection(
        runtime,
        AgentSession(identity, runtime.clock, heartbeat_interval=heartbeat, redaction=redaction),
        receive=websocket.receive,
        send=websocket.send,
    )
    runtime.metrics.agent_connections.inc()
    try:
        close = await connection.run()
    finally:
        runtime.metrics.agent_connections.dec()
    await websocket.close(close.code, close.reason)
    return None
