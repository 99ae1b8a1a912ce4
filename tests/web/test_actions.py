"""Actions through the API and the command dispatcher, with a fake agent on the real gateway.

The agent side is :class:`~tests.web.support.FakeAgent` (signed frames over
Quart's test client): it reads the command parts the brain sends and answers
with the reports a real agent would. The Celery side of these commands runs
against real workers in ``tests/agents`` and ``tests/e2e``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Final

import attrs
import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.audit import AuditQuery
from z4j_domain.commands import retry_task_id
from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock
from z4j_web import auditing

from .support import (
    ADMIN_EMAIL,
    AUDIT_KEY,
    T0,
    Backend,
    FakeAgent,
    Seeded,
    bearer,
    closed_with,
    event,
    runtime_of,
)
from .test_access import add_user

pytestmark = pytest.mark.anyio

P: Final = "/api/v1/projects/default"
CAPABLE: Final = {"capabilities": ["retry", "cancel", "purge"]}


@asynccontextmanager
async def agent_socket(
    client: Client, token: str, agent: FakeAgent, **hello: Any
) -> AsyncIterator[Any]:
    """An agent connection past hello/welcome that can run commands (unless told otherwise)."""
    async with client.websocket("/ws/agent", headers=bearer(token)) as ws:
        await ws.send(agent.hello(**(CAPABLE | hello)))
        agent.welcome(await ws.receive())
        yield ws


async def next_part(ws: Any, agent: FakeAgent) -> dict[str, Any]:
    """The next ``command`` frame's body (acks skipped)."""
    while True:
        frame = agent.read(await asyncio.wait_for(ws.receive(), 5))
        if frame.type == "command":
            return dict(frame.body)


def report(agent: FakeAgent, part: dict[str, Any], status: str, **fields: Any) -> str:
    """A ``command_result`` frame answering ``part``."""
    body = {
        "id": part["id"],
        "command": part["command"],
        "part": part["part"],
        "status": status,
        "outcomes": [],
        **fields,
    }
    return agent.frame("command_result", body)


async def answer(ws: Any, agent: FakeAgent, part: dict[str, Any], outcome: str) -> None:
    """Acknowledge ``part``, then report ``outcome`` for each of its items."""
    await ws.send(report(agent, part, "acked"))
    outcomes = []
    for item in part["items"]:
        done = {"task_id": item["task_id"], "outcome": outcome}
        if outcome == "published":
            done["new_task_id"] = item["new_task_id"]
        outcomes.append(done)
    await ws.send(report(agent, part, "done", outcomes=outcomes))


async def post(client: Client, key: str, path: str, body: Any = None, **headers: str) -> Any:
    response = await client.post(P + path, headers=bearer(key) | headers, json=body)
    return response.status_code, await response.get_json(), response.headers


async def command_when(client: Client, key: str, command_id: str, *statuses: str) -> dict[str, Any]:
    """The command once it is in one of ``statuses`` (or as it is after 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        response = await client.get(f"{P}/commands/{command_id}", headers=bearer(key))
        command: dict[str, Any] = await response.get_json()
        assert response.status_code == 200, command
        if command["status"] in statuses or asyncio.get_running_loop().time() > deadline:
            return command
        await asyncio.sleep(0.02)


async def command_left_alone(
    client: Client, key: str, command_id: str, test_app: Any
) -> dict[str, Any]:
    """The command once the dispatcher has looked again and finished what it carries out: where
    a command nobody can take stays (what waiting for its status to change would show, without
    a wait that only ends on time)."""
    dispatcher = runtime_of(test_app).commands
    await dispatcher.look()
    await dispatcher.settle()
    response = await client.get(f"{P}/commands/{command_id}", headers=bearer(key))
    command: dict[str, Any] = await response.get_json()
    assert response.status_code == 200, command
    return command


async def audit_actions(backend: Backend) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(action, actor, target, details) of every audit entry, oldest first."""
    page = await auditing.search(backend.uow_factory, AuditQuery(limit=500))
    return [
        (e.record.action, e.record.actor, e.record.target, dict(e.record.details))
        for e in reversed(page.items)
    ]


