"""The workers, queues and audit log pages in Chromium, against a real brain and Celery worker.

One ``z4j serve`` (SQLite, first admin from the environment) and one prefork
worker with the agent on :data:`~tests.browser.conftest.QUEUE` serve the module.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.agents.e2e import ADMIN_EMAIL, Brain, Worker
from tests.browser.conftest import QUEUE, Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

P = "/api/v1/projects/default"


def test_the_workers_page_lists_the_real_worker_online(
    page: Page, dashboard_brain: Brain, worker: Worker, screenshot: Screenshot
) -> None:
    """The worker the agent reports: online, its pool, concurrency and queue."""
    log_in(page, dashboard_brain)
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Workers").click()
    expect(page.get_by_role("heading", name="Workers")).to_be_visible()
    row = page.locator(f'tr[data-worker="{worker.hostname}"]')
    expect(row.locator("[data-worker-status]")).to_have_text("online")
    expect(row).to_contain_text("prefork")
    expect(row.get_by_role("link", name=QUEUE)).to_be_visible()
    expect(row.locator("time")).to_have_count(1)
    expect(page.locator("[data-workers-summary]")).to_contain_text("1 of 1 worker online")
    screenshot(page, "workers")


def test_the_queues_page_counts_the_workers_queue_and_links_to_its_tasks(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """A task the worker ran is counted under its queue; the count opens those tasks."""
    result = e2e_app.add.apply_async((2, 3), queue=QUEUE)
    assert result.get(timeout=30) == 5
    dashboard_brain.wait_task(result.id, "succeeded", "succeeded")
    counts = {q["queue"]: q["counts"] for q in dashboard_brain.api("GET", f"{P}/queues")["items"]}
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/projects/default/queues")
    succeeded = page.locator(f'tr[data-queue="{QUEUE}"] td[data-state="succeeded"]')
    expect(succeeded).to_have_text(str(counts[QUEUE]["succeeded"]))
    expect(page.get_by_role("button", name=f"Purge queue {QUEUE}…")).to_be_visible()
    screenshot(page, "queues")
    succeeded.get_by_role("link").click()
    expect(page).to_have_url(re.compile(rf"/tasks\?queue={QUEUE}&state=succeeded$"))
    expect(page.locator(f'tr[data-task-id="{result.id}"]')).to_be_visible()


def test_purging_a_queue_from_the_page_confirms_the_depth_the_agent_measured(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any
) -> None:
    """A retry parked on a queue no worker consumes: measured (1 message), confirmed, purged."""
    parked = f"e2e-parked-{uuid.uuid4().hex[:8]}"
    failed = e2e_app.fail.apply_async(("parked",), queue=QUEUE)
    dashboard_brain.wait_task(failed.id, "failed", "failed")
    issued = dashboard_brain.api("POST", f"{P}/tasks/{failed.id}/retry", {"queue": parked})
    new_id = dashboard_brain.wait_command(issued["id"])["result"]["new_task_id"]
    dashboard_brain.wait_task(new_id, "pending", "sent")
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/projects/default/queues")
    expect(page.locator(f'tr[data-queue="{parked}"] td[data-state="pending"]')).to_have_text("1")
    page.get_by_role("button", name=f"Purge queue {parked}…").click()
    question = page.locator("[data-purge-question]")
    expect(question).to_have_text(f"queue {parked} holds 1 message; purge them?")
    page.get_by_role("button", name="Purge", exact=True).click()
    status = page.locator("[data-purge-status]")
    expect(status).to_have_attribute("data-outcome", "succeeded")
    expect(status).to_have_text(f"Purged queue {parked}: 1 message deleted.")
    # Measured again: nothing left.
    page.get_by_role("button", name=f"Purge queue {parked}…").click()
    expect(status).to_have_text(f"Queue {parked} is empty: nothing to purge.")


def test_the_audit_log_lists_the_retry_with_who_asked_and_the_chain_verified(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """A retry through the API: its request and its success are in the log, by the admin."""
    original = e2e_app.fails_first.apply_async((f"audit:{uuid.uuid4().hex}",), queue=QUEUE)
    dashboard_brain.wait_task(original.id, "failed", "failed")
    issued = dashboard_brain.api("POST", f"{P}/tasks/{original.id}/retry", {})
    done = dashboard_brain.wait_command(issued["id"])
    assert done["status"] == "succeeded", done
    dashboard_brain.wait_task(done["result"]["new_task_id"], "succeeded", "succeeded")
    log_in(page, dashboard_brain)
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    target = f"task:{original.id}"
    for action in ("task.retry.requested", "task.retry.succeeded"):
        entry = page.locator("tr[data-audit-seq]", has_text=target).filter(has_text=action)
        expect(entry).to_have_count(1)
        expect(entry.locator("[data-actor]")).to_contain_text(ADMIN_EMAIL)
    succeeded = page.locator("tr[data-audit-seq]", has_text=target).filter(
        has_text="task.retry.succeeded"
    )
    expect(succeeded.locator("td.details")).to_contain_text(done["result"]["new_task_id"])
    chain = page.locator("[data-chain-status]")
    expect(chain).to_have_attribute("data-chain-status", "not-run")
    page.get_by_role("link", name="Verify the chain").click()
    expect(chain).to_have_attribute("data-chain-status", "verified")
    expect(chain).to_contain_text(re.compile(r"Chain verified: \d+ entries"))
    screenshot(page, "audit")
    # On a phone-sized screen the page does not scroll sideways; the table scrolls in its box.
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.set_viewport_size({"width": 1280, "height": 800})
    # The filter is the URL: this task's entries only, newest first.
    page.get_by_label("Target").fill(target)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"[?&]target=task%3A"))
    expect(page.locator("[data-audit-action]")).to_have_text(
        ["task.retry.succeeded", "task.retry.requested"]
    )


def test_the_overview_counts_charts_and_groups_the_real_workers_tasks(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """Tasks a real worker ran and failed: the tiles show the API's counts, the chart has
    their bars, the failure is grouped under its exception and links to the task, the
    worker and its agent are counted online, a new task is counted live without a
    reload; the page fits a 375 px screen."""
    results = [e2e_app.add.apply_async((n, n), queue=QUEUE) for n in range(3)]
    failed = e2e_app.fails_first.apply_async((f"overview:{uuid.uuid4().hex}",), queue=QUEUE)
    for result in results:
        dashboard_brain.wait_task(result.id, "succeeded", "succeeded")
    dashboard_brain.wait_task(failed.id, "failed", "failed")
    expected = dashboard_brain.api("GET", f"{P}/overview")
    log_in(page, dashboard_brain)
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Overview").click()
    expect(page.locator('[data-state="succeeded"] strong')).to_have_text(
        f"{expected['states']['succeeded']:,}"
    )
    expect(page.locator('[data-state="failed"] strong')).to_have_text(
        f"{expected['states']['failed']:,}"
    )
    assert expected["states"]["succeeded"] >= 3
    expect(page.locator("[data-chart] rect.succeeded").first).to_be_visible()
    expect(page.locator("[data-chart] rect.failed").first).to_be_visible()
    expect(page.locator("[data-chart] g.bar")).to_have_count(60)
    group = page.locator('tr[data-exception="RuntimeError"]')
    expect(group).to_contain_text("tests.agents.celery_app.fails_first")
    expect(page.locator("[data-workers-online]")).to_contain_text("1 worker online")
    expect(page.locator("[data-agents-connected]")).to_contain_text("1 of 1 agent connected")
    screenshot(page, "overview")
    # Live: a task that finishes now is counted without a reload.
    expect(page.locator("[data-overview]")).to_have_attribute("data-connected", "yes")
    # A mark on the window that a reload would wipe.
    page.evaluate("() => { window.z4jNotReloaded = true; }")
    another = e2e_app.add.apply_async((5, 5), queue=QUEUE)
    dashboard_brain.wait_task(another.id, "succeeded", "succeeded")
    expect(page.locator('[data-state="succeeded"] strong')).to_have_text(
        f"{expected['states']['succeeded'] + 1:,}"
    )
    assert page.evaluate("() => window.z4jNotReloaded") is True
    page.get_by_role("link", name="Last day").click()
    expect(page).to_have_url(re.compile(r"\?window=day$"))
    expect(page.locator("[data-chart] g.bar")).to_have_count(96)
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "overview-375")
    page.set_viewport_size({"width": 1280, "height": 800})
    group.locator("td").last.get_by_role("link").click()
    expect(page.locator("[data-task-state]")).to_have_text("failed")
