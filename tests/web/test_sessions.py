"""Browser sessions: login, the cookie, CSRF, expiry, logout, rate limiting, password change."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Final

import pytest
from quart.testing.connections import WebsocketResponseError
from quart.typing import TestClientProtocol as Client

from z4j_domain.audit import AuditQuery
from z4j_domain.testing import FakeClock
from z4j_web import accounts, auditing
from z4j_web.auth import CSRF_HEADER, SESSION_COOKIE

from .support import ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Seeded, bearer, runtime_of

pytestmark = pytest.mark.anyio

TASKS: Final = "/api/v1/projects/default/tasks"
REDACTION: Final = "/api/v1/projects/default/settings/redaction"
NEW_PASSWORD: Final = "an even longer new password"


async def login(
    client: Client, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD, **kw: Any
) -> Any:
    """POST the login form; return the response."""
    return await client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, **kw
    )


async def logged_in(client: Client) -> str:
    """Log in as the admin and return the session's CSRF token."""
    response = await login(client)
    assert response.status_code == 200, await response.get_json()
    token: str = (await response.get_json())["csrf_token"]
    return token


async def actions(backend: Backend, prefix: str) -> list[str]:
    """The audit log's actions starting with ``prefix``, oldest first."""
    page = await auditing.search(backend.uow_factory, AuditQuery(action=prefix, limit=500))
    return [entry.record.action for entry in reversed(page.items)]


async def test_login_sets_a_hardened_cookie_and_returns_the_csrf_token(
    client: Client, seeded: Seeded
) -> None:
    """The session cookie is HttpOnly and SameSite=Lax, and Secure when served over HTTPS."""
    plain = await login(client)
    body = await plain.get_json()
    assert body["user"]["email"] == ADMIN_EMAIL
    assert len(body["csrf_token"]) == 64
    cookie = plain.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=z4js_")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    assert plain.headers["Cache-Control"] == "no-store"
    secure = await login(client, scheme="https")
    assert "Secure" in secure.headers["Set-Cookie"]
    # The cookie's value is a secret: nothing of it is in the body.
    assert cookie.split(";")[0].split("=", 1)[1] not in str(body)


async def test_a_session_reads_without_csrf_but_changes_only_with_it(
    client: Client, seeded: Seeded
) -> None:
    """GET works with the cookie alone; PUT without or with a wrong CSRF token is 403."""
    csrf = await logged_in(client)
    assert (await client.get(TASKS)).status_code == 200
    body = {"extra_key_patterns": ["pin"]}
    missing = await client.put(REDACTION, json=body)
    assert missing.status_code == 403
    error = (await missing.get_json())["error"]
    assert error["code"] == "csrf_failed"
    assert CSRF_HEADER in error["message"]
    wrong = await client.put(REDACTION, json=body, headers={CSRF_HEADER: "0" * 64})
    assert wrong.status_code == 403
    right = await client.put(REDACTION, json=body, headers={CSRF_HEADER: csrf})
    assert right.status_code == 200
    # /me hands the same token to a page loaded later.
    me = await (await client.get("/api/v1/auth/me")).get_json()
    assert me["csrf_token"] == csrf
    assert me["auth"] == "session"


async def test_bearer_keys_never_need_csrf(client: Client, seeded: Seeded) -> None:
    """A state-changing request with a Bearer key needs no CSRF token, even with a cookie set."""
    await logged_in(client)
    response = await client.put(
        REDACTION, json={"extra_key_patterns": ["pin"]}, headers=bearer(seeded.key)
    )
    assert response.status_code == 200