async def test_a_retry_is_stored_audited_sent_and_finished_with_the_new_task_id(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, backend: Backend
) -> None:
    """Retry of the failed t-01: pending, then the agent gets its name, queue and arguments."""
    status, command, headers = await post(client, seeded.key, "/tasks/t-01/retry")
    assert status == 202, command
    assert command["status"] == "pending"
    assert command["kind"] == "retry"
    assert command["target"] == "task:t-01"
    assert headers["Location"] == f"{P}/commands/{command['id']}"
    new_task_id = retry_task_id(command["id"], "t-01")
    async with agent_socket(client, minted.token, agent) as ws:
        part = await next_part(ws, agent)
        assert (part["id"], part["command"], part["part"]) == (command["id"], "retry", 0)
        (item,) = part["items"]
        assert item == {
            "task_id": "t-01",
            "new_task_id": new_task_id,
            "name": "app.send_mail",
            "queue": "mail",
            "routing_key": None,
            "recover_arguments": False,
            "args": [1],
            "kwargs": {"n": 1},
        }
        assert (await command_when(client, seeded.key, command["id"], "delivered"))[
            "agent"
        ] == "workers"
        await ws.send(report(agent, part, "acked"))
        acked = await command_when(client, seeded.key, command["id"], "acked")
        assert acked["acked_at"] is not None
        await ws.send(
            report(
                agent,
                part,
                "done",
                outcomes=[{"task_id": "t-01", "outcome": "published", "new_task_id": new_task_id}],
            )
        )
        done = await command_when(client, seeded.key, command["id"], "succeeded")
    assert done["status"] == "succeeded"
    assert done["result"] == {"task_id": "t-01", "outcome": "published", "new_task_id": new_task_id}
    entries = [e for e in await audit_actions(backend) if e[0].startswith("task.retry")]
    assert [(a, actor, target) for a, actor, target, _ in entries] == [
        ("task.retry.requested", ADMIN_EMAIL, "task:t-01"),
        ("task.retry.succeeded", ADMIN_EMAIL, "task:t-01"),
    ]
    assert entries[0][3]["new_task_id"] == new_task_id
    assert entries[1][3]["result"]["new_task_id"] == new_task_id
    assert (await auditing.verify(backend.uow_factory, AUDIT_KEY)).ok


async def test_a_refused_retry_fails_with_the_agents_reason(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, backend: Backend
) -> None:
    """The agent could not recover redacted arguments: the command fails saying why, audited."""
    _, command, _ = await post(client, seeded.key, "/tasks/t-01/retry")
    reason = "the result backend holds no extended result for task t-01"
    async with agent_socket(client, minted.token, agent) as ws:
        part = await next_part(ws, agent)
        await ws.send(report(agent, part, "acked"))
        outcome = {"task_id": "t-01", "outcome": "refused", "reason": reason}
        await ws.send(report(agent, part, "done", outcomes=[outcome]))
        failed = await command_when(client, seeded.key, command["id"], "failed")
    assert failed["status"] == "failed"
    assert failed["error"] == reason
    actions = [a for a, *_ in await audit_actions(backend)]
    assert "task.retry.failed" in actions


async def test_a_command_waits_for_an_agent_and_runs_when_one_connects(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, test_app: Any
) -> None:
    """Offline: pending however often the dispatcher looks; delivered on connect."""
    _, command, _ = await post(client, seeded.key, "/tasks/t-03/cancel", {"terminate": True})
    dispatcher = runtime_of(test_app).commands
    for _ in range(3):
        await dispatcher.look()
    left = await command_left_alone(client, seeded.key, command["id"], test_app)
    assert left["status"] == "pending"
    async with agent_socket(client, minted.token, agent) as ws:
        part = await next_part(ws, agent)
        assert part["command"] == "cancel"
        assert part["items"] == [{"task_id": "t-03"}]
        assert part["options"] == {"terminate": True, "signal": "SIGTERM"}
        await answer(ws, agent, part, "terminated")
        done = await command_when(client, seeded.key, command["id"], "succeeded")
    assert done["result"] == {"task_id": "t-03", "outcome": "terminated"}


