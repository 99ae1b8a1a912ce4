"""The agent gateway over Quart's test client: hello, events and acks, heartbeats, rejections."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import timedelta
from typing import Any

import pytest
from quart.testing.connections import WebsocketResponseError
from quart.typing import TestClientProtocol as Client

from z4j_domain.frames import MAX_FRAME_BYTES
from z4j_domain.testing import FakeClock
from z4j_domain.workers import WorkerStatus
from z4j_infra.settings import Settings
from z4j_web import services
from z4j_web.app import create_app
from z4j_web.runtime import EXTENSION_KEY, Runtime

from .support import (
    SECRET,
    Backend,
    FakeAgent,
    Seeded,
    bearer,
    change,
    closed_with,
    connected,
    event,
    runtime_of,
)

pytestmark = pytest.mark.anyio


async def test_hello_gets_a_signed_welcome_with_the_limits(
    client: Client, minted: Any, agent: FakeAgent
) -> None:
    """The welcome carries a fresh session nonce, the batch and frame limits, the heartbeat."""
    async with client.websocket("/ws/agent", headers=bearer(minted.token)) as ws:
        await ws.send(agent.hello())
        body = agent.welcome(await ws.receive())
    assert body == {
        "session": agent.session,
        "max_batch": 1000,
        "max_frame_bytes": MAX_FRAME_BYTES,
        "heartbeat_interval": 2.0,
        "redaction": {
            "extra_key_patterns": [],
            "extra_value_patterns": [],
            "fully_redacted_tasks": [],
        },
    }
    assert agent.session != "hello"
    assert len(agent.session) > 20


async def test_events_are_stored_then_acknowledged(
    client: Client, minted: Any, agent: FakeAgent, backend: Backend, seeded: Seeded
) -> None:
    """A batch is acked once its events are committed; a resend stores nothing twice."""
    events = [
        event("g-1", "sent", 0, name="app.add", queue="celery"),
        event("g-1", "started", 1, worker="celery@w1"),
        event("g-2", "sent", 2, name="app.mul"),
    ]
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, events))
        ack = agent.read(await ws.receive())
        assert ack.type == "ack"
        assert ack.body == {"batches": [1]}
        async with backend.uow_factory() as uow:
            task = await uow.tasks.get(seeded.project_id, "g-1")
            assert task is not None
            assert task.state == "started"
            assert task.name == "app.add"
            assert await uow.tasks.get(seeded.project_id, "g-2") is not None
        # As after a reconnect: the same events again, under a new batch number.
        await ws.send(agent.events(2, events))
        assert agent.read(await ws.receive()).body == {"batches": [2]}
    async with backend.uow_factory() as uow:
        timeline = await uow.events.timeline(seeded.project_id, "g-1")
        assert [e.id for e in timeline] == ["g-1:sent:0", "g-1:started:0"]


async def test_an_invalid_event_is_skipped_and_the_batch_still_acked(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    backend: Backend,
    seeded: Seeded,
    caplog: pytest.LogCaptureFixture,
    test_app: Any,
) -> None:
    """One bad event in a signed batch is logged, counted and skipped; the rest is stored."""
    good = event("ok-1", "sent", 0, name="app.add")
    bad: list[Any] = [{"id": "x", "kind": "exploded"}, {}, 7]
    nul = {
        "id": "n",
        "task_id": "n",
        "kind": "sent",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "name": "a\x00b",
    }
    with caplog.at_level(logging.WARNING, logger="z4j.gateway"):
        async with connected(client, minted.token, agent) as ws:
            await ws.send(agent.events(5, [*bad, good, nul]))
            assert agent.read(await ws.receive()).body == {"batches": [5]}
    assert "skipped an invalid event from agent workers (batch 5)" in caplog.text
    assert runtime_of(test_app).metrics.value("z4j_ingest_events_invalid_total") == 4
    async with backend.uow_factory() as uow:
        assert await uow.tasks.get(seeded.project_id, "ok-1") is not None
        assert await uow.tasks.get(seeded.project_id, "n") is None


async def test_heartbeat_saves_the_worker_and_bye_marks_it_offline(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    backend: Backend,
    seeded: Seeded,
    clock: FakeClock,
) -> None:
    """A heartbeat creates (then updates, keeping first_seen_at) the worker; bye ends it."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.heartbeat("celery@new", active=2))
        first_seen = clock.now()
        # Frames are handled in order: once this batch is acked, the heartbeat is stored.
        await ws.send(agent.events(1, []))
        agent.read(await ws.receive())
        clock.advance(2)
        await ws.send(agent.heartbeat("celery@new", active=3))
        await ws.send(agent.bye("celery@new"))
        assert await closed_with(ws) == 1000
    async with backend.uow_factory() as uow:
        worker = await uow.workers.get(seeded.project_id, "celery@new")
    assert worker is not None
    assert worker.status is WorkerStatus.OFFLINE
    assert worker.active == 3
    assert worker.first_seen_at == first_seen
    assert worker.last_heartbeat_at == clock.now()
    assert worker.queues == ("celery",)
    assert worker.pool == "prefork"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_on_sqlite_heartbeat_and_bye_wait_for_another_writer(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    backend: Backend,
    seeded: Seeded,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On SQLite, a heartbeat or a bye arriving while another connection writes is still stored."""
    assert backend.database is not None
    path = backend.database.engine.url.database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def send_while_another_connection_writes(ws: Any, frame: str) -> None:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE projects SET name = name")
        await ws.send(frame)
        await asyncio.sleep(0.3)  # the brain handles the frame meanwhile
        other.execute("COMMIT")

    try:
        with caplog.at_level(logging.WARNING, logger="z4j.gateway"):
            async with connected(client, minted.token, agent) as ws:
                await send_while_another_connection_writes(ws, agent.heartbeat("celery@busy"))
                await ws.send(agent.events(1, []))
                agent.read(await ws.receive())  # frames are handled in order
                await send_while_another_connection_writes(ws, agent.bye("celery@busy"))
                assert await closed_with(ws) == 1000
    finally:
        other.close()
    async with backend.uow_factory() as uow:
        worker = await uow.workers.get(seeded.project_id, "celery@busy")
    assert worker is not None
    assert worker.status is WorkerStatus.OFFLINE
    assert caplog.text == ""


async def test_bye_waits_for_pending_acks(client: Client, minted: Any, agent: FakeAgent) -> None:
    """Events sent right before bye are acknowledged before the normal close."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [event("b-1", "sent", 0)]))
        await ws.send(agent.bye(None))
        assert agent.read(await ws.receive()).body == {"batches": [1]}
        assert await closed_with(ws) == 1000


async def test_unknown_or_revoked_token_is_refused_with_401(
    client: Client,
    minted: Any,
    backend: Backend,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    test_app: Any,
) -> None:
    """No token, a wrong one or a revoked one: HTTP 401 before the upgrade, logged and counted."""
    await services.revoke_agent(
        change(backend.uow_factory, clock), SECRET, project_slug="default", name="workers"
    )
    with caplog.at_level(logging.WARNING, logger="z4j.gateway"):
        for headers in ({}, bearer("z4ja_nope"), bearer(minted.token), {"Authorization": "x"}):
            with pytest.raises(WebsocketResponseError) as info:
                async with client.websocket("/ws/agent", headers=headers) as ws:
                    await ws.receive()
            assert info.value.response.status_code == 401
    assert caplog.text.count("unauthorized agent connection from") == 4
    assert "unknown or revoked token" in caplog.text
    metrics = runtime_of(test_app).metrics
    assert metrics.value("z4j_gateway_connections_refused_total", reason="unauthorized") == 4


def _too_large(agent: FakeAgent) -> str:
    return agent.frame("events", {"batch": 1, "events": [], "pad": "x" * MAX_FRAME_BYTES})


# (name, how to build the bad frame after the hello, expected close code, reason label)
REJECTIONS = [
    ("malformed", lambda a: "{not json", 4400, "malformed"),
    ("not_an_object", lambda a: "[1, 2]", 4400, "malformed"),
    ("missing_fields", lambda a: json.dumps({"v": 1, "type": "events"}), 4400, "malformed"),
    (
        "bad_signature",
        lambda a: a.events(1, []).replace('"sig":"', '"sig":"00'),
        4403,
        "bad_signature",
    ),
    ("replay", lambda a: a.events(1, [], seq=0), 4409, "replay"),
    ("wrong_session", lambda a: a.events(1, [], session="other"), 4409, "wrong_session"),
    ("skew", lambda a: a.events(1, [], ts=a.clock.now() - timedelta(minutes=6)), 4408, "skew"),
    ("too_large", _too_large, 4413, "too_large"),
    (
        "unsupported_version",
        lambda a: json.dumps({**json.loads(a.events(1, [])), "v": 2}),
        4426,
        "unsupported_version",
    ),
    ("unexpected_type", lambda a: a.frame("welcome", {}), 4400, "malformed"),
    ("bad_batch", lambda a: a.frame("events", {"batch": "one", "events": []}), 4400, "malformed"),
    ("bad_heartbeat", lambda a: a.frame("heartbeat", {"worker": {"pool": 3}}), 4400, "malformed"),
]


@pytest.mark.parametrize(
    ("build", "code", "reason"),
    [pytest.param(b, c, r, id=n) for n, b, c, r in REJECTIONS],
)
async def test_a_bad_frame_closes_with_its_code_and_a_log_line(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    caplog: pytest.LogCaptureFixture,
    test_app: Any,
    build: Any,
    code: int,
    reason: str,
) -> None:
    """Every rejection closes with its own code, a WARNING naming agent and reason, a count."""
    with caplog.at_level(logging.WARNING, logger="z4j.gateway"):
        async with connected(client, minted.token, agent) as ws:
            await ws.send(build(agent))
            assert await closed_with(ws) == code
    assert f"rejected frame from agent workers: {reason}: " in caplog.text
    metrics = runtime_of(test_app).metrics
    assert metrics.value("z4j_gateway_frames_rejected_total", reason=reason) == 1


@pytest.mark.parametrize(
    ("overrides", "code", "reason"),
    [
        pytest.param({"project": "elsewhere"}, 4403, "wrong_project", id="wrong_project"),
        pytest.param({"protocol": 2}, 4426, "unsupported_version", id="unsupported_version"),
    ],
)
async def test_a_bad_hello_is_rejected(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    code: int,
    reason: str,
) -> None:
    """A hello for another project or protocol version is refused with a clear reason."""
    with caplog.at_level(logging.WARNING, logger="z4j.gateway"):
        async with client.websocket("/ws/agent", headers=bearer(minted.token)) as ws:
            await ws.send(agent.hello(**overrides))
            assert await closed_with(ws) == code
    assert f"rejected frame from agent workers: {reason}: " in caplog.text
    if reason == "wrong_project":
        assert "agent belongs to project default, not elsewhere" in caplog.text


async def test_a_hello_signed_with_another_secret_is_rejected(
    client: Client, minted: Any, clock: FakeClock
) -> None:
    """The right token with the wrong HMAC secret gets no welcome."""
    impostor = FakeAgent("not-the-secret", clock)
    async with client.websocket("/ws/agent", headers=bearer(minted.token)) as ws:
        await ws.send(impostor.hello())
        assert await closed_with(ws) == 4403


async def test_rejection_keeps_what_was_committed(
    client: Client, minted: Any, agent: FakeAgent, backend: Backend, seeded: Seeded
) -> None:
    """A bad frame after a good batch closes the socket; the good batch stays stored."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [event("keep", "sent", 0)]))
        assert agent.read(await ws.receive()).body == {"batches": [1]}
        await ws.send(agent.events(2, [event("lost", "sent", 0)], seq=1))
        assert await closed_with(ws) == 4409
    async with backend.uow_factory() as uow:
        assert await uow.tasks.get(seeded.project_id, "keep") is not None
        assert await uow.tasks.get(seeded.project_id, "lost") is None


async def test_dashboard_socket_receives_task_and_worker_updates(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, test_app: Any
) -> None:
    """A dashboard on the project sees a task the agent reported, and its worker."""
    url = "/ws/dashboard?project=default"
    live = runtime_of(test_app).live
    async with client.websocket(url, headers=bearer(seeded.key)) as dashboard:
        for _ in range(500):
            if live.subscribers(seeded.project_id):
                break
            await asyncio.sleep(0.01)
        async with connected(client, minted.token, agent) as ws:
            await ws.send(agent.heartbeat("celery@live"))
            message = json.loads(await dashboard.receive())
            assert message["type"] == "workers"
            assert [w["hostname"] for w in message["items"]] == ["celery@live"]
            await ws.send(agent.events(1, [event("live-1", "sent", 0, name="app.live")]))
            agent.read(await ws.receive())
            message = json.loads(await dashboard.receive())
    assert message["type"] == "tasks"
    assert [(t["id"], t["name"], t["state"]) for t in message["items"]] == [
        ("live-1", "app.live", "pending")
    ]


async def test_dashboard_socket_needs_a_key_and_a_project(client: Client, seeded: Seeded) -> None:
    """No or a bad key is 401; an unknown project is 404; ?key= works for browsers."""
    for url, headers, status in (
        ("/ws/dashboard", {}, 401),
        ("/ws/dashboard", bearer("z4j_wrong"), 401),
        ("/ws/dashboard?project=nope", bearer(seeded.key), 404),
        ("/ws/dashboard?project=nope&key=" + seeded.key, {}, 404),
    ):
        with pytest.raises(WebsocketResponseError) as info:
            async with client.websocket(url, headers=headers) as ws:
                await ws.receive()
        assert info.value.response.status_code == status, url


async def test_metrics_endpoint_exposes_gateway_counters(
    client: Client, minted: Any, agent: FakeAgent
) -> None:
    """GET /metrics answers Prometheus text with the accepted-frame and ingest counters."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [event("m-1", "sent", 0)]))
        agent.read(await ws.receive())
    response = await client.get("/metrics")
    text = (await response.get_data()).decode()
    assert response.status_code == 200
    assert 'z4j_gateway_frames_accepted_total{type="events"} 1.0' in text
    assert "z4j_ingest_events_total 1.0" in text
    assert "z4j_ingest_queue_depth" in text
    assert "z4j_ingest_flush_seconds_count" in text


def test_app_factory_wires_the_gateway(settings: Settings) -> None:
    """The runtime has a writer, a hub and metrics before serving starts."""
    runtime: Runtime = create_app(settings).extensions[EXTENSION_KEY]
    assert runtime.ingest.depth == 0
    assert runtime.live.subscribers(1) == 0


async def test_a_revoked_agent_is_disconnected_at_its_next_heartbeat_check(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    backend: Backend,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Revoking a connected agent closes its socket (4401) within the re-check interval."""
    async with connected(client, minted.token, agent) as ws:
        await services.revoke_agent(
            change(backend.uow_factory, clock), SECRET, project_slug="default", name="workers"
        )
        await ws.send(agent.heartbeat())  # within the interval: still served
        await ws.send(agent.events(1, []))
        agent.read(await ws.receive())
        clock.advance(31)
        with caplog.at_level(logging.WARNING, logger="z4j.gateway"):
            await ws.send(agent.heartbeat())
            assert await closed_with(ws) == 4401
    assert "rejected frame from agent workers: unauthorized: the agent was revoked" in caplog.text


async def test_heartbeats_record_when_the_agent_was_last_seen(
    client: Client, minted: Any, agent: FakeAgent, backend: Backend, clock: FakeClock
) -> None:
    """Connecting, then a heartbeat after the re-check interval, update last_seen_at."""
    async with connected(client, minted.token, agent) as ws:
        clock.advance(31)
        await ws.send(agent.heartbeat())
        await ws.send(agent.events(1, []))
        agent.read(await ws.receive())
    async with backend.uow_factory() as uow:
        stored = await uow.agents.get_by_name(minted.agent.project_id, "workers")
    assert stored is not None
    assert stored.last_seen_at == clock.now()


async def test_shutdown_closes_agent_sockets_with_1012(
    client: Client, minted: Any, agent: FakeAgent, test_app: Any
) -> None:
    """When the server starts stopping, agents are told to reconnect later, after their acks."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [event("s-1", "sent", 0)]))
        assert agent.read(await ws.receive()).body == {"batches": [1]}
        runtime_of(test_app).shutting_down.set()
        assert await closed_with(ws) == 1012
