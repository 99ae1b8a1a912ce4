"""The agents and members pages in Chromium, against a real brain and real Celery workers (Redis).

One ``z4j serve`` (SQLite, first admin from the environment) and one prefork
worker with the agent serve the whole module; each test logs in through the
login page in a fresh browser context.
"""

from __future__ import annotations

import re
from typing import Any, Final

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.agents.e2e import Brain, Worker, wait_until
from tests.browser.conftest import QUEUE, Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INVITED: Final = "invited-viewer@example.com"
INVITED_PASSWORD: Final = "an invited viewer's long password"
#: The queue of the worker started with the credentials minted in the browser.
MINTED_QUEUE: Final = "e2e-admin-pages"


def test_minting_an_agent_shows_its_credentials_once_and_they_connect_a_worker(
    page: Page,
    dashboard_brain: Brain,
    e2e_app: Any,
    screenshot: Screenshot,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Mint from the Agents page: token, secret and the four lines to paste, copyable, shown
    once; a worker started with exactly those lines connects; Revoke (confirmed) revokes it."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, dashboard_brain)
    page.get_by_role("link", name="Agents").click()
    expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()
    page.get_by_label("Name").fill("browser-minted")
    page.get_by_role("button", name="Mint agent").click()
    token_box = page.locator("[data-mint-token]")
    expect(token_box).to_have_text(re.compile(r"^z4ja_\S+$"))
    token = token_box.inner_text()
    secret = page.locator("[data-mint-secret]").inner_text()
    assert re.fullmatch(r"\S{32,}", secret), secret
    expect(page.locator("[data-mint-env]")).to_have_text(
        f"export Z4J_BRAIN_URL={dashboard_brain.url}\n"
        f"export Z4J_TOKEN={token}\n"
        f"export Z4J_HMAC_SECRET={secret}\n"
        "export Z4J_PROJECT_ID=default"
    )
    row = page.locator('tr[data-agent="browser-minted"]')
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("not connected")
    screenshot(page, "agents")
    # On a phone the long token, secret and lines wrap: the page does not scroll sideways.
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_role("button", name="Copy token").click()
    assert page.evaluate("navigator.clipboard.readText()") == token
    page.get_by_role("button", name="Copy the four lines").click()
    pasted = page.evaluate("navigator.clipboard.readText()")
    environment = dict(line.removeprefix("export ").split("=", 1) for line in pasted.splitlines())
    assert set(environment) == {"Z4J_BRAIN_URL", "Z4J_TOKEN", "Z4J_HMAC_SECRET", "Z4J_PROJECT_ID"}

    # Minting the same name again is refused in words.
    page.get_by_label("Name").fill("browser-minted")
    page.get_by_role("button", name="Mint agent").click()
    expect(page.locator("[data-mint-status]")).to_contain_text("Could not mint browser-minted")
    expect(page.locator("[data-mint-result]")).to_be_hidden()

    worker = Worker(
        tmp_path_factory.mktemp("minted") / "worker.log",
        brain_url=environment["Z4J_BRAIN_URL"],
        token=environment["Z4J_TOKEN"],
        secret=environment["Z4J_HMAC_SECRET"],
        queue=MINTED_QUEUE,
        agent_name="browser-minted",
        concurrency=1,
    )
    try:
        assert wait_until(lambda: dashboard_brain.worker(worker.hostname) is not None)
        page.reload()
        # Shown once: the page never shows the token again.
        expect(page.locator("[data-mint-result]")).to_be_hidden()
        assert token not in page.content()
        connected = row.locator("[data-agent-connected]")
        expect(connected).to_have_attribute("data-agent-connected", "1")
        expect(connected).to_contain_text("connected")
        expect(row.locator("td").nth(3)).to_have_text(re.compile(r"^\d+\.\d+"))
        screenshot(page, "agents-connected")

        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        expect(page.locator("[data-agents-status]")).to_contain_text("browser-minted revoked")
        expect(row.locator("[data-agent-status]")).to_contain_text("revoked")
        expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
        status, body = dashboard_brain.get("agents")
        assert status == 200
        listed = {agent["name"]: agent for agent in body["items"]}
        assert listed["browser-minted"]["active"] is False
    finally:
        worker.stop()


def test_an_invited_viewer_accepts_in_their_own_browser_and_sees_no_retry_button(
    page: Page,
    browser: Browser,
    dashboard_brain: Brain,
    worker: Worker,
    e2e_app: Any,
    screenshot: Screenshot,
) -> None:
    """The admin invites from the Members page and reads the link shown once; the invitee opens
    it in a fresh browser, sets a password, logs in, and reads a failed task without Retry."""
    failed = e2e_app.fail.apply_async(("invited boom",), queue=QUEUE)
    dashboard_brain.wait_task(failed.id, "failed", "failed")

    log_in(page, dashboard_brain)
    page.get_by_role("link", name="Members").click()
    expect(page.get_by_role("heading", name="Members", exact=True)).to_be_visible()
    page.get_by_label("Email", exact=True).fill(INVITED)
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Invite", exact=True).click()
    link = page.locator("[data-invite-url]")
    expect(link).to_have_text(re.compile(r"/invite\?token=\S+$"))
    url = link.inner_text()
    assert url.startswith(f"{dashboard_brain.url}/invite?token=")
    expect(page.locator("[data-invite-status]")).to_contain_text(f"{INVITED} is invited as viewer")
    invitation = page.locator("tr[data-invitation]", has_text=INVITED)
    expect(invitation).to_contain_text("pending")
    screenshot(page, "members")
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 800})

    invitee = browser.new_context(viewport={"width": 1280, "height": 800})
    invitee.set_default_timeout(30_000)
    try:
        theirs = invitee.new_page()
        errors: list[str] = []
        theirs.on("pageerror", lambda error: errors.append(str(error)))
        theirs.goto(url)
        expect(theirs.get_by_role("heading", name="Join default")).to_be_visible()
        expect(theirs.locator("main")).to_contain_text(INVITED)
        theirs.get_by_label("Choose a password").fill(INVITED_PASSWORD)
        theirs.get_by_label("Confirm password").fill(INVITED_PASSWORD)
        theirs.get_by_role("button", name="Create my account").click()
        expect(theirs.get_by_role("heading", name="Welcome")).to_be_visible()
        expect(theirs.locator("main")).to_contain_text(f"{INVITED} is now viewer")
        theirs.get_by_role("link", name="Log in").click()
        theirs.get_by_label("Email").fill(INVITED)
        theirs.get_by_label("Password").fill(INVITED_PASSWORD)
        theirs.get_by_role("button", name="Log in").click()
        expect(theirs.get_by_role("heading", name="Tasks")).to_be_visible()
        theirs.goto(f"{dashboard_brain.url}/projects/default/tasks/{failed.id}")
        expect(theirs.locator("[data-traceback]")).to_contain_text("ValueError: invited boom")
        expect(theirs.get_by_role("button", name="Retry")).to_have_count(0)
        expect(theirs.locator("[data-no-retry]")).to_contain_text("cannot retry tasks")
        # The link worked once.
        again = theirs.goto(url)
        assert again is not None
        assert again.status == 404
        expect(theirs.locator("main")).to_contain_text("This invitation link is accepted")
        assert not errors, errors
    finally:
        invitee.close()

    page.reload()
    member = page.locator(f'tr[data-member="{INVITED}"]')
    expect(member.get_by_role("combobox")).to_have_value("viewer")
    expect(page.locator("tr[data-invitation]", has_text=INVITED)).to_have_count(0)
    expect(page.locator("details.past")).to_contain_text(INVITED)