async def test_an_agent_that_cannot_run_commands_is_not_sent_any(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, test_app: Any
) -> None:
    """An agent whose hello lists no capabilities (a beat agent, an old agent) gets nothing."""
    _, command, _ = await post(client, seeded.key, "/tasks/t-01/retry")
    async with agent_socket(client, minted.token, agent, capabilities=[]) as ws:
        await runtime_of(test_app).commands.look()
        await ws.send(agent.events(1, []))
        frame = agent.read(await asyncio.wait_for(ws.receive(), 5))
        assert frame.type == "ack"
    left = await command_left_alone(client, seeded.key, command["id"], test_app)
    assert left["status"] == "pending"


async def test_an_agent_gone_before_acknowledging_leaves_the_command_pending_for_the_next(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, clock: FakeClock
) -> None:
    """Delivered, never acknowledged, connection closed: pending again; the next agent runs it."""
    _, command, _ = await post(client, seeded.key, "/tasks/t-01/retry")
    async with agent_socket(client, minted.token, agent) as ws:
        await next_part(ws, agent)
    pending = await command_when(client, seeded.key, command["id"], "pending")
    assert pending["status"] == "pending"
    assert pending["agent"] is None
    second = FakeAgent(agent.secret.decode(), clock)
    async with agent_socket(client, minted.token, second) as ws:
        part = await next_part(ws, second)
        assert part["id"] == command["id"]
        await answer(ws, second, part, "published")
        done = await command_when(client, seeded.key, command["id"], "succeeded")
    assert done["status"] == "succeeded"


async def test_a_part_is_sent_again_after_the_agent_acknowledged_it_and_reconnected(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, clock: FakeClock
) -> None:
    """Acknowledged, then the socket drops: the same part goes to the next connection."""
    _, command, _ = await post(client, seeded.key, "/tasks/t-01/retry")
    async with agent_socket(client, minted.token, agent) as ws:
        first = await next_part(ws, agent)
        await ws.send(report(agent, first, "acked"))
        await command_when(client, seeded.key, command["id"], "acked")
    again = FakeAgent(agent.secret.decode(), clock)
    async with agent_socket(client, minted.token, again) as ws:
        part = await next_part(ws, again)
        assert part == first
        await answer(ws, again, part, "published")
        done = await command_when(client, seeded.key, command["id"], "succeeded")
    assert done["status"] == "succeeded"


