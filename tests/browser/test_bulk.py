"""Bulk retry by filter in the browser: the dry-run count first, then every task re-run once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from playwright.sync_api import Page, expect

from tests.agents.e2e import BACKEND, Brain, Worker, wait_until
from tests.browser.conftest import QUEUE, Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def runs(keys: list[str]) -> list[int]:
    """How often each ``fails_first`` task ran (counted in the result backend's Redis)."""
    client = redis.Redis.from_url(BACKEND)
    try:
        return [int(client.get(key) or 0) for key in keys]
    finally:
        client.close()


def test_bulk_retry_by_filter_shows_the_count_then_reruns_each_task_once(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """Five failed tasks: the filter selects them, the dry run says 5, the confirmation re-runs."""
    batch = uuid.uuid4().hex[:8]
    keys = [f"bulk-ui:{batch}:{n}" for n in range(5)]
    results = [e2e_app.fails_first.apply_async((key,), queue=QUEUE) for key in keys]
    for result in results:
        dashboard_brain.wait_task(result.id, "failed", "failed")
    log_in(page, dashboard_brain)
    # The filter as a user sets it, in the URL: the failed fails_first tasks (this module's brain
    # has no others).
    page.goto(
        f"{dashboard_brain.url}/projects/default/tasks?state=failed"
        f"&name=tests.agents.celery_app.fails_first"
    )
    expect(page.locator("table[data-tasks] tbody tr[data-task-id]")).to_have_count(5)
    page.get_by_role("button", name="Retry all matching…").click()
    count = page.locator("[data-bulk-count]")
    expect(count).to_contain_text("match this filter")
    expect(count).to_have_text("5 tasks match this filter. Retry all of them?")
    screenshot(page, "bulk-retry-dry-run")
    page.get_by_role("button", name="Confirm").click()
    status = page.locator("[data-bulk-status]")
    expect(status).to_have_attribute("data-outcome", "succeeded")
    expect(status).to_have_text("Done: 5 of 5 (5 published).")
    assert wait_until(lambda: all(n == 2 for n in runs(keys)), 60), runs(keys)
    assert runs(keys) == [2] * 5
    for result in results:
        task = dashboard_brain.task(result.id)
        assert task is not None
        assert len(task["retried_by"]) == 1


def test_bulk_retry_of_selected_tasks_counts_them_then_reruns_only_them(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any
) -> None:
    """Four failed tasks listed; two ticked: the dry run says 2, the retry re-runs those two
    and leaves the others alone."""
    batch = uuid.uuid4().hex[:8]
    keys = [f"bulk-pick:{batch}:{n}" for n in range(4)]
    results = [e2e_app.fails_first.apply_async((key,), queue=QUEUE) for key in keys]
    for result in results:
        dashboard_brain.wait_task(result.id, "failed", "failed")
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/projects/default/tasks?state=failed")
    retry_selected = page.get_by_role("button", name="Retry selected…")
    expect(retry_selected).to_be_disabled()
    picked = results[1:3]
    for result in picked:
        page.get_by_label(f"Select task {result.id}").check()
    expect(page.locator("[data-selected-count]")).to_have_text("2 tasks selected.")
    expect(retry_selected).to_be_enabled()
    retry_selected.click()
    expect(page.locator("[data-bulk-count]")).to_have_text("2 tasks selected. Retry them?")
    page.get_by_role("button", name="Confirm").click()
    status = page.locator("[data-bulk-status]")
    expect(status).to_have_attribute("data-outcome", "succeeded")
    expect(status).to_have_text("Done: 2 of 2 (2 published).")
    assert wait_until(lambda: runs(keys) == [1, 2, 2, 1], 60), runs(keys)
    # The page box selects every task of the page at once, and unticks them all again.
    page.get_by_label("Select every task on this page").check()
    rows = page.locator("table[data-tasks] tbody [data-select]").count()
    expect(page.locator("[data-selected-count]")).to_have_text(
        f"{rows} task{'' if rows == 1 else 's'} selected."
    )
    page.get_by_label("Select every task on this page").uncheck()
    expect(page.locator("[data-selected-count]")).to_have_text("No task selected.")
