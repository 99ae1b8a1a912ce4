"""Bearer API-key authentication for the API's routes."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar

from quart import g, request

from z4j_web import services
from z4j_web.errors import AuthenticationFailed
from z4j_web.runtime import current_runtime

__all__ = ["current_principal", "require_api_key"]

P = ParamSpec("P")
R = TypeVar("R")

_PRINCIPAL: Final = "z4j_principal"


def _bearer_key() -> str:
    header = request.headers.get("Authorization", "")
    if not header:
        raise AuthenticationFailed("authentication required: send Authorization: Bearer <api key>")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationFailed(
            "unsupported Authorization header: send Authorization: Bearer <api key>",
            credentials_given=True,
        )
    return key.strip()


def require_api_key(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Let the view run only for a request with a valid, unrevoked API key."""

    @functools.wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        runtime = current_runtime()
        principal = await services.authenticate(runtime.uow, runtime.clock, _bearer_key())
        setattr(g, _PRINCIPAL, principal)
        return await view(*args, **kwargs)

    return wrapper


def current_principal() -> services.Principal:
    """Who the current request acts as (only inside a :func:`require_api_key` view)."""
    principal: Any = getattr(g, _PRINCIPAL)
    assert isinstance(principal, services.Principal)
    return principal
