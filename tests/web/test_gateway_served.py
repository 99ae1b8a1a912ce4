"""The gateway over a real socket: hypercorn serving the app, the ``websockets`` client talking."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.serving import free_port
from z4j_domain.testing import FakeClock, PlainPasswordHasher
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.settings import Settings
from z4j_web import services
from z4j_web.app import create_app
from z4j_web.runtime import uow_factory_of

from .support import FakeAgent, bearer, change, event, seed

pytestmark = pytest.mark.anyio


@pytest.fixture
async def served(database: Database, settings: Settings) -> AsyncIterator[str]:
    """The app served by hypercorn on a free local port; yields its ws:// base URL."""
    port = free_port()
    app = create_app(
        settings,
        database=database,
        clock=SystemClock(),
        password_hasher=PlainPasswordHasher(),
    )
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 2
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait))
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        break
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)


async def test_a_real_agent_connection_end_to_end(
    served: str, database: Database, settings: Settings
) -> None:
    """Hello/welcome, a batch stored and acked, a heartbeat, then a clean bye, over TCP."""
    uow_factory = uow_factory_of(database)
    seeded = await seed(uow_factory, FakeClock())
    minted = await services.mint_agent(
        change(uow_factory, SystemClock()), settings.secret, project_slug="default", name="workers"
    )
    agent = FakeAgent(minted.hmac_secret, SystemClock())
    async with connect(f"{served}/ws/agent", additional_headers=bearer(minted.token)) as ws:
        await ws.send(agent.hello())
        agent.welcome(await ws.recv())
        await ws.send(agent.events(1, [event("real-1", "sent", 0, name="app.real")]))
        ack = agent.read(await ws.recv())
        assert ack.body == {"batches": [1]}
        async with uow_factory() as uow:
            task = await uow.tasks.get(seeded.project_id, "real-1")
            assert task is not None
            assert task.name == "app.real"
        await ws.send(agent.heartbeat("celery@real"))
        await ws.send(agent.bye("celery@real"))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1000
    async with uow_factory() as uow:
        worker = await uow.workers.get(seeded.project_id, "celery@real")
    assert worker is not None
    assert worker.status == "offline"


async def test_a_real_rejection_carries_code_and_reason(
    served: str, database: Database, settings: Settings
) -> None:
    """A replayed frame closes the TCP connection with 4409 and a reason naming the check."""
    uow_factory = uow_factory_of(database)
    await seed(uow_factory, FakeClock())
    minted = await services.mint_agent(
        change(uow_factory, SystemClock()), settings.secret, project_slug="default", name="workers"
    )
    agent = FakeAgent(minted.hmac_secret, SystemClock())
    async with connect(f"{served}/ws/agent", additional_headers=bearer(minted.token)) as ws:
        await ws.send(agent.hello())
        agent.welcome(await ws.recv())
        await ws.send(agent.events(1, [], seq=0))
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4409
    assert info.value.rcvd.reason.startswith("replay: sequence 0")


async def test_a_real_unknown_token_gets_http_401(served: str, database: Database) -> None:
    """The upgrade itself is refused with 401 for a token nobody minted."""
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{served}/ws/agent", additional_headers=bearer("z4ja_unknown")):
            pass
    assert info.value.response.status_code == 401
