"""The agent inside one worker: capture, the hop from pool children, and the transport.

One :class:`AgentRuntime` lives in the worker's main process. Events raised
there (``received``, ``revoked``, ``rejected``, and every event under the
``threads`` and ``solo`` pools) go onto an in-memory deque. A prefork pool
child cannot use that deque, so each child runs a small forwarder thread that
turns its raw events into event dicts and sends them, many per datagram, over
a Unix datagram socket pair the main process created before the pool forked:
one socket for all children, no lock shared between processes (a child killed
mid-send cannot wedge the others), and nothing but a deque append on the
task's thread. A collector thread in the main process drains both into the
:class:`~z4j_domain.protocol.OutboundBuffer`, and the :class:`Transport`
thread sends it to the brain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from z4j_agent_celery.capture import Capture, RawEvent, materialize
from z4j_agent_celery.config import AgentConfig
from z4j_agent_celery.payload import TRUNCATED
from z4j_agent_celery.transport import Transport, TransportSettings
from z4j_domain.frames import PROTOCOL_VERSION
from z4j_domain.protocol import OutboundBuffer

__all__ = ["AgentRuntime"]

logger = logging.getLogger("z4j.celery.runtime")

#: Largest datagram a child sends (several events each).
MAX_DATAGRAM: Final = 60_000
#: How often idle forwarder and collector threads look for work, in seconds.
POLL_INTERVAL: Final = 0.02
#: Events materialized per collector round before handing them to the buffer.
COLLECT_CHUNK: Final = 2_000


def _version() -> str:
    from z4j_agent_celery import __version__

    return __version__


class AgentRuntime:
    """Everything the agent runs in one worker; :meth:`start` once, :meth:`stop` at shutdown."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        hostname: str,
        worker_stats: Callable[[], dict[str, Any]] | None = None,
        settings: TransportSettings | None = None,
    ) -> None:
        self.config = config
        self.hostname = hostname
        self.buffer = OutboundBuffer(capacity=config.buffer_size)
        self.lock = threading.Lock()
        self.capture = Capture(self.emit, hostname=hostname)
        self._pid = os.getpid()
        self._local: deque[RawEvent] = deque()
        # Children send on _child_end; the main process reads _main_end.
        self._main_end, self._child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._main_end.setblocking(False)
        with contextlib.suppress(OSError):
            self._main_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        # A timeout makes sends non-blocking with a bounded wait, in every child alike.
        self._child_end.settimeout(1.0)
        self._stopping = threading.Event()
        self._collector: threading.Thread | None = None
        # Child-side state (meaningful only in a forked child).
        self._child_pid: int | None = None
        self._child_queue: deque[RawEvent] = deque()
        self._child_thread: threading.Thread | None = None
        #: Events a child or the collector could not materialize or hand over.
        self.lost = 0
        self.transport = Transport(
            url=config.url,
            token=config.token,
            secret=config.secret,
            hello={
                "protocol": PROTOCOL_VERSION,
                "agent": config.agent_name,
                "project": config.project,
                "hostname": hostname,
                "pid": self._pid,
                "agent_version": _version(),
                "kind": "celery-worker",
            },
            hostname=hostname,
            buffer=self.buffer,
            lock=self.lock,
            worker_stats=worker_stats or (lambda: {"hostname": hostname}),
            settings=settings,
            user_agent=f"z4j-celery/{_version()}",
        )
        self._stopped = False

    @property
    def pid(self) -> int:
        """The main process the runtime belongs to."""
        return self._pid

    # -- the hot path -------------------------------------------------------------------

    def emit(self, raw: RawEvent) -> None:
        """Queue one raw event: an append, wherever it is called from."""
        if os.getpid() == self._pid:
            self._local.append(raw)
            return
        if self._child_pid != os.getpid():
            self._start_forwarder()
        self._child_queue.append(raw)

    def _materialize(self, raw: RawEvent) -> dict[str, Any] | None:
        try:
            return materialize(raw, max_payload_bytes=self.config.max_payload_bytes)
        except Exception:
            self.lost += 1
            logger.debug("z4j agent could not build an event from %r", raw[:3], exc_info=True)
            return None

    # -- prefork children ---------------------------------------------------------------

    def _start_forwarder(self) -> None:
        self._child_pid = os.getpid()
        self._child_queue = deque()
        self._child_thread = threading.Thread(
            target=self._forward_loop, name="z4j-agent-forwarder", daemon=True
        )
        self._child_thread.start()

    def _forward_loop(self) -> None:
        while True:
            if not self._forward_once():
                time.sleep(POLL_INTERVAL)

    def _forward_once(self) -> int:
        """Send what the child has queued; returns how many events went out."""
        queue = self._child_queue
        events: list[dict[str, Any]] = []
        while queue and len(events) < COLLECT_CHUNK:
            event = self._materialize(queue.popleft())
            if event is not None:
                events.append(event)
        if events:
            self._send_datagrams(events)
        return len(events)

    def _send_datagrams(self, events: list[dict[str, Any]]) -> None:
        data = pickle.dumps(events, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_DATAGRAM:
            if len(events) > 1:
                middle = len(events) // 2
                self._send_datagrams(events[:middle])
                self._send_datagrams(events[middle:])
                return
            events = [_shrunk(events[0])]
            data = pickle.dumps(events, protocol=pickle.HIGHEST_PROTOCOL)
            if len(data) > MAX_DATAGRAM:
                self.lost += 1
                return
        try:
            self._child_end.send(data)
        except OSError:  # the main process is gone or too far behind: drop, never block
            self.lost += len(events)

    def flush_child(self, **_: Any) -> None:
        """``worker_process_shutdown``: send what this child still holds before it exits."""
        if self._child_pid != os.getpid():
            return
        while self._forward_once():
            pass

    # -- the main process ---------------------------------------------------------------

    def _collect_once(self, wait: float) -> int:
        events: list[dict[str, Any]] = []
        local = self._local
        while local and len(events) < COLLECT_CHUNK:
            event = self._materialize(local.popleft())
            if event is not None:
                events.append(event)
        if not events and wait > 0:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._main_end], [], [], wait)
        while len(events) < COLLECT_CHUNK:
            try:
                data = self._main_end.recv(MAX_DATAGRAM + 1024)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            try:
                events.extend(pickle.loads(data))  # noqa: S301 - our own forked children
            except Exception:
                self.lost += 1
        if events:
            with self.lock:
                self.buffer.add_many(events)
        return len(events)

    def _collect_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._collect_once(POLL_INTERVAL)
            except Exception:  # never die; never take the worker down
                logger.exception("z4j agent collector error")
                time.sleep(POLL_INTERVAL)
        # Final drain: whatever the children flushed on their way out.
        while self._collect_once(0):
            pass

    def start(self) -> None:
        """Connect the signal handlers and start the collector and transport threads."""
        from celery import signals

        self.capture.connect()
        signals.worker_process_shutdown.connect(
            self.flush_child, weak=False, dispatch_uid="z4j-agent-flush-child"
        )
        self._collector = threading.Thread(
            target=self._collect_loop, name="z4j-agent-collector", daemon=True
        )
        self._collector.start()
        self.transport.start()

    def stop(self, reason: str = "worker shutdown", timeout: float = 3.0) -> None:
        """Drain, flush briefly, say bye to the brain and stop the threads (main process only)."""
        if self._stopped or os.getpid() != self._pid:
            return
        self._stopped = True
        self._stopping.set()
        if self._collector is not None:
            self._collector.join(1.0)
        self.transport.stop(reason, timeout=timeout)
        self.capture.disconnect()
        from celery import signals

        signals.worker_process_shutdown.disconnect(
            self.flush_child, dispatch_uid="z4j-agent-flush-child"
        )
        with self.lock:
            dropped = self.buffer.dropped
        if dropped or self.lost:
            logger.warning(
                "z4j agent dropped %d events (buffer full) and lost %d (unencodable or "
                "undeliverable) during this run",
                dropped,
                self.lost,
            )
        for end in (self._main_end, self._child_end):
            with contextlib.suppress(OSError):
                end.close()


def _shrunk(event: dict[str, Any]) -> dict[str, Any]:
    """An event too big for a datagram, with its payloads replaced by markers."""
    smaller = dict(event)
    for name, empty in (("args", list), ("kwargs", dict), ("result", None)):
        if name in smaller:
            marker = f"{TRUNCATED} too large to forward]"
            if empty is list:
                smaller[name] = [marker]
            elif empty is dict:
                smaller[name] = {"__z4j_truncated__": marker}
            else:
                smaller[name] = marker
    if "traceback" in smaller:
        smaller["traceback"] = smaller["traceback"][-8_000:]
    return smaller
