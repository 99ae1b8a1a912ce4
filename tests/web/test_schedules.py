"""Schedules through the API and the gateway, with a fake beat agent on the real gateway.

The beat side is :class:`~tests.web.support.FakeAgent` speaking the beat
agent's frames (``schedules``, ``schedule_fires``, heartbeats without a
worker) and answering ``schedule`` command parts as the real agent does. The
real agent against real schedulers is tested in ``tests/beat``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.protocol import HELLO_SESSION
from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock
from z4j_infra.settings import Settings
from z4j_web import auditing, services

from .support import (
    AUDIT_KEY,
    T0,
    Backend,
    FakeAgent,
    Seeded,
    bearer,
    change,
    closed_with,
)
from .test_access import add_user
from .test_actions import audit_actions, command_when, next_part, report

pytestmark = pytest.mark.anyio

P: Final = "/api/v1/projects/default"
BEAT: Final = {"kind": "celerybeat", "capabilities": ["schedule"], "agent": "beat"}


def entry(name: str = "heartbeat", **fields: Any) -> dict[str, Any]:
    """An entry's JSON: every 5 seconds by default."""
    return {
        "name": name,
        "task": "app.ping",
        "schedule": {"kind": "interval", "every": 5, "period": "seconds"},
        "args": [1, "x"],
        "kwargs": {"n": 2},
        "options": {"queue": "beat"},
        **fields,
    }


def full(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as the domain writes it back (every field, defaults filled in)."""
    from z4j_domain.schedules import entry_from_dict, entry_to_dict

    return entry_to_dict(entry_from_dict(data))


def schedules_body(*entries: dict[str, Any], **scheduler: Any) -> dict[str, Any]:
    """A ``schedules`` frame's body: a file scheduler holding ``entries``."""
    return {
        "scheduler": {
            "kind": "file",
            "class": "celery.beat:PersistentScheduler",
            "timezone": "UTC",
            "writable": True,
            "note": "changes made in z4j survive a restart",
            **scheduler,
        },
        "entries": list(entries),
        "refused": [],
        "known_tasks": ["app.ping", "app.report"],
    }


@pytest.fixture
async def beat(
    seeded: Seeded, backend: Backend, clock: FakeClock, settings: Settings
) -> tuple[str, FakeAgent]:
    """A minted agent "beat" and its frame builder."""
    minted = await services.mint_agent(
        change(backend.uow_factory, clock), settings.secret, project_slug="default", name="beat"
    )
    return minted.token, FakeAgent(minted.hmac_secret, clock)


@asynccontextmanager
async def beat_socket(
    client: Client, beat: tuple[str, FakeAgent], *entries: dict[str, Any], **scheduler: Any
) -> AsyncIterator[Any]:
    """The beat agent connected, its scheduler reported (holding ``entries``)."""
    token, agent = beat
    agent.session, agent.seq = HELLO_SESSION, 0  # a new connection starts over
    async with client.websocket("/ws/agent", headers=bearer(token)) as ws:
        await ws.send(agent.hello(**BEAT))
        agent.welcome(await ws.receive())
        await ws.send(agent.frame("schedules", schedules_body(*entries, **scheduler)))
        yield ws


async def listed(client: Client, key: str, *, count: int | None = None) -> dict[str, Any]:
    """``GET /schedules``, once it lists ``count`` entries (or after 5 s)."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        response = await client.get(f"{P}/schedules", headers=bearer(key))
        body: dict[str, Any] = await response.get_json()
        assert response.status_code == 200, body
        if count is None or len(body["items"]) == count:
            return body
        if asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.02)


async def send(client: Client, key: str, method: str, path: str, body: Any = None) -> Any:
    response = await client.open(P + path, method=method, headers=bearer(key), json=body)
    return response.status_code, await response.get_json()


async def carry_out(
    ws: Any, agent: FakeAgent, result: dict[str, Any] | None, error: str | None = None
) -> dict[str, Any]:
    """Take the next schedule part, acknowledge it and report ``result`` (or fail)."""
    part = await next_part(ws, agent)
    assert part["command"] == "schedule"
    await ws.send(report(agent, part, "acked"))
    if error is not None:
        await ws.send(report(agent, part, "failed", error=error))
    else:
        await ws.send(report(agent, part, "done", result=result))
    return part


async def test_a_beat_agents_report_is_listed_and_a_new_report_replaces_it(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], backend: Backend
) -> None:
    """Entries, refusals and the scheduler's note are listed; the next report is the truth."""
    _, agent = beat
    async with beat_socket(client, beat, entry("a"), entry("b")) as ws:
        body = await listed(client, seeded.key, count=2)
        (scheduler,) = body["schedulers"]
        assert scheduler["name"] == "beat"
        assert scheduler["kind"] == "file"
        assert scheduler["connected"] is True
        assert scheduler["note"] == "changes made in z4j survive a restart"
        assert [item["name"] for item in body["items"]] == ["a", "b"]
        assert body["items"][0]["scheduler"] == "beat"
        assert body["items"][0]["last_fire"] is None
        # A beat agent's heartbeat names no worker: no worker appears for it.
        await ws.send(agent.frame("heartbeat", {"worker": None, "tasks": None}))
        refused = {"name": "custom", "reason": "a schedule class z4j cannot show"}
        later = schedules_body(entry("b", enabled=False))
        later["refused"] = [refused]
        await ws.send(agent.frame("schedules", later))
        body = await listed(client, seeded.key, count=1)
    assert [(item["name"], item["enabled"]) for item in body["items"]] == [("b", False)]
    assert body["schedulers"][0]["refused"] == [refused]
    async with backend.uow_factory() as uow:
        workers = await uow.workers.list(seeded.project_id)
    assert "beat" not in {worker.hostname for worker in workers}


async def test_create_is_validated_sent_to_its_beat_stored_and_audited_with_before_and_after(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], backend: Backend
) -> None:
    """Only the beat agent of the scheduler gets the change; its outcome is stored at once."""
    _, agent = beat
    async with beat_socket(client, beat) as ws:
        await listed(client, seeded.key)
        # Invalid input: a 400 naming the field, and no command stored.
        bad = entry(schedule={"kind": "crontab", "minute": "61"})
        status, body = await send(client, seeded.key, "POST", "/schedules", {"entry": bad})
        assert status == 400, body
        assert "minute" in body["error"]["message"]
        status, body = await send(
            client, seeded.key, "POST", "/schedules", {"entry": entry(args="not a list")}
        )
        assert status == 400, body
        status, body = await send(
            client, seeded.key, "POST", "/schedules", {"entry": entry(task="app.pnig")}
        )
        assert status == 202, body
        assert body["kind"] == "schedule"
        assert body["target"] == "schedule:beat/heartbeat"
        (warning,) = body["params"]["warnings"]
        assert "app.pnig" in warning
        assert "app.ping" in warning
        written = full(entry(task="app.pnig"))
        part = await carry_out(ws, agent, {"entry": written, "task_id": None, "warnings": []})
        assert part["options"]["op"] == "create"
        assert part["options"]["entry"] == written
        done = await command_when(client, seeded.key, body["id"], "succeeded")
        assert done["result"]["entry"] == written
        listing = await listed(client, seeded.key, count=1)
    assert listing["items"][0]["task"] == "app.pnig"
    entries = [e for e in await audit_actions(backend) if e[0].startswith("schedule.")]
    assert [(action, target) for action, _, target, _ in entries] == [
        ("schedule.create.requested", "schedule:beat/heartbeat"),
        ("schedule.create.succeeded", "schedule:beat/heartbeat"),
    ]
    assert entries[0][3]["before"] is None
    assert entries[0][3]["requested"] == written
    assert entries[1][3]["before"] is None
    assert entries[1][3]["after"] == written
    assert (await auditing.verify(backend.uow_factory, AUDIT_KEY)).ok


