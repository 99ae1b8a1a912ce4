"""First boot: bootstrap, the setup token, and the setup page that creates the first admin."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.errors import InvalidInput, NotFound
from z4j_domain.projects import DEFAULT_PROJECT_SLUG
from z4j_domain.testing import FakeClock, PlainPasswordHasher
from z4j_domain.users import hash_secret
from z4j_web import accounts, services
from z4j_web.errors import SetupAlreadyDone, SetupTokenInvalid

from .support import ADMIN_EMAIL, ADMIN_PASSWORD, AUDIT_KEY, Backend, change

pytestmark = pytest.mark.anyio

HASHER = PlainPasswordHasher()


async def issue_token(backend: Backend, clock: FakeClock) -> str:
    """Run first-boot bootstrap without admin settings and return the setup token."""
    result = await services.bootstrap(backend.uow_factory, clock, HASHER, audit_key=AUDIT_KEY)
    assert result.setup_token is not None
    return result.setup_token


def form(token: str, **overrides: str) -> dict[str, str]:
    """A filled-in setup form."""
    return {
        "token": token,
        "email": ADMIN_EMAIL,
        "password": ADMIN_PASSWORD,
        "confirm": ADMIN_PASSWORD,
        **overrides,
    }


async def users(backend: Backend) -> int:
    """How many users exist."""
    async with backend.uow_factory() as uow:
        return await uow.users.count()


# -- bootstrap ------------------------------------------------------------------------


async def test_bootstrap_issues_a_token_and_stores_only_its_hash(
    backend: Backend, clock: FakeClock
) -> None:
    """Without admin settings, first boot stores the token's hash and expiry, not the token."""
    result = await services.bootstrap(backend.uow_factory, clock, HASHER, audit_key=AUDIT_KEY)
    assert result.setup_token
    assert result.expires_at == clock.now() + timedelta(hours=1)
    async with backend.uow_factory() as uow:
        stored = await uow.settings.get(services.SETUP_TOKEN_KEY)
        assert await uow.users.count() == 0
    assert stored["hash"] == hash_secret(result.setup_token)
    assert result.setup_token not in str(stored)


async def test_each_boot_replaces_the_token(backend: Backend, clock: FakeClock) -> None:
    """A new boot's token works and the previous one no longer does."""
    old = await issue_token(backend, clock)
    new = await issue_token(backend, clock)
    assert old != new
    await services.verify_setup_token(backend.uow_factory, clock, new)
    with pytest.raises(SetupTokenInvalid):
        await services.verify_setup_token(backend.uow_factory, clock, old)


async def test_bootstrap_with_admin_settings_creates_admin_and_project(
    backend: Backend, clock: FakeClock
) -> None:
    """With the bootstrap-admin settings, first boot creates the admin and the default project."""
    result = await services.bootstrap(
        backend.uow_factory,
        clock,
        HASHER,
        audit_key=AUDIT_KEY,
        admin_email="Root@Example.COM",
        admin_password="x" * 12,
    )
    assert result.admin is not None
    assert result.setup_token is None
    async with backend.uow_factory() as uow:
        admin = await uow.users.get_by_email("root@example.com")
        project = await uow.projects.get_by_slug(DEFAULT_PROJECT_SLUG)
    assert admin is not None
    assert admin.is_admin
    assert admin.password_hash is not None
    assert HASHER.verify(admin.password_hash, "x" * 12)
    assert project is not None


async def test_bootstrap_does_nothing_once_a_user_exists(
    backend: Backend, clock: FakeClock
) -> None:
    """Later boots neither issue tokens nor create users."""
    await services.bootstrap(
        backend.uow_factory,
        clock,
        HASHER,
        audit_key=AUDIT_KEY,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
    )
    again = await services.bootstrap(backend.uow_factory, clock, HASHER, audit_key=AUDIT_KEY)
    assert again.already_set_up
    other = await services.bootstrap(
        backend.uow_factory,
        clock,
        HASHER,
        audit_key=AUDIT_KEY,
        admin_email="b@example.com",
        admin_password="y" * 12,
    )
    assert other.already_set_up
    assert await users(backend) == 1


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("a@example.com", "short", "the password must be at least 12 characters long"),
        ("not-an-email", "x" * 12, "invalid email address 'not-an-email'"),
        ("a@example.com", None, "set both the bootstrap admin email and password"),
    ],
)
async def test_bootstrap_refuses_bad_admin_settings(
    backend: Backend, clock: FakeClock, email: str, password: str | None, message: str
) -> None:
    """A short password, a bad email or half the settings are refused, creating nothing."""
    with pytest.raises(InvalidInput, match=message):
        await services.bootstrap(
            backend.uow_factory,
            clock,
            HASHER,
            audit_key=AUDIT_KEY,
            admin_email=email,
            admin_password=password,
        )
    assert await users(backend) == 0


