"""Invitations end to end, and the audit log as the API shows it and the verifier checks it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.testing import FakeClock
from z4j_domain.users import hash_secret
from z4j_web import auditing

from .support import AUDIT_KEY, Backend, Seeded, bearer

pytestmark = pytest.mark.anyio

P: Final = "/api/v1/projects/default"
PASSWORD: Final = "a long enough password"


async def invite(
    client: Client, key: str, email: str = "new@example.com", role: str = "operator", **extra: Any
) -> dict[str, Any]:
    """Invite ``email`` as ``role``; return the answer (with the token)."""
    response = await client.post(
        f"{P}/invitations", headers=bearer(key), json={"email": email, "role": role, **extra}
    )
    body: dict[str, Any] = await response.get_json()
    assert response.status_code == 201, body
    return body


async def accept(client: Client, token: str, password: str | None = PASSWORD) -> Any:
    """POST the acceptance; return the response."""
    body = {"token": token} if password is None else {"token": token, "password": password}
    return await client.post("/api/v1/invitations/accept", json=body)


async def test_an_invitation_creates_the_user_once(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """Accepting creates the account with the invited role; the link then stops working."""
    created = await invite(client, seeded.key)
    token = created["token"]
    assert created["url"].endswith(f"/invite?token={token}")
    assert parse_qs(urlsplit(created["url"]).query)["token"] == [token]
    assert created["invitation"]["status"] == "pending"
    lookup = await (
        await client.post("/api/v1/invitations/lookup", json={"token": token})
    ).get_json()
    assert lookup["email"] == "new@example.com"
    assert lookup["role"] == "operator"
    assert lookup["has_account"] is False

    accepted = await accept(client, token)
    assert accepted.status_code == 200
    body = await accepted.get_json()
    assert body["created_user"] is True
    assert body["role"] == "operator"
    again = await accept(client, token)
    assert again.status_code == 404
    assert "accepted" in (await again.get_json())["error"]["message"]

    login = await client.post(
        "/api/v1/auth/login", json={"email": "new@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200
    me = await (await client.get("/api/v1/auth/me")).get_json()
    assert [(p["slug"], p["role"]) for p in me["projects"]] == [("default", "operator")]
    listed = await (await client.get(f"{P}/invitations", headers=bearer(seeded.key))).get_json()
    assert listed["items"][0]["status"] == "accepted"
    # Only the token's hash was stored.
    async with backend.uow_factory() as uow:
        stored = await uow.invitations.get(created["invitation"]["id"])
    assert stored is not None
    assert stored.token_hash == hash_secret(token)
    assert token not in repr(stored)


async def test_an_existing_user_gets_the_membership_without_a_password(
    client: Client, seeded: Seeded
) -> None:
    """An invitation for an existing account adds the project to it."""
    first = await invite(client, seeded.key, role="viewer")
    assert (await accept(client, first["token"])).status_code == 200
    other = await client.post(
        "/api/v1/projects", headers=bearer(seeded.key), json={"slug": "other"}
    )
    assert other.status_code == 201
    second = await client.post(
        "/api/v1/projects/other/invitations",
        headers=bearer(seeded.key),
        json={"email": "new@example.com", "role": "auditor"},
    )
    token = (await second.get_json())["token"]
    lookup = await (
        await client.post("/api/v1/invitations/lookup", json={"token": token})
    ).get_json()
    assert lookup["has_account"] is True
    accepted = await accept(client, token, password=None)
    assert accepted.status_code == 200
    assert (await accepted.get_json())["created_user"] is False


async def test_revoked_expired_and_forged_links_do_not_work(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """A revoked, an expired (after 7 days by default) and a made-up link are all refused."""
    revoked = await invite(client, seeded.key, email="a@example.com")
    response = await client.delete(
        f"{P}/invitations/{revoked['invitation']['id']}", headers=bearer(seeded.key)
    )
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "revoked"
    refused = await accept(client, revoked["token"])
    assert refused.status_code == 404
    assert "revoked" in (await refused.get_json())["error"]["message"]

    expiring = await invite(client, seeded.key, email="b@example.com")
    short = await invite(client, seeded.key, email="c@example.com", expires_in_days=1)
    clock.advance(timedelta(days=1).total_seconds())
    assert (await accept(client, short["token"])).status_code == 404
    clock.advance(timedelta(days=6).total_seconds() - 1)
    assert (await accept(client, expiring["token"])).status_code == 200

    for token in ("z4ji_made-up", "", "x" * 5000, "z4j_not-an-invitation"):
        assert (await accept(client, token)).status_code == 404
    bad = await client.post(
        f"{P}/invitations",
        headers=bearer(seeded.key),
        json={"email": "d@example.com", "role": "root"},
    )
    assert bad.status_code == 400
    too_long = await client.post(
        f"{P}/invitations",
        headers=bearer(seeded.key),
        json={"email": "d@example.com", "role": "viewer", "expires_in_days": 365},
    )
    assert too_long.status_code == 400


async def test_a_new_user_must_choose_a_valid_password(client: Client, seeded: Seeded) -> None:
    """Accepting for a new account without a (long enough) password is a 400; the link survives."""
    created = await invite(client, seeded.key)
    missing = await accept(client, created["token"], password=None)
    assert missing.status_code == 400
    assert "choose a password" in (await missing.get_json())["error"]["message"]
    assert (await accept(client, created["token"], password="short")).status_code == 400
    assert (await accept(client, created["token"])).status_code == 200


async def test_the_invite_page_accepts_in_a_browser(client: Client, seeded: Seeded) -> None:
    """/invite shows the offer and a password form; posting it creates the account."""
    token = (await invite(client, seeded.key))["token"]
    page = await client.get(f"/invite?token={token}")
    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert "new@example.com" in html
    assert "operator" in html
    assert page.headers["Referrer-Policy"] == "no-referrer"
    mismatch = await client.post(
        "/invite", form={"token": token, "password": PASSWORD, "confirm": "other"}
    )
    assert mismatch.status_code == 400
    done = await client.post(
        "/invite", form={"token": token, "password": PASSWORD, "confirm": PASSWORD}
    )
    assert done.status_code == 200
    assert "no longer works" in await done.get_data(as_text=True)
    used = await client.get(f"/invite?token={token}")
    assert used.status_code == 404


async def test_the_audit_log_records_who_did_what_and_verifies(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """Changes through the API appear in the project's log, filterable, and the chain verifies."""
    created = await invite(client, seeded.key)
    await accept(client, created["token"])
    await client.post(f"{P}/agents", headers=bearer(seeded.key), json={"name": "workers"})
    await client.put(
        f"{P}/settings/redaction", headers=bearer(seeded.key), json={"extra_key_patterns": ["pin"]}
    )
    await client.post(
        "/api/v1/auth/login", json={"email": "new@example.com", "password": "wrong password!!"}
    )
    log = await (await client.get(f"{P}/audit", headers=bearer(seeded.key))).get_json()
    actions = [item["action"] for item in log["items"]]
    assert actions == [
        "settings.redaction_changed",
        "agent.minted",
        "invitation.accepted",
        "invitation.created",
    ]
    newest = log["items"][0]
    assert newest["actor"] == "admin@example.com"
    assert newest["project"] == "default"
    assert newest["details"]["after"]["extra_key_patterns"] == ["pin"]
    assert newest["source_ip"]
    accepted = log["items"][2]
    assert accepted["actor"] == "new@example.com"
    assert "token" not in str(log["items"][3]["details"])

    filtered = await client.get(f"{P}/audit?action=invitation.", headers=bearer(seeded.key))
    assert [i["action"] for i in (await filtered.get_json())["items"]] == [
        "invitation.accepted",
        "invitation.created",
    ]
    paged = await (await client.get(f"{P}/audit?limit=1", headers=bearer(seeded.key))).get_json()
    assert len(paged["items"]) == 1
    rest = await client.get(f"{P}/audit?before={paged['next_before']}", headers=bearer(seeded.key))
    assert len((await rest.get_json())["items"]) == 3
    for query in ("nope=1", "limit=0", "since=yesterday", "before=-1"):
        bad = await client.get(f"{P}/audit?{query}", headers=bearer(seeded.key))
        assert bad.status_code == 400, query

    # The instance-wide log also has the failed login and the instance's own entries.
    everything = await (await client.get("/api/v1/audit", headers=bearer(seeded.key))).get_json()
    assert "auth.login_failed" in [item["action"] for item in everything["items"]]
    verification = await auditing.verify(backend.uow_factory, AUDIT_KEY)
    assert verification.ok, verification.broken
    assert verification.verified == len(everything["items"])