async def test_update_renames_and_every_operation_reaches_the_scheduler(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], backend: Backend
) -> None:
    """Update (with a rename), disable, enable, trigger and delete, each audited."""
    _, agent = beat
    old = full(entry("old"))
    async with beat_socket(client, beat, old) as ws:
        await listed(client, seeded.key, count=1)
        renamed = full(entry("new", schedule={"kind": "crontab", "minute": "*/10"}))
        status, body = await send(
            client, seeded.key, "PUT", "/schedules/beat/old", {"entry": renamed}
        )
        assert status == 202, body
        part = await carry_out(ws, agent, {"entry": renamed, "task_id": None, "warnings": []})
        assert (part["options"]["op"], part["options"]["name"]) == ("update", "old")
        await command_when(client, seeded.key, body["id"], "succeeded")
        assert [i["name"] for i in (await listed(client, seeded.key))["items"]] == ["new"]

        disabled = {**renamed, "enabled": False}
        status, body = await send(client, seeded.key, "POST", "/schedules/beat/new/disable")
        assert status == 202, body
        part = await carry_out(ws, agent, {"entry": disabled, "task_id": None, "warnings": []})
        assert part["options"] == {"op": "disable", "name": "new", "entry": None}
        await command_when(client, seeded.key, body["id"], "succeeded")
        assert (await listed(client, seeded.key))["items"][0]["enabled"] is False

        status, body = await send(client, seeded.key, "POST", "/schedules/beat/new/enable")
        await carry_out(ws, agent, {"entry": renamed, "task_id": None, "warnings": []})
        await command_when(client, seeded.key, body["id"], "succeeded")

        status, body = await send(client, seeded.key, "POST", "/schedules/beat/new/trigger")
        part = await carry_out(ws, agent, {"entry": renamed, "task_id": "t-99", "warnings": []})
        assert part["options"]["op"] == "trigger"
        triggered = await command_when(client, seeded.key, body["id"], "succeeded")
        assert triggered["result"]["task_id"] == "t-99"

        status, body = await send(client, seeded.key, "DELETE", "/schedules/beat/new")
        await carry_out(ws, agent, {"entry": None, "task_id": None, "warnings": []})
        await command_when(client, seeded.key, body["id"], "succeeded")
        assert (await listed(client, seeded.key, count=0))["items"] == []
    actions = [
        (action, details.get("before", {}) and details["before"]["name"], details.get("after"))
        for action, _, _, details in await audit_actions(backend)
        if action.startswith("schedule.") and action.endswith(".succeeded")
    ]
    assert [action for action, _, _ in actions] == [
        "schedule.update.succeeded",
        "schedule.disable.succeeded",
        "schedule.enable.succeeded",
        "schedule.trigger.succeeded",
        "schedule.delete.succeeded",
    ]
    assert actions[0][1:] == ("old", renamed)
    assert actions[1][2] == disabled
    assert actions[4][2] is None


