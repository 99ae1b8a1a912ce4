"""The dashboard's account and project settings pages, as served HTML (their script is tested
in Chromium).

The password change, the API keys and the redaction settings are changed
through the JSON API, tested on its own; here what each page shows, to whom.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.rbac import Role
from z4j_domain.reconciliation import ReconcilePolicy
from z4j_domain.redaction import DEFAULT_POLICY
from z4j_domain.testing import FakeClock
from z4j_infra.settings import RECONCILE_VARIABLES, Settings, load_settings
from z4j_web.pages_account import RECONCILER_WINDOWS
from z4j_web.runtime import EXTENSION_KEY

from .support import SECRET, Backend, Seeded, bearer
from .test_access import PASSWORD, add_user
from .test_dashboard import log_in, text
from .test_pages_admin import csrf_token

pytestmark = pytest.mark.anyio

ACCOUNT: Final = "/account"
SETTINGS: Final = "/projects/default/settings"
REDACTION_API: Final = "/api/v1/projects/default/settings/redaction"
KEYS_API: Final = "/api/v1/auth/api-keys"
#: The instance's reconciler windows in these tests: none of them the default.
POLICY: Final = ReconcilePolicy(
    heartbeat_interval=timedelta(seconds=5),
    heartbeat_window=timedelta(seconds=17.5),
    reconcile_interval=timedelta(seconds=15),
    probe_timeout=timedelta(seconds=45),
    report_grace=timedelta(seconds=40),
    probe_unassigned_after=timedelta(minutes=10),
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The web tests' settings, with :data:`POLICY` as the reconciler's windows."""
    return attrs.evolve(settings, reconcile=POLICY)


def key_row(html: str, key_id: int) -> str:
    """The API key table's row of the key ``key_id``."""
    found = re.search(rf'<tr data-key="{key_id}">(.*?)</tr>', html, re.DOTALL)
    assert found is not None, f"no row for API key {key_id}"
    return found.group(1)


def window_row(html: str, name: str) -> str:
    """The reconciler table's row of the window ``name``."""
    found = re.search(rf'<tr data-window="{name}">(.*?)</tr>', html, re.DOTALL)
    assert found is not None, f"no row for window {name!r}"
    return found.group(1)


def textarea(html: str, name: str) -> tuple[str, str]:
    """The attributes and the text of the textarea ``name``."""
    found = re.search(rf'<textarea ([^>]*name="{name}"[^>]*)>(.*?)</textarea>', html, re.DOTALL)
    assert found is not None, f"no textarea {name!r}"
    return found.group(1), found.group(2)


async def test_the_account_page_lists_the_users_keys_without_their_secrets(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """Active and revoked keys with prefix, binding and cap; revoke only for active ones; the
    forms for the password and a new key; another user's keys are not listed."""
    created = await client.post(
        KEYS_API,
        headers=bearer(seeded.key),
        json={"name": "ci reader", "project": "default", "role": "viewer"},
    )
    assert created.status_code == 201
    bound: dict[str, Any] = await created.get_json()
    old = await client.post(KEYS_API, headers=bearer(seeded.key), json={"name": "old laptop"})
    old_id = (await old.get_json())["api_key"]["id"]
    assert (
        await client.delete(f"{KEYS_API}/{old_id}", headers=bearer(seeded.key))
    ).status_code == 200
    await add_user(backend, clock, "other@example.com", Role.VIEWER)  # gets a key "tests" too

    await log_in(client)
    response = await client.get(ACCOUNT)
    assert response.status_code == 200
    html = await text(response)
    assert response.headers["Cache-Control"] == "no-store"
    assert 'href="/account" aria-current="page"' in html
    assert "data-password-form" in html
    assert 'name="new_password" type="password" required minlength="12"' in html
    assert "data-key-form" in html
    assert '<option value="default">default</option>' in html
    # The navigation leads back to the first project, with the links the user's role allows.
    assert 'href="/projects/default/tasks"' in html
    assert 'href="/projects/default/members"' in html

    first = key_row(html, seeded.key_id)
    assert "<strong>tests</strong>" in first
    assert f"<code>{seeded.key[:10]}…</code>" in first
    assert "<td>all</td>" in first
    assert "<td>none</td>" in first
    assert "active" in first
    assert f'data-revoke-key="{seeded.key_id}"' in first
    ci = key_row(html, bound["api_key"]["id"])
    assert "ci reader" in ci
    assert "<td>default</td>" in ci
    assert "<td>viewer</td>" in ci
    revoked = key_row(html, old_id)
    assert "revoked" in revoked
    assert "data-revoke-key" not in revoked  # nothing left to revoke
    assert len(re.findall(r"<tr data-key=", html)) == 3  # the other user's key is not here
    assert seeded.key not in html
    assert bound["key"] not in html  # a key is shown once, by its creation, never again


async def test_a_user_without_projects_has_an_account_page_without_project_navigation(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    await add_user(backend, clock, "nobody@example.com", None)
    await log_in(client, "nobody@example.com", PASSWORD)
    response = await client.get(ACCOUNT)
    assert response.status_code == 200
    html = await text(response)
    assert '<nav aria-label="Project">' not in html
    assert '<option value="default">' not in html
    assert "<strong>tests</strong>" in html  # add_user gave them a key


async def test_the_account_pages_token_lets_its_script_call_the_api_with_the_session(
    client: Client, seeded: Seeded
) -> None:
    """What the forms do: create and revoke a key, change the password, with the page's token."""
    await log_in(client)
    token = {"X-CSRF-Token": csrf_token(await text(await client.get(ACCOUNT)))}
    created = await client.post(KEYS_API, json={"name": "from the page"}, headers=token)
    assert created.status_code == 201
    key_id = (await created.get_json())["api_key"]["id"]
    assert "from the page" in key_row(await text(await client.get(ACCOUNT)), key_id)
    assert (await client.delete(f"{KEYS_API}/{key_id}", headers=token)).status_code == 200
    assert "revoked" in key_row(await text(await client.get(ACCOUNT)), key_id)
    changed = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "wrong password!", "new_password": PASSWORD},
        headers=token,
    )
    assert changed.status_code == 403
    assert (await changed.get_json())["error"]["message"] == "the current password is wrong"


