"""The dashboard's agents and members pages, as served HTML (their script is tested in Chromium).

What the pages' buttons do goes through the JSON API, tested on its own; here
what each page shows, to whom, and that the page's CSRF token lets its script
call that API with the session.
"""

from __future__ import annotations

import re
from typing import Any, Final

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock
from z4j_web import services

from .support import Backend, FakeAgent, Seeded, bearer, connected
from .test_access import PASSWORD, add_user
from .test_dashboard import log_in, text

pytestmark = pytest.mark.anyio

AGENTS: Final = "/projects/default/agents"
MEMBERS: Final = "/projects/default/members"
API: Final = "/api/v1/projects/default"
VIEWER: Final = "viewer@example.com"


def agent_row(html: str, name: str) -> str:
    """The agents table's row of ``name``."""
    found = re.search(rf'<tr data-agent="{re.escape(name)}">(.*?)</tr>', html, re.DOTALL)
    assert found is not None, f"no row for agent {name!r}"
    return found.group(1)


def csrf_token(html: str) -> str:
    found = re.search(r'<meta name="z4j-csrf" content="([0-9a-f]+)">', html)
    assert found is not None
    return found.group(1)


async def test_an_admin_sees_the_agents_with_their_state_and_the_mint_form(
    client: Client, seeded: Seeded, minted: services.NewAgent
) -> None:
    """Active and revoked agents, not connected, never seen; mint form and revoke buttons."""
    revoked = await client.post(f"{API}/agents", headers=bearer(seeded.key), json={"name": "old"})
    assert revoked.status_code == 201
    assert (await client.delete(f"{API}/agents/old", headers=bearer(seeded.key))).status_code == 200
    await log_in(client)
    response = await client.get(AGENTS)
    assert response.status_code == 200
    html = await text(response)
    assert 'aria-current="page">Agents</a>' in html
    assert "data-mint-form" in html
    workers = agent_row(html, "workers")
    assert "active" in workers
    assert "not connected" in workers
    assert 'data-revoke-agent="workers"' in workers
    old = agent_row(html, "old")
    assert "revoked" in old
    assert "data-revoke-agent" not in old  # nothing left to revoke
    assert minted.token not in html  # the token is shown once, by the mint, never again


async def test_an_agent_connected_to_this_brain_shows_as_connected_with_its_version(
    client: Client, seeded: Seeded, minted: services.NewAgent, clock: FakeClock
) -> None:
    """Every open connection counts, whether or not the agent announced actions it can run."""
    await log_in(client)
    first, second = FakeAgent(minted.hmac_secret, clock), FakeAgent(minted.hmac_secret, clock)
    async with connected(client, minted.token, first):
        one = agent_row(await text(await client.get(AGENTS)), "workers")
        assert "connected</span>" in one
        assert "not connected" not in one
        assert "0.1.0" in one
        assert 'data-agent-connected="1"' in one
        assert "connections)" not in one
        async with connected(client, minted.token, second):
            two = agent_row(await text(await client.get(AGENTS)), "workers")
            assert 'data-agent-connected="2"' in two
            assert "(2 connections)" in two
    # The brain forgets a link once its connection has closed.
    async with connected(client, minted.token, FakeAgent(minted.hmac_secret, clock)):
        pass
    after = agent_row(await text(await client.get(AGENTS)), "workers")
    for _ in range(50):
        if "not connected" in after:
            break
        after = agent_row(await text(await client.get(AGENTS)), "workers")
    assert "not connected" in after
    assert "0.1.0" not in after


async def test_a_viewer_reads_the_agents_without_mint_or_revoke_and_may_not_see_members(
    client: Client, seeded: Seeded, minted: services.NewAgent, backend: Backend, clock: FakeClock
) -> None:
    """Agents are readable by every member; managing them, and the members page, are admin's."""
    await add_user(backend, clock, VIEWER, Role.VIEWER)
    await log_in(client, VIEWER, PASSWORD)
    response = await client.get(AGENTS)
    assert response.status_code == 200
    html = await text(response)
    assert "workers" in agent_row(html, "workers")
    assert "data-mint" not in html
    assert "data-revoke-agent" not in html
    assert "your role in this project cannot manage agents" in html
    members = await client.get(MEMBERS)
    assert members.status_code == 403
    assert "members.manage" in await text(members)


