"""The dashboard in Chromium, against a real brain and a real Celery worker (Redis).

One ``z4j serve`` (SQLite, first admin from the environment) and one prefork
worker with the agent serve the whole module; each test logs in through the
login page in a fresh browser context.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

import pytest
from playwright.sync_api import Page, expect

from tests.agents.e2e import Brain, Worker
from tests.browser.conftest import QUEUE, Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWER: Final = "viewer@example.com"
VIEWER_PASSWORD: Final = "a viewer's long password"


def row(page: Page, task_id: str) -> Any:
    return page.locator(f'tr[data-task-id="{task_id}"]')


def test_tasks_appear_live_and_filters_live_in_the_url(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """A task a real worker runs shows up without a reload; a filter is a bookmarkable URL."""
    log_in(page, dashboard_brain)
    expect(page.locator("table[data-tasks]")).to_have_attribute("data-connected", "yes")
    result = e2e_app.add.apply_async((20, 22), queue=QUEUE)
    assert result.get(timeout=30) == 42
    expect(row(page, result.id).locator(".state")).to_have_text("succeeded")
    failed = e2e_app.fail.apply_async(("dashboard boom",), queue=QUEUE)
    expect(row(page, failed.id).locator(".state")).to_have_text("failed")
    screenshot(page, "tasks")
    page.get_by_role("checkbox", name="failed").check()
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"[?&]state=failed"))
    expect(row(page, failed.id)).to_be_visible()
    expect(row(page, result.id)).to_have_count(0)
    # A new succeeded task does not appear under the failed filter; a new failure does.
    other = e2e_app.add.apply_async((1, 2), queue=QUEUE)
    again = e2e_app.fail.apply_async(("second boom",), queue=QUEUE)
    expect(row(page, again.id)).to_be_visible()
    other.get(timeout=30)
    expect(row(page, other.id)).to_have_count(0)


def test_a_failed_task_shows_its_traceback_and_a_retry_from_the_page_reruns_it(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """The page shows the exception and traceback; Retry re-runs the task and links the new one."""
    key = f"dashboard:{uuid.uuid4().hex}"
    original = e2e_app.fails_first.apply_async((key,), queue=QUEUE)
    dashboard_brain.wait_task(original.id, "failed", "failed")
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/projects/default/tasks/{original.id}")
    expect(page.locator("[data-traceback]")).to_contain_text("RuntimeError: the first run fails")
    screenshot(page, "task-failed")
    page.get_by_role("button", name="Retry").click()
    link = page.locator("[data-new-task]")
    expect(link).to_be_visible()
    new_id = link.get_attribute("data-new-task")
    assert new_id is not None
    dashboard_brain.wait_task(new_id, "succeeded", "succeeded")
    link.click()
    expect(page.locator("[data-task-state]")).to_have_text("succeeded")
    expect(page.get_by_role("link", name=original.id)).to_be_visible()


def test_a_viewer_sees_the_task_but_no_retry_button(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any
) -> None:
    """A member with the viewer role reads a failed task; the page says why there is no Retry."""
    dashboard_brain.api("POST", "/api/v1/users", {"email": VIEWER, "password": VIEWER_PASSWORD})
    dashboard_brain.api("PUT", f"/api/v1/projects/default/members/{VIEWER}", {"role": "viewer"})
    failed = e2e_app.fail.apply_async(("viewer boom",), queue=QUEUE)
    dashboard_brain.wait_task(failed.id, "failed", "failed")
    log_in(page, dashboard_brain, VIEWER, VIEWER_PASSWORD)
    page.goto(f"{dashboard_brain.url}/projects/default/tasks/{failed.id}")
    expect(page.locator("[data-traceback]")).to_contain_text("ValueError: viewer boom")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.locator("[data-no-retry]")).to_contain_text("cannot retry tasks")


def test_the_pages_are_usable_at_375_pixels(
    page: Page, dashboard_brain: Brain, worker: Worker, screenshot: Screenshot
) -> None:
    """On a phone-sized screen the page does not scroll sideways; the table scrolls in its box."""
    page.set_viewport_size({"width": 375, "height": 740})
    log_in(page, dashboard_brain)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    screenshot(page, "tasks-375")
