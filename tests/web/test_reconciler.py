"""The reconciler's shell and the brain's redaction, through the agent gateway and the API.

A fake agent (signed frames over Quart's test client) plays the worker side;
the fake clock plays time. Each pass is run by hand with
``reconciler.reconcile_project`` (the periodic loop runs on real time).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.reconciliation import MarkLost, MarkOutcome, Probe
from z4j_domain.redaction import REDACTED
from z4j_domain.testing import FakeClock

from .support import T0, FakeAgent, Seeded, bearer, closed_with, connected, event, runtime_of

pytestmark = pytest.mark.anyio

TASK_URL = "/api/v1/projects/default/tasks/"
WORKERS_URL = "/api/v1/projects/default/workers"
REDACTION_URL = "/api/v1/projects/default/settings/redaction"


async def sync(ws: Any, agent: FakeAgent, batch: int) -> None:
    """Send an empty batch and wait for its ack: every frame before it was handled."""
    await ws.send(agent.events(batch, []))
    while True:
        frame = agent.read(await ws.receive())
        if frame.type == "ack" and batch in frame.body["batches"]:
            return


async def next_command(ws: Any, agent: FakeAgent) -> dict[str, Any]:
    """The next ``command`` frame's body (acks skipped)."""
    while True:
        frame = agent.read(await asyncio.wait_for(ws.receive(), 5))
        if frame.type == "command":
            return dict(frame.body)


async def task_of(client: Client, seeded: Seeded, task_id: str) -> dict[str, Any]:
    response = await client.get(TASK_URL + task_id, headers=bearer(seeded.key))
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, body
    return body