# -- the setup page -------------------------------------------------------------------


async def test_setup_page_shows_the_form(
    client: Client, backend: Backend, clock: FakeClock
) -> None:
    """A valid token shows a self-contained form carrying the token, kept out of caches."""
    token = await issue_token(backend, clock)
    response = await client.get(f"/setup?token={token}")
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert f'name="token" value="{token}"' in html
    for field in ("email", "password", "confirm"):
        assert f'name="{field}"' in html
    assert "http://" not in html
    assert "https://" not in html
    assert "<style>" in html
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("query", ["", "?token=", "?token=wrong", "?token=%3Cscript%3E"])
async def test_setup_page_refuses_a_wrong_token(
    client: Client, backend: Backend, clock: FakeClock, query: str
) -> None:
    """A missing or wrong token is a clear 403 page, with nothing reflected unescaped."""
    await issue_token(backend, clock)
    response = await client.get(f"/setup{query}")
    assert response.status_code == 403
    html = await response.get_data(as_text=True)
    assert "invalid or was already used" in html
    assert "<script>" not in html


async def test_setup_page_refuses_an_expired_token(
    client: Client, backend: Backend, clock: FakeClock
) -> None:
    """After an hour the link is gone (410) and says how to get a new one."""
    token = await issue_token(backend, clock)
    clock.advance(3599)
    assert (await client.get(f"/setup?token={token}")).status_code == 200
    clock.advance(1)
    response = await client.get(f"/setup?token={token}")
    assert response.status_code == 410
    assert "z4j serve" in await response.get_data(as_text=True)
    post = await client.post("/setup", form=form(token))
    assert post.status_code == 410
    assert await users(backend) == 0


async def test_setup_creates_the_admin_once(
    client: Client, backend: Backend, clock: FakeClock
) -> None:
    """Posting the form creates the admin and the default project; the token is then used up."""
    token = await issue_token(backend, clock)
    response = await client.post("/setup", form=form(token, email=" Admin@Example.com "))
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert "z4j api-key create --email admin@example.com" in html

    async with backend.uow_factory() as uow:
        admin = await uow.users.get_by_email(ADMIN_EMAIL)
        project = await uow.projects.get_by_slug(DEFAULT_PROJECT_SLUG)
        assert await uow.settings.get(services.SETUP_TOKEN_KEY) is None
    assert admin is not None
    assert admin.is_admin
    assert admin.password_hash is not None
    assert HASHER.verify(admin.password_hash, ADMIN_PASSWORD)
    assert project is not None

    again = await client.post("/setup", form=form(token, email="second@example.com"))
    assert again.status_code == 410
    assert "already complete" in await again.get_data(as_text=True)
    assert (await client.get(f"/setup?token={token}")).status_code == 410
    assert await users(backend) == 1


async def test_a_second_use_of_the_token_fails_even_before_the_page_knows(
    backend: Backend, clock: FakeClock
) -> None:
    """The service itself refuses a token that was used, whatever the page showed."""
    token = await issue_token(backend, clock)
    await services.complete_setup(
        backend.uow_factory,
        clock,
        HASHER,
        token=token,
        email=ADMIN_EMAIL,
        password=ADMIN_PASSWORD,
        audit_key=AUDIT_KEY,
    )
    with pytest.raises((SetupAlreadyDone, SetupTokenInvalid)):
        await services.complete_setup(
            backend.uow_factory,
            clock,
            HASHER,
            token=token,
            email="other@example.com",
            password=ADMIN_PASSWORD,
            audit_key=AUDIT_KEY,
        )
    assert await users(backend) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"password": "short", "confirm": "short"}, "at least 12 characters"),
        ({"password": "x" * 11, "confirm": "x" * 11}, "at least 12 characters"),
        ({"confirm": "something else entirely"}, "the passwords do not match"),
        ({"email": "no-at-sign"}, "invalid email address"),
        ({"email": ""}, "invalid email address"),
        ({"email": "a\x00@example.com"}, "invalid email address"),
    ],
)
async def test_setup_form_errors_show_the_form_again(
    client: Client,
    backend: Backend,
    clock: FakeClock,
    overrides: dict[str, str],
    message: str,
) -> None:
    """Bad input re-shows the form (400) with the reason, and the token stays valid."""
    token = await issue_token(backend, clock)
    response = await client.post("/setup", form=form(token, **overrides))
    assert response.status_code == 400
    html = await response.get_data(as_text=True)
    assert message.lower() in html.lower()
    assert f'value="{token}"' in html
    assert await users(backend) == 0
    assert (await client.post("/setup", form=form(token))).status_code == 200


