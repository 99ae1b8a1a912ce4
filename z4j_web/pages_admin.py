"""The dashboard's administration pages: a project's agents, and its members and invitations.

Both are read server-side; every change (mint, revoke, role change, removal,
invitation) is made by ``static/app.js`` through the JSON API, with the same
permission checks and audit log as a script's. What a page offers follows the
caller's permissions: the agents page is readable by every member (minting and
revoking only for ``agents.manage``); the members page needs ``members.manage``.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from z4j_domain.rbac import Permission, Role
from z4j_web import accounts, services
from z4j_web.account import invitation_to_dict, membership_to_dict
from z4j_web.api import agent_to_dict
from z4j_web.dashboard import current_page, page, render
from z4j_web.runtime import current_runtime

__all__ = ["blueprint"]

blueprint = Blueprint("pages_admin", __name__)

#: The roles a member can be given, from least to most.
ROLES = [Role.VIEWER.value, Role.AUDITOR.value, Role.OPERATOR.value, Role.ADMIN.value]


@blueprint.get("/projects/<project>/agents")
@page(Permission.READ_TASKS)
async def agents_page(project: str) -> Any:
    """The project's agents: active or revoked, connected or not, last seen, version."""
    current = current_page()
    assert current.access is not None
    runtime = current_runtime()
    agents = await services.list_agents(runtime.uow, current.access.project)
    connected = runtime.reconciler.connected_agents(current.access.project.id)
    rows = []
    for agent in agents:
        shown = agent_to_dict(agent)
        live = connected.get(agent.name)
        shown["connections"] = live.connections if live is not None else 0
        shown["versions"] = list(live.versions) if live is not None else []
        rows.append(shown)
    return await render(
        "agents.html",
        project=current.access.project,
        agents=rows,
        can_manage=current.can(Permission.MANAGE_AGENTS),
    )


@blueprint.get("/projects/<project>/members")
@page(Permission.MANAGE_MEMBERS)
async def members_page(project: str) -> Any:
    """The project's members with their roles, and its invitations (pending ones first)."""
    current = current_page()
    assert current.access is not None
    runtime = current_runtime()
    members = await accounts.list_members(runtime.uow, current.access.project)
    invitations = await accounts.list_invitations(runtime.uow, current.access.project)
    now = runtime.clock.now()
    shown = [invitation_to_dict(invitation, now) for invitation in invitations]
    return await render(
        "members.html",
        project=current.access.project,
        members=[membership_to_dict(m, user) for m, user in members],
        pending=[i for i in shown if i["status"] == "pending"],
        past=[i for i in shown if i["status"] != "pending"],
        roles=ROLES,
        me=current.principal.user.email,
    )
