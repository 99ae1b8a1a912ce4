"""The agent inside one worker: capture, the hop from pool children, and the transport.

One :class:`AgentRuntime` lives in the worker's main process. Events raised
there (``received``, ``revoked``, ``rejected``, and every event under the
``threads`` and ``solo`` pools) go onto an in-memory deque. A prefork pool
child cannot use that deque, so each child runs a small forwarder thread that
builds its events and sends them, many per datagram, over a Unix datagram
socket pair the main process created before the pool forked: one socket for
all children, no lock shared between processes (a child killed mid-send
cannot wedge the others), and nothing but a deque append on the task's
thread. A collector thread in the main process drains both into the
:class:`~z4j_domain.protocol.OutboundBuffer`, and the :class:`Transport`
thread sends it to the brain.

**Encoded once.** The worker's main process runs Celery's consumer: every
microsecond the agent spends there is taken from the worker's throughput.
So each event is encoded to its canonical JSON exactly once, where it is
built (a child's events in the child, one per line of a datagram), and
from then on it is bytes: the main process splits datagrams into the
buffer, the transport joins a batch's events into a frame and signs it
once, and nothing is decoded or encoded again on the way (bytes are also
invisible to the garbage collector, however many wait for an ack).

**Redaction.** No event enters the buffer (the only way out of the worker)
without the project's current redaction policy, as far as the agent knows
it, applied: the default policy until the brain's ``welcome`` or a
``configure`` command brings the project's settings. A prefork child cannot
learn settings that arrive after it forked, so children always redact with
the *default* policy (plus a task's ``z4j_fully_redacted`` option, which
they see on the task object): cheap, and it covers the defaults before an
event even crosses the socket pair. The main process redacts its own events
with the current policy as it builds them and, only when the project has
settings of its own, passes the children's events through the current
policy once more (decoded, :func:`~z4j_agent_celery.capture.redact_event_dict`,
encoded again if that changed anything; a second pass is idempotent and
keeps the flags the first one set), so the default path costs the main
process nothing extra. The policy changes under
the buffer's lock: the collector re-checks it there before adding (a batch
built under the previous policy gets the new one too), and a change redacts
the events still waiting in the buffer with the new policy. Events already
sent are not recalled; the brain redacts again on ingest anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from z4j_agent_celery.actions import CAPABILITIES, Executor
from z4j_agent_celery.activity import Prober
from z4j_agent_celery.capture import Capture, RawEvent, materialize, redact_event_dict
from z4j_agent_celery.config import AgentConfig
from z4j_agent_celery.payload import TRUNCATED
from z4j_agent_celery.transport import Transport, TransportSettings
from z4j_domain.encoding import canonical_json
from z4j_domain.frames import PROTOCOL_VERSION
from z4j_domain.protocol import OutboundBuffer
from z4j_domain.redaction import DEFAULT_POLICY, RedactionPolicy, RedactionSettings

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
    """Everything the agent runs in one worker; :meth:`start` once, :meth:`stop` at shutdown.

    ``worker_stats`` and ``worker_tasks`` feed the heartbeats (see
    :func:`~z4j_agent_celery.bootstrap.worker_stats` and
    :func:`~z4j_agent_celery.activity.worker_tasks`); ``app`` is the worker's
    Celery app: its task registry (``sent`` events of fully redacted tasks),
    remote control and result backend (probes), and what carries out the
    brain's retry, cancel and purge commands (:class:`~z4j_agent_celery.actions.Executor`;
    the hello lists them as ``capabilities``). Tests leave it out.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        hostname: str,
        worker_stats: Callable[[], dict[str, Any]] | None = None,
        worker_tasks: Callable[[], list[str] | None] | None = None,
        app: Any = None,
        settings: TransportSettings | None = None,
    ) -> None:
        self.config = config
        self.hostname = hostname
        self.buffer = OutboundBuffer(capacity=config.buffer_size)
        self.lock = threading.Lock()
        self.capture = Capture(
            self.emit, hostname=hostname, tasks=_registry(app) if app is not None else None
        )
        #: The project's redaction settings and the policy events are redacted with
        #: (replaced together, under ``lock``; read without it by the collector).
        self.redaction = RedactionSettings()
        self.policy: RedactionPolicy = DEFAULT_POLICY
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
        #: Carries out the brain's commands; ``None`` without an app (they are answered failed).
        self.executor = Executor(app) if app is not None else None
        hello: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "agent": config.agent_name,
            "project": config.project,
            "hostname": hostname,
            "pid": self._pid,
            "agent_version": _version(),
            "kind": "celery-worker",
        }
        if self.executor is not None:
            hello["capabilities"] = list(CAPABILITIES)
        self.transport = Transport(
            url=config.url,
            token=config.token,
            secret=config.secret,
            hello=hello,
            hostname=hostname,
            buffer=self.buffer,
            lock=self.lock,
            worker_stats=worker_stats or (lambda: {"hostname": hostname}),
            worker_tasks=worker_tasks,
            on_redaction=self.set_redaction,
            probe=Prober(hostname=hostname, local_tasks=worker_tasks or (lambda: None), app=app),
            executor=self.executor,
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

    def _materialize(self, raw: RawEvent, policy: RedactionPolicy = DEFAULT_POLICY) -> bytes | None:
        """The event, redacted under ``policy``, as the canonical JSON the buffer holds."""
        try:
            return canonical_json(
                materialize(raw, max_payload_bytes=self.config.max_payload_bytes, policy=policy)
            )
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
        events: list[bytes] = []
        while queue and len(events) < COLLECT_CHUNK:
            event = self._materialize(queue.popleft())
            if event is not None:
                events.append(event)
        if events:
            self._send_datagrams(events)
        return len(events)

    def _send_datagrams(self, events: list[bytes]) -> None:
        # One event per line: compact JSON never holds a raw newline.
        data = b"\n".join(events)
        if len(data) > MAX_DATAGRAM:
            if len(events) > 1:
                middle = len(events) // 2
                self._send_datagrams(events[:middle])
                self._send_datagrams(events[middle:])
                return
            data = canonical_json(_shrunk(json.loads(data)))
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
        policy = self.policy
        events: list[bytes] = []
        local = self._local
        while local and len(events) < COLLECT_CHUNK:
            event = self._materialize(local.popleft(), policy)
            if event is not None:
                events.append(event)
        if not events and wait > 0:
            with contextlib.suppress(OSError, ValueError):
                select.select([self._main_end], [], [], wait)
        forwarded: list[bytes] = []
        while len(events) + len(forwarded) < COLLECT_CHUNK:
            try:
                data = self._main_end.recv(MAX_DATAGRAM + 1024)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            for line in data.split(b"\n"):
                # Our own children's canonical JSON; anything else would spoil a whole frame.
                if line[:1] == b"{" and line[-1:] == b"}":
                    forwarded.append(line)
                else:
                    self.lost += 1
        if forwarded:
            # The children redacted with the default policy only.
            events.extend(
                forwarded if policy is DEFAULT_POLICY else self._redact_all(forwarded, policy)
            )
        if events:
            with self.lock:
                if self.policy is not policy:  # changed meanwhile: apply the new one too
                    events = self._redact_all(events, self.policy)
                self.buffer.add_many(events)
        return len(events)

    def _redact_all(self, events: list[bytes], policy: RedactionPolicy) -> list[bytes]:
        out = []
        for event in events:
            try:
                data = json.loads(event)
                redacted = redact_event_dict(data, policy)
                out.append(event if redacted is data else canonical_json(redacted))
            except Exception:  # never let an unredacted event through
                self.lost += 1
                logger.debug("z4j agent could not redact event %r", event[:80], exc_info=True)
        return out

    # -- redaction settings from the brain ----------------------------------------------

    def set_redaction(self, data: Any) -> bool:
        """Apply the project's redaction settings (their JSON form) to events from now on.

        Invalid settings are logged as a WARNING and the previous ones stay.
        Events still waiting in the buffer are redacted with the new policy.
        Returns whether the settings were taken.
        """
        try:
            settings = RedactionSettings.from_dict(data)
            policy = DEFAULT_POLICY if settings == RedactionSettings() else settings.policy()
        except Exception as error:
            logger.warning(
                "z4j agent ignores invalid redaction settings from the brain (%s); "
                "keeping the previous ones",
                error,
            )
            return False
        with self.lock:
            changed = policy is not self.policy
            self.redaction, self.policy = settings, policy
            if changed and policy is not DEFAULT_POLICY:
                self._redact_pending(policy)
        if changed:
            logger.info(
                "z4j agent redacts with the project's settings: %d key patterns, "
                "%d value patterns, %d fully redacted tasks",
                len(settings.extra_key_patterns),
                len(settings.extra_value_patterns),
                len(settings.fully_redacted_tasks),
            )
        return True

    def _redact_pending(self, policy: RedactionPolicy) -> None:
        """Redact the events not yet sent with ``policy`` (under ``lock``), keeping their order."""
        events: list[bytes] = []
        while (batch := self.buffer.take()) is not None:
            events.extend(batch.events)
            self.buffer.ack([batch.number])
        self.buffer.add_many(self._redact_all(events, policy))

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


def _registry(app: Any) -> Any:
    """The app's task registry (name -> task); a worker's app is finalized already."""
    try:
        return app.tasks
    except Exception:
        logger.debug("z4j agent: no task registry in %r", app, exc_info=True)
        return None


def _shrunk(event: dict[str, Any]) -> dict[str, Any]:
    """An event too big for a datagram, with its payloads replaced by markers."""
    smaller = dict(event)
    for name, empty in (("args", list), ("kwargs", dict), ("result", None)):
        if name in smaller:
            smaller["truncated"] = True
            if name != "result":
                smaller["arguments_truncated"] = True
            marker = f"{TRUNCATED} too large to forward]"
            if empty is list:
                smaller[name] = [marker]
            elif empty is dict:
                smaller[name] = {"__z4j_truncated__": marker}
            else:
                smaller[name] = marker
    if "traceback" in smaller:
        if len(smaller["traceback"]) > 8_000:
            smaller["truncated"] = True
        smaller["traceback"] = smaller["traceback"][-8_000:]
    return smaller
