"""The one place errors become responses: unexpected failures, oversized bodies, HTML pages."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from quart import Quart, request

from z4j_domain.errors import Conflict
from z4j_infra.errors import StorageError
from z4j_web.app import MAX_REQUEST_BYTES
from z4j_web.errors import error_code, error_status

pytestmark = pytest.mark.anyio


@pytest.fixture
def app(app: Quart) -> Quart:
    """The app plus routes that fail on purpose (only these tests add them)."""

    @app.get("/api/v1/_test/crash")
    async def crash() -> Any:
        raise RuntimeError("secret detail that must not leak")

    @app.get("/_test/crash")
    async def crash_page() -> Any:
        raise RuntimeError("secret detail that must not leak")

    @app.get("/api/v1/_test/conflict")
    async def conflict() -> Any:
        raise Conflict("that slug is taken")

    @app.get("/api/v1/_test/storage")
    async def storage() -> Any:
        raise StorageError("cannot reach postgres at db.internal:5432 as admin")

    @app.post("/api/v1/_test/echo")
    async def echo() -> Any:
        return {"size": len(await request.get_data())}

    return app


@pytest.fixture(params=["memory"])
def backend(request: pytest.FixtureRequest) -> Any:
    """These tests are about the web layer only: the in-memory store is enough."""
    from z4j_domain.testing import InMemoryStore

    from .support import Backend

    store = InMemoryStore()
    return Backend(name="memory", uow_factory=store, store=store)


async def test_an_unexpected_exception_is_a_logged_json_500(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug answers 500 JSON without details and logs the traceback."""
    with caplog.at_level(logging.ERROR, logger="z4j.web"):
        response = await client.get("/api/v1/_test/crash")
    assert response.status_code == 500
    body = await response.get_json()
    assert body["error"]["code"] == "internal_error"
    assert "secret detail" not in str(body)
    [record] = [r for r in caplog.records if r.name == "z4j.web"]
    assert record.exc_info is not None
    assert "secret detail" in record.getMessage() + str(record.exc_info[1])


async def test_an_unexpected_exception_on_a_page_is_an_html_500(client: Any) -> None:
    """Outside the API the 500 is a page, still without details."""
    response = await client.get("/_test/crash")
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    assert "secret detail" not in await response.get_data(as_text=True)


async def test_conflict_is_409(client: Any) -> None:
    """Conflict maps to 409 with its message."""
    response = await client.get("/api/v1/_test/conflict")
    assert response.status_code == 409
    assert await response.get_json() == {
        "error": {"code": "conflict", "message": "that slug is taken"}
    }


async def test_storage_failure_is_503_without_the_driver_message(client: Any) -> None:
    """A database outage is 503 and the client does not learn hosts or users."""
    response = await client.get("/api/v1/_test/storage")
    assert response.status_code == 503
    body = await response.get_json()
    assert body["error"]["code"] == "storage_unavailable"
    assert "db.internal" not in body["error"]["message"]


async def test_an_oversized_body_is_json_413(client: Any) -> None:
    """Bodies over the limit are refused with 413 JSON; bodies under it are read."""
    small = await client.post("/api/v1/_test/echo", data=b"x" * 1000)
    assert (await small.get_json()) == {"size": 1000}
    response = await client.post("/api/v1/_test/echo", data=b"x" * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 413
    assert (await response.get_json())["error"]["code"] == "request_entity_too_large"


async def test_an_oversized_setup_form_is_413(client: Any) -> None:
    """The setup form has the same limit (and is not a crash)."""
    response = await client.post(
        "/setup", form={"token": "x", "email": "a@b.c", "password": "p" * (MAX_REQUEST_BYTES + 1)}
    )
    assert response.status_code == 413


async def test_unknown_page_is_a_plain_404(client: Any) -> None:
    """Outside /api/ an unknown path is an ordinary 404 page, not JSON."""
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


async def test_pages_carry_security_headers(client: Any) -> None:
    """HTML answers forbid framing and third-party content; all answers forbid sniffing."""
    page = await client.get("/setup?token=x")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    api = await client.get("/api/v1/health")
    assert api.headers["X-Content-Type-Options"] == "nosniff"


def test_the_status_table_falls_back_to_500() -> None:
    """A z4j error the table does not know is the server's fault, not the client's."""
    from z4j_domain.errors import Z4jError

    assert error_status(Z4jError("?")) == 500
    assert error_code(Z4jError("?")) == "internal_error"