async def test_a_change_the_agent_refuses_fails_with_its_reason_and_changes_nothing(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    _, agent = beat
    kept = full(entry("kept"))
    async with beat_socket(client, beat, kept) as ws:
        await listed(client, seeded.key, count=1)
        _, body = await send(client, seeded.key, "POST", "/schedules/beat/kept/disable")
        await carry_out(ws, agent, None, error="the schedule file is not writable")
        failed = await command_when(client, seeded.key, body["id"], "failed")
    assert failed["error"] == "the schedule file is not writable"
    assert (await listed(client, seeded.key))["items"][0]["enabled"] is True


async def test_a_change_goes_only_to_its_own_scheduler_and_waits_for_it(
    client: Client,
    seeded: Seeded,
    beat: tuple[str, FakeAgent],
    backend: Backend,
    clock: FakeClock,
    settings: Settings,
) -> None:
    """Another beat agent connected (with its own scheduler) is never sent the change."""
    other = await services.mint_agent(
        change(backend.uow_factory, clock), settings.secret, project_slug="default", name="beat2"
    )
    other_agent = FakeAgent(other.hmac_secret, clock)
    async with beat_socket(client, (other.token, other_agent), entry("theirs")) as other_ws:
        async with beat_socket(client, beat, entry("mine")):
            await listed(client, seeded.key, count=2)
            # Two schedulers: a create must say which.
            status, body = await send(
                client, seeded.key, "POST", "/schedules", {"entry": entry("new")}
            )
            assert status == 400, body
            assert "beat, beat2" in body["error"]["message"]
        # "beat" is gone: its change waits (pending) and "beat2" gets nothing.
        status, body = await send(client, seeded.key, "POST", "/schedules/beat/mine/trigger")
        assert status == 202, body
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(next_part(other_ws, other_agent), 0.5)
        assert (await command_when(client, seeded.key, body["id"], "pending"))[
            "status"
        ] == "pending"
        _, agent = beat
        async with beat_socket(client, beat, entry("mine")) as ws:
            await carry_out(
                ws, agent, {"entry": full(entry("mine")), "task_id": "t", "warnings": []}
            )
            await command_when(client, seeded.key, body["id"], "succeeded")


async def test_wait_answers_with_the_finished_command(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    _, agent = beat
    async with beat_socket(client, beat, full(entry("a"))) as ws:
        await listed(client, seeded.key, count=1)
        request = asyncio.ensure_future(
            client.post(f"{P}/schedules/beat/a/trigger?wait=5", headers=bearer(seeded.key))
        )
        await carry_out(ws, agent, {"entry": full(entry("a")), "task_id": "t-7", "warnings": []})
        response = await request
        body = await response.get_json()
    assert response.status_code == 200, body
    assert (body["status"], body["result"]["task_id"]) == ("succeeded", "t-7")
    status, body = await send(client, seeded.key, "POST", "/schedules/beat/a/trigger?wait=99")
    assert status == 400, body


async def test_conflicts_read_only_schedulers_and_unknown_names_are_refused(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    status, body = await send(client, seeded.key, "POST", "/schedules", {"entry": entry("a")})
    assert status == 404, body
    assert "no beat has reported a scheduler" in body["error"]["message"]
    async with beat_socket(client, beat, full(entry("a")), full(entry("b"))):
        await listed(client, seeded.key, count=2)
        status, body = await send(client, seeded.key, "POST", "/schedules", {"entry": entry("a")})
        assert status == 409, body
        status, body = await send(
            client, seeded.key, "PUT", "/schedules/beat/a", {"entry": entry("b")}
        )
        assert status == 409, body
        status, body = await send(client, seeded.key, "POST", "/schedules/beat/zz/enable")
        assert status == 404, body
        status, body = await send(client, seeded.key, "POST", "/schedules/nobeat/a/enable")
        assert status == 404, body
    async with beat_socket(
        client, beat, full(entry("a")), kind="other", writable=False, **{"class": "x.y:Custom"}
    ):
        await asyncio.sleep(0.1)
        status, body = await send(client, seeded.key, "POST", "/schedules/beat/a/disable")
    assert status == 409, body
    assert "read-only" in body["error"]["message"]


async def test_fires_are_stored_once_and_shown_with_their_tasks_state(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], clock: FakeClock
) -> None:
    """The list shows each entry's last fire; the entry's page its fires and next fire times."""
    _, agent = beat
    crontab = full(entry("c", schedule={"kind": "crontab", "minute": "0", "hour": "*/6"}))
    fires = [
        {
            "id": f"f{n}",
            "schedule": "c",
            "fired_at": (T0 + timedelta(minutes=n)).isoformat(),
            "task_id": task_id,
            "manual": n == 2,
            "error": None,
        }
        for n, task_id in ((1, seeded.task_ids[-1]), (2, seeded.task_ids[-2]))
    ]
    async with beat_socket(client, beat, crontab) as ws:
        await ws.send(agent.frame("schedule_fires", {"fires": fires}))
        await ws.send(agent.frame("schedule_fires", {"fires": fires}))  # resent after reconnect
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            item = (await listed(client, seeded.key, count=1))["items"][0]
            if item["last_fire"] or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
    assert item["last_fire"]["id"] == "f2"
    assert item["last_fire"]["manual"] is True
    assert item["last_fire"]["task_state"] is not None
    response = await client.get(f"{P}/schedules/beat/c", headers=bearer(seeded.key))
    page = await response.get_json()
    assert response.status_code == 200, page
    assert [fire["id"] for fire in page["fires"]] == ["f2", "f1"]
    times = [datetime.fromisoformat(text) for text in page["next_fire_times"]]
    assert len(times) == 5
    assert clock.now() < times[0]
    assert times == sorted(set(times))
    # minute 0 of every sixth hour
    assert all((t.minute, t.hour % 6) == (0, 0) for t in times)
    assert times[1] - times[0] == timedelta(hours=6)
    assert page["scheduler_info"]["name"] == "beat"


async def test_preview_gives_five_fire_times_or_says_why_not(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    status, body = await send(
        client,
        seeded.key,
        "POST",
        "/schedules/preview",
        {"schedule": {"kind": "crontab", "minute": "30", "hour": "9", "day_of_week": "mon-fri"}},
    )
    assert status == 200, body
    times = [datetime.fromisoformat(text) for text in body["next_fire_times"]]
    assert len(times) == 5
    assert clock.now() < times[0]
    assert times == sorted(set(times))
    assert all((t.hour, t.minute, t.weekday() < 5) == (9, 30, True) for t in times)
    assert times[-1] - times[0] <= timedelta(days=7)
    status, body = await send(
        client,
        seeded.key,
        "POST",
        "/schedules/preview",
        {"schedule": {"kind": "crontab", "hour": "25"}},
    )
    assert status == 400, body
    assert "hour" in body["error"]["message"]
    status, body = await send(
        client,
        seeded.key,
        "POST",
        "/schedules/preview",
        {"schedule": {"kind": "solar", "event": "sunrise", "latitude": 48.8, "longitude": 2.3}},
    )
    assert status == 200, body
    assert body["next_fire_times"] is None
    assert "solar" in body["preview_unavailable"]


async def test_a_viewer_cannot_change_schedules_and_nothing_is_stored(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], backend: Backend, clock: FakeClock
) -> None:
    viewer = await add_user(backend, clock, "viewer@example.com", Role.VIEWER)
    async with beat_socket(client, beat, full(entry("a"))):
        await listed(client, seeded.key, count=1)
        status, body = await send(client, viewer, "POST", "/schedules/beat/a/disable")
        assert status == 403, body
        status, body = await send(client, viewer, "GET", "/schedules")
        assert status == 200, body
    async with backend.uow_factory() as uow:
        assert await uow.commands.list(seeded.project_id, status=None, limit=10, before=None) == []


async def test_a_malformed_schedules_frame_closes_the_connection_and_keeps_what_was_stored(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    _, agent = beat
    async with beat_socket(client, beat, full(entry("a"))) as ws:
        await listed(client, seeded.key, count=1)
        bad = schedules_body(entry("b", schedule={"kind": "crontab", "minute": "99"}))
        await ws.send(agent.frame("schedules", bad))
        assert await closed_with(ws) == 4400
    assert [i["name"] for i in (await listed(client, seeded.key))["items"]] == ["a"]
