"""``z4j audit verify / prune``, ``changepassword`` and bound ``api-key create``, on real databases.

Each test runs the command against SQLite (in a throw-away ``Z4J_HOME``) and
against a fresh PostgreSQL database, and tampers with the stored audit log the
way someone with database access would: plain SQL. ``audit verify`` (text and
JSON), ``audit prune`` and ``changepassword`` run as real subprocesses where
their output is first checked; the other calls, which set up or look again, run
in-process (``agent create`` and ``api-key create`` run as subprocesses in
test_agents.py and test_commands.py).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests import serving
from z4j_domain.audit import audit_key
from z4j_domain.testing import FakeClock, PlainPasswordHasher
from z4j_infra.database import Database
from z4j_infra.passwords import Argon2PasswordHasher
from z4j_infra.settings import load_settings
from z4j_web import auditing, services
from z4j_web.auditing import Actor, Change, PruneResult
from z4j_web.runtime import uow_factory_of

from .conftest import RunZ4j, migrated_postgres
from .test_commands import assert_one_line_error

ADMIN = "admin@example.com"
ADMIN_PASSWORD = "long enough password"
#: The actor the command records: ``cli:<login name>`` of whoever runs it (this process's user).
CLI_ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, z4j_env: dict[str, str]) -> Iterator[str]:
    """The command's database as `z4j migrate` leaves it: SQLite in Z4J_HOME or a new PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("migrated_sqlite")
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    with migrated_postgres(admin_url, request.getfixturevalue("_postgres_template")) as url:
        z4j_env["Z4J_DATABASE_URL"] = url
        yield url


def _bootstrap(z4j_env: dict[str, str], at: datetime) -> None:
    """Create the first admin as `z4j serve` does, its audit entry dated ``at``."""

    async def create() -> None:
        settings = load_settings(z4j_env)
        database = await Database.connect(settings.database_url)
        try:
            await services.bootstrap(
                uow_factory_of(database),
                FakeClock(current=at),
                PlainPasswordHasher(),
                audit_key=audit_key(settings.secret),
                admin_email=ADMIN,
                admin_password=ADMIN_PASSWORD,
            )
        finally:
            await database.dispose()

    asyncio.run(create())


def _prune(z4j_env: dict[str, str], now: datetime) -> PruneResult:
    """Prune entries older than a day, as `z4j audit prune` does, with the clock at ``now``."""

    async def prune() -> PruneResult:
        settings = load_settings(z4j_env)
        database = await Database.connect(settings.database_url)
        try:
            change = Change(
                uow_factory=uow_factory_of(database),
                clock=FakeClock(now),
                audit_key=audit_key(settings.secret),
                actor=Actor(name="test:prune"),
            )
            return await auditing.prune(change, older_than=timedelta(days=1))
        finally:
            await database.dispose()

    return asyncio.run(prune())


