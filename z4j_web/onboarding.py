"""Pages opened from single-use links: first-boot ``/setup`` and invitations' ``/invite``."""

from __future__ import annotations

import shlex
from typing import Any, Final

from quart import Blueprint, render_template, request

from z4j_domain.errors import InvalidInput
from z4j_web import accounts, services
from z4j_web.auth import refuse_cross_site
from z4j_web.runtime import current_runtime

__all__ = ["blueprint"]

blueprint = Blueprint("setup", __name__)

# The token sits in the URL; a page loaded from it must not hand the URL on.
_PRIVATE_HEADERS: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


async def _form(token: str, *, email: str = "", error: str | None = None, status: int = 200) -> Any:
    body = await render_template(
        "setup.html",
        token=token,
        email=email,
        error=error,
        min_length=services.MIN_PASSWORD_LENGTH,
    )
    return body, status, _PRIVATE_HEADERS


@blueprint.get("/setup")
async def setup_form() -> Any:
    """Show the form that creates the first admin, if the token is the pending one."""
    runtime = current_runtime()
    token = request.args.get("token", "")
    await services.verify_setup_token(runtime.uow, runtime.clock, token)
    return await _form(token)


@blueprint.post("/setup")
async def setup_submit() -> Any:
    """Create the first admin and the default project, then say how to get an API key."""
    runtime = current_runtime()
    form = await request.form
    token = form.get("token", "")
    email = form.get("email", "").strip()
    password = form.get("password", "")
    # A bad token is answered by the error page (403/410) before anything else.
    await services.verify_setup_token(runtime.uow, runtime.clock, token)
    if password != form.get("confirm", ""):
        return await _form(token, email=email, error="the passwords do not match", status=400)
    try:
        admin = await services.complete_setup(
            runtime.uow,
            runtime.clock,
            runtime.password_hasher,
            token=token,
            email=email,
            password=password,
            audit_key=runtime.audit_key,
            source_ip=request.remote_addr,
        )
    except InvalidInput as error:
        return await _form(token, email=email, error=str(error), status=400)
    body = await render_template(
        "setup_done.html",
        email=admin.email,
        command=f"z4j api-key create --email {shlex.quote(admin.email)} --name my-laptop",
        base_url=request.host_url.rstrip("/"),
    )
    return body, 200, _PRIVATE_HEADERS


async def _invite_form(token: str, *, error: str | None = None, status: int = 200) -> Any:
    runtime = current_runtime()
    invitation, project, has_account = await accounts.pending_invitation(
        runtime.uow, runtime.clock, token
    )
    body = await render_template(
        "invite.html",
        token=token,
        email=invitation.email,
        role=invitation.role.value,
        project=project.slug,
        expires=invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        has_account=has_account,
        error=error,
        min_length=services.MIN_PASSWORD_LENGTH,
    )
    return body, status, _PRIVATE_HEADERS


@blueprint.get("/invite")
async def invite_form() -> Any:
    """Show what a pending invitation offers, and the form that accepts it."""
    return await _invite_form(request.args.get("token", ""))


@blueprint.post("/invite")
async def invite_submit() -> Any:
    """Accept an invitation: create the account, or add the project to an existing one."""
    refuse_cross_site()
    runtime = current_runtime()
    form = await request.form
    token = form.get("token", "")
    password = form.get("password")
    if password is not None and password != form.get("confirm", ""):
        return await _invite_form(token, error="the passwords do not match", status=400)
    try:
        accepted = await accounts.accept_invitation(
            runtime.uow,
            runtime.clock,
            runtime.password_hasher,
            runtime.audit_key,
            token=token,
            password=password,
            source_ip=request.remote_addr,
        )
    except InvalidInput as error:
        return await _invite_form(token, error=str(error), status=400)
    body = await render_template(
        "invite_done.html",
        email=accepted.user.email,
        role=accepted.membership.role.value,
        project=accepted.project.slug,
    )
    return body, 200, _PRIVATE_HEADERS
