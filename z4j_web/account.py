"""The instance-level API: login, logout, me, password, API keys, projects, users, invitations.

Project-scoped access management (members, invitations, audit) is in
:mod:`z4j_web.members`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from quart import Blueprint, jsonify, request

from z4j_domain.audit import AuditQuery
from z4j_domain.encoding import utc_isoformat
from z4j_domain.projects import Project
from z4j_domain.rbac import Grant, Membership
from z4j_domain.users import ApiKey, Invitation, User
from z4j_web import accounts, auditing
from z4j_web.auth import (
    SESSION_COOKIE,
    clear_session_cookie,
    current_change,
    current_principal,
    refuse_cross_site,
    require_login,
    set_session_cookie,
)
from z4j_web.errors import PermissionDenied
from z4j_web.payloads import json_object
from z4j_web.runtime import current_runtime

__all__ = [
    "api_key_to_dict",
    "audit_page_to_dict",
    "blueprint",
    "invitation_to_dict",
    "membership_to_dict",
    "project_to_dict",
    "user_to_dict",
]

blueprint = Blueprint("account", __name__, url_prefix="/api/v1")

_NO_STORE: Final = {"Cache-Control": "no-store"}


def _when(value: Any) -> str | None:
    return utc_isoformat(value) if value is not None else None


def user_to_dict(user: User) -> dict[str, Any]:
    """A user as the API shows it (never the password hash)."""
    return {
        "id": user.id,
        "email": user.email,
        "is_admin": user.is_admin,
        "created_at": utc_isoformat(user.created_at),
    }


def project_to_dict(project: Project, grant: Grant | None = None) -> dict[str, Any]:
    """A project, with the caller's role and permissions in it when known."""
    shown: dict[str, Any] = {
        "slug": project.slug,
        "name": project.name,
        "created_at": utc_isoformat(project.created_at),
    }
    if grant is not None:
        role = grant.effective_role
        shown["role"] = role.value if role is not None else None
        shown["permissions"] = sorted(p.value for p in grant.permissions)
    return shown