def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    """Run one SQL statement on ``url`` in a transaction of its own; the rows it returns."""

    async def run() -> list[Any]:
        database = await Database.connect(url)
        try:
            async with database.engine.begin() as connection:
                result = await connection.execute(sa.text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            await database.dispose()

    return asyncio.run(run())


def _entries(url: str) -> list[Any]:
    return _sql(
        url,
        "SELECT seq, action, actor, target, project_id, details FROM audit_entries ORDER BY seq",
    )


def _z4j_with_input(
    env: dict[str, str], stdin: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Like ``run_z4j``, with ``stdin`` as the command's standard input."""
    return subprocess.run(
        [*serving.Z4J, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _audited_actions(z4j: RunZ4j, z4j_env: dict[str, str]) -> None:
    """Five audit entries: the admin (1), three agents (2-4) and an API key (5)."""
    _bootstrap(z4j_env, datetime.now(UTC))
    for name in ("workers", "beat", "flower"):
        created = z4j("agent", "create", "--name", name, "--json")
        assert created.returncode == 0, created.stderr
    key = z4j("api-key", "create", "--email", ADMIN, "--name", "ci")
    assert key.returncode == 0, key.stderr


def _assert_verifies(z4j: RunZ4j, expected: str) -> None:
    result = z4j("audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"OK: {expected}\n"


def _assert_fails_at(z4j: RunZ4j, seq: int, reason: str) -> None:
    result = z4j("audit", "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == f"FAIL: audit entry {seq}: {reason}\n"
    assert result.stderr == f"z4j: error: the audit log does not verify at entry {seq}\n"


CHANGED = "entry {} was changed after it was written (its MAC does not match)"


def test_verify_names_an_entry_changed_with_sql(
    database_url: str, run_z4j: RunZ4j, z4j_in_process: RunZ4j, z4j_env: dict[str, str]
) -> None:
    """A row whose details or actor were changed with SQL fails verify (exit 1) naming its seq."""
    _audited_actions(z4j_in_process, z4j_env)
    assert [row.action for row in _entries(database_url)] == [
        "user.created",
        "agent.minted",
        "agent.minted",
        "agent.minted",
        "api_key.created",
    ]
    assert {row.actor for row in _entries(database_url)[1:]} == {CLI_ACTOR}
    _assert_verifies(run_z4j, "5 audit entries verified (entries 1 to 5)")

    (original,) = _sql(database_url, "SELECT details FROM audit_entries WHERE seq = 3")
    _sql(database_url, """UPDATE audit_entries SET details = '{"note": "x"}' WHERE seq = 3""")
    _assert_fails_at(run_z4j, 3, CHANGED.format(3))
    as_json = run_z4j("audit", "verify", "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert (report["ok"], report["bad_entry"], report["verified"]) == (False, 3, 2)
    assert report["reason"] == CHANGED.format(3)
    assert as_json.stderr == "z4j: error: the audit log does not verify at entry 3\n"

    # Putting the row back as it was makes the log verify again: the check is exact.
    _sql(database_url, "UPDATE audit_entries SET details = :d WHERE seq = 3", d=original.details)
    _assert_verifies(z4j_in_process, "5 audit entries verified (entries 1 to 5)")

    _sql(database_url, "UPDATE audit_entries SET actor = 'someone-else' WHERE seq = 2")
    _assert_fails_at(z4j_in_process, 2, CHANGED.format(2))


def test_verify_names_entries_deleted_with_sql(
    database_url: str, z4j_in_process: RunZ4j, z4j_env: dict[str, str]
) -> None:
    """Deleting the last row (truncation) or a middle row with SQL fails verify naming the entry."""
    z4j = z4j_in_process
    _audited_actions(z4j, z4j_env)
    _sql(database_url, "DELETE FROM audit_entries WHERE seq = 5")
    _assert_fails_at(z4j, 5, "entry 5 is missing from the end (the log was truncated)")
    _sql(database_url, "DELETE FROM audit_entries WHERE seq = 3")
    _assert_fails_at(z4j, 3, "entry 3 missing: the next entry found is 4 (deleted or pruned)")
    as_json = z4j("audit", "verify", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["bad_entry"] == 3


def test_prune_leaves_a_checkpoint_the_log_verifies_from(
    database_url: str, run_z4j: RunZ4j, z4j_in_process: RunZ4j, z4j_env: dict[str, str]
) -> None:
    """`audit prune` deletes only old entries, audits itself, and verify still passes."""
    now = datetime.now(UTC)
    _bootstrap(z4j_env, now - timedelta(days=10))
    for name in ("workers", "beat"):
        assert z4j_in_process("agent", "create", "--name", name).returncode == 0

    nothing = run_z4j("audit", "prune", "--older-than-days", "30")
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout == "no audit entries older than 30 days\n"
    _assert_verifies(z4j_in_process, "3 audit entries verified (entries 1 to 3)")

    pruned = run_z4j("audit", "prune", "--older-than-days", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("pruned 1 audit entry (through entry 1);")
    rows = _entries(database_url)
    assert [row.seq for row in rows] == [2, 3, 4]
    assert (rows[-1].action, rows[-1].actor, rows[-1].target) == (
        "audit.pruned",
        CLI_ACTOR,
        "audit:1-1",
    )
    _assert_verifies(
        z4j_in_process,
        "3 audit entries verified (entries 2 to 4) after the checkpoint of entry 1",
    )

    # Two days on, everything but the newest entry is old.
    assert _prune(z4j_env, now + timedelta(days=2)) == PruneResult(pruned=2, through_seq=3)
    _assert_verifies(
        z4j_in_process,
        "2 audit entries verified (entries 4 to 5) after the checkpoint of entries 1 to 3",
    )
    as_json = json.loads(z4j_in_process("audit", "verify", "--json").stdout)
    assert (as_json["ok"], as_json["checkpoint"], as_json["first_seq"]) == (True, 3, 4)


def test_a_checkpoint_changed_or_deleted_with_sql_fails_verify(
    database_url: str, z4j_in_process: RunZ4j, z4j_env: dict[str, str]
) -> None:
    """A forged checkpoint, or deleting checkpoints to hide pruning, fails verify."""
    z4j = z4j_in_process
    _bootstrap(z4j_env, datetime.now(UTC))
    for name in ("workers", "beat"):
        assert z4j("agent", "create", "--name", name).returncode == 0
    later = datetime.now(UTC) + timedelta(days=2)
    assert _prune(z4j_env, later) == PruneResult(pruned=2, through_seq=2)
    assert _prune(z4j_env, later + timedelta(days=2)) == PruneResult(pruned=1, through_seq=3)
    checkpoints = _sql(database_url, "SELECT through_seq FROM audit_checkpoints ORDER BY 1")
    assert [row.through_seq for row in checkpoints] == [2, 3]
    verified = "2 audit entries verified (entries 4 to 5) after the checkpoint of entries 1 to 3"
    _assert_verifies(z4j, verified)

    _sql(database_url, "UPDATE audit_checkpoints SET pruned = 0 WHERE through_seq = 3")
    _assert_fails_at(
        z4j,
        4,
        "the checkpoint through entry 3 is not signed with this instance's key (forged or changed)",
    )
    _sql(database_url, "UPDATE audit_checkpoints SET pruned = 1 WHERE through_seq = 3")
    _assert_verifies(z4j, verified)

    # Deleting checkpoints to hide that history was pruned exposes the gap instead.
    _sql(database_url, "DELETE FROM audit_checkpoints WHERE through_seq = 3")
    _assert_fails_at(z4j, 3, "entry 3 missing: the next entry found is 4 (deleted or pruned)")
    _sql(database_url, "DELETE FROM audit_checkpoints")
    _assert_fails_at(
        z4j, 1, "entries 1 to 3 missing: the next entry found is 4 (deleted or pruned)"
    )


def test_changepassword_from_stdin(
    database_url: str, z4j_in_process: RunZ4j, z4j_env: dict[str, str]
) -> None:
    """`changepassword --password-stdin` stores an argon2 hash of the new password, audited."""
    _bootstrap(z4j_env, datetime.now(UTC))
    (before,) = _sql(database_url, "SELECT password_hash FROM users")
    new_password = "a brand new passphrase"

    changed = _z4j_with_input(
        z4j_env, new_password + "\n", "changepassword", "--email", ADMIN, "--password-stdin"
    )
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert changed.stdout.startswith(f"changed the password of {ADMIN};")
    (after,) = _sql(database_url, "SELECT password_hash FROM users")
    assert after.password_hash != before.password_hash
    hasher = Argon2PasswordHasher()
    assert hasher.verify(after.password_hash, new_password)
    assert not hasher.verify(after.password_hash, ADMIN_PASSWORD)

    entry = _entries(database_url)[-1]
    assert (entry.seq, entry.action, entry.actor, entry.target) == (
        2,
        "auth.password_changed",
        CLI_ACTOR,
        f"user:{ADMIN}",
    )
    assert json.loads(entry.details) == {"recovery": True, "sessions_ended": 0}
    _assert_verifies(z4j_in_process, "2 audit entries verified (entries 1 to 2)")

    unknown = z4j_in_process(
        "changepassword",
        "--email",
        "nobody@example.com",
        "--password-stdin",
        stdin=new_password + "\n",
    )
    assert unknown.returncode == 1
    assert_one_line_error(unknown.stderr, "no user with email 'nobody@example.com'")
    assert len(unknown.stderr.splitlines()) == 1

    short = z4j_in_process("changepassword", "--email", ADMIN, "--password-stdin", stdin="short\n")
    assert short.returncode == 1
    assert_one_line_error(short.stderr, "the password must be at least 12 characters long")
    assert len(short.stderr.splitlines()) == 1
    assert _sql(database_url, "SELECT password_hash FROM users") == [after]
    assert len(_entries(database_url)) == 2


def test_api_key_create_bound_and_capped(
    database_url: str, z4j_in_process: RunZ4j, z4j_env: dict[str, str]
) -> None:
    """`api-key create --project --role` stores a key bound to the project, capped at the role."""
    z4j = z4j_in_process
    _bootstrap(z4j_env, datetime.now(UTC))
    ((project_id,),) = _sql(database_url, "SELECT id FROM projects WHERE slug = 'default'")

    created = z4j(
        "api-key",
        "create",
        "--email",
        ADMIN,
        "--name",
        "dash",
        "--project",
        "default",
        "--role",
        "viewer",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert (key["name"], key["email"]) == ("dash", ADMIN)
    assert key["key"].startswith("z4j_")
    (row,) = _sql(
        database_url, "SELECT name, project_id, role FROM api_keys WHERE id = :id", id=key["id"]
    )
    assert tuple(row) == ("dash", project_id, "viewer")

    entry = _entries(database_url)[-1]
    assert (entry.action, entry.actor, entry.target, entry.project_id) == (
        "api_key.created",
        CLI_ACTOR,
        f"api_key:{key['id']}",
        project_id,
    )
    assert json.loads(entry.details) == {"name": "dash", "owner": ADMIN, "role": "viewer"}

    missing = z4j("api-key", "create", "--email", ADMIN, "--project", "nope", "--role", "viewer")
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, "no project 'nope'")
    assert len(missing.stderr.splitlines()) == 1

    bad_role = z4j("api-key", "create", "--email", ADMIN, "--role", "superuser")
    assert bad_role.returncode == 2
    assert "Invalid value for '--role'" in bad_role.stderr

    # Neither refusal stored a key or wrote to the log.
    assert len(_sql(database_url, "SELECT id FROM api_keys")) == 1
    _assert_verifies(z4j, "2 audit entries verified (entries 1 to 2)")
