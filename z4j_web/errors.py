"""The web shell's errors, and the one place where any error becomes an HTTP response.

Domain errors (:class:`~z4j_domain.errors.InvalidInput`, ``NotFound``,
``Conflict``) and the shell's own (authentication, the setup token) map to a
status code here and nowhere else. Under ``/api/`` every error is JSON of the
form ``{"error": {"code": ..., "message": ...}}``; elsewhere it is a small
HTML page. Anything unexpected is logged with its traceback and answered with
a 500 that reveals nothing about the cause.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from quart import Quart, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from z4j_domain.errors import Conflict, InvalidInput, NotFound, Z4jError
from z4j_infra.errors import StorageError

__all__ = [
    "AuthenticationFailed",
    "CsrfRejected",
    "PermissionDenied",
    "SetupAlreadyDone",
    "SetupTokenExpired",
    "SetupTokenInvalid",
    "TooManyRequests",
    "error_code",
    "error_status",
    "register_error_handlers",
]

_log = logging.getLogger("z4j.web")

API_PREFIX: Final = "/api/"


class AuthenticationFailed(Z4jError):
    """The request carries no credentials, or credentials that do not authenticate."""

    def __init__(self, message: str, *, credentials_given: bool = False) -> None:
        super().__init__(message)
        #: Whether the client sent a key (then the challenge says ``invalid_token``).
        self.credentials_given = credentials_given


class PermissionDenied(Z4jError):
    """The caller is authenticated but may not do this."""


class CsrfRejected(PermissionDenied):
    """A state-changing request made with a session lacks the session's CSRF token."""


class TooManyRequests(Z4jError):
    """The caller made too many attempts (failed logins); it may retry after a while."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        #: Seconds until an attempt may succeed again (the ``Retry-After`` header).
        self.retry_after = retry_after


class SetupTokenInvalid(Z4jError):
    """The setup token is missing, wrong, or was already used."""


class SetupTokenExpired(Z4jError):
    """The setup token was right but is past its expiry."""


class SetupAlreadyDone(Z4jError):
    """The first admin exists, so there is nothing left to set up."""


# Ordered most specific first: the first matching class decides.
_STATUS: Final[tuple[tuple[type[Z4jError], int, str], ...]] = (
    (InvalidInput, 400, "invalid_input"),
    (AuthenticationFailed, 401, "unauthorized"),
    (CsrfRejected, 403, "csrf_failed"),
    (PermissionDenied, 403, "forbidden"),
    (SetupTokenInvalid, 403, "setup_token_invalid"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (SetupTokenExpired, 410, "setup_token_expired"),
    (SetupAlreadyDone, 410, "setup_already_done"),
    (TooManyRequests, 429, "too_many_requests"),
    (StorageError, 503, "storage_unavailable"),
)


def error_status(error: Z4jError) -> int:
    """The HTTP status code that answers ``error``."""
    return _lookup(error)[0]


def error_code(error: Z4jError) -> str:
    """The machine-readable ``error.code`` of ``error`` in API responses."""
    return _lookup(error)[1]


def _lookup(error: Z4jError) -> tuple[int, str]:
    for cls, status, code in _STATUS:
        if isinstance(error, cls):
            return status, code
    # A Z4jError the table does not know is still something z4j raised on purpose
    # (e.g. an infra error surfacing through a service): the server's fault, not
    # the client's.
    return 500, "internal_error"


def _http_code(error: HTTPException) -> str:
    name = error.name or "error"
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _is_api_request() -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def _json_error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


async def _html_error(status: int, title: str, message: str) -> Response:
    body = await render_template("error.html", status=status, title=title, message=message)
    return Response(body, status=status, content_type="text/html; charset=utf-8")


async def _handle_domain_error(error: Z4jError) -> Any:
    status, code = _lookup(error)
    if isinstance(error, StorageError):
        # The driver's message may name hosts and users: log it, do not send it.
        _log.error("storage failed answering %s %s", request.method, request.path, exc_info=error)
        message = "the database is unavailable; try again shortly"
        if _is_api_request():
            return _json_error(status, code, message)
        return await _html_error(status, "Service unavailable", message)
    if status >= 500:
        _log.error("unexpected error answering %s %s", request.method, request.path, exc_info=error)
        return await _internal_error()
    message = str(error) or code.replace("_", " ")
    if _is_api_request():
        response = _json_error(status, code, message)
    else:
        response = await _html_error(status, _TITLES.get(code, "Error"), message)
    if isinstance(error, AuthenticationFailed):
        challenge = 'Bearer realm="z4j"'
        if error.credentials_given:
            challenge += ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = challenge
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


async def _handle_http_exception(error: HTTPException) -> Any:
    status = error.code or 500
    if not _is_api_request():
        if status >= 500:
            return await _internal_error()
        return error
    if status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        message = f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    else:
        message = error.description or _http_code(error).replace("_", " ")
    response = _json_error(status, _http_code(error), message)
    # Keep the headers werkzeug computed (``Allow`` on a 405, for instance).
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


async def _handle_unexpected(error: Exception) -> Any:
    _log.error("unexpected error answering %s %s", request.method, request.path, exc_info=error)
    return await _internal_error()


async def _internal_error() -> Response:
    message = "internal server error; the server log has the details"
    if _is_api_request():
        return _json_error(500, "internal_error", message)
    return await _html_error(500, "Internal server error", message)


_TITLES: Final = {
    "invalid_input": "Invalid input",
    "unauthorized": "Not signed in",
    "forbidden": "Forbidden",
    "csrf_failed": "Forbidden",
    "too_many_requests": "Too many attempts",
    "setup_token_invalid": "Invalid setup link",
    "not_found": "Not found",
    "conflict": "Conflict",
    "setup_token_expired": "Setup link expired",
    "setup_already_done": "Setup is already complete",
}


def register_error_handlers(app: Quart) -> None:
    """Install the handlers that turn every error raised in a request into a response."""
    app.register_error_handler(Z4jError, _handle_domain_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    # Quart looks handlers up along the exception's MRO, so the two above win for
    # their classes and this one only sees what nobody expected.
    app.register_error_handler(Exception, _handle_unexpected)
