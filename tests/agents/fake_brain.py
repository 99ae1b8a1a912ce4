"""A small stand-in for the brain's ``/ws/agent`` endpoint, speaking the agent protocol.

It runs a ``websockets`` sync server on a thread of the test process: checks
the bearer token (HTTP 401 otherwise), verifies every frame (signature,
session, sequence, clock), answers ``hello`` with ``welcome`` (carrying
``redaction`` settings when a test sets them), acknowledges ``events``
batches, and records everything it received (heartbeats with their ``tasks``,
command results). Knobs let a test make it close with a rejection code, hold
back acks, or drop the connection; :meth:`FakeBrain.command` sends a command
(``configure``, ``probe``, anything) to the connected agents.

The agent's unit tests use it; the end-to-end tests run the real brain.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from z4j_agent_celery.transport import TransportSettings
from z4j_domain.frames import Frame, FrameType, ReplayGuard, decode_frame, encode_frame
from z4j_domain.protocol import HELLO_SESSION

#: The fake's credentials unless a test picks others.
TOKEN = "good-token"
SECRET = "hmac-secret"


class _Session:
    """One agent connection after welcome: the brain's side of its sequence numbers."""

    def __init__(self, ws: ServerConnection, nonce: str, hostname: str) -> None:
        self.ws = ws
        self.nonce = nonce
        self.hostname = hostname
        self.seq = 0
        self.lock = threading.Lock()