async def test_an_admin_may_edit_the_projects_redaction_settings(
    client: Client, seeded: Seeded
) -> None:
    """Stored patterns in editable textareas, a save button, the defaults always shown."""
    stored = {
        "extra_key_patterns": ["card pin", "re:^x-internal-"],
        "extra_value_patterns": ["acct-[0-9]{8}"],
        "fully_redacted_tasks": ["app.charge"],
    }
    assert (
        await client.put(REDACTION_API, headers=bearer(seeded.key), json=stored)
    ).status_code == 200
    await log_in(client)
    response = await client.get(SETTINGS)
    assert response.status_code == 200
    html = await text(response)
    assert 'aria-current="page">Settings</a>' in html
    assert 'data-redaction-form data-project="default"' in html
    attributes, value = textarea(html, "extra_key_patterns")
    assert "readonly" not in attributes
    assert value == "card pin\nre:^x-internal-"
    assert textarea(html, "extra_value_patterns")[1] == "acct-[0-9]{8}"
    assert textarea(html, "fully_redacted_tasks")[1] == "app.charge"
    assert "Save redaction settings</button>" in html
    assert "data-no-change" not in html
    for word in (*DEFAULT_POLICY.key_fragments, *DEFAULT_POLICY.key_words):
        assert f"<code>{word}</code>" in html
    assert f"The {len(DEFAULT_POLICY.value_patterns)} built-in value patterns" in html


@pytest.mark.parametrize("role", [Role.VIEWER, Role.AUDITOR, Role.OPERATOR])
async def test_a_member_without_settings_change_reads_the_settings_read_only(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock, role: Role
) -> None:
    """The patterns in read-only textareas, no save button, and the reason in words."""
    stored = {"extra_key_patterns": ["card pin"]}
    assert (
        await client.put(REDACTION_API, headers=bearer(seeded.key), json=stored)
    ).status_code == 200
    await add_user(backend, clock, "member@example.com", role)
    await log_in(client, "member@example.com", PASSWORD)
    response = await client.get(SETTINGS)
    assert response.status_code == 200
    html = await text(response)
    for name in ("extra_key_patterns", "extra_value_patterns", "fully_redacted_tasks"):
        assert "readonly" in textarea(html, name)[0]
    assert textarea(html, "extra_key_patterns")[1] == "card pin"
    assert "Save redaction settings" not in html
    assert "your role in this project cannot change settings (admin can)" in html
    assert 'href="/projects/default/members"' not in html


async def test_the_settings_page_shows_the_instances_reconciler_windows_and_their_variables(
    client: Client, seeded: Seeded
) -> None:
    await log_in(client)
    html = await text(await client.get(SETTINGS))
    assert "<strong>instance-wide</strong>" in html
    assert "environment variables" in html
    expected = {
        "heartbeat_interval": ("5 s", "Z4J_HEARTBEAT_INTERVAL"),
        "heartbeat_window": ("17.5 s", "Z4J_HEARTBEAT_WINDOW"),
        "reconcile_interval": ("15 s", "Z4J_RECONCILE_INTERVAL"),
        "probe_timeout": ("45 s", "Z4J_PROBE_TIMEOUT"),
        "report_grace": ("40 s", None),
        "unstarted_grace": ("0 s", None),
        "probe_unassigned_after": ("600 s", None),
    }
    for name, (value, variable) in expected.items():
        row = window_row(html, name)
        assert f'<td class="count" data-value>{value}</td>' in row
        if variable is None:
            assert "none (built in)" in row
        else:
            assert f"<code>{variable}</code>" in row


async def test_an_unset_optional_window_shows_as_off(
    client: Client, seeded: Seeded, app: Any
) -> None:
    """With the default policy: ``probe_unassigned_after`` is unset, the window 3 x 2 s + 2 s."""
    runtime = app.extensions[EXTENSION_KEY]
    runtime.settings = attrs.evolve(runtime.settings, reconcile=ReconcilePolicy())
    await log_in(client)
    html = await text(await client.get(SETTINGS))
    assert "data-value>off</td>" in window_row(html, "probe_unassigned_after")
    assert "data-value>8 s</td>" in window_row(html, "heartbeat_window")


async def test_an_unknown_project_is_a_404_page(client: Client, seeded: Seeded) -> None:
    await log_in(client)
    assert (await client.get("/projects/nope/settings")).status_code == 404


def test_every_reconciler_window_is_listed_with_the_variable_that_really_sets_it(
    tmp_path: Path,
) -> None:
    """The page lists every field, and the variables it names really set those fields."""
    assert {name for name, _ in RECONCILER_WINDOWS} == {
        field.name for field in attrs.fields(ReconcilePolicy)
    }
    base = {"Z4J_HOME": str(tmp_path / "home"), "Z4J_SECRET": SECRET}
    for variable, name in RECONCILE_VARIABLES.items():
        # A value each window accepts while the others keep their defaults.
        loaded = load_settings({**base, variable: "29"})
        assert getattr(loaded.reconcile, name) == timedelta(seconds=29), variable
