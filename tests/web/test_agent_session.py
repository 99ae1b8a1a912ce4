"""The gateway's protocol rules without a server: :class:`AgentSession` on its own."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from z4j_domain.errors import InvalidInput
from z4j_domain.frames import decode_frame
from z4j_domain.projects import Project
from z4j_domain.testing import FakeClock
from z4j_domain.users import Agent
from z4j_web.gateway import (
    CLOSE_CODES,
    AgentSession,
    Bye,
    EventsBatch,
    Heartbeat,
    ProtocolViolation,
    parse_event,
)
from z4j_web.services import AgentIdentity

from .support import FakeAgent, event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "agent-secret"


def session(clock: FakeClock) -> AgentSession:
    """A session of agent "workers" in project "default", with a predictable nonce."""
    identity = AgentIdentity(
        agent=Agent(
            id=1, project_id=1, name="workers", token_hash="h", secret_salt="s", created_at=T0
        ),
        project=Project(id=1, slug="default", name="Default", created_at=T0),
        secret=SECRET.encode(),
    )
    return AgentSession(identity, clock, new_nonce=lambda: "nonce-1")


def test_welcome_then_frames_of_the_session() -> None:
    """The welcome opens session "nonce-1"; events, heartbeat and bye are read in it."""
    clock = FakeClock()
    brain, agent = session(clock), FakeAgent(SECRET, clock)
    body = agent.welcome(brain.open(agent.hello()))
    assert body["session"] == "nonce-1"
    assert brain.hello is not None
    assert brain.hello.hostname == "celery@w1"
    batch = brain.receive(agent.events(3, [event("t", "sent", 0)]))
    assert isinstance(batch, EventsBatch)
    assert (batch.number, [e.id for e in batch.events], batch.invalid) == (3, ["t:sent:0"], ())
    assert isinstance(brain.receive(agent.heartbeat()), Heartbeat)
    assert brain.receive(agent.frame("command_result", {})) is None
    assert brain.receive(agent.bye()) == Bye(reason="worker shutdown", worker="celery@w1")


def test_brain_frames_are_signed_and_numbered_from_zero() -> None:
    """welcome is the brain's seq 0 and each ack takes the next number."""
    clock = FakeClock()
    brain, agent = session(clock), FakeAgent(SECRET, clock)
    welcome = decode_frame(brain.open(agent.hello()), SECRET.encode())
    first = decode_frame(brain.ack([1]), SECRET.encode())
    second = decode_frame(brain.ack([2, 3]), SECRET.encode())
    assert [welcome.seq, first.seq, second.seq] == [0, 1, 2]
    assert second.body == {"batches": [2, 3]}
    assert second.session == "nonce-1"


def test_a_second_hello_or_a_frame_before_hello_is_refused() -> None:
    """Only the first frame may be a hello, and it must be one."""
    clock = FakeClock()
    brain, agent = session(clock), FakeAgent(SECRET, clock)
    with pytest.raises(RuntimeError):
        brain.receive(agent.events(1, []))
    with pytest.raises(ProtocolViolation) as info:
        session(clock).open(FakeAgent(SECRET, clock).frame("events", {"batch": 1, "events": []}))
    assert info.value.reason == "malformed"
    agent.welcome(brain.open(agent.hello()))
    with pytest.raises(ProtocolViolation) as info:
        brain.receive(agent.frame("hello", {}))
    assert info.value.close_code == CLOSE_CODES["malformed"]


def test_close_reason_fits_a_close_frame() -> None:
    """A long detail is cut so the reason stays within 123 bytes."""
    violation = ProtocolViolation("malformed", "é" * 200)
    assert len(violation.close_reason.encode()) <= 123


@pytest.mark.parametrize(
    "data",
    [
        {"id": "x" * 256, "task_id": "t", "kind": "sent", "timestamp": "2026-01-01T00:00:00Z"},
        {
            "id": "i",
            "task_id": "t",
            "kind": "sent",
            "timestamp": "2026-01-01T00:00:00Z",
            "args": [math.nan],
        },
        {
            "id": "i",
            "task_id": "t",
            "kind": "sent",
            "timestamp": "2026-01-01T00:00:00Z",
            "kwargs": {"k\x00": 1},
        },
        {
            "id": "i",
            "task_id": "t",
            "kind": "sent",
            "timestamp": "2026-01-01T00:00:00Z",
            "attempt": 2**31,
        },
        {"id": "i", "task_id": "t", "kind": "sent"},
    ],
)
def test_parse_event_refuses_what_the_database_cannot_store(data: dict[str, object]) -> None:
    """Over-long ids, NaN, NUL and out-of-range integers are invalid events, not storage errors."""
    with pytest.raises(InvalidInput):
        parse_event(data)