async def test_the_same_idempotency_key_returns_the_first_command(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """A repeat stores and audits nothing; the key used for another target is a conflict."""
    status, first, _ = await post(
        client, seeded.key, "/tasks/t-01/retry", **{"Idempotency-Key": "retry-t01"}
    )
    assert status == 202
    status, again, headers = await post(
        client, seeded.key, "/tasks/t-01/retry", {"idempotency_key": "retry-t01"}
    )
    assert status == 202
    assert again["id"] == first["id"]
    assert headers["Idempotent-Replayed"] == "true"
    status, body, _ = await post(
        client, seeded.key, "/tasks/t-03/retry", **{"Idempotency-Key": "retry-t01"}
    )
    assert status == 409, body
    assert "was used for another request" in body["error"]["message"]
    status, body, _ = await post(
        client,
        seeded.key,
        "/tasks/t-01/retry",
        {"idempotency_key": "a"},
        **{"Idempotency-Key": "b"},
    )
    assert status == 400
    response = await client.get(f"{P}/commands", headers=bearer(seeded.key))
    assert [c["id"] for c in (await response.get_json())["items"]] == [first["id"]]
    requested = [a for a, *_ in await audit_actions(backend) if a.endswith(".requested")]
    assert requested == ["task.retry.requested"]


async def test_a_viewer_cannot_act_and_nothing_is_stored(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """403 for every action of a viewer; no command exists afterwards."""
    viewer = await add_user(backend, clock, "viewer@example.com", Role.VIEWER)
    operator = await add_user(backend, clock, "operator@example.com", Role.OPERATOR)
    for path, body in [
        ("/tasks/t-01/retry", None),
        ("/tasks/t-03/cancel", None),
        ("/tasks/bulk-retry", {"filter": {"state": "failed"}}),
        ("/tasks/bulk-cancel", {"ids": ["t-03"]}),
        ("/queues/celery/purge", {"confirm_depth": 0}),
    ]:
        status, answered, _ = await post(client, viewer, path, body)
        assert status == 403, (path, answered)
    # Purging is for admins: an operator may retry but not purge.
    assert (await post(client, operator, "/queues/celery/purge", {"confirm_depth": 0}))[0] == 403
    response = await client.get(f"{P}/commands", headers=bearer(viewer))
    assert (await response.get_json())["items"] == []


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/tasks/nope/retry", None, 404, "no task 'nope'"),
        ("/tasks/nope/cancel", None, 404, "no task 'nope'"),
        ("/tasks/t-00/cancel", None, 409, "already ended (succeeded)"),
        ("/tasks/t-01/retry", {"countdown": -1}, 400, "countdown is a number of seconds"),
        ("/tasks/t-01/retry", {"countdown": 5, "eta": "2026-01-01T00:00:00Z"}, 400, "not both"),
        ("/tasks/t-01/retry", {"eta": "tomorrow"}, 400, "eta is not an ISO 8601"),
        ("/tasks/t-01/retry", {"priority": 1}, 400, "unknown field 'priority'"),
        ("/tasks/t-03/cancel", {"signal": "SIGSTOP"}, 400, "signal must be one of"),
        ("/tasks/t-03/cancel", {"terminate": "yes"}, 400, "'terminate' must be true or false"),
        ("/tasks/bulk-retry", {}, 400, 'either "filter"'),
        ("/tasks/bulk-retry", {"filter": {}, "ids": ["t-01"]}, 400, 'either "filter"'),
        ("/tasks/bulk-retry", {"filter": {"state": "done"}}, 400, "unknown state 'done'"),
        ("/tasks/bulk-retry", {"filter": {"name": "no.such"}}, 400, "selects no tasks"),
        ("/tasks/bulk-retry", {"ids": []}, 400, "nothing to do"),
        ("/tasks/bulk-retry", {"ids": [1]}, 400, "must be a list of task ids"),
        (
            "/tasks/bulk-retry",
            {"ids": [f"{n:0>200}" for n in range(1100)]},
            400,
            "send fewer ids per request, or select the tasks with a filter",
        ),
        ("/tasks/bulk-retry", {"ids": ["t-01"], "countdown": -5}, 400, "countdown"),
        ("/tasks/bulk-cancel", {"ids": ["t-03"], "signal": "HUP"}, 400, "signal must be"),
        ("/queues/celery/purge", {"confirm_depth": -1}, 400, "confirm_depth must be"),
        ("/queues/celery/purge", {"confirm_depth": "all"}, 400, "confirm_depth"),
    ],
)
async def test_bad_requests_are_refused_with_the_reason_and_store_nothing(
    client: Client, seeded: Seeded, path: str, body: Any, status: int, message: str
) -> None:
    """Unknown targets, finished tasks, bad overrides and filters: a clear 4xx, no command."""
    answered_status, answered, _ = await post(client, seeded.key, path, body)
    assert answered_status == status, answered
    assert message in answered["error"]["message"]
    response = await client.get(f"{P}/commands", headers=bearer(seeded.key))
    assert (await response.get_json())["items"] == []


async def test_a_command_past_its_deadline_times_out_audited(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock, test_app: Any
) -> None:
    """No agent within Z4J_COMMAND_TIMEOUT: timed_out, with an audit entry saying so."""
    _, command, _ = await post(client, seeded.key, "/tasks/t-01/retry")
    clock.advance(timedelta(minutes=10).total_seconds())
    await runtime_of(test_app).commands.look()
    expired = await command_when(client, seeded.key, command["id"], "timed_out")
    assert expired["status"] == "timed_out"
    assert "deadline" in expired["error"]
    assert ("task.retry.timed_out", ADMIN_EMAIL) in [
        (a, b) for a, b, *_ in await audit_actions(backend)
    ]


