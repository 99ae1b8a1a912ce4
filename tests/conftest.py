"""Fixtures shared by every test package: the event loop backend and the databases.

The names below are stable; other test packages (``tests/web`` among them)
rely on them.

``anyio_backend`` (session)
    ``"asyncio"``. A test package may override it (any scope): the
    session-wide database set-up below runs on an event loop of its own.
``postgres_admin_url`` (session)
    ``postgresql://`` URL of the server's maintenance database (from
    ``Z4J_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``).
    When the server is unreachable, every test that needs it is skipped with a
    message naming PostgreSQL, or fails if ``Z4J_REQUIRE_SERVICES=1`` (CI).
``postgres_url`` (session)
    URL of a database ``z4j_test_<hex>`` created and migrated once per session
    and dropped at its end. Tests that use it directly share its contents;
    prefer ``postgres_database``.
``postgres_database`` (function)
    A :class:`~z4j_infra.Database` on ``postgres_url`` whose tables were all
    emptied before the test; disposed after it.
``fresh_postgres_database(admin_url)`` (a context manager, not a fixture)
    URL of a new, empty database ``z4j_test_<hex>``, dropped on exit; for
    fixtures of other scopes (take ``postgres_admin_url`` first for the skip rule).
``empty_postgres_url`` (function)
    URL of a fresh, *unmigrated* database, dropped after the test.
``sqlite_url`` (function)
    URL of a fresh, migrated SQLite file in the test's ``tmp_path`` (a copy of
    a template migrated once per session).
``sqlite_database`` (function)
    A :class:`~z4j_infra.Database` on ``sqlite_url``; disposed after the test.
``empty_sqlite_url`` (function)
    URL of a SQLite file that does not exist yet (so: unmigrated).
``uow_factory`` (function, parametrized ``memory`` / ``sqlite`` / ``postgresql``)
    A :class:`~z4j_domain.ports.UnitOfWorkFactory` on an empty store: the
    in-memory fake, SQLite, PostgreSQL. Contract tests take this one.

Tests that need PostgreSQL are marked ``postgres`` (``-m "not postgres"`` to
leave them out).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import sqlalchemy as sa
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from z4j_domain.audit import GENESIS_MAC
from z4j_domain.ports import UnitOfWorkFactory
from z4j_domain.testing import InMemoryStore
from z4j_infra.database import Database
from z4j_infra.migrations import migrate
from z4j_infra.schema import audit_head, metadata

# No deadlines: these machines are noisy, and a slow example is not a wrong one.
# "dev" is the local default; CI (.ci/run) runs "ci"; "thorough" is for a long soak.
hypothesis_settings.register_profile("fast", max_examples=20, deadline=None)
hypothesis_settings.register_profile("dev", max_examples=60, deadline=None)
hypothesis_settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
hypothesis_settings.register_profile("thorough", max_examples=2000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

T = TypeVar("T")


def _require_services() -> bool:
    return os.environ.get("Z4J_REQUIRE_SERVICES") == "1"


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # Session-wide set-up runs on an event loop of its own, in a thread of its
    # own: it then works whatever scope a test package gives anyio_backend, and
    # never disturbs the loop the tests run on. Only function-scoped fixtures
    # hand out loop-bound objects (engines, connections).
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _sql_url(admin_url: str, database: str) -> str:
    url = make_url(admin_url).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run async tests and fixtures on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The maintenance database's URL, once PostgreSQL is known to answer."""
    configured = os.environ.get("Z4J_TEST_POSTGRES_URL", _DEFAULT_POSTGRES_URL)
    # asyncpg takes plain postgresql:// URLs only.
    url = _sql_url(configured, make_url(configured).database or "postgres")
    try:
        _run(_check_postgres(url))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        message = (
            f"PostgreSQL is not reachable at {url} ({error}); start it (see README, "
            "Services) or point Z4J_TEST_POSTGRES_URL at one"
        )
        if _require_services():
            pytest.fail(message + " [Z4J_REQUIRE_SERVICES=1]")
        pytest.skip(message)
    return url


async def _check_postgres(url: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    await connection.close()


async def _create_database(admin_url: str) -> str:
    name = f"z4j_test_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def _drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    database = await Database.connect(url)
    try:
        await migrate(database)
    finally:
        await database.dispose()


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """URL of a new, empty database ``z4j_test_<hex>``, dropped on exit (even if in use)."""
    name = _run(_create_database(admin_url))
    try:
        yield _sql_url(admin_url, name)
    finally:
        _run(_drop_database(admin_url, name))


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A migrated database for the whole session, dropped at its end."""
    with fresh_postgres_database(postgres_admin_url) as url:
        _run(_migrate(url))
        yield url


@pytest.fixture
async def postgres_database(postgres_url: str) -> AsyncIterator[Database]:
    """The session's PostgreSQL database, emptied, as a fresh :class:`Database`."""
    database = await Database.connect(postgres_url)
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        # Back to what migrations leave: the audit chain's genesis head row.
        await connection.execute(
            sa.insert(audit_head).values(id=1, seq=0, mac=GENESIS_MAC, signature="")
        )
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def empty_postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh database without any table, dropped after the test."""
    name = await _create_database(postgres_admin_url)
    try:
        yield _sql_url(postgres_admin_url, name)
    finally:
        await _drop_database(postgres_admin_url, name)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "z4j.db"
    _run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database of the test's own."""
    path = tmp_path / "z4j.db"
    shutil.copyfile(_sqlite_template, path)
    # Closing the last connection normally folds the WAL into the file; copy it
    # anyway in case a platform kept it.
    wal = _sqlite_template.with_name(_sqlite_template.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, path.with_name(path.name + "-wal"))
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def sqlite_database(sqlite_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on the test's migrated SQLite file."""
    database = await Database.connect(sqlite_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """A SQLite database that has no tables yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def uow_factory(request: pytest.FixtureRequest) -> Iterator[UnitOfWorkFactory]:
    """A unit-of-work factory on an empty store, for every backend."""
    backend: Any = request.param
    if backend == "memory":
        yield InMemoryStore()
    elif backend == "sqlite":
        yield request.getfixturevalue("sqlite_database").unit_of_work
    else:
        yield request.getfixturevalue("postgres_database").unit_of_work


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Database:
    """A migrated, emptied database of each SQL dialect."""
    name = "sqlite_database" if request.param == "sqlite" else "postgres_database"
    db: Database = request.getfixturevalue(name)
    return db


@pytest.fixture
def isolating_uow_factory(database: Database) -> UnitOfWorkFactory:
    """The SQL backends: the ones that isolate interleaved transactions.

    The in-memory fake serializes by running one coroutine at a time and makes
    no isolation promise for interleaved transactions, so it is not one of them.
    """
    factory: UnitOfWorkFactory = database.unit_of_work
    return factory
