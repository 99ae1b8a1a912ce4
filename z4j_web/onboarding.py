"""The first-boot setup page: ``/setup?token=...`` creates the first admin."""

from __future__ import annotations

import shlex
from typing import Any, Final

from quart import Blueprint, render_template, request

from z4j_domain.errors import InvalidInput
from z4j_web import services
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
