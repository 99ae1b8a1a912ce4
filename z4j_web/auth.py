"""Who a request is, and what it may do: Bearer API keys, session cookies, CSRF, permissions.

A request authenticates with ``Authorization: Bearer <api key>`` (scripts;
never needs CSRF) or the ``z4j_session`` cookie a login set (browsers). A
state-changing request (anything but GET, HEAD, OPTIONS) made with a session
must carry the session's CSRF token in the ``X-CSRF-Token`` header; login
and ``GET /api/v1/auth/me`` return it. Project-scoped views declare the
:class:`~z4j_domain.rbac.Permission` they need with :func:`require`: a
project the caller cannot see answers 404, a role that may not do it 403.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit

from quart import Response, g, request

from z4j_domain.rbac import Permission
from z4j_web import accounts
from z4j_web.accounts import Access, Principal
from z4j_web.auditing import Actor, Change
from z4j_web.errors import AuthenticationFailed, CsrfRejected
from z4j_web.runtime import Runtime, current_runtime

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "clear_session_cookie",
    "current_access",
    "current_actor",
    "current_change",
    "current_principal",
    "is_cross_site",
    "refuse_cross_site",
    "require",
    "require_login",
    "set_session_cookie",
]

P = ParamSpec("P")
R = TypeVar("R")

SESSION_COOKIE: Final = "z4j_session"
CSRF_HEADER: Final = "X-CSRF-Token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_PRINCIPAL: Final = "z4j_principal"
_ACCESS: Final = "z4j_access"
_NO_CREDENTIALS: Final = "authentication required: log in, or send Authorization: Bearer <api key>"


def _bearer_key(header: str) -> str:
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationFailed(
            "unsupported Authorization header: send Authorization: Bearer <api key>",
            credentials_given=True,
        )
    return key.strip()


async def authenticate(runtime: Runtime, headers: Any, cookies: Any, method: str) -> Principal:
    """The principal of a request (or WebSocket handshake), or raise.

    Checks the CSRF token of a session's state-changing request.
    """
    header = headers.get("Authorization", "")
    if header:
        return await accounts.authenticate_key(runtime.uow, runtime.clock, _bearer_key(header))
    token = cookies.get(SESSION_COOKIE, "")
    if not token:
        raise AuthenticationFailed(_NO_CREDENTIALS)
    principal = await accounts.resolve_session(
        runtime.uow, runtime.clock, token, runtime.settings.session_idle
    )
    if method.upper() not in _SAFE_METHODS:
        expected = accounts.csrf_token(runtime.csrf_key, token)
        sent = headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
            raise CsrfRejected(
                f"missing or wrong CSRF token: a request made with a session must send the"
                f" {CSRF_HEADER} header that login and GET /api/v1/auth/me return"
            )
    return principal


async def _authenticated() -> Principal:
    principal = await authenticate(
        current_runtime(), request.headers, request.cookies, request.method
    )
    setattr(g, _PRINCIPAL, principal)
    return principal


def require_login(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Let the view run only for an authenticated request (any user)."""

    @functools.wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        await _authenticated()
        return await view(*args, **kwargs)

    return wrapper


def require(
    permission: Permission,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Let a view of ``/projects/<project>/...`` run only if the caller may do ``permission``."""

    def decorate(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(view)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = await _authenticated()
            runtime = current_runtime()
            async with runtime.uow() as uow:
                granted = await accounts.access(uow, principal, str(kwargs["project"]), permission)
            setattr(g, _ACCESS, granted)
            return await view(*args, **kwargs)

        return wrapper

    return decorate


def current_principal() -> Principal:
    """Who the current request acts as (inside a :func:`require_login`/:func:`require` view)."""
    principal: Any = getattr(g, _PRINCIPAL)
    assert isinstance(principal, Principal)
    return principal


def current_access() -> Access:
    """The project and grant of the current request (inside a :func:`require` view)."""
    granted: Any = getattr(g, _ACCESS)
    assert isinstance(granted, Access)
    return granted


def current_actor() -> Actor:
    """The audit log's actor for the current request."""
    return current_principal().actor(request.remote_addr)


def current_change() -> Change:
    """An audited change made by the current request's principal."""
    runtime = current_runtime()
    return Change(
        uow_factory=runtime.uow,
        clock=runtime.clock,
        audit_key=runtime.audit_key,
        actor=current_actor(),
    )


def is_cross_site(headers: Any, host: str) -> bool:
    """Whether a browser sent the request from a page of another origin.

    Browsers say so in ``Sec-Fetch-Site``; those that do not send ``Origin``
    on cross-origin requests (and on all POSTs and WebSocket handshakes).
    ``Sec-Fetch-Site`` comes first because a page with ``Referrer-Policy:
    no-referrer`` (every z4j page) makes the browser send ``Origin: null`` on
    its own same-origin form posts. Scripts usually send neither, which passes.
    """
    fetch_site = str(headers.get("Sec-Fetch-Site") or "").lower()
    if fetch_site:
        return fetch_site not in ("same-origin", "none")
    origin = str(headers.get("Origin") or "")
    if not origin or origin == "null":
        return bool(origin)
    return urlsplit(origin).netloc.lower() != host.lower()


def refuse_cross_site() -> None:
    """Refuse a cookie-setting or account-creating request from another site's page.

    Login and invitation acceptance need no session, so no CSRF token can
    protect them; a page elsewhere must still not log a browser into an
    account of the attacker's choosing.
    """
    if is_cross_site(request.headers, request.host):
        raise CsrfRejected("cross-site request refused: use this server's own pages")


def _secure() -> bool:
    configured = current_runtime().settings.cookie_secure
    return request.scheme == "https" if configured is None else configured


def set_session_cookie(response: Response, token: str) -> None:
    """Set the session cookie: HttpOnly, SameSite=Lax, Secure on HTTPS (or as configured)."""
    lifetime = current_runtime().settings.session_lifetime
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path="/",
        secure=_secure(),
        httponly=True,
        samesite="Lax",
    )


def clear_session_cookie(response: Response) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(), httponly=True, samesite="Lax"
    )
