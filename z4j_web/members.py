"""A project's access management: members, invitations, and its audit log."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, jsonify, request

from z4j_domain.audit import AuditQuery
from z4j_domain.rbac import Permission
from z4j_web import accounts, auditing
from z4j_web.account import (
    audit_page_to_dict,
    invitation_to_dict,
    invitation_ttl,
    membership_to_dict,
)
from z4j_web.auth import current_access, current_change, require
from z4j_web.payloads import json_object
from z4j_web.runtime import current_runtime

__all__ = ["blueprint"]

blueprint = Blueprint("members", __name__, url_prefix="/api/v1/projects/<project>")


@blueprint.get("/members")
@require(Permission.MANAGE_MEMBERS)
async def list_members(project: str) -> Any:
    """The project's members and their roles, by email."""
    members = await accounts.list_members(current_runtime().uow, current_access().project)
    return {"items": [membership_to_dict(m, user) for m, user in members]}


@blueprint.put("/members/<email>")
@require(Permission.MANAGE_MEMBERS)
async def set_member(project: str, email: str) -> Any:
    """Give an existing user a role in the project, or change it: ``{"role": "operator"}``."""
    body = await json_object({"role": str}, required=frozenset({"role"}))
    membership, user = await accounts.set_member_role(
        current_change(),
        current_access().project,
        email=email,
        role=body["role"],
    )
    return membership_to_dict(membership, user)


@blueprint.delete("/members/<email>")
@require(Permission.MANAGE_MEMBERS)
async def remove_member(project: str, email: str) -> Any:
    """Remove a member from the project."""
    await accounts.remove_member(
        current_change(),
        current_access().project,
        email=email,
    )
    return {"removed": email}


@blueprint.get("/invitations")
@require(Permission.MANAGE_MEMBERS)
async def list_invitations(project: str) -> Any:
    """The project's invitations, newest first, with where each stands."""
    runtime = current_runtime()
    invitations = await accounts.list_invitations(runtime.uow, current_access().project)
    now = runtime.clock.now()
    return {"items": [invitation_to_dict(invitation, now) for invitation in invitations]}


@blueprint.post("/invitations")
@require(Permission.MANAGE_MEMBERS)
async def invite(project: str) -> Any:
    """Invite an email with a role; the answer holds the single-use link, shown this once.

    Body: ``{"email": ..., "role": ..., "expires_in_days": 7}``. z4j sends no
    email: pass the link on yourself.
    """
    body = await json_object(
        {"email": str, "role": str, "expires_in_days": (int, float)},
        required=frozenset({"email", "role"}),
    )
    runtime = current_runtime()
    created = await accounts.invite(
        current_change(),
        current_access().project,
        email=body["email"],
        role=body["role"],
        ttl=invitation_ttl(body.get("expires_in_days")),
    )
    response = jsonify(
        {
            "invitation": invitation_to_dict(created.invitation, runtime.clock.now()),
            "token": created.token,
            "url": f"{request.host_url.rstrip('/')}/invite?token={created.token}",
        }
    )
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.delete("/invitations/<int:invitation_id>")
@require(Permission.MANAGE_MEMBERS)
async def revoke_invitation(project: str, invitation_id: int) -> Any:
    """Revoke a pending invitation: its link stops working at once."""
    runtime = current_runtime()
    invitation = await accounts.revoke_invitation(
        current_change(),
        current_access().project,
        invitation_id,
    )
    return invitation_to_dict(invitation, runtime.clock.now())


@blueprint.get("/audit")
@require(Permission.READ_AUDIT)
async def project_audit(project: str) -> Any:
    """The project's audit log, newest first.

    Filters: ``action`` (exact, or a prefix ending in ``.``), ``actor``,
    ``target``, ``since``, ``until``; paging: ``limit`` and ``before`` (the
    previous page's ``next_before``).
    """
    granted = current_access()
    query = AuditQuery.from_params(request.args.to_dict(), project_id=granted.project.id)
    page = await auditing.search(current_runtime().uow, query)
    return audit_page_to_dict(page, {granted.project.id: granted.project.slug})
