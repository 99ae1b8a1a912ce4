"""The agent's one WebSocket to the brain, on a daemon thread of the worker's main process.

The conversation (every frame signed with ``Z4J_HMAC_SECRET``, see
:mod:`z4j_domain.frames` and :mod:`z4j_domain.protocol`)::

    agent -> hello     session "hello", seq 0   (capabilities: ["retry", "cancel", "purge"]
                                                 when the agent can run commands)
    brain -> welcome   session <nonce>, seq 0, {session, max_batch, max_frame_bytes,
                       heartbeat_interval, redaction?}
    agent -> events    {batch, events}        seq 1, 2, 3, ... (session <nonce>)
    brain -> ack       {batches}
    agent -> heartbeat {worker, tasks}
    brain -> command   {command: "configure", redaction}          (no answer)
    brain -> command   {id, command: "probe", task_ids}
    agent -> command_result {id, command: "probe", answers: [{task_id, active_on,
                       backend_state}, ...]}
    brain -> command   {id, command: "retry"|"cancel"|"purge"|"schedule", part, items, options}
    agent -> command_result {id, command, part, status: "acked", outcomes: []}
    agent -> command_result {id, command, part, status: "done", outcomes: [{task_id,
                       outcome, new_task_id?, reason?}, ...], result?}
                       or {id, command, part, status: "failed", outcomes: [], result?, error}
    agent -> <extra>   whatever the ``frames`` source hands over (a beat agent: its
                       ``schedules`` reports and ``schedule_fires``)
    agent -> bye       {reason, worker}

``redaction`` (in ``welcome``, and in a ``configure`` command while connected)
is the project's :class:`~z4j_domain.redaction.RedactionSettings` in JSON
form; it goes to ``on_redaction``, which applies it to the events built from
then on (an older brain sends none: the default policy stays). ``tasks`` in a
heartbeat lists the ids of the tasks the worker holds, or is ``null`` when
unknown (see :mod:`~z4j_agent_celery.activity`). A probe runs on the
transport's command thread, never on this one: its answer is queued and sent
by the send loop, in the session that asked (an answer for a session that is
gone is dropped). Unknown commands are logged at DEBUG and ignored.

A retry, cancel, purge or schedule part (:class:`~z4j_domain.commands.CommandPart`)
is acknowledged at once (``acked``, in the session that sent it), then run on the
command thread by the agent's executor (any :class:`PartExecutor`: the worker's
:class:`~z4j_agent_celery.actions.Executor`, the beat agent's), whose report
(``done`` or ``failed``) is sent in whichever session is up when it is ready:
the outcome of a part that ran must reach the brain even if the connection
dropped meanwhile. A part that already ran is answered with its first report,
without running it again. A malformed part is logged and, when its id and part
number can be read, answered ``failed`` saying why; an agent without an
executor answers every part ``failed`` ("this agent cannot run commands").

The transport is shared by the worker's agent and the beat agent
(:mod:`z4j_agent_celerybeat`); what differs between them comes in through
small hooks: the ``hello``, the heartbeat's ``worker`` object (``None`` for a
beat: ``"worker": null``), the executor, and a :class:`FrameSource` whose
frames are sent by the send loop (told when a session starts, so it can send
its whole state again in every session).

Nothing here ever raises into the worker: every failure is logged and retried
with jittered exponential backoff, and events wait in the bounded
:class:`~z4j_domain.protocol.OutboundBuffer` (oldest dropped first, counted)
until the brain acknowledges them. After a reconnect, unacknowledged batches
are sent again; the brain deduplicates them by event id.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import attrs
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from z4j_domain.commands import Action, CommandPart, PartReport, PartStatus
from z4j_domain.frames import (
    MAX_FRAME_BYTES,
    Frame,
    FrameRejected,
    FrameType,
    ReplayGuard,
    decode_frame,
    encode_frame,
    encode_frame_body,
)
from z4j_domain.protocol import HELLO_SESSION, OutboundBuffer

__all__ = ["FrameSource", "PartExecutor", "Transport", "TransportSettings"]

logger = logging.getLogger("z4j.celery.transport")

#: The close codes a brain uses to say why it refused the agent.
REJECTION_CODES: Final = range(4400, 4427)
#: Room left in a frame for the envelope around the events.
_FRAME_OVERHEAD: Final = 4096
#: How long, at least, a stopping agent waits for the brain to close after its bye.
_BYE_CLOSE_WAIT: Final = 0.5
#: Most task ids one probe is answered for (the brain asks about at most this many).
_MAX_PROBE_IDS: Final = 500
#: The commands an executor carries out (the worker's retry, cancel and purge; a beat's schedule).
_ACTIONS: Final = frozenset(
    {Action.RETRY.value, Action.CANCEL.value, Action.PURGE.value, Action.SCHEDULE.value}
)


class PartExecutor(Protocol):
    """Runs the brain's command parts: what the transport needs of an executor."""

    def finished(self, key: tuple[str, int]) -> PartReport | None:
        """The report of the part ``key`` if it ran already; a repeat is answered with it."""

    def run(self, part: CommandPart) -> PartReport:
        """Carry ``part`` out (on the command thread) and report; never raises."""


