"""A small stand-in for the brain's ``/ws/agent`` endpoint, speaking the agent protocol.

It runs a ``websockets`` sync server on a thread of the test process: checks
the bearer token (HTTP 401 otherwise), verifies every frame (signature,
session, sequence, clock), answers ``hello`` with ``welcome``, acknowledges
``events`` batches, and records everything it received. Knobs let a test make
it close with a rejection code, hold back acks, or drop the connection.

The agent's unit tests use it; the end-to-end tests run the real brain.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from z4j_domain.frames import Frame, FrameType, ReplayGuard, decode_frame, encode_frame
from z4j_domain.protocol import HELLO_SESSION

#: The fake's credentials unless a test picks others.
TOKEN = "good-token"
SECRET = "hmac-secret"


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
        self.batches: list[int] = []
        self.unauthorized = 0
        self.errors: list[str] = []
        self._connections: list[ServerConnection] = []
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

    def _converse(self, ws: ServerConnection) -> None:
        hello = decode_frame(ws.recv(timeout=10), self.secret)
        ReplayGuard(session=HELLO_SESSION).check(hello, datetime.now(UTC))
        if hello.type is not FrameType.HELLO or hello.seq != 0:
            raise AssertionError(f"expected hello at seq 0, got {hello.type} {hello.seq}")
        nonce = secrets.token_hex(16)
        with self.lock:
            self.hellos.append(dict(hello.body))
        self._send(
            ws,
            FrameType.WELCOME,
            nonce,
            0,
            {
                "session": nonce,
                "max_batch": self.max_batch,
                "max_frame_bytes": self.max_frame_bytes,
                "heartbeat_interval": self.heartbeat_interval,
            },
        )
        if self.reject is not None:
            ws.close(*self.reject)
            return
        guard = ReplayGuard(session=nonce, last_seq=0)
        out_seq = 0
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
                elif frame.type is FrameType.BYE:
                    self.byes.append(dict(frame.body))
            if frame.type is FrameType.EVENTS and self.ack:
                out_seq += 1
                self._send(ws, FrameType.ACK, nonce, out_seq, {"batches": [frame.body["batch"]]})
            elif frame.type is FrameType.BYE:
                time.sleep(self.bye_delay)
                with self.lock:
                    self.open_after_bye.append(ws.state is State.OPEN)
                ws.close(1000, "bye")  # as the brain does once it has handled the bye
                return
