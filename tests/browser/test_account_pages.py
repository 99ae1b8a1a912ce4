"""The account and project settings pages in Chromium, against a real brain.

One ``z4j serve`` (SQLite, first admin from the environment) serves the whole
module, no worker: nothing here needs one. Each test logs in through the login
page in a fresh browser context; users other than the first admin are created
through the API, so the module's admin login stays as it was.
"""

from __future__ import annotations

import re
from typing import Final

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.agents.e2e import Brain
from tests.browser.conftest import Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: A user whose password the password test changes (a viewer of the default project).
CHANGER: Final = "changer@example.com"
OLD_PASSWORD: Final = "the first long password"
NEW_PASSWORD: Final = "the second long password"
VIEWER: Final = "settings-viewer@example.com"
VIEWER_PASSWORD: Final = "a settings viewer's password"
REDACTION_API: Final = "/api/v1/projects/default/settings/redaction"


def add_member(brain: Brain, email: str, password: str, role: str) -> None:
    """Create a user through the API and give them ``role`` in the default project."""
    brain.api("POST", "/api/v1/users", {"email": email, "password": password})
    brain.api("PUT", f"/api/v1/projects/default/members/{email}", {"role": role})


def fits_a_phone(page: Page) -> bool:
    """Whether the page, 375 px wide, needs no sideways scrolling (the viewport is put back)."""
    page.set_viewport_size({"width": 375, "height": 740})
    try:
        return bool(page.evaluate("document.documentElement.scrollWidth <= 375"))
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_changing_the_password_in_the_page_ends_other_sessions_and_the_new_one_logs_in(
    page: Page, browser: Browser, dashboard_brain: Brain
) -> None:
    """A mismatched confirmation and a wrong current password are refused in words; a change
    keeps this session, ends the user's other one, and only the new password logs in."""
    add_member(dashboard_brain, CHANGER, OLD_PASSWORD, "viewer")
    elsewhere = browser.new_context(viewport={"width": 1280, "height": 800})
    elsewhere.set_default_timeout(30_000)
    try:
        other = elsewhere.new_page()
        log_in(other, dashboard_brain, CHANGER, OLD_PASSWORD)

        log_in(page, dashboard_brain, CHANGER, OLD_PASSWORD)
        # The user's email leads to the account page, on a phone too.
        page.set_viewport_size({"width": 375, "height": 740})
        page.get_by_role("link", name=CHANGER).click()
        expect(page.get_by_role("heading", name="Your account")).to_be_visible()
        page.set_viewport_size({"width": 1280, "height": 800})
        status = page.locator("[data-password-status]")
        current = page.get_by_label("Current password", exact=True)
        new = page.get_by_label("New password", exact=True)
        confirm = page.get_by_label("Confirm the new password", exact=True)
        change = page.get_by_role("button", name="Change password")

        current.fill(OLD_PASSWORD)
        new.fill(NEW_PASSWORD)
        confirm.fill(NEW_PASSWORD + " typo")
        change.click()
        expect(status).to_have_text(
            "The new password and its confirmation differ: type the same new password twice."
        )
        expect(status).to_have_attribute("data-outcome", "error")

        current.fill("not the current password")
        confirm.fill(NEW_PASSWORD)
        change.click()
        expect(status).to_have_text("Could not change the password: the current password is wrong")

        current.fill(OLD_PASSWORD)
        change.click()
        expect(status).to_have_text(
            "Password changed. Your other sessions are logged out; this one stays logged in."
        )
        expect(status).to_have_attribute("data-outcome", "ok")
        expect(current).to_have_value("")  # the form is emptied

        # This session goes on; the other browser's session has ended.
        page.reload()
        expect(page.get_by_role("heading", name="Your account")).to_be_visible()
        other.goto(f"{dashboard_brain.url}/account")
        expect(other.get_by_role("heading", name="Log in")).to_be_visible()
    finally:
        elsewhere.close()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Email").fill(CHANGER)
    page.get_by_label("Password").fill(OLD_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_be_visible()  # the old password no longer works
    log_in(page, dashboard_brain, CHANGER, NEW_PASSWORD)


def test_an_api_key_created_in_the_page_is_shown_once_works_and_stops_when_revoked(
    page: Page, dashboard_brain: Brain, screenshot: Screenshot
) -> None:
    """Create a key bound to the project and capped: copyable, shown once, accepted by the API
    as ``Authorization: Bearer``; Revoke (confirmed) makes the API refuse it with 401."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/account")
    page.get_by_label("Name").fill("browser script")
    page.get_by_label("Project of the new key").select_option("default")
    page.get_by_label("Role cap").select_option("viewer")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("[data-key-status]")).to_have_text("API key browser script created.")
    shown = page.locator("[data-key-value]")
    expect(shown).to_have_text(re.compile(r"^z4j_\S{20,}$"))
    key = shown.inner_text()
    row = page.locator("tr[data-key]", has_text="browser script")
    expect(row).to_contain_text("default")
    expect(row).to_contain_text("viewer")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text(key[:10])
    page.get_by_role("button", name="Copy key").click()
    assert page.evaluate("navigator.clipboard.readText()") == key
    screenshot(page, "account")
    assert fits_a_phone(page)

    status, me = dashboard_brain.call("GET", "/api/v1/auth/me", key=key)
    assert status == 200, me
    assert me["api_key"]["name"] == "browser script"
    assert me["api_key"]["role"] == "viewer"
    assert dashboard_brain.call("GET", "/api/v1/projects/default/workers", key=key)[0] == 200
    # Capped at viewer: no settings change through it.
    assert dashboard_brain.call("PUT", REDACTION_API, {}, key=key)[0] == 403

    # Shown once: after a reload the key is listed, never shown.
    page.reload()
    expect(page.locator("[data-key-result]")).to_be_hidden()
    assert key not in page.content()

    dialogs: list[str] = []

    def accept(dialog: object) -> None:
        dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.once("dialog", accept)
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("[data-keys-status]")).to_have_text("API key browser script revoked.")
    assert dialogs == [
        'Revoke the API key "browser script"? Anything using it is refused from now on.'
    ]
    expect(row.locator("[data-key-state]")).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    status, refused = dashboard_brain.call("GET", "/api/v1/auth/me", key=key)
    assert status == 401, refused
    page.reload()
    expect(row.locator("[data-key-state]")).to_contain_text("revoked")


def test_a_key_without_a_name_is_refused_in_words(page: Page, dashboard_brain: Brain) -> None:
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/account")
    page.get_by_label("Name").fill("   ")  # passes the browser's "required", not the API
    page.get_by_role("button", name="Create key").click()
    status = page.locator("[data-key-status]")
    expect(status).to_have_text(re.compile(r"^Could not create the key: an API key needs a name"))
    expect(status).to_have_attribute("data-outcome", "error")
    expect(page.locator("[data-key-result]")).to_be_hidden()


def test_redaction_settings_saved_in_the_page_persist_and_an_invalid_regex_is_refused_in_words(
    page: Page, dashboard_brain: Brain, screenshot: Screenshot
) -> None:
    """Save from the Settings page: the API stores it and a reload shows it; a pattern that is
    not a regular expression is refused with the API's reason and nothing changes."""
    log_in(page, dashboard_brain)
    page.get_by_role("link", name="Settings", exact=True).click()
    expect(page.get_by_role("heading", name="Settings", exact=True)).to_be_visible()
    keys = page.get_by_label("Extra key patterns")
    values = page.get_by_label("Extra value patterns")
    whole = page.get_by_label("Tasks redacted whole")
    status = page.locator("[data-redaction-status]")
    keys.fill("card pin\n  re:^x-internal-  \n\ncard pin")
    values.fill(r"acct-(?P<secret>[0-9]{8})")
    whole.fill("app.charge_card")
    page.get_by_role("button", name="Save redaction settings").click()
    expect(status).to_have_text("Saved. Connected agents use the new settings from now on.")
    # What was saved is shown back: trimmed, without blank lines or repeats.
    expect(keys).to_have_value("card pin\nre:^x-internal-")
    assert dashboard_brain.api("GET", REDACTION_API) == {
        "extra_key_patterns": ["card pin", "re:^x-internal-"],
        "extra_value_patterns": ["acct-(?P<secret>[0-9]{8})"],
        "fully_redacted_tasks": ["app.charge_card"],
    }
    page.reload()
    expect(keys).to_have_value("card pin\nre:^x-internal-")
    expect(values).to_have_value("acct-(?P<secret>[0-9]{8})")
    expect(whole).to_have_value("app.charge_card")
    expect(page.locator("[data-redaction-defaults]")).to_contain_text("password")
    expect(page.locator('tr[data-window="heartbeat_window"]')).to_contain_text(
        "Z4J_HEARTBEAT_WINDOW"
    )
    screenshot(page, "settings")
    assert fits_a_phone(page)

    values.fill("acct-(")
    page.get_by_role("button", name="Save redaction settings").click()
    expect(status).to_have_text(
        "Not saved: value pattern 'acct-(' is not a valid regular expression:"
        " missing ), unterminated subpattern at position 5"
    )
    expect(status).to_have_attribute("data-outcome", "error")
    page.reload()
    expect(values).to_have_value("acct-(?P<secret>[0-9]{8})")
    assert dashboard_brain.api("GET", REDACTION_API)["extra_value_patterns"] == [
        "acct-(?P<secret>[0-9]{8})"
    ]


def test_a_viewer_reads_the_settings_without_a_way_to_change_them(
    page: Page, dashboard_brain: Brain
) -> None:
    add_member(dashboard_brain, VIEWER, VIEWER_PASSWORD, "viewer")
    log_in(page, dashboard_brain, VIEWER, VIEWER_PASSWORD)
    page.get_by_role("link", name="Settings", exact=True).click()
    expect(page.get_by_role("heading", name="Settings", exact=True)).to_be_visible()
    for label in ("Extra key patterns", "Extra value patterns", "Tasks redacted whole"):
        expect(page.get_by_label(label)).to_have_attribute("readonly", "")
    expect(page.get_by_role("button", name="Save redaction settings")).to_have_count(0)
    expect(page.locator("[data-no-change]")).to_have_text(
        "Read-only: your role in this project cannot change settings (admin can)."
    )
    expect(page.locator('tr[data-window="heartbeat_window"] [data-value]')).to_have_text("8 s")
    expect(page.locator("[data-reconciler]")).to_contain_text("instance-wide")
    # Typing into a read-only field changes nothing.
    before = page.get_by_label("Extra key patterns").input_value()
    page.get_by_label("Extra key patterns").press_sequentially("x")
    expect(page.get_by_label("Extra key patterns")).to_have_value(before)
