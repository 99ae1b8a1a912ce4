"""Fixtures for the web shell: an app over the in-memory store, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestAppProtocol, TestClientProtocol

from z4j_domain.testing import FakeClock, InMemoryStore, PlainPasswordHasher
from z4j_infra.database import Database
from z4j_infra.settings import Settings
from z4j_web import services
from z4j_web.app import create_app
from z4j_web.runtime import uow_factory_of

from .support import SECRET, Backend, FakeAgent, Seeded, change, seed


@pytest.fixture(
    params=[
        "memory",
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each API test runs on the in-memory fakes, SQLite and PostgreSQL."""
    if request.param == "memory":
        store = InMemoryStore()
        return Backend(name="memory", uow_factory=store, store=store)
    database: Database = request.getfixturevalue(f"{request.param}_database")
    return Backend(name=request.param, uow_factory=uow_factory_of(database), database=database)


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at a throw-away home; the database comes from ``backend``."""
    return Settings(
        home=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        secret=SECRET,
        host="127.0.0.1",
        port=7700,
    )


@pytest.fixture
def app(settings: Settings, backend: Backend, clock: FakeClock) -> Quart:
    """The app over ``backend``, with a fake clock and an instant password hasher."""
    return create_app(
        settings,
        uow_factory=backend.uow_factory,
        database=backend.database,
        clock=clock,
        password_hasher=PlainPasswordHasher(),
    )


@pytest.fixture
async def test_app(app: Quart) -> AsyncIterator[TestAppProtocol]:
    """The app with its serving lifecycle (startup and shutdown) running."""
    async with app.test_app() as running:
        yield running


@pytest.fixture
def client(test_app: TestAppProtocol) -> TestClientProtocol:
    """A test client of the running app."""
    return test_app.test_client()


@pytest.fixture
async def seeded(test_app: TestAppProtocol, backend: Backend, clock: FakeClock) -> Seeded:
    """After startup: an admin, an API key, the default project, its tasks and two workers."""
    return await seed(backend.uow_factory, clock)


@pytest.fixture
async def minted(
    seeded: Seeded, backend: Backend, clock: FakeClock, settings: Settings
) -> services.NewAgent:
    """An agent "workers" of the default project."""
    return await services.mint_agent(
        change(backend.uow_factory, clock), settings.secret, project_slug="default", name="workers"
    )


@pytest.fixture
def agent(minted: services.NewAgent, clock: FakeClock) -> FakeAgent:
    """The minted agent's frame builder."""
    return FakeAgent(minted.hmac_secret, clock)