async def task_when(client: Client, seeded: Seeded, task_id: str, state: str) -> dict[str, Any]:
    """The task once the ingest writer has stored it in ``state`` (or as it is after 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        task = await task_of(client, seeded, task_id)
        if task["state"] == state or asyncio.get_running_loop().time() > deadline:
            return task
        await asyncio.sleep(0.02)


async def test_a_dead_workers_task_is_probed_then_marked_lost_with_its_worker(
    client: Client, minted: Any, agent: FakeAgent, test_app: Any, seeded: Seeded, clock: FakeClock
) -> None:
    """t-03 runs on w2@host, silent since T0+10min: offline, probed, nobody holds it: lost."""
    runtime = runtime_of(test_app)
    reconciler = runtime.reconciler
    clock.current = T0 + timedelta(minutes=10, seconds=9)  # just past the 8 s window
    async with connected(client, minted.token, agent) as ws:
        decisions = await reconciler.reconcile_project(seeded.project_id)
        assert [type(d) for d in decisions] == [Probe]
        assert decisions[0].task_id == "t-03"
        command = await next_command(ws, agent)
        assert command["command"] == "probe"
        assert command["task_ids"] == ["t-03"]
        await ws.send(
            agent.answer(
                command["id"], [{"task_id": "t-03", "active_on": None, "backend_state": None}]
            )
        )
        await sync(ws, agent, 1)
        clock.advance(1)
        (lost,) = await reconciler.reconcile_project(seeded.project_id)
        assert isinstance(lost, MarkLost)
        task = await task_when(client, seeded, "t-03", "lost")
    assert task["state"] == "lost"
    assert task["worker"] == "w2@host"
    assert "w2@host" in task["exception"]
    assert runtime.metrics.value("z4j_reconciler_verdicts_total", kind="lost") == 1
    # Reconciling again decides nothing new: the task is terminal now.
    assert await reconciler.reconcile_project(seeded.project_id) == ()


async def test_silent_workers_are_shown_offline(
    client: Client, test_app: Any, seeded: Seeded, clock: FakeClock, caplog: Any
) -> None:
    """Past the heartbeat window a worker lists as offline, with when it was last seen."""
    clock.current = T0 + timedelta(minutes=10, seconds=5)
    response = await client.get(WORKERS_URL, headers=bearer(seeded.key))
    statuses = {w["hostname"]: w["status"] for w in (await response.get_json())["items"]}
    assert statuses == {"w1@host": "online", "w2@host": "online"}
    clock.advance(4)  # 9 s after the last heartbeat: past the 8 s window
    response = await client.get(WORKERS_URL, headers=bearer(seeded.key))
    items = (await response.get_json())["items"]
    assert {w["status"] for w in items} == {"offline"}
    assert {w["last_seen_at"] for w in items} == {"2026-01-01T12:10:00.000000+00:00"}
    reconciler = runtime_of(test_app).reconciler
    with caplog.at_level(logging.WARNING, logger="z4j.reconciler"):
        await reconciler.reconcile_project(seeded.project_id)
        await reconciler.reconcile_project(seeded.project_id)
    assert caplog.text.count("worker w2@host went offline: no heartbeat since") == 1


async def test_a_task_its_live_worker_reports_is_never_touched(
    client: Client, minted: Any, agent: FakeAgent, test_app: Any, seeded: Seeded, clock: FakeClock
) -> None:
    """A task running for days on a worker that keeps listing it gets no decision."""
    reconciler = runtime_of(test_app).reconciler
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [event("long", "started", 0, worker="celery@w1")]))
        await sync(ws, agent, 2)
        for day in range(1, 4):
            clock.current = T0 + timedelta(days=day)
            await ws.send(agent.heartbeat(tasks=["long"]))
            await sync(ws, agent, 2 + day)
            decisions = await reconciler.reconcile_project(seeded.project_id)
            assert "long" not in {d.task_id for d in decisions}
        # The worker stops listing it (its outcome event was lost): probed after the grace.
        clock.advance(40)
        await ws.send(agent.heartbeat(tasks=[]))
        await sync(ws, agent, 10)
        decisions = await reconciler.reconcile_project(seeded.project_id)
        assert {d.task_id: type(d) for d in decisions}["long"] is Probe


async def test_the_result_backends_outcome_settles_a_task(
    client: Client, minted: Any, agent: FakeAgent, test_app: Any, seeded: Seeded, clock: FakeClock
) -> None:
    """A probe answer with a terminal backend state becomes that outcome."""
    reconciler = runtime_of(test_app).reconciler
    clock.current = T0 + timedelta(minutes=10, seconds=9)
    async with connected(client, minted.token, agent) as ws:
        await reconciler.reconcile_project(seeded.project_id)
        command = await next_command(ws, agent)
        await ws.send(
            agent.answer(
                command["id"],
                [{"task_id": "t-03", "active_on": None, "backend_state": "SUCCESS"}],
            )
        )
        await sync(ws, agent, 1)
        (outcome,) = await reconciler.reconcile_project(seeded.project_id)
        assert isinstance(outcome, MarkOutcome)
        task = await task_when(client, seeded, "t-03", "succeeded")
    assert task["state"] == "succeeded"


async def test_a_goodbye_forgets_the_workers_report(
    client: Client, minted: Any, agent: FakeAgent, test_app: Any, seeded: Seeded, clock: FakeClock
) -> None:
    """After bye the worker is offline at once, and its tasks are probed on the next pass."""
    reconciler = runtime_of(test_app).reconciler
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [event("job", "started", 0, worker="celery@w1")]))
        await ws.send(agent.heartbeat(tasks=["job"]))
        await sync(ws, agent, 2)
        assert await reconciler.reconcile_project(seeded.project_id) == ()
        await ws.send(agent.bye())
        assert await closed_with(ws) == 1000
    decisions = await reconciler.reconcile_project(seeded.project_id)
    assert {d.task_id: type(d) for d in decisions}["job"] is Probe


@pytest.mark.parametrize(
    "body",
    [
        {"worker": {"hostname": "celery@w1"}, "tasks": "t-1"},
        {"worker": {"hostname": "celery@w1"}, "tasks": [1]},
        {"worker": {"hostname": "celery@w1"}, "tasks": [""]},
        {"worker": {"hostname": "celery@w1"}, "tasks": ["x"] * 10_001},
    ],
)
async def test_a_malformed_activity_report_closes_the_connection(
    client: Client, minted: Any, agent: FakeAgent, body: dict[str, Any]
) -> None:
    """A heartbeat whose task list is not a list of ids is refused (4400)."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.frame("heartbeat", body))
        assert await closed_with(ws) == 4400


