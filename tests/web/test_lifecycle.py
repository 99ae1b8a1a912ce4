"""The composition root: the app connects its database when serving starts and probes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from z4j_domain.testing import FakeClock, PlainPasswordHasher
from z4j_infra.database import Database
from z4j_infra.settings import Settings
from z4j_web.app import create_app
from z4j_web.runtime import EXTENSION_KEY, Runtime, uow_factory_of

from .support import Backend, bearer, runtime_of, seed

pytestmark = pytest.mark.anyio


def make_settings(tmp_path: Path, url: str) -> Settings:
    """Settings for ``url`` in a throw-away home."""
    return Settings(home=tmp_path, database_url=url, secret="s", host="127.0.0.1", port=7700)


def test_creating_the_app_connects_nothing(tmp_path: Path) -> None:
    """Building the app opens no database: that waits for serving to start."""
    app = create_app(make_settings(tmp_path, "postgresql://nobody@127.0.0.1:1/none"))
    runtime: Runtime = app.extensions[EXTENSION_KEY]
    assert runtime.database is None
    assert runtime.uow_factory is None


async def test_the_app_owns_its_database_while_serving(tmp_path: Path, sqlite_url: str) -> None:
    """Startup connects settings.database_url; the API works on it; shutdown disposes of it."""
    clock = FakeClock()
    app = create_app(
        make_settings(tmp_path, sqlite_url), clock=clock, password_hasher=PlainPasswordHasher()
    )
    runtime: Runtime = app.extensions[EXTENSION_KEY]
    async with app.test_app() as running:
        assert runtime.owns_database
        assert runtime.database is not None
        client = running.test_client()
        ready = await client.get("/api/v1/ready")
        assert ready.status_code == 200
        seeded = await seed(runtime.uow, clock)
        tasks = await client.get("/api/v1/projects/default/tasks", headers=bearer(seeded.key))
        assert tasks.status_code == 200
        assert len((await tasks.get_json())["items"]) == 7
    assert runtime.database is None
    assert runtime.uow_factory is None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def unmigrated_url(request: pytest.FixtureRequest) -> str:
    """The URL of a database with no tables, SQLite and PostgreSQL."""
    url: str = request.getfixturevalue(f"empty_{request.param}_url")
    return url


async def test_ready_is_503_on_an_unmigrated_database(tmp_path: Path, unmigrated_url: str) -> None:
    """An unmigrated schema makes readiness 503 with a reason that says to migrate."""
    url = unmigrated_url
    app = create_app(make_settings(tmp_path, url), password_hasher=PlainPasswordHasher())
    async with app.test_app() as running:
        response = await running.test_client().get("/api/v1/ready")
        body = await response.get_json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["error"]["code"] == "not_ready"
    assert "z4j migrate" in body["error"]["message"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"]["ok"] is False


async def test_ready_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """An unreachable database makes readiness 503 (health stays 200: the process is alive)."""
    app = create_app(
        make_settings(tmp_path, "postgresql://nobody@127.0.0.1:1/none"),
        password_hasher=PlainPasswordHasher(),
    )
    async with app.test_app() as running:
        client = running.test_client()
        ready = await client.get("/api/v1/ready")
        health = await client.get("/api/v1/health")
    assert ready.status_code == 503
    body = await ready.get_json()
    assert body["checks"]["database"]["ok"] is False
    assert "cannot reach the database" in body["error"]["message"]
    assert health.status_code == 200


async def test_api_answers_503_when_the_database_goes_away(tmp_path: Path, sqlite_url: str) -> None:
    """A storage failure mid-request is 503 JSON, not a 500 or a hang."""
    app = create_app(make_settings(tmp_path, sqlite_url), password_hasher=PlainPasswordHasher())
    runtime: Runtime = app.extensions[EXTENSION_KEY]
    async with app.test_app() as running:
        seeded = await seed(runtime.uow, FakeClock())
        good = runtime.database
        assert good is not None
        # Swap in a database that is not there, as if the server had gone away.
        broken = await Database.connect("postgresql://nobody@127.0.0.1:1/none")
        runtime.database, runtime.uow_factory = broken, uow_factory_of(broken)
        try:
            response = await running.test_client().get(
                "/api/v1/projects/default/tasks", headers=bearer(seeded.key)
            )
        finally:
            runtime.database, runtime.uow_factory = good, uow_factory_of(good)
            await broken.dispose()
    assert response.status_code == 503
    assert (await response.get_json())["error"]["code"] == "storage_unavailable"


async def test_the_ingest_runs_two_writers_on_postgresql_and_one_otherwise(
    test_app: Any, backend: Backend
) -> None:
    """While serving, the ingest has as many writer tasks as its database allows."""
    expected = {"memory": 1, "sqlite": 1, "postgres": 2}[backend.name]
    assert runtime_of(test_app).ingest.writers == expected