def test_roles_removals_and_revocations_from_the_members_page_and_refusals_in_words(
    page: Page, dashboard_brain: Brain
) -> None:
    """A role changed in place; the last admin's demotion refused in words and the select put
    back; a member removed and an invitation revoked, each after a confirmation."""
    for email, role in (("ops@example.com", "operator"), ("lead@example.com", "admin")):
        dashboard_brain.api("POST", "/api/v1/users", {"email": email, "password": INVITED_PASSWORD})
        dashboard_brain.api("PUT", f"/api/v1/projects/default/members/{email}", {"role": role})
    dashboard_brain.api(
        "POST",
        "/api/v1/projects/default/invitations",
        {"email": "later@example.com", "role": "operator"},
    )
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/projects/default/members")
    status = page.locator("[data-members-status]")

    page.get_by_label("Role of ops@example.com").select_option("auditor")
    expect(status).to_have_text("ops@example.com is now auditor.")
    lead = page.get_by_label("Role of lead@example.com")
    lead.select_option("viewer")
    expect(status).to_contain_text("Could not make lead@example.com viewer: ")
    expect(status).to_contain_text("the last admin of project 'default'")
    expect(lead).to_have_value("admin")

    page.locator('tr[data-member="ops@example.com"]').get_by_role("button", name="Remove").click()
    expect(status).to_have_text("ops@example.com removed from the project.")
    expect(page.locator('tr[data-member="ops@example.com"]')).to_have_count(0)
    later = page.locator("tr[data-invitation]", has_text="later@example.com")
    later.get_by_role("button", name="Revoke").click()
    expect(later.locator("[data-invitation-status]")).to_have_text("revoked")

    members = dashboard_brain.api("GET", "/api/v1/projects/default/members", None)
    roles = {m["email"]: m["role"] for m in members["items"]}
    roles.pop(INVITED, None)  # the invitation test's viewer, when it ran first
    assert roles == {"lead@example.com": "admin"}
    invitations = dashboard_brain.api("GET", "/api/v1/projects/default/invitations", None)
    assert {i["email"]: i["status"] for i in invitations["items"]}["later@example.com"] == "revoked"