@pytest.mark.parametrize(
    "answers",
    ["none", [1], [{"active_on": "w"}], [{"task_id": "t", "backend_state": 5}]],
)
async def test_malformed_probe_answers_close_the_connection(
    client: Client, minted: Any, agent: FakeAgent, answers: Any
) -> None:
    """A probe result that is not a list of answers is refused (4400)."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.answer("c1", answers))
        assert await closed_with(ws) == 4400


# -- redaction ------------------------------------------------------------------------------

SECRETS = ("hunter2", "sk-live-key-123", "eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl", "pw123")


def secret_event(task_id: str) -> Any:
    return event(
        task_id,
        "received",
        0,
        name="shop.charge",
        worker="celery@w1",
        args=["postgres://app:pw123@db/shop"],
        kwargs={
            "password": "hunter2",
            "api_key": "sk-live-key-123",
            "headers": {"Authorization": "Bearer eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl"},
            "amount": 12,
        },
    )


async def test_the_brain_redacts_what_an_agent_did_not(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, backend: Any
) -> None:
    """An agent that sends secrets (old, or buggy) still gets none of them stored."""
    async with connected(client, minted.token, agent) as ws:
        await ws.send(agent.events(1, [secret_event("s-1")]))
        assert agent.read(await ws.receive()).body == {"batches": [1]}
    task = await task_of(client, seeded, "s-1")
    shown = repr(task)
    for secret in SECRETS:
        assert secret not in shown
    assert task["kwargs"]["password"] == REDACTED
    assert task["kwargs"]["amount"] == 12
    assert task["redacted"] is True
    assert task["arguments_redacted"] is True
    assert task["truncated"] is False
    assert task["events"][0]["redacted"] is True


async def test_project_settings_are_validated_stored_applied_and_pushed(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, caplog: Any
) -> None:
    """PUT takes effect at once on ingest and reaches connected agents as a configure command."""
    headers = bearer(seeded.key)
    response = await client.get(REDACTION_URL, headers=headers)
    assert await response.get_json() == {
        "extra_key_patterns": [],
        "extra_value_patterns": [],
        "fully_redacted_tasks": [],
    }
    async with connected(client, minted.token, agent) as ws:
        wanted = {"extra_key_patterns": ["pin"], "fully_redacted_tasks": ["bank.transfer"]}
        with caplog.at_level(logging.INFO, logger="z4j.api"):
            response = await client.put(REDACTION_URL, json=wanted, headers=headers)
        saved = await response.get_json()
        assert response.status_code == 200, saved
        assert "sent to 1 connected agents" in caplog.text
        command = await next_command(ws, agent)
        assert command == {"command": "configure", "redaction": saved}
        await ws.send(
            agent.events(
                1,
                [
                    event("p-1", "received", 0, name="shop.pay", kwargs={"pin": "4242", "n": 1}),
                    event("b-1", "received", 0, name="bank.transfer", args=["DE00 1234"]),
                ],
            )
        )
        await sync(ws, agent, 2)
    assert (await task_of(client, seeded, "p-1"))["kwargs"] == {"pin": REDACTED, "n": 1}
    assert (await task_of(client, seeded, "b-1"))["args"] == [REDACTED]
    response = await client.get(REDACTION_URL, headers=headers)
    assert (await response.get_json())["extra_key_patterns"] == ["pin"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"extra_value_patterns": ["("]}, "not a valid regular expression"),
        ({"extra_key_patterns": "pin"}, "must be a list of strings"),
        ({"colour": ["red"]}, "unknown redaction setting"),
        ([], "must be a JSON object"),
    ],
)
async def test_invalid_settings_are_refused_and_change_nothing(
    client: Client, seeded: Seeded, body: Any, message: str
) -> None:
    """400 with the reason; what was stored before stays."""
    headers = bearer(seeded.key)
    await client.put(REDACTION_URL, json={"extra_key_patterns": ["pin"]}, headers=headers)
    response = await client.put(REDACTION_URL, json=body, headers=headers)
    assert response.status_code == 400
    assert message in (await response.get_json())["error"]["message"]
    response = await client.get(REDACTION_URL, headers=headers)
    assert (await response.get_json())["extra_key_patterns"] == ["pin"]


async def test_redaction_settings_need_a_key_and_a_known_project(
    client: Client, seeded: Seeded
) -> None:
    """401 without a key, 404 for an unknown project."""
    assert (await client.get(REDACTION_URL)).status_code == 401
    response = await client.get(
        "/api/v1/projects/nope/settings/redaction", headers=bearer(seeded.key)
    )
    assert response.status_code == 404
