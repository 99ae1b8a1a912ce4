"""The dashboard: server-rendered pages for browsers, enhanced by one small script.

Why server-rendered: ``z4j serve`` must serve everything itself, offline, with
no build step on the operator's side; the pages are readable before any
script runs, and every action still goes through the same JSON API (and the
same permission checks and audit log) that scripts use. ``static/app.js``
adds what needs a script: live updates over ``/ws/dashboard``, the action
buttons (``fetch`` with the session's CSRF token), and the canvas graph.

Pages authenticate with the session cookie only; without one they redirect
to ``/login``. What a page shows follows the caller's permissions: a viewer
sees no retry button, and the page says why.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec
from urllib.parse import quote, urlencode

from quart import Blueprint, Response, g, redirect, render_template, request

from z4j_domain.errors import InvalidInput
from z4j_domain.queries import TaskQuery
from z4j_domain.rbac import Permission
from z4j_domain.serialization import event_to_dict, task_to_dict
from z4j_domain.tasks import TaskState
from z4j_web import accounts, services
from z4j_web.accounts import Access, Principal
from z4j_web.api import task_query_params
from z4j_web.auditing import Change
from z4j_web.auth import (
    SESSION_COOKIE,
    clear_session_cookie,
    refuse_cross_site,
    set_session_cookie,
)
from z4j_web.errors import AuthenticationFailed, CsrfRejected, TooManyRequests
from z4j_web.runtime import current_runtime

__all__ = ["blueprint", "current_page", "page", "page_url", "render"]

P = ParamSpec("P")

blueprint = Blueprint("dashboard", __name__)

_PAGE: Final = "z4j_page"
_NO_STORE: Final = {"Cache-Control": "no-store"}
#: The states the tasks page offers as filters, in lifecycle order.
STATES: Final = [state.value for state in TaskState]


class _Page:
    """What a page knows about the request: who, in which project, with what rights."""

    def __init__(self, principal: Principal, token: str, access: Access | None) -> None:
        self.principal = principal
        self.access = access
        self.csrf_token = accounts.csrf_token(current_runtime().csrf_key, token)

    def can(self, permission: Permission | str) -> bool:
        """Whether the caller may do ``permission`` (or its name) in the page's project."""
        return self.access is not None and self.access.grant.allows(Permission(permission))


def _login_redirect() -> Response:
    target = request.full_path if request.query_string else request.path
    return redirect(f"/login?{urlencode({'next': target})}")  # type: ignore[return-value]