async def test_setup_form_escapes_what_it_echoes(
    client: Client, backend: Backend, clock: FakeClock
) -> None:
    """The email echoed back into the form is HTML-escaped."""
    token = await issue_token(backend, clock)
    response = await client.post(
        "/setup", form=form(token, email='"><script>alert(1)</script>', confirm="x")
    )
    html = await response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize("token", ["wrong", ""])
async def test_setup_post_with_a_wrong_token_is_403(
    client: Client, backend: Backend, clock: FakeClock, token: str
) -> None:
    """Posting with a wrong token creates nothing."""
    await issue_token(backend, clock)
    response = await client.post("/setup", form=form(token))
    assert response.status_code == 403
    assert await users(backend) == 0


async def test_setup_post_without_fields_is_not_a_crash(
    client: Client, backend: Backend, clock: FakeClock
) -> None:
    """An empty or non-form body is answered 403 (no token), not 500."""
    await issue_token(backend, clock)
    assert (await client.post("/setup")).status_code == 403
    assert (await client.post("/setup", json={"token": "x"})).status_code == 403


async def test_setup_without_pending_token_is_403(client: Client) -> None:
    """Before bootstrap (or on a fresh store) there is nothing to set up with."""
    assert (await client.get("/setup?token=anything")).status_code == 403


# -- API keys -------------------------------------------------------------------------


async def test_api_keys_are_returned_once_and_stored_hashed(
    backend: Backend, clock: FakeClock, test_app: Any
) -> None:
    """A key starts with z4j_, is stored as its hash with a short prefix, and authenticates."""
    await services.bootstrap(
        backend.uow_factory,
        clock,
        HASHER,
        audit_key=AUDIT_KEY,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
    )
    created = await accounts.create_api_key(
        change(backend.uow_factory, clock), email="ADMIN@example.com", name=" ci "
    )
    assert created.key.startswith("z4j_")
    assert len(created.key) > 40
    assert created.api_key.key_hash == hash_secret(created.key)
    assert created.api_key.name == "ci"
    assert created.key.startswith(created.api_key.prefix)
    assert len(created.api_key.prefix) < 16
    assert created.key not in repr(created)
    principal = await accounts.authenticate_key(backend.uow_factory, clock, created.key)
    assert principal.user.email == ADMIN_EMAIL


@pytest.mark.parametrize(
    ("email", "name", "error", "message"),
    [
        ("nobody@example.com", "ci", NotFound, "no user with email 'nobody@example.com'"),
        ("bad", "ci", InvalidInput, "invalid email address"),
        (ADMIN_EMAIL, "  ", InvalidInput, "needs a name"),
        (ADMIN_EMAIL, "n" * 101, InvalidInput, "at most 100 characters"),
        (ADMIN_EMAIL, "a\x00b", InvalidInput, "printable"),
        ("a\x00@example.com", "ci", InvalidInput, "invalid email address"),
    ],
)
async def test_api_key_creation_refuses_bad_input(
    backend: Backend,
    clock: FakeClock,
    email: str,
    name: str,
    error: type[Exception],
    message: str,
) -> None:
    """Unknown users and bad names are refused with a clear message."""
    await services.bootstrap(
        backend.uow_factory,
        clock,
        HASHER,
        audit_key=AUDIT_KEY,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
    )
    with pytest.raises(error, match=message):
        await accounts.create_api_key(change(backend.uow_factory, clock), email=email, name=name)


async def test_concurrent_uses_of_the_token_create_one_admin(
    backend: Backend, clock: FakeClock
) -> None:
    """Two simultaneous setups with one token: one admin, and the other use fails cleanly."""
    token = await issue_token(backend, clock)

    async def attempt(email: str) -> object:
        try:
            return await services.complete_setup(
                backend.uow_factory,
                clock,
                HASHER,
                token=token,
                email=email,
                password=ADMIN_PASSWORD,
                audit_key=AUDIT_KEY,
            )
        except Exception as error:  # collected and checked below
            return error

    results = await asyncio.gather(attempt("one@example.com"), attempt("two@example.com"))
    admins = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(admins) == 1
    assert len(errors) == 1
    assert isinstance(errors[0], (SetupAlreadyDone, SetupTokenInvalid))
    assert await users(backend) == 1
