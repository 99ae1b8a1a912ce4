"""Agents over the API: mint (token and secret shown once), list, revoke."""

from __future__ import annotations

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.protocol import derive_agent_secret
from z4j_domain.testing import FakeClock
from z4j_domain.users import hash_secret
from z4j_infra.settings import Settings

from .support import Backend, Seeded, bearer

pytestmark = pytest.mark.anyio

AGENTS_URL = "/api/v1/projects/default/agents"


async def test_mint_returns_token_and_secret_once_and_stores_only_hash_and_salt(
    client: Client, seeded: Seeded, backend: Backend, settings: Settings
) -> None:
    """POST answers 201 with the token and HMAC secret; the store has the hash and salt only."""
    response = await client.post(AGENTS_URL, json={"name": "workers"}, headers=bearer(seeded.key))
    body = await response.get_json()
    assert response.status_code == 201, body
    assert body["project"] == "default"
    assert body["agent"]["name"] == "workers"
    assert body["agent"]["active"] is True
    assert body["token"].startswith("z4ja_")
    async with backend.uow_factory() as uow:
        agent = await uow.agents.get_by_token_hash(hash_secret(body["token"]))
    assert agent is not None
    assert agent.token_hash != body["token"]
    assert derive_agent_secret(settings.secret, agent.secret_salt) == body["hmac_secret"]

    listed = await client.get(AGENTS_URL, headers=bearer(seeded.key))
    items = (await listed.get_json())["items"]
    assert [item["name"] for item in items] == ["workers"]
    assert "token" not in items[0]
    assert "hmac_secret" not in items[0]


async def test_duplicate_name_conflicts_and_bad_names_are_refused(
    client: Client, seeded: Seeded
) -> None:
    """A taken name is 409; an invalid name or body is 400; an unknown project is 404."""
    headers = bearer(seeded.key)
    assert (await client.post(AGENTS_URL, json={"name": "w"}, headers=headers)).status_code == 201
    assert (await client.post(AGENTS_URL, json={"name": "w"}, headers=headers)).status_code == 409
    for body in ({"name": ""}, {"name": "a b"}, {"name": "x\x00"}, {}, {"name": 3}, [1]):
        response = await client.post(AGENTS_URL, json=body, headers=headers)
        assert response.status_code == 400, body
    response = await client.post(AGENTS_URL, data="not json", headers=headers)
    assert response.status_code == 400
    response = await client.post(
        "/api/v1/projects/nope/agents", json={"name": "w"}, headers=headers
    )
    assert response.status_code == 404


async def test_revoke_marks_the_agent_revoked(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """DELETE revokes (idempotently); the agent stays listed as inactive; unknown is 404."""
    headers = bearer(seeded.key)
    await client.post(AGENTS_URL, json={"name": "workers"}, headers=headers)
    response = await client.delete(f"{AGENTS_URL}/workers", headers=headers)
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["active"] is False
    assert body["revoked_at"] is not None
    again = await client.delete(f"{AGENTS_URL}/workers", headers=headers)
    assert again.status_code == 200
    assert (await again.get_json())["revoked_at"] == body["revoked_at"]
    assert (await client.delete(f"{AGENTS_URL}/ghost", headers=headers)).status_code == 404
    items = (await (await client.get(AGENTS_URL, headers=headers)).get_json())["items"]
    assert [(i["name"], i["active"]) for i in items] == [("workers", False)]


async def test_agent_routes_need_an_api_key(client: Client, seeded: Seeded) -> None:
    """Without a key every agent route answers 401."""
    assert (await client.get(AGENTS_URL)).status_code == 401
    assert (await client.post(AGENTS_URL, json={"name": "w"})).status_code == 401
    assert (await client.delete(f"{AGENTS_URL}/w")).status_code == 401