class FrameSource(Protocol):
    """More frames for the send loop, beside events, heartbeats and command results.

    :meth:`session_started` is called on the transport's thread right after
    each ``welcome`` (with the largest frame body the brain takes), before the
    first :meth:`pending`; :meth:`pending` is called on every round of the send
    loop and must be quick. A frame handed over is sent once: one lost with a
    dropped connection is the source's to send again in the next session.
    """

    def session_started(self, max_bytes: int) -> None:
        """A new session is up: whatever the brain should know again is pending now."""

    def pending(self) -> Sequence[tuple[FrameType, Mapping[str, Any]]]:
        """The frames to send now (type and body), in order; usually none."""


class _Rejected(Exception):
    """The brain refused this connection; already logged."""


@attrs.frozen(kw_only=True)
class TransportSettings:
    """Timings of the transport, in seconds; the defaults are for production, tests shorten them."""

    flush_interval: float = 0.025
    backoff_initial: float = 0.5
    backoff_cap: float = 30.0
    unauthorized_backoff: float = 60.0
    open_timeout: float = 10.0
    handshake_timeout: float = 10.0
    default_heartbeat_interval: float = 10.0
    #: Batches sent and not yet acknowledged, at most.
    max_in_flight: int = 32
    #: How often a still-unreachable brain is logged again.
    warn_every: float = 300.0