async def failed_tasks(
    backend: Backend, seeded: Seeded, count: int, *, prefix: str = "f", minute: float = 20
) -> list[str]:
    """Store ``count`` failed tasks of ``app.flaky`` (ids ``f-0000``, ...), first seen at
    ``minute`` past :data:`T0`."""
    ids = [f"{prefix}-{n:04d}" for n in range(count)]
    events = []
    for n, task_id in enumerate(ids):
        events.append(
            event(task_id, "sent", minute + n / 1000, name="app.flaky", queue="celery", args=[n])
        )
        events.append(event(task_id, "failed", minute + 0.5 + n / 1000, exception="boom"))
    async with backend.uow_factory() as uow:
        await uow.tasks.apply_events(seeded.project_id, events)
        await uow.commit()
    return ids


async def test_bulk_retry_by_filter_dry_runs_then_sends_every_task_once_in_parts(
    client: Client,
    minted: Any,
    agent: FakeAgent,
    seeded: Seeded,
    backend: Backend,
    clock: FakeClock,
) -> None:
    """450 failed app.flaky tasks: the dry run counts them; 3 parts carry each task once."""
    clock.current = T0 + timedelta(hours=1)
    ids = await failed_tasks(backend, seeded, 450)
    selection = {"filter": {"state": "failed", "name": "app.flaky"}}
    status, dry, _ = await post(
        client, seeded.key, "/tasks/bulk-retry", selection | {"dry_run": True}
    )
    assert status == 200, dry
    assert (dry["count"], dry["capped"], dry["cap"]) == (450, False, 10_000)
    assert len(dry["sample"]) == 20
    assert {s["state"] for s in dry["sample"]} == {"failed"}
    response = await client.get(f"{P}/commands", headers=bearer(seeded.key))
    assert (await response.get_json())["items"] == []  # a dry run stores nothing
    status, command, _ = await post(client, seeded.key, "/tasks/bulk-retry", selection)
    assert status == 202, command
    assert command["params"]["total"] == 450
    # Tasks that fail from now on are not part of it: the selection is bounded by then.
    await failed_tasks(backend, seeded, 30, prefix="late", minute=90)
    sent: list[str] = []
    async with agent_socket(client, minted.token, agent) as ws:
        for number in range(3):
            part = await next_part(ws, agent)
            assert part["part"] == number
            assert len(part["items"]) <= 200
            assert {i["name"] for i in part["items"]} == {"app.flaky"}
            assert all(
                i["new_task_id"] == retry_task_id(command["id"], i["task_id"])
                for i in part["items"]
            )
            sent.extend(i["task_id"] for i in part["items"])
            await answer(ws, agent, part, "published")
        done = await command_when(client, seeded.key, command["id"], "succeeded")
    assert sorted(sent) == ids
    assert done["result"] == {
        "total": 450,
        "done": 450,
        "outcomes": {"published": 450},
        "problems": [],
    }
    assert ("tasks.bulk_retry.succeeded", ADMIN_EMAIL) in [
        (a, b) for a, b, *_ in await audit_actions(backend)
    ]


async def test_bulk_requests_over_the_cap_are_refused_and_dry_runs_say_capped(
    client: Client, seeded: Seeded, backend: Backend, test_app: Any, clock: FakeClock
) -> None:
    """Z4J_BULK_CAP bounds what one request may select."""
    clock.current = T0 + timedelta(hours=1)
    runtime = runtime_of(test_app)
    runtime.settings = attrs.evolve(runtime.settings, bulk_cap=5)
    await failed_tasks(backend, seeded, 8)
    selection = {"filter": {"state": "failed"}}
    status, dry, _ = await post(
        client, seeded.key, "/tasks/bulk-retry", selection | {"dry_run": True}
    )
    assert (status, dry["count"], dry["capped"], dry["cap"]) == (200, 5, True, 5)
    status, body, _ = await post(client, seeded.key, "/tasks/bulk-retry", selection)
    assert status == 400
    assert "more than 5 tasks" in body["error"]["message"]
    status, body, _ = await post(
        client, seeded.key, "/tasks/bulk-cancel", {"ids": [f"x{n}" for n in range(6)]}
    )
    assert status == 400
    assert "more than the cap of 5" in body["error"]["message"]


