"""The agent's one WebSocket to the brain, on a daemon thread of the worker's main process.

The conversation (every frame signed with ``Z4J_HMAC_SECRET``, see
:mod:`z4j_domain.frames` and :mod:`z4j_domain.protocol`)::

    agent -> hello     session "hello", seq 0
    brain -> welcome   session <nonce>, seq 0, {session, max_batch, max_frame_bytes,
                       heartbeat_interval}
    agent -> events    {batch, events}        seq 1, 2, 3, ... (session <nonce>)
    brain -> ack       {batches}
    agent -> heartbeat {worker}
    agent -> bye       {reason, worker}

Nothing here ever raises into the worker: every failure is logged and retried
with jittered exponential backoff, and events wait in the bounded
:class:`~z4j_domain.protocol.OutboundBuffer` (oldest dropped first, counted)
until the brain acknowledges them. After a reconnect, unacknowledged batches
are sent again; the brain deduplicates them by event id.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from z4j_domain.frames import (
    MAX_FRAME_BYTES,
    Frame,
    FrameRejected,
    FrameType,
    ReplayGuard,
    decode_frame,
    encode_frame,
)
from z4j_domain.protocol import HELLO_SESSION, OutboundBuffer

__all__ = ["Transport", "TransportSettings"]

logger = logging.getLogger("z4j.celery.transport")

#: The close codes a brain uses to say why it refused the agent.
REJECTION_CODES: Final = range(4400, 4427)
#: Room left in a frame for the envelope around the events.
_FRAME_OVERHEAD: Final = 4096
#: How long, at least, a stopping agent waits for the brain to close after its bye.
_BYE_CLOSE_WAIT: Final = 0.5


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
    under ``lock``. ``worker_stats`` returns the heartbeat's ``worker`` object.
    """

    def __init__(
        self,
        *,
        url: str,
        token: str,
        secret: bytes,
        hello: Mapping[str, Any],
        hostname: str,
        buffer: OutboundBuffer,
        lock: threading.Lock,
        worker_stats: Callable[[], dict[str, Any]],
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
        self, ws: ClientConnection, kind: FrameType, session: str, body: Mapping[str, Any]
    ) -> None:
        frame = Frame(type=kind, session=session, seq=self._seq, ts=datetime.now(UTC), body=body)
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
            now = time.monotonic()
            if now >= next_heartbeat:
                self._send(ws, FrameType.HEARTBEAT, nonce, {"worker": self._worker_stats()})
                next_heartbeat = now + self._heartbeat_interval

    def _receive(self, text: str | bytes, guard: ReplayGuard) -> None:
        frame = decode_frame(text, self._secret)
        guard.check(frame, datetime.now(UTC))
        if frame.type is FrameType.ACK:
            batches = frame.body.get("batches")
            if isinstance(batches, list):
                with self.lock:
                    self.buffer.ack([n for n in batches if type(n) is int])
        elif frame.type is FrameType.BYE:
            logger.info("z4j brain said bye: %s", frame.body.get("reason", ""))
        else:
            logger.debug("z4j agent ignores a %s frame", frame.type.value)

    def _send_batches(self, ws: ClientConnection, nonce: str) -> int:
        sent = 0
        while True:
            with self.lock:
                if self.buffer.in_flight >= self.settings.max_in_flight:
                    return sent
                batch = self.buffer.take()
            if batch is None:
                return sent
            self._send(ws, FrameType.EVENTS, nonce, batch.body())
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