def page(
    permission: Permission | None = None,
) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Awaitable[Any]]]:
    """A dashboard page: a session is required (else a redirect to log in); with
    ``permission``, the ``<project>`` in the path must allow it."""

    def decorate(view: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
        @functools.wraps(view)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            runtime = current_runtime()
            token = request.cookies.get(SESSION_COOKIE, "")
            try:
                if not token:
                    raise AuthenticationFailed("log in")
                principal = await accounts.resolve_session(
                    runtime.uow, runtime.clock, token, runtime.settings.session_idle
                )
            except AuthenticationFailed:
                return _login_redirect()
            access = None
            if permission is not None:
                async with runtime.uow() as uow:
                    access = await accounts.access(
                        uow, principal, str(kwargs["project"]), permission
                    )
            setattr(g, _PAGE, _Page(principal, token, access))
            return await view(*args, **kwargs)

        return wrapper

    return decorate


def current_page() -> _Page:
    """The current page's request context (inside a :func:`page` view)."""
    found: Any = getattr(g, _PAGE)
    assert isinstance(found, _Page)
    return found


async def render(template: str, status: int = 200, **context: Any) -> Any:
    """Render a dashboard template with the page context (who, which projects), not cached."""
    current = getattr(g, _PAGE, None)
    projects: list[Any] = []
    if current is not None:
        visible = await accounts.visible_projects(current_runtime().uow, current.principal)
        projects = [project for project, _ in visible]
    body = await render_template(template, page=current, projects=projects, **context)
    return body, status, _NO_STORE


def page_url(param: str, value: str) -> str:
    """This page's query string with ``param`` set to ``value`` (the next page's link)."""
    kept = [(key, item) for key, item in request.args.items(multi=True) if key != param]
    return "?" + urlencode([*kept, (param, value)])


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (never ``//elsewhere``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# -- logging in and out ---------------------------------------------------------------------


@blueprint.get("/login")
async def login_form() -> Any:
    """The login form."""
    return await render("login.html", next=_safe_next(request.args.get("next")), email="")


@blueprint.post("/login")
async def login_submit() -> Any:
    """Check the password, set the session cookie, go where the user was headed."""
    refuse_cross_site()
    form = await request.form
    email = form.get("email", "").strip()
    target = _safe_next(form.get("next"))
    runtime = current_runtime()
    try:
        created = await accounts.login(
            runtime.uow,
            runtime.clock,
            runtime.password_hasher,
            runtime.audit_key,
            email=email,
            password=form.get("password", ""),
            source_ip=request.remote_addr,
            user_agent=request.headers.get("User-Agent"),
            lifetime=runtime.settings.session_lifetime,
            idle=runtime.settings.session_idle,
        )
    except (AuthenticationFailed, TooManyRequests) as error:
        status = 429 if isinstance(error, TooManyRequests) else 401
        return await render("login.html", status, next=target, email=email, error=str(error))
    response = redirect(target)
    set_session_cookie(response, created.token)  # type: ignore[arg-type]
    return response


@blueprint.post("/logout")
@page()
async def logout() -> Any:
    """End the session (the form carries the CSRF token) and go to the login page."""
    current = current_page()
    form = await request.form
    if form.get("csrf_token") != current.csrf_token:
        raise CsrfRejected("the logout form's CSRF token is missing or wrong; reload the page")
    runtime = current_runtime()
    session = current.principal.session
    if session is not None:
        change = Change(
            uow_factory=runtime.uow,
            clock=runtime.clock,
            audit_key=runtime.audit_key,
            actor=current.principal.actor(request.remote_addr),
        )
        await accounts.logout(change, session)
    response = redirect("/login")
    clear_session_cookie(response)  # type: ignore[arg-type]
    return response


# -- pages ----------------------------------------------------------------------------------


@blueprint.get("/")
@page()
async def home() -> Any:
    """The overview of the first project the user can see (or a page saying there is none)."""
    visible = await accounts.visible_projects(current_runtime().uow, current_page().principal)
    if visible:
        return redirect(f"/projects/{quote(visible[0][0].slug)}/overview")
    return await render("no_projects.html")


@blueprint.get("/projects/<project>/tasks")
@page(Permission.READ_TASKS)
async def tasks_page(project: str) -> Any:
    """The task list: filters in the URL, keyset pages, live updates on the first page."""
    args = request.args
    error = None
    try:
        params = task_query_params(args)
        query = TaskQuery.from_params(params)
    except InvalidInput as invalid:
        error = str(invalid)
        params, query = {}, TaskQuery()
    access = current_page().access
    assert access is not None
    listed = await services.list_tasks(current_runtime().uow, access.project, query)
    filters = {key: value for key, value in params.items() if key not in ("cursor", "limit")}
    next_url = None
    if listed.next_cursor is not None:
        next_url = page_url("cursor", listed.next_cursor.encode())
    return await render(
        "tasks.html",
        400 if error else 200,
        project=access.project,
        tasks=[task_to_dict(task) for task in listed.items],
        filters=filters,
        states=STATES,
        selected_states=set(params.get("state", [])),
        first_page=query.cursor is None,
        next_url=next_url,
        error=error,
        can_bulk=current_page().can(Permission.BULK_ACTIONS),
    )


@blueprint.get("/projects/<project>/tasks/<path:task_id>")
@page(Permission.READ_TASKS)
async def task_page(project: str, task_id: str) -> Any:
    """One task: every field, payloads with redactions marked, traceback, timeline, actions."""
    current = current_page()
    assert current.access is not None
    task, events, retried_by = await services.get_task(
        current_runtime().uow, current.access.project, task_id
    )
    shown = task_to_dict(task)
    return await render(
        "task.html",
        project=current.access.project,
        task=shown,
        events=[event_to_dict(event) for event in events],
        retried_by=[task_to_dict(t) for t in retried_by],
        can_retry=current.can(Permission.RETRY),
        can_cancel=current.can(Permission.CANCEL),
        finished=task.state.is_terminal,
    )