async def test_bulk_cancel_by_ids_skips_ended_and_unknown_tasks_with_reasons(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded
) -> None:
    """Only the running t-03 is sent; the finished and the unknown are refused by the brain."""
    status, dry, _ = await post(
        client, seeded.key, "/tasks/bulk-cancel", {"ids": ["nope", "t-03", "t-00"], "dry_run": True}
    )
    assert status == 200, dry
    assert dry["count"] == 3
    assert [t["id"] for t in dry["sample"]] == ["t-03", "t-00"]  # in the order sent, known only
    status, command, _ = await post(
        client, seeded.key, "/tasks/bulk-cancel", {"ids": ["t-00", "t-03", "nope", "t-03"]}
    )
    assert status == 202, command
    assert command["params"]["total"] == 3
    async with agent_socket(client, minted.token, agent) as ws:
        part = await next_part(ws, agent)
        assert part["items"] == [{"task_id": "t-03"}]
        assert part["options"] == {"terminate": False, "signal": "SIGTERM"}
        await answer(ws, agent, part, "revoked")
        done = await command_when(client, seeded.key, command["id"], "succeeded")
    result = done["result"]
    assert (result["total"], result["done"]) == (3, 3)
    assert result["outcomes"] == {"refused": 2, "revoked": 1}
    reasons = {p["task_id"]: p["reason"] for p in result["problems"]}
    assert "already ended (succeeded)" in reasons["t-00"]
    assert "no task with this id" in reasons["nope"]


async def test_a_purge_without_the_right_depth_fails_saying_the_depth(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, clock: FakeClock
) -> None:
    """The agent measures the queue and refuses; confirmed with that depth, it purges."""
    _, first, _ = await post(client, seeded.key, "/queues/celery/purge")
    clock.advance(1)  # pending commands go out oldest first
    _, second, _ = await post(client, seeded.key, "/queues/celery/purge", {"confirm_depth": 7})
    async with agent_socket(client, minted.token, agent) as ws:
        for command, outcome in ((first, "failed"), (second, "done")):
            part = await next_part(ws, agent)
            assert part["id"] == command["id"]
            assert part["command"] == "purge"
            assert part["items"] == []
            assert part["options"]["queue"] == "celery"
            await ws.send(report(agent, part, "acked"))
            if outcome == "failed":
                await ws.send(
                    report(
                        agent,
                        part,
                        "failed",
                        error="confirmation needed: queue 'celery' holds 7 messages now",
                        result={"queue": "celery", "depth": 7},
                    )
                )
            else:
                assert part["options"]["confirm_depth"] == 7
                result = {"queue": "celery", "depth": 7, "purged": 7}
                await ws.send(report(agent, part, "done", result=result))
        failed = await command_when(client, seeded.key, first["id"], "failed")
        purged = await command_when(client, seeded.key, second["id"], "succeeded")
    assert failed["result"] == {"queue": "celery", "depth": 7}
    assert "holds 7 messages" in failed["error"]
    assert purged["result"] == {"queue": "celery", "depth": 7, "purged": 7}


async def test_a_malformed_command_report_closes_the_connection(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded
) -> None:
    """A report of a known action with a bad shape is a protocol violation (4400)."""
    async with agent_socket(client, minted.token, agent) as ws:
        await ws.send(agent.frame("command_result", {"id": "x", "command": "retry", "part": -1}))
        assert await closed_with(ws) == 4400


async def test_a_report_for_a_part_not_out_to_the_agent_is_ignored(
    client: Client, minted: Any, agent: FakeAgent, seeded: Seeded, caplog: Any, test_app: Any
) -> None:
    """A stray or forged report about another command changes nothing."""
    caplog.set_level(logging.INFO, logger="z4j.commands")
    _, command, _ = await post(client, seeded.key, "/tasks/t-01/retry")
    async with agent_socket(client, minted.token, agent, capabilities=[]) as ws:
        stray = {"id": command["id"], "command": "retry", "part": 0}
        await ws.send(
            report(agent, stray, "done", outcomes=[{"task_id": "t-01", "outcome": "published"}])
        )
        await ws.send(agent.events(1, []))
        assert agent.read(await asyncio.wait_for(ws.receive(), 5)).type == "ack"
    left = await command_left_alone(client, seeded.key, command["id"], test_app)
    assert left["status"] == "pending"
    assert "which is not out to it; ignored" in caplog.text