class Transport:
    """Connects, speaks the protocol, sends what the buffer holds; one thread, restartable never.

    ``buffer`` is shared with the collector that fills it and is only touched
    under ``lock``. ``worker_stats`` returns the heartbeat's ``worker`` object
    (``None`` for an agent without a worker, a beat's: ``null``),
    ``worker_tasks`` its ``tasks`` (``None``, or no callable: ``null``).
    ``hostname`` is the worker the ``bye`` names (``None``: none).
    ``on_redaction`` receives the brain's redaction settings (JSON form, not
    yet validated); ``probe`` answers a probe's task ids (see
    :class:`~z4j_agent_celery.activity.Prober`); without it probes are ignored.
    ``executor`` runs retry, cancel, purge and schedule parts; without it they
    are answered ``failed``. ``frames`` hands the send loop extra frames (see
    :class:`FrameSource`).
    """

    def __init__(
        self,
        *,
        url: str,
        token: str,
        secret: bytes,
        hello: Mapping[str, Any],
        hostname: str | None,
        buffer: OutboundBuffer,
        lock: threading.Lock,
        worker_stats: Callable[[], dict[str, Any] | None],
        worker_tasks: Callable[[], list[str] | None] | None = None,
        on_redaction: Callable[[Any], Any] | None = None,
        probe: Callable[[Sequence[str]], list[dict[str, Any]]] | None = None,
        executor: PartExecutor | None = None,
        frames: FrameSource | None = None,
        settings: TransportSettings | None = None,
        user_agent: str = "z4j-celery",
    ) -> None:
        self.url = url
        self._token = token
        self._secret = secret
        self._hello = dict(hello)
        self.hostname = hostname
        self.buffer = buffer
        self.lock = lock
        self._worker_stats = worker_stats
        self._worker_tasks = worker_tasks
        self._on_redaction = on_redaction
        self._probe = probe
        self._executor = executor
        self._frames = frames
        # Work for the command thread, and results for the send loop: (session, ...) where
        # the session is the one to answer in, or None for whichever is up when it is sent.
        self._commands: queue.SimpleQueue[
            tuple[str | None, Callable[[], dict[str, Any] | None]]
        ] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[str | None, dict[str, Any]]] = queue.SimpleQueue()
        self._command_thread: threading.Thread | None = None
        self._session = ""
        self.settings = settings or TransportSettings()
        self._user_agent = user_agent
        self._stopping = threading.Event()
        self._bye_reason = "worker shutdown"
        self._flush_timeout = 2.0
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._heartbeat_interval = self.settings.default_heartbeat_interval
        self._unauthorized_logged = False
        self._last_warning: dict[str, float] = {}
        #: Set while a session (after welcome) is up; tests and shutdown wait on it.
        self.connected = threading.Event()
        #: Sessions established since start.
        self.sessions = 0
        #: Why the brain last refused the agent ("unauthorized", "4403 ...").
        self.last_rejection: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread."""
        self._thread = threading.Thread(target=self._run, name="z4j-agent-transport", daemon=True)
        self._thread.start()

    def stop(self, reason: str = "worker shutdown", timeout: float = 3.0) -> None:
        """Flush what is pending (briefly), say ``bye`` and close; returns within ``timeout``."""
        self._bye_reason = reason
        self._flush_timeout = max(0.0, timeout - 0.5)
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- the loop -------------------------------------------------------------------------

    def _warn(self, key: str, message: str, *args: Any) -> None:
        """WARNING the first time, then at most every ``warn_every`` seconds; else DEBUG."""
        now = time.monotonic()
        last = self._last_warning.get(key)
        if last is None or now - last >= self.settings.warn_every:
            self._last_warning[key] = now
            logger.warning(message, *args)
        else:
            logger.debug(message, *args)

    def _backoff(self, failures: int) -> float:
        ceiling = min(
            self.settings.backoff_cap, self.settings.backoff_initial * 2 ** min(failures, 16)
        )
        return float(ceiling * random.uniform(0.5, 1.0))

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            delay: float
            try:
                self._connect_and_serve()
                failures = 0
                delay = self._backoff(0)
            except _Rejected:
                failures += 1
                delay = self._backoff(failures)
            except _Unauthorized:
                failures += 1
                delay = self.settings.unauthorized_backoff * random.uniform(0.8, 1.2)
            except Exception as error:  # never let the thread die: log and retry
                failures += 1
                self._warn(
                    type(error).__name__,
                    "z4j brain at %s unreachable: %s; retrying (events are buffered)",
                    self.url,
                    _describe(error),
                )
                delay = self._backoff(failures)
            finally:
                self.connected.clear()
            if not self._stopping.is_set():
                self._stopping.wait(delay)

    def _on_refused(self, error: InvalidStatus) -> Exception:
        status = error.response.status_code
        if status == 401:
            self.last_rejection = "unauthorized"
            if not self._unauthorized_logged:
                self._unauthorized_logged = True
                logger.error(
                    "z4j rejected the agent: unauthorized (check Z4J_TOKEN); "
                    "retrying every %.0fs, the worker keeps running",
                    self.settings.unauthorized_backoff,
                )
            return _Unauthorized()
        self.last_rejection = f"HTTP {status}"
        self._warn(f"http-{status}", "z4j brain refused the agent's connection: HTTP %s", status)
        return _Rejected()

    def _send(
        self, ws: ClientConnection, kind: FrameType, session: str, body: Mapping[str, Any] | bytes
    ) -> None:
        """Send the next frame of the session; ``body`` as a mapping, or as canonical JSON
        bytes already (an event batch's: the frame is put together around them)."""
        if isinstance(body, bytes):
            ws.send(
                encode_frame_body(
                    type=kind,
                    session=session,
                    seq=self._seq,
                    ts=datetime.now(UTC),
                    body=body,
                    secret=self._secret,
                )
            )
        else:
            frame = Frame(
                type=kind, session=session, seq=self._seq, ts=datetime.now(UTC), body=body
            )
            ws.send(encode_frame(frame, self._secret))
        self._seq += 1

    def _handshake(self, ws: ClientConnection) -> tuple[str, ReplayGuard]:
        self._seq = 0
        self._send(ws, FrameType.HELLO, HELLO_SESSION, self._hello)
        text = ws.recv(timeout=self.settings.handshake_timeout)
        frame = decode_frame(text, self._secret)
        if frame.type is not FrameType.WELCOME:
            raise _ProtocolError(f"expected welcome, got {frame.type.value}")
        nonce = frame.body.get("session")
        if not isinstance(nonce, str) or nonce != frame.session:
            raise _ProtocolError("welcome carries no session nonce matching its frame")
        guard = ReplayGuard(session=nonce)
        guard.check(frame, datetime.now(UTC))
        max_batch = frame.body.get("max_batch")
        max_frame_bytes = frame.body.get("max_frame_bytes")
        interval = frame.body.get("heartbeat_interval")
        with self.lock:
            if type(max_batch) is int and max_batch > 0:
                self.buffer.max_batch = max_batch
            if type(max_frame_bytes) is int and max_frame_bytes > _FRAME_OVERHEAD * 2:
                self.buffer.max_bytes = min(max_frame_bytes, MAX_FRAME_BYTES) - _FRAME_OVERHEAD
            self.buffer.requeue_in_flight()
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0:
            self._heartbeat_interval = float(interval)
        if "redaction" in frame.body:
            self._apply_redaction(frame.body["redaction"])
        self._session = nonce
        if self._frames is not None:
            with self.lock:
                max_bytes = self.buffer.max_bytes
            try:
                self._frames.session_started(max_bytes)
            except Exception:  # the source's own failure must not end the session
                logger.exception("z4j agent could not prepare its frames for the new session")
        return nonce, guard

    def _connect_and_serve(self) -> None:
        try:
            with connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                user_agent_header=self._user_agent,
                open_timeout=self.settings.open_timeout,
                close_timeout=2,
                max_size=MAX_FRAME_BYTES,
                compression=None,
            ) as ws:
                self._converse(ws)
        except InvalidStatus as error:
            raise self._on_refused(error) from None

    def _converse(self, ws: ClientConnection) -> None:
        try:
            nonce, guard = self._handshake(ws)
            self._unauthorized_logged = False
            self.last_rejection = None
            self._last_warning.clear()
            self.sessions += 1
            self.connected.set()
            logger.info("z4j agent connected to %s (session %s)", self.url, nonce[:8])
            self._serve(ws, nonce, guard)
        except ConnectionClosed as closed:
            self._on_closed(closed)
        except (FrameRejected, _ProtocolError) as error:
            self._warn("bad-frame", "z4j brain sent a frame the agent refuses: %s", error)
            ws.close(1008, "bad frame")
            raise _Rejected from None

    def _on_closed(self, closed: ConnectionClosed) -> None:
        received = closed.rcvd
        if received is not None and received.code in REJECTION_CODES:
            self.last_rejection = f"{received.code} {received.reason}"
            logger.warning(
                "z4j brain closed the agent's connection: code %s, reason %r",
                received.code,
                received.reason,
            )
            raise _Rejected from None
        if self._stopping.is_set():
            return
        code = received.code if received is not None else "none"
        reason = received.reason if received is not None else ""
        self._warn("closed", "z4j brain connection closed (code %s %s); reconnecting", code, reason)
        raise _Rejected from None

    def _serve(self, ws: ClientConnection, nonce: str, guard: ReplayGuard) -> None:
        next_heartbeat = 0.0
        while True:
            if self._stopping.is_set():
                self._finish(ws, nonce, guard)
                return
            try:
                text = ws.recv(timeout=self.settings.flush_interval)
            except TimeoutError:
                pass
            else:
                self._receive(text, guard)
            self._send_batches(ws, nonce)
            self._send_results(ws, nonce)
            self._send_frames(ws, nonce)
            now = time.monotonic()
            if now >= next_heartbeat:
                self._send(ws, FrameType.HEARTBEAT, nonce, self._heartbeat())
                next_heartbeat = now + self._heartbeat_interval

    def _heartbeat(self) -> dict[str, Any]:
        tasks: list[str] | None = None
        if self._worker_tasks is not None:
            try:
                tasks = self._worker_tasks()
            except Exception:  # unknown is an answer; never lose the heartbeat
                logger.debug("z4j agent could not list the worker's tasks", exc_info=True)
        return {"worker": self._worker_stats(), "tasks": tasks}

    def _receive(self, text: str | bytes, guard: ReplayGuard) -> None:
        frame = decode_frame(text, self._secret)
        guard.check(frame, datetime.now(UTC))
        if frame.type is FrameType.ACK:
            batches = frame.body.get("batches")
            if isinstance(batches, list):
                with self.lock:
                    self.buffer.ack([n for n in batches if type(n) is int])
        elif frame.type is FrameType.COMMAND:
            self._on_command(frame.body)
        elif frame.type is FrameType.BYE:
            logger.info("z4j brain said bye: %s", frame.body.get("reason", ""))
        else:
            logger.debug("z4j agent ignores a %s frame", frame.type.value)

    # -- commands -------------------------------------------------------------------------

    def _apply_redaction(self, data: Any) -> None:
        if self._on_redaction is None:
            return
        try:
            self._on_redaction(data)
        except Exception:  # the callback validates and logs; this is a last resort
            logger.exception("z4j agent could not apply the brain's redaction settings")

    def _on_command(self, body: Mapping[str, Any]) -> None:
        command = body.get("command")
        if command == "configure":
            if "redaction" in body:
                self._apply_redaction(body["redaction"])
            else:
                logger.debug("z4j agent ignores a configure command without settings")
        elif command == "probe":
            command_id = body.get("id")
            task_ids = body.get("task_ids")
            if (
                not isinstance(command_id, str)
                or not command_id
                or not isinstance(task_ids, list)
                or not all(isinstance(task_id, str) for task_id in task_ids)
            ):
                logger.warning("z4j agent ignores a malformed probe command from the brain")
                return
            if self._probe is None:
                logger.debug("z4j agent cannot probe; ignoring probe %s", command_id)
                return
            if len(task_ids) > _MAX_PROBE_IDS:
                logger.warning(
                    "z4j agent answers the first %d of the %d task ids of probe %s",
                    _MAX_PROBE_IDS,
                    len(task_ids),
                    command_id,
                )
                task_ids = task_ids[:_MAX_PROBE_IDS]
            self._commands.put(
                (self._session, lambda: self._answer_probe(command_id, list(task_ids)))
            )
            self._ensure_command_thread()
        elif command in _ACTIONS:
            self._on_action(body)
        else:
            logger.debug("z4j agent ignores the unknown command %r", command)

    def _on_action(self, body: Mapping[str, Any]) -> None:
        """Acknowledge a command part and queue it for the executor on the command thread."""
        try:
            part = CommandPart.from_body(body)
        except Exception as error:  # InvalidInput, or a value attrs refuses
            logger.warning(
                "z4j agent refuses a malformed %s command from the brain: %s",
                body.get("command"),
                error,
            )
            self._answer_unreadable(body, f"the agent could not read the command: {error}")
            return
        if self._executor is None:
            logger.warning(
                "z4j agent cannot run commands; %s part %d of %s failed",
                part.action.value,
                part.part,
                part.command_id,
            )
            failed = part.report(PartStatus.FAILED, error="this agent cannot run commands")
            self._results.put((None, failed.body()))
            return
        report = self._executor.finished(part.key)
        if report is not None:
            logger.debug(
                "z4j agent answers a repeat of %s part %d of %s with its report",
                part.action.value,
                part.part,
                part.command_id,
            )
            self._results.put((None, report.body()))
            return
        self._results.put((self._session, part.report(PartStatus.ACKED).body()))
        executor = self._executor
        self._commands.put((None, lambda: executor.run(part).body()))
        self._ensure_command_thread()

    def _answer_unreadable(self, body: Mapping[str, Any], error: str) -> None:
        """Answer a part that could not be read ``failed``, if its id and part number can be."""
        command_id = body.get("id")
        number = body.get("part")
        if (
            not isinstance(command_id, str)
            or not command_id
            or len(command_id) > 1_000
            or "\x00" in command_id
            or type(number) is not int
            or number < 0
        ):
            return  # the brain could not tell which part an answer is about
        try:
            report = PartReport(
                command_id=command_id,
                action=str(body.get("command")),
                part=number,
                status=PartStatus.FAILED,
                error=error,
            )
        except Exception:  # an id or part number no report can carry: nothing to answer
            logger.debug("z4j agent cannot answer the malformed command", exc_info=True)
            return
        self._results.put((None, report.body()))

    def _answer_probe(self, command_id: str, task_ids: list[str]) -> dict[str, Any] | None:
        if self._probe is None:
            return None
        try:
            answers = self._probe(task_ids)
        except Exception:
            logger.exception("z4j agent probe %s failed", command_id)
            return None
        return {"id": command_id, "command": "probe", "answers": answers}

    def _ensure_command_thread(self) -> None:
        thread = self._command_thread
        if thread is None or not thread.is_alive():
            self._command_thread = threading.Thread(
                target=self._command_loop, name="z4j-agent-commands", daemon=True
            )
            self._command_thread.start()

    def _command_loop(self) -> None:
        """Run probes and command parts one at a time, off the send loop."""
        while True:
            session, job = self._commands.get()
            try:
                body = job()
            except Exception:  # the jobs report their own failures; this is a last resort
                logger.exception("z4j agent failed to run a command")
                continue
            if body is not None:
                self._results.put((session, body))

    def _send_results(self, ws: ClientConnection, nonce: str) -> None:
        while True:
            try:
                session, body = self._results.get_nowait()
            except queue.Empty:
                return
            if session is None or session == nonce:
                self._send(ws, FrameType.COMMAND_RESULT, nonce, body)
            else:
                logger.debug("z4j agent drops the answer to %s from an earlier session", body["id"])

    def _send_frames(self, ws: ClientConnection, nonce: str) -> None:
        if self._frames is None:
            return
        try:
            frames = self._frames.pending()
        except Exception:  # never let the source end the session
            logger.exception("z4j agent could not collect its frames")
            return
        for kind, body in frames:
            self._send(ws, kind, nonce, body)

    def _send_batches(self, ws: ClientConnection, nonce: str) -> int:
        sent = 0
        while True:
            with self.lock:
                if self.buffer.in_flight >= self.settings.max_in_flight:
                    return sent
                batch = self.buffer.take()
            if batch is None:
                return sent
            self._send(ws, FrameType.EVENTS, nonce, batch.encoded_body())
            sent += 1

    def _finish(self, ws: ClientConnection, nonce: str, guard: ReplayGuard) -> None:
        """Shutdown: send what is pending, wait briefly for acks, say bye, let the brain close."""
        deadline = time.monotonic() + self._flush_timeout
        while time.monotonic() < deadline:
            self._send_batches(ws, nonce)
            with self.lock:
                done = self.buffer.pending == 0 and self.buffer.in_flight == 0
            if done:
                break
            try:
                text = ws.recv(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                continue
            self._receive(text, guard)
        self._send(ws, FrameType.BYE, nonce, {"reason": self._bye_reason, "worker": self.hostname})
        with self.lock:
            left = len(self.buffer)
        if left:
            logger.warning("z4j agent stopping with %d events not acknowledged by the brain", left)
        # The brain closes the socket once it has handled the bye (marked the worker
        # offline); closing first would let it drop the bye unhandled.
        self._await_close(ws, guard, max(deadline, time.monotonic() + _BYE_CLOSE_WAIT))
        ws.close(1000, "bye")

    def _await_close(self, ws: ClientConnection, guard: ReplayGuard, deadline: float) -> None:
        """Read (acks) until the brain closes the socket or ``deadline`` passes."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._receive(ws.recv(timeout=left), guard)
            except (TimeoutError, ConnectionClosed, FrameRejected):
                return


class _Unauthorized(Exception):
    """HTTP 401 at the upgrade: the token is wrong; logged once."""


class _ProtocolError(Exception):
    """The brain's handshake did not follow the protocol."""


def _describe(error: BaseException) -> str:
    if isinstance(error, (OSError, TimeoutError, InvalidHandshake, InvalidURI)):
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return repr(error)
