"""``z4j check``, ``status``, ``migrate``, ``api-key create`` and help as an operator runs them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from tests.conftest import fresh_postgres_database
from z4j_domain.audit import audit_key
from z4j_domain.testing import FakeClock, PlainPasswordHasher
from z4j_domain.users import hash_secret
from z4j_infra.database import Database
from z4j_infra.settings import load_settings
from z4j_web import services
from z4j_web.runtime import uow_factory_of

from .conftest import RunZ4j

UNREACHABLE_POSTGRES = "postgresql://nobody@127.0.0.1:1/z4j"


def assert_one_line_error(stderr: str, fragment: str) -> None:
    """The command failed with a short message containing ``fragment`` and no traceback."""
    assert "Traceback" not in stderr
    assert fragment in stderr
    assert stderr.strip().splitlines()[-1].startswith("z4j: error: ")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated_database(request: pytest.FixtureRequest, z4j_env: dict[str, str]) -> Iterator[None]:
    """No tables yet: the default SQLite database in a fresh home, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
        z4j_env["Z4J_DATABASE_URL"] = url
        yield


def test_check_fails_on_an_unmigrated_database_then_passes_after_migrate(
    unmigrated_database: None, run_z4j: RunZ4j
) -> None:
    """A fresh database fails the revision check with advice; after `z4j migrate` all is ok."""
    before = run_z4j("check")
    assert before.returncode == 1
    assert "FAIL  migrations:" in before.stdout
    assert "run `z4j migrate`" in before.stdout
    assert_one_line_error(before.stderr, "check(s) failed: migrations")

    migrated = run_z4j("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "migrated the database from empty to" in migrated.stdout
    again = run_z4j("migrate")
    assert again.returncode == 0
    assert "already at head" in again.stdout

    after = run_z4j("check")
    assert after.returncode == 0, after.stdout + after.stderr
    lines = after.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    config",
        "ok    database",
        "ok    migrations",
    ]


def test_check_fails_clearly_on_an_unreachable_database(run_z4j: RunZ4j) -> None:
    """An unreachable PostgreSQL is a FAIL line naming it and exit 1, not a traceback."""
    result = run_z4j("check", Z4J_DATABASE_URL=UNREACHABLE_POSTGRES)
    assert result.returncode == 1
    assert "FAIL  database: cannot reach the database at" in result.stdout
    assert "127.0.0.1:1" in result.stdout
    assert_one_line_error(result.stderr, "check(s) failed: database")


MYSQL = {"Z4J_DATABASE_URL": "mysql://root@localhost/z4j"}
BAD_PORT = {"Z4J_PORT": "http"}
HALF_ADMIN = {"Z4J_BOOTSTRAP_ADMIN_EMAIL": "a@example.com"}


@pytest.mark.parametrize(
    ("command", "env", "fragment"),
    [
        (["check"], MYSQL, "unsupported database URL scheme 'mysql'"),
        (["status"], BAD_PORT, "Z4J_PORT must be a port number"),
        (["migrate"], MYSQL, "unsupported database URL scheme 'mysql'"),
        (["serve"], HALF_ADMIN, "Z4J_BOOTSTRAP_ADMIN_PASSWORD is not set"),
        (["api-key", "create", "--email", "a@example.com"], BAD_PORT, "Z4J_PORT"),
    ],
)
def test_config_errors_exit_2_with_one_line(
    run_z4j: RunZ4j, command: list[str], env: dict[str, str], fragment: str
) -> None:
    """Every command reports bad configuration in one line and exits 2."""
    result = run_z4j(*command, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line_error(result.stderr, fragment)


def test_status_needs_a_migrated_database(run_z4j: RunZ4j) -> None:
    """On an unmigrated database status says to migrate instead of failing obscurely."""
    result = run_z4j("status", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "run `z4j migrate`")


def test_status_json_counts(run_z4j: RunZ4j, z4j_env: dict[str, str], migrated_sqlite: str) -> None:
    """`status --json` prints one object with the version and the counts."""
    asyncio.run(_create_admin(z4j_env))
    result = run_z4j("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status.pop("version")
    assert status == {
        "database": "sqlite",
        "users": 1,
        "projects": 1,
        "agents": 0,
        "tasks": 0,
        "workers": 0,
    }
    text = run_z4j("status")
    assert text.returncode == 0
    assert text.stdout.startswith("z4j ")
    assert "users     1" in text.stdout


async def _create_admin(z4j_env: dict[str, str], email: str = "admin@example.com") -> None:
    settings = load_settings(z4j_env)
    database = await Database.connect(settings.database_url)
    try:
        await services.bootstrap(
            uow_factory_of(database),
            FakeClock(),
            PlainPasswordHasher(),
            audit_key=audit_key(settings.secret),
            admin_email=email,
            admin_password="long enough password",
        )
    finally:
        await database.dispose()


async def _stored_key_hashes(url: str) -> list[str]:
    database = await Database.connect(url)
    try:
        async with database.engine.connect() as connection:
            result = await connection.exec_driver_sql("SELECT key_hash FROM api_keys")
            return [row[0] for row in result]
    finally:
        await database.dispose()


def test_api_key_create(run_z4j: RunZ4j, z4j_env: dict[str, str], migrated_sqlite: str) -> None:
    """The key is printed once (alone on stdout, or as JSON) and only its hash is stored."""
    asyncio.run(_create_admin(z4j_env))

    as_json = run_z4j("api-key", "create", "--email", "Admin@Example.com", "--name", "ci", "--json")
    assert as_json.returncode == 0, as_json.stderr
    created = json.loads(as_json.stdout)
    assert created["key"].startswith("z4j_")
    assert created["name"] == "ci"
    assert created["email"] == "admin@example.com"

    plain = run_z4j("api-key", "create", "--email", "admin@example.com")
    assert plain.returncode == 0, plain.stderr
    key = plain.stdout.strip()
    assert key.startswith("z4j_")
    assert "\n" not in key
    assert "not shown again" in plain.stderr

    hashes = asyncio.run(_stored_key_hashes(migrated_sqlite))
    assert sorted(hashes) == sorted([hash_secret(created["key"]), hash_secret(key)])


def test_api_key_create_for_an_unknown_email(run_z4j: RunZ4j, migrated_sqlite: str) -> None:
    """An unknown email is a clear error and exit 1."""
    result = run_z4j("api-key", "create", "--email", "nobody@example.com", "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "no user with email 'nobody@example.com'")


def test_version_and_help(run_z4j: RunZ4j) -> None:
    """`z4j --version` and `z4j --help` work without any configuration or database."""
    version = run_z4j("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("z4j ")
    helped = run_z4j("--help")
    assert helped.returncode == 0
    for command in ("serve", "check", "status", "migrate", "api-key", "agent"):
        assert command in helped.stdout