async def test_sessions_end_when_idle_and_at_their_absolute_expiry(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """Two idle hours end a session; so do twelve hours of steady use."""
    await logged_in(client)
    clock.advance(timedelta(hours=2).total_seconds() - 1)
    assert (await client.get(TASKS)).status_code == 200
    clock.advance(timedelta(hours=2).total_seconds())
    ended = await client.get(TASKS)
    assert ended.status_code == 401
    assert "session has ended" in (await ended.get_json())["error"]["message"]

    await logged_in(client)
    for _ in range(11):
        clock.advance(3600)
        assert (await client.get(TASKS)).status_code == 200
    clock.advance(3600)
    assert (await client.get(TASKS)).status_code == 401


async def test_logout_ends_the_session_and_clears_the_cookie(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """After logout the old cookie no longer authenticates; logins and logout are audited."""
    csrf = await logged_in(client)
    cookie = client.cookie_jar  # type: ignore[attr-defined]
    old = next(c.value for c in cookie if c.name == SESSION_COOKIE)
    refused = await client.post("/api/v1/auth/logout")
    assert refused.status_code == 403  # logout is a change: it needs the token too
    response = await client.post("/api/v1/auth/logout", headers={CSRF_HEADER: csrf})
    assert response.status_code == 200
    assert f"{SESSION_COOKIE}=;" in response.headers["Set-Cookie"]
    replayed = await client.get(TASKS, headers={"Cookie": f"{SESSION_COOKIE}={old}"})
    assert replayed.status_code == 401
    assert await actions(backend, "auth.") == ["auth.login", "auth.logout"]


async def test_failed_logins_are_audited_then_rate_limited(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """Five wrong passwords in 15 minutes lock the account out (429), even for the right one."""
    for _ in range(accounts.MAX_FAILED_LOGINS_PER_EMAIL):
        wrong = await login(client, password="not the password at all")
        assert wrong.status_code == 401
        assert (await wrong.get_json())["error"]["message"] == "wrong email or password"
    limited = await login(client)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "900"
    assert (await limited.get_json())["error"]["code"] == "too_many_requests"
    # Refused attempts are not recorded: the lock-out cannot be extended for ever.
    assert await actions(backend, "auth.") == ["auth.login_failed"] * 5
    clock.advance(accounts.LOGIN_WINDOW.total_seconds() + 1)
    assert (await login(client)).status_code == 200


async def test_unknown_emails_fail_like_wrong_passwords(client: Client, seeded: Seeded) -> None:
    """An unknown or malformed email gets the same answer as a wrong password."""
    for email in ("ghost@example.com", "not an email", ""):
        response = await login(client, email=email)
        assert response.status_code == 401
        assert (await response.get_json())["error"]["message"] == "wrong email or password"
    malformed = await client.post("/api/v1/auth/login", json={"email": ADMIN_EMAIL})
    assert malformed.status_code == 400


async def test_login_rate_limit_per_address(
    client: Client, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many failures from one address, each for a different account, lock that address out."""
    monkeypatch.setattr(accounts, "MAX_FAILED_LOGINS_PER_IP", 3)
    for n in range(3):
        assert (await login(client, email=f"user{n}@example.com")).status_code == 401
    limited = await login(client)
    assert limited.status_code == 429
    assert "from " in (await limited.get_json())["error"]["message"]


async def test_password_change_ends_other_sessions(
    client: Client, test_app: Any, seeded: Seeded, backend: Backend
) -> None:
    """Changing the password needs the current one, keeps this session and ends the others."""
    csrf = await logged_in(client)
    other = test_app.test_client()
    await logged_in(other)
    wrong = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "nope", "new_password": NEW_PASSWORD},
        headers={CSRF_HEADER: csrf},
    )
    assert wrong.status_code == 403
    short = await client.post(
        "/api/v1/auth/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "short"},
        headers={CSRF_HEADER: csrf},
    )
    assert short.status_code == 400
    changed = await client.post(
        "/api/v1/auth/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": NEW_PASSWORD},
        headers={CSRF_HEADER: csrf},
    )
    assert changed.status_code == 200
    assert (await client.get(TASKS)).status_code == 200
    assert (await other.get(TASKS)).status_code == 401
    assert (await login(other)).status_code == 401
    assert (await login(other, password=NEW_PASSWORD)).status_code == 200
    assert "auth.password_changed" in await actions(backend, "auth.")


async def test_api_keys_are_listed_created_and_revoked_by_their_owner(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """A session creates a bound, capped key, sees it listed with last use, and revokes it."""
    csrf = await logged_in(client)
    created = await client.post(
        "/api/v1/auth/api-keys",
        json={"name": "grafana", "project": "default", "role": "viewer"},
        headers={CSRF_HEADER: csrf},
    )
    assert created.status_code == 201
    body = await created.get_json()
    key, key_id = body["key"], body["api_key"]["id"]
    assert body["api_key"]["project"] == "default"
    assert body["api_key"]["role"] == "viewer"
    assert (await client.get(TASKS, headers=bearer(key))).status_code == 200
    listed = await (await client.get("/api/v1/auth/api-keys")).get_json()
    shown = next(item for item in listed["items"] if item["id"] == key_id)
    assert shown["last_used_at"] == clock.now().isoformat(timespec="microseconds")
    assert key not in str(listed)
    revoked = await client.delete(f"/api/v1/auth/api-keys/{key_id}", headers={CSRF_HEADER: csrf})
    assert revoked.status_code == 200
    assert (await revoked.get_json())["active"] is False
    assert (await client.get(TASKS, headers=bearer(key))).status_code == 401
    # Another user's key id, or one that does not exist, is not found.
    missing = await client.delete("/api/v1/auth/api-keys/999999", headers={CSRF_HEADER: csrf})
    assert missing.status_code == 404


async def test_other_sites_cannot_log_a_browser_in(client: Client, seeded: Seeded) -> None:
    """A login posted from another origin's page is refused; the same origin and scripts pass."""
    foreign = await login(client, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert "Set-Cookie" not in foreign.headers
    sandboxed = await login(client, headers={"Origin": "null"})
    assert sandboxed.status_code == 403
    same = await login(client, headers={"Origin": "http://localhost"})
    assert same.status_code == 200
    # Browsers that say where a request comes from are believed first: a same-origin
    # form post from a no-referrer page carries Origin: null, and passes.
    no_referrer = await login(client, headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert no_referrer.status_code == 200
    for site in ("cross-site", "same-site"):
        refused = await login(
            client, headers={"Origin": "http://localhost", "Sec-Fetch-Site": site}
        )
        assert refused.status_code == 403, site


async def test_the_dashboard_socket_takes_the_session_cookie_from_its_own_origin(
    client: Client, seeded: Seeded, test_app: Any
) -> None:
    """A logged-in browser opens the live socket; a page of another origin cannot."""
    await logged_in(client)
    live = runtime_of(test_app).live
    async with client.websocket("/ws/dashboard?project=default") as ws:
        await ws.send("hello")
        for _ in range(500):
            if live.subscribers(seeded.project_id):
                break
            await asyncio.sleep(0.01)
        assert live.subscribers(seeded.project_id) == 1
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket(
            "/ws/dashboard?project=default", headers={"Origin": "https://evil.example"}
        ) as ws:
            await ws.receive()
    assert refused.value.response.status_code == 403