async def test_an_operator_may_not_see_the_members_page_either(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    await add_user(backend, clock, "operator@example.com", Role.OPERATOR)
    await log_in(client, "operator@example.com", PASSWORD)
    assert (await client.get(MEMBERS)).status_code == 403
    assert "data-mint" not in await text(await client.get(AGENTS))


async def test_an_unknown_project_is_a_404_page(client: Client, seeded: Seeded) -> None:
    await log_in(client)
    assert (await client.get("/projects/nope/agents")).status_code == 404
    assert (await client.get("/projects/nope/members")).status_code == 404


async def test_an_admin_sees_the_members_roles_and_invitations(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """Members with a role select and Remove; pending invitations with Revoke; past ones apart."""
    await add_user(backend, clock, VIEWER, Role.VIEWER)
    pending = await client.post(
        f"{API}/invitations",
        headers=bearer(seeded.key),
        json={"email": "pending@example.com", "role": "operator"},
    )
    gone = await client.post(
        f"{API}/invitations",
        headers=bearer(seeded.key),
        json={"email": "gone@example.com", "role": "viewer"},
    )
    gone_id = (await gone.get_json())["invitation"]["id"]
    await client.delete(f"{API}/invitations/{gone_id}", headers=bearer(seeded.key))
    pending_body: dict[str, Any] = await pending.get_json()
    await log_in(client)
    response = await client.get(MEMBERS)
    assert response.status_code == 200
    html = await text(response)
    assert 'aria-current="page">Members</a>' in html
    assert "data-invite-form" in html
    viewer = re.search(rf'<tr data-member="{VIEWER}">(.*?)</tr>', html, re.DOTALL)
    assert viewer is not None
    assert re.search(r'<option value="viewer" selected>', viewer.group(1))
    assert f'data-remove-member="{VIEWER}"' in viewer.group(1)
    # The first admin is an instance admin, admin of every project without a membership.
    assert "admin@example.com</td>" not in html
    assert "You are one." in html
    invitation_id = pending_body["invitation"]["id"]
    row = re.search(rf'<tr data-invitation="{invitation_id}">(.*?)</tr>', html, re.DOTALL)
    assert row is not None
    assert "pending@example.com" in row.group(1)
    assert f'data-revoke-invitation="{invitation_id}"' in row.group(1)
    assert pending_body["token"] not in html  # the link is shown once, by the invite
    assert "Past invitations (1)" in html
    assert f'data-invitation="{gone_id}"' not in html
    assert "gone@example.com" in html


async def test_the_pages_csrf_token_lets_their_script_call_the_api_with_the_session(
    client: Client, seeded: Seeded
) -> None:
    """What the buttons do: mint and revoke, invite, with the cookie and the page's token."""
    await log_in(client)
    token = csrf_token(await text(await client.get(AGENTS)))
    refused = await client.post(f"{API}/agents", json={"name": "browser"})
    assert refused.status_code == 403
    minted = await client.post(
        f"{API}/agents", json={"name": "browser"}, headers={"X-CSRF-Token": token}
    )
    assert minted.status_code == 201
    assert "browser" in agent_row(await text(await client.get(AGENTS)), "browser")
    token = csrf_token(await text(await client.get(MEMBERS)))
    invited = await client.post(
        f"{API}/invitations",
        json={"email": "new@example.com", "role": "viewer", "expires_in_days": 7},
        headers={"X-CSRF-Token": token},
    )
    assert invited.status_code == 201
    assert (await invited.get_json())["url"].startswith("http://localhost/invite?token=")


async def test_the_invitation_page_accepts_a_same_origin_form_post_with_origin_null(
    client: Client, seeded: Seeded
) -> None:
    """Chromium posts the page's own form with ``Origin: null`` (no-referrer pages) and
    ``Sec-Fetch-Site: same-origin``; that is accepted, and the new user can log in."""
    created = await client.post(
        f"{API}/invitations", headers=bearer(seeded.key), json={"email": VIEWER, "role": "viewer"}
    )
    invite_token = (await created.get_json())["token"]
    form = await client.get(f"/invite?token={invite_token}")
    assert form.status_code == 200
    assert "viewer" in await text(form)
    accepted = await client.post(
        "/invite",
        form={"token": invite_token, "password": PASSWORD, "confirm": PASSWORD},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert accepted.status_code == 200
    done = await text(accepted)
    assert "is now viewer" in done
    assert 'href="/login"' in done
    assert (await log_in(client, VIEWER, PASSWORD)).status_code == 302
    assert (await client.get(AGENTS)).status_code == 200


async def test_a_project_admin_manages_members_and_is_marked_as_themselves(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    await add_user(backend, clock, "lead@example.com", Role.ADMIN)
    await log_in(client, "lead@example.com", PASSWORD)
    html = await text(await client.get(MEMBERS))
    assert 'lead@example.com <span class="muted">(you)</span>' in html
    assert "You are one." not in html
    assert "data-mint-form" in await text(await client.get(AGENTS))
