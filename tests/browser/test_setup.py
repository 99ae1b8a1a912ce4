"""First boot in the browser: the one-time setup link creates the first admin, then is used up."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Screenshot
from tests.serving import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EMAIL = "ops@example.com"
PASSWORD = "a long enough password"


def fill_setup_form(page: Page, *, email: str, password: str, confirm: str) -> None:
    """Type into the setup form the way a person does, by the fields' labels."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Confirm password").fill(confirm)


def test_first_boot_setup_through_the_setup_url(
    page: Page, brain: Server, setup_url: str, screenshot: Screenshot
) -> None:
    """The printed link opens the form; submitting it creates the admin; the link then says 410."""
    response = page.goto(setup_url)
    assert response is not None
    assert response.status == 200
    expect(page.get_by_role("heading", name="Create the first admin")).to_be_visible()
    screenshot(page, "setup")

    fill_setup_form(page, email=EMAIL, password=PASSWORD, confirm=PASSWORD)
    with page.expect_response(lambda r: r.request.method == "POST") as submitted:
        page.get_by_role("button", name="Create admin").click()
    assert submitted.value.status == 200
    expect(page.get_by_role("heading", name="Setup complete")).to_be_visible()
    expect(page.get_by_text(EMAIL, exact=True)).to_be_visible()
    expect(page.get_by_text(f"z4j api-key create --email {EMAIL}")).to_be_visible()
    # The token travelled in the POST body, not in the address of the success page.
    assert "token=" not in page.url
    screenshot(page, "setup-done")

    again = page.goto(setup_url)
    assert again is not None
    assert again.status == 410
    expect(page.get_by_role("heading", name="Setup is already complete")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text(
        "Setup is already complete: the first admin exists."
    )
    screenshot(page, "setup-used")

    # The admin really exists: its email and password log in through the API.
    login = page.request.post(
        f"{brain.base}/api/v1/auth/login", data={"email": EMAIL, "password": PASSWORD}
    )
    assert login.status == 200, login.text()
    assert login.json()["user"]["email"] == EMAIL


def test_mismatched_confirmation_is_shown_in_words(
    page: Page, setup_url: str, screenshot: Screenshot
) -> None:
    """A confirmation that differs is refused with a sentence; the link stays usable."""
    page.goto(setup_url)
    fill_setup_form(page, email=EMAIL, password=PASSWORD, confirm=PASSWORD + " but different")
    with page.expect_response(lambda r: r.request.method == "POST") as submitted:
        page.get_by_role("button", name="Create admin").click()
    assert submitted.value.status == 400

    expect(page.get_by_role("alert")).to_have_text("The passwords do not match.")
    # What was typed is kept, except the passwords.
    expect(page.get_by_label("Email")).to_have_value(EMAIL)
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    screenshot(page, "setup-mismatch")

    # Nothing was used up: the corrected form goes through.
    fill_setup_form(page, email=EMAIL, password=PASSWORD, confirm=PASSWORD)
    page.get_by_role("button", name="Create admin").click()
    expect(page.get_by_role("heading", name="Setup complete")).to_be_visible()