def api_key_to_dict(key: ApiKey, slugs: dict[int, str]) -> dict[str, Any]:
    """An API key as its owner sees it (never the key or its hash)."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "project": slugs.get(key.project_id) if key.project_id is not None else None,
        "role": key.role.value if key.role is not None else None,
        "active": key.is_active,
        "created_at": utc_isoformat(key.created_at),
        "last_used_at": _when(key.last_used_at),
        "revoked_at": _when(key.revoked_at),
    }


def membership_to_dict(membership: Membership, user: User) -> dict[str, Any]:
    """A project member."""
    return {
        "user_id": user.id,
        "email": user.email,
        "role": membership.role.value,
        "since": utc_isoformat(membership.created_at),
    }


def invitation_to_dict(invitation: Invitation, now: Any) -> dict[str, Any]:
    """An invitation (never its token or the token's hash)."""
    return {
        "id": invitation.id,
        "email": invitation.email,
        "role": invitation.role.value,
        "status": invitation.status(now).value,
        "created_at": utc_isoformat(invitation.created_at),
        "expires_at": utc_isoformat(invitation.expires_at),
        "accepted_at": _when(invitation.accepted_at),
        "revoked_at": _when(invitation.revoked_at),
    }


async def _slugs() -> dict[int, str]:
    async with current_runtime().uow() as uow:
        return {project.id: project.slug for project in await uow.projects.list()}


def audit_page_to_dict(page: Any, slugs: dict[int, str]) -> dict[str, Any]:
    """A page of audit entries, with the cursor of the next one."""
    items = []
    for entry in page.items:
        record = entry.record
        items.append(
            {
                "seq": entry.seq,
                "at": utc_isoformat(record.at),
                "action": record.action,
                "actor": record.actor,
                "actor_id": record.actor_id,
                "target": record.target,
                "project": slugs.get(record.project_id) if record.project_id is not None else None,
                "source_ip": record.source_ip,
                "details": record.details,
                "prev_mac": entry.prev_mac,
                "mac": entry.mac,
            }
        )
    return {"items": items, "next_before": page.next_before}


# -- sessions -------------------------------------------------------------------------------


@blueprint.post("/auth/login")
async def login() -> Any:
    """Log in with email and password: sets the session cookie, returns the CSRF token."""
    refuse_cross_site()
    body = await json_object(
        {"email": str, "password": str}, required=frozenset({"email", "password"})
    )
    runtime = current_runtime()
    created = await accounts.login(
        runtime.uow,
        runtime.clock,
        runtime.password_hasher,
        runtime.audit_key,
        email=body["email"],
        password=body["password"],
        source_ip=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
        lifetime=runtime.settings.session_lifetime,
        idle=runtime.settings.session_idle,
    )
    response = jsonify(
        {
            "user": user_to_dict(created.user),
            "csrf_token": accounts.csrf_token(runtime.csrf_key, created.token),
            "expires_at": utc_isoformat(created.session.expires_at),
        }
    )
    set_session_cookie(response, created.token)
    response.headers.update(_NO_STORE)
    return response


@blueprint.post("/auth/logout")
@require_login
async def logout() -> Any:
    """End the current session (a Bearer key has none to end) and clear the cookie."""
    principal = current_principal()
    if principal.session is not None:
        await accounts.logout(current_change(), principal.session)
    response = jsonify({"logged_out": principal.session is not None})
    clear_session_cookie(response)
    return response


@blueprint.get("/auth/me")
@require_login
async def me() -> Any:
    """Who the caller is, how it authenticated, its projects, and (for a session) its CSRF token."""
    principal = current_principal()
    runtime = current_runtime()
    projects = await accounts.visible_projects(runtime.uow, principal)
    shown: dict[str, Any] = {
        "user": user_to_dict(principal.user),
        "instance_admin": principal.instance_admin,
        "auth": "session" if principal.session is not None else "api_key",
        "projects": [project_to_dict(project, grant) for project, grant in projects],
    }
    if principal.session is not None:
        shown["csrf_token"] = accounts.csrf_token(
            runtime.csrf_key, request.cookies.get(SESSION_COOKIE, "")
        )
        shown["session_expires_at"] = utc_isoformat(principal.session.expires_at)
    if principal.api_key is not None:
        shown["api_key"] = api_key_to_dict(principal.api_key, await _slugs())
    response = jsonify(shown)
    response.headers.update(_NO_STORE)
    return response


@blueprint.post("/auth/password")
@require_login
async def change_password() -> Any:
    """Change the caller's password; every other session of theirs ends."""
    body = await json_object(
        {"current_password": str, "new_password": str},
        required=frozenset({"current_password", "new_password"}),
    )
    principal = current_principal()
    if principal.restricted:
        raise PermissionDenied("a project-bound or capped API key cannot change the password")
    runtime = current_runtime()
    await accounts.change_password(
        current_change(),
        runtime.password_hasher,
        email=principal.user.email,
        new_password=body["new_password"],
        current_password=body["current_password"],
        keep_session=principal.session.id if principal.session is not None else None,
    )
    return {"changed": True}


# -- API keys -------------------------------------------------------------------------------


@blueprint.get("/auth/api-keys")
@require_login
async def list_api_keys() -> Any:
    """The caller's API keys, revoked ones included."""
    keys = await accounts.list_api_keys(current_runtime().uow, current_principal().user)
    slugs = await _slugs()
    return {"items": [api_key_to_dict(key, slugs) for key in keys]}


@blueprint.post("/auth/api-keys")
@require_login
async def create_api_key() -> Any:
    """Create an API key for the caller, optionally bound to a project and capped at a role.

    The answer holds the key, shown this once only.
    """
    body = await json_object(
        {"name": str, "project": (str, type(None)), "role": (str, type(None))},
        required=frozenset({"name"}),
    )
    principal = current_principal()
    created = await accounts.create_api_key(
        current_change(),
        email=principal.user.email,
        name=body["name"],
        project=body.get("project"),
        role=body.get("role"),
        creator=principal.api_key,
    )
    response = jsonify(
        {"key": created.key, "api_key": api_key_to_dict(created.api_key, await _slugs())}
    )
    response.status_code = 201
    response.headers.update(_NO_STORE)
    return response


@blueprint.delete("/auth/api-keys/<int:key_id>")
@require_login
async def revoke_api_key(key_id: int) -> Any:
    """Revoke one of the caller's API keys; it stops authenticating at once."""
    key = await accounts.revoke_api_key(
        current_change(),
        user=current_principal().user,
        key_id=key_id,
    )
    return api_key_to_dict(key, await _slugs())


# -- projects and users ------------------------------------------------------------------------


@blueprint.get("/projects")
@require_login
async def list_projects() -> Any:
    """The projects the caller can see, with its role and permissions in each."""
    projects = await accounts.visible_projects(current_runtime().uow, current_principal())
    return {"items": [project_to_dict(project, grant) for project, grant in projects]}


@blueprint.post("/projects")
@require_login
async def create_project() -> Any:
    """Create a project (instance admins)."""
    body = await json_object({"slug": str, "name": str}, required=frozenset({"slug"}))
    project = await accounts.create_project(
        current_change(),
        current_principal(),
        slug=body["slug"],
        name=body.get("name") or body["slug"],
    )
    return project_to_dict(project), 201


@blueprint.get("/users")
@require_login
async def list_users() -> Any:
    """Every user (instance admins)."""
    users = await accounts.list_users(current_runtime().uow, current_principal())
    return {"items": [user_to_dict(user) for user in users]}


@blueprint.post("/users")
@require_login
async def create_user() -> Any:
    """Create a user with a password (instance admins); usually, invite people instead."""
    body = await json_object(
        {"email": str, "password": str, "is_admin": bool},
        required=frozenset({"email", "password"}),
    )
    runtime = current_runtime()
    user = await accounts.create_user(
        current_change(),
        runtime.password_hasher,
        current_principal(),
        email=body["email"],
        password=body["password"],
        is_admin=body.get("is_admin", False),
    )
    return user_to_dict(user), 201


@blueprint.get("/audit")
@require_login
async def instance_audit() -> Any:
    """The whole audit log, every project and the instance's own entries (instance admins)."""
    principal = current_principal()
    if not principal.instance_admin:
        raise PermissionDenied("only an instance admin may read the instance's whole audit log")
    query = AuditQuery.from_params(request.args.to_dict(), project_id=None)
    page = await auditing.search(current_runtime().uow, query)
    return audit_page_to_dict(page, await _slugs())


# -- invitations (the invitee's side) ---------------------------------------------------------


@blueprint.post("/invitations/lookup")
async def lookup_invitation() -> Any:
    """What a pending invitation link offers (email, project, role, whether to pick a password)."""
    body = await json_object({"token": str}, required=frozenset({"token"}))
    runtime = current_runtime()
    invitation, project, has_account = await accounts.pending_invitation(
        runtime.uow, runtime.clock, body["token"]
    )
    return {
        "email": invitation.email,
        "project": project_to_dict(project),
        "role": invitation.role.value,
        "has_account": has_account,
        "expires_at": utc_isoformat(invitation.expires_at),
    }


@blueprint.post("/invitations/accept")
async def accept_invitation() -> Any:
    """Accept an invitation: creates the account (send "password") or adds the membership."""
    refuse_cross_site()
    body = await json_object({"token": str, "password": str}, required=frozenset({"token"}))
    runtime = current_runtime()
    accepted = await accounts.accept_invitation(
        runtime.uow,
        runtime.clock,
        runtime.password_hasher,
        runtime.audit_key,
        token=body["token"],
        password=body.get("password"),
        source_ip=request.remote_addr,
    )
    return {
        "user": user_to_dict(accepted.user),
        "project": project_to_dict(accepted.project),
        "role": accepted.membership.role.value,
        "created_user": accepted.created_user,
    }


def invitation_ttl(days: Any) -> timedelta:
    """An invitation's lifetime from the API's ``expires_in_days`` (default 7)."""
    return accounts.INVITATION_TTL if days is None else timedelta(days=days)
