"""``z4j agent create / list / revoke`` as an operator runs them."""

from __future__ import annotations

import asyncio
import json

from z4j_domain.protocol import derive_agent_secret
from z4j_domain.users import hash_secret
from z4j_infra.database import Database

from .conftest import RunZ4j
from .test_commands import _create_admin, assert_one_line_error


async def _stored_agents(url: str) -> dict[str, tuple[str, str]]:
    database = await Database.connect(url)
    try:
        async with database.engine.connect() as connection:
            result = await connection.exec_driver_sql(
                "SELECT name, token_hash, secret_salt FROM agents"
            )
            return {row[0]: (row[1], row[2]) for row in result}
    finally:
        await database.dispose()


def test_agent_create_list_revoke(
    run_z4j: RunZ4j, z4j_in_process: RunZ4j, z4j_env: dict[str, str], migrated_sqlite: str
) -> None:
    """Minting prints the token and secret once (JSON or export lines); list and revoke work."""
    z4j_env["Z4J_SECRET"] = "cli-instance-secret"
    z4j_env["Z4J_PORT"] = "7799"
    asyncio.run(_create_admin(z4j_env))

    as_json = run_z4j("agent", "create", "--project", "default", "--name", "workers", "--json")
    assert as_json.returncode == 0, as_json.stderr
    created = json.loads(as_json.stdout)
    assert set(created) == {"token", "hmac_secret", "agent", "project"}
    assert (created["agent"], created["project"]) == ("workers", "default")
    assert created["token"].startswith("z4ja_")

    plain = run_z4j("agent", "create", "--project", "default", "--name", "beat")
    assert plain.returncode == 0, plain.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in plain.stdout.splitlines()
        if line.startswith("export ")
    )
    assert exports["Z4J_BRAIN_URL"] == "http://127.0.0.1:7799"
    assert exports["Z4J_PROJECT_ID"] == "default"
    assert exports["Z4J_TOKEN"].startswith("z4ja_")

    stored = asyncio.run(_stored_agents(migrated_sqlite))
    for name, token, secret in (
        ("workers", created["token"], created["hmac_secret"]),
        ("beat", exports["Z4J_TOKEN"], exports["Z4J_HMAC_SECRET"]),
    ):
        token_hash, salt = stored[name]
        assert token_hash == hash_secret(token)
        assert derive_agent_secret("cli-instance-secret", salt) == secret

    # The refusals run in-process; the command runs as a subprocess above and below.
    duplicate = z4j_in_process("agent", "create", "--project", "default", "--name", "workers")
    assert duplicate.returncode == 1
    assert_one_line_error(duplicate.stderr, "already has an agent named 'workers'")

    revoked = run_z4j("agent", "revoke", "--project", "default", "--name", "beat")
    assert revoked.returncode == 0, revoked.stderr
    listed = run_z4j("agent", "list", "--project", "default", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(a["name"], a["active"]) for a in json.loads(listed.stdout)] == [
        ("beat", False),
        ("workers", True),
    ]
    table = run_z4j("agent", "list", "--project", "default")
    assert "revoked" in table.stdout
    assert "workers" in table.stdout

    missing = z4j_in_process("agent", "revoke", "--project", "nope", "--name", "x")
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, "no project 'nope'")