class FakeBrain:
    """The fake brain; use as a context manager."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        secret: str = SECRET,
        max_batch: int = 1000,
        max_frame_bytes: int = 1_000_000,
        heartbeat_interval: float = 0.5,
    ) -> None:
        self.token = token
        self.secret = secret.encode("utf-8")
        self.max_batch = max_batch
        self.max_frame_bytes = max_frame_bytes
        self.heartbeat_interval = heartbeat_interval
        #: The ``redaction`` settings sent in ``welcome`` (``None``: none, as an older brain).
        self.redaction: dict[str, Any] | None = None
        #: Acknowledge batches (turn off to test resends).
        self.ack = True
        #: Close every new session right after welcome with (code, reason).
        self.reject: tuple[int, str] | None = None
        #: Seconds the fake takes to handle a bye before it closes (as the brain
        #: marks the worker offline); ``open_after_bye`` records whether the
        #: agent's socket was still open by then.
        self.bye_delay = 0.0
        self.open_after_bye: list[bool] = []
        self.lock = threading.RLock()  # wait_for holds it while predicates re-take it
        self.events: list[dict[str, Any]] = []
        self.frames: list[Frame] = []
        self.hellos: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.byes: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.batches: list[int] = []
        self.unauthorized = 0
        self.errors: list[str] = []
        self._connections: list[ServerConnection] = []
        self._sessions: list[_Session] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeBrain:
        self._server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=8 * 1024 * 1024,
            compression=None,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        """What to put in ``Z4J_BRAIN_URL``."""
        return f"http://127.0.0.1:{self.port}"

    def drop_connections(self, code: int = 1011, reason: str = "test drop") -> None:
        """Close every open agent connection."""
        with self.lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close(code, reason)

    @property
    def in_session(self) -> int:
        """How many agents are in session now (past hello and welcome)."""
        with self.lock:
            return len(self._sessions)

    def command(self, body: dict[str, Any], hostname: str | None = None) -> int:
        """Send a ``command`` frame with ``body`` to every agent in session (or to the one of
        the worker ``hostname``); how many got it."""
        with self.lock:
            sessions = [s for s in self._sessions if hostname in (None, s.hostname)]
        for session in sessions:
            self._send_in(session, FrameType.COMMAND, body)
        return len(sessions)

    def configure(self, redaction: Any) -> int:
        """Send ``{"command": "configure", "redaction": redaction}``."""
        return self.command({"command": "configure", "redaction": redaction})

    def probe(self, task_ids: list[str], hostname: str | None = None) -> str:
        """Send a probe about ``task_ids`` (to the agent of ``hostname``); its command id."""
        command_id = str(uuid.uuid4())
        sent = self.command(
            {"id": command_id, "command": "probe", "task_ids": task_ids}, hostname=hostname
        )
        assert sent, "no agent is connected"
        return command_id

    def result_of(self, command_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The ``command_result`` body answering ``command_id`` (waits for it)."""
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [r for r in self.results if r.get("id") == command_id]
            return bool(found)

        assert self.wait_for(arrived, timeout), f"no answer to {command_id}"
        assert len(found) == 1, found
        return found[0]

    def results_of(
        self, command_id: str, count: int, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The first ``count`` ``command_result`` bodies about ``command_id`` (waits for them).

        A command part is answered more than once, in order: ``acked``, then ``done``.
        """
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = [r for r in self.results if r.get("id") == command_id]
            return len(found) >= count

        assert self.wait_for(arrived, timeout), f"{len(found)} of {count} answers to {command_id}"
        return found[:count]

    # -- queries -----------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Poll ``predicate`` until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.02)
        with self.lock:
            return predicate()

    def events_of(self, task_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for event in self.events if event["task_id"] == task_id]

    def kinds_of(self, task_id: str) -> set[str]:
        return {event["kind"] for event in self.events_of(task_id)}

    # -- the endpoint ------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/ws/agent":
            return connection.respond(404, "not found\n")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            with self.lock:
                self.unauthorized += 1
            return connection.respond(401, "unauthorized\n")
        return None

    def _send(
        self, ws: ServerConnection, kind: FrameType, session: str, seq: int, body: Any
    ) -> None:
        frame = Frame(type=kind, session=session, seq=seq, ts=datetime.now(UTC), body=body)
        ws.send(encode_frame(frame, self.secret))

    def _handle(self, ws: ServerConnection) -> None:
        with self.lock:
            self._connections.append(ws)
        try:
            self._converse(ws)
        except ConnectionClosed:
            pass
        except Exception as error:  # recorded for the test to assert on
            with self.lock:
                self.errors.append(repr(error))
            ws.close(4400, f"fake brain: {error}")
        finally:
            with self.lock:
                self._connections.remove(ws)
                self._sessions = [s for s in self._sessions if s.ws is not ws]

    def _send_in(self, session: _Session, kind: FrameType, body: Any) -> None:
        with session.lock:
            session.seq += 1
            with contextlib.suppress(ConnectionClosed):
                self._send(session.ws, kind, session.nonce, session.seq, body)

    def _converse(self, ws: ServerConnection) -> None:
        hello = decode_frame(ws.recv(timeout=10), self.secret)
        ReplayGuard(session=HELLO_SESSION).check(hello, datetime.now(UTC))
        if hello.type is not FrameType.HELLO or hello.seq != 0:
            raise AssertionError(f"expected hello at seq 0, got {hello.type} {hello.seq}")
        nonce = secrets.token_hex(16)
        with self.lock:
            self.hellos.append(dict(hello.body))
        welcome: dict[str, Any] = {
            "session": nonce,
            "max_batch": self.max_batch,
            "max_frame_bytes": self.max_frame_bytes,
            "heartbeat_interval": self.heartbeat_interval,
        }
        if self.redaction is not None:
            welcome["redaction"] = self.redaction
        if self.reject is not None:
            self._send(ws, FrameType.WELCOME, nonce, 0, welcome)
            ws.close(*self.reject)
            return
        # Listed before the welcome goes out (the agent counts as connected once it
        # has it); a command waits on the session's lock until the welcome is sent.
        session = _Session(ws, nonce, str(hello.body.get("hostname")))
        with session.lock:
            with self.lock:
                self._sessions.append(session)
            self._send(ws, FrameType.WELCOME, nonce, 0, welcome)
        guard = ReplayGuard(session=nonce, last_seq=0)
        for text in ws:
            frame = decode_frame(text, self.secret)
            guard.check(frame, datetime.now(UTC))
            with self.lock:
                self.frames.append(frame)
                if frame.type is FrameType.EVENTS:
                    self.events.extend(frame.body["events"])
                    self.batches.append(frame.body["batch"])
                    assert frame.body["batch"]
                    assert len(frame.body["events"]) <= self.max_batch
                elif frame.type is FrameType.HEARTBEAT:
                    self.heartbeats.append(dict(frame.body))
                elif frame.type is FrameType.COMMAND_RESULT:
                    self.results.append(dict(frame.body))
                elif frame.type is FrameType.BYE:
                    self.byes.append(dict(frame.body))
            if frame.type is FrameType.EVENTS and self.ack:
                self._send_in(session, FrameType.ACK, {"batches": [frame.body["batch"]]})
            elif frame.type is FrameType.BYE:
                time.sleep(self.bye_delay)
                with self.lock:
                    self.open_after_bye.append(ws.state is State.OPEN)
                ws.close(1000, "bye")  # as the brain does once it has handled the bye
                return


#: Transport timings for tests: quick backoff and timeouts, so reconnections take moments.
FAST = TransportSettings(
    backoff_initial=0.05,
    backoff_cap=0.2,
    unauthorized_backoff=0.1,
    open_timeout=2,
    handshake_timeout=2,
)
