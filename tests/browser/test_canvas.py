"""A task's canvas drawn in Chromium, from tasks a real Celery worker ran (Redis).

One ``z4j serve`` (SQLite) and one prefork worker with the agent serve the
module (the fixtures of ``conftest.py``); each test logs in through the login
page in a fresh browser context.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.agents.e2e import Brain, Worker
from tests.browser.conftest import QUEUE, Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_chord_is_drawn_with_an_edge_from_every_header_task(
    page: Page, dashboard_brain: Brain, worker: Worker, e2e_app: Any, screenshot: Screenshot
) -> None:
    """chord([add, add, add], total): three fan-in edges into the callback."""
    from celery import chord

    headers = [e2e_app.add.s(n, n).set(queue=QUEUE) for n in (1, 2, 3)]
    result = chord(headers)(e2e_app.total.s().set(queue=QUEUE))
    assert result.get(timeout=60) == 12
    callback = dashboard_brain.wait_task(result.id, "succeeded", "succeeded")
    assert callback is not None
    # Applied from outside a task, each header task is a root of its own.
    header_ids = [header.id for header in result.parent.results]
    for header_id in header_ids:
        assert (
            dashboard_brain.wait_task(header_id, "succeeded", "succeeded")["root_id"] == header_id
        )
    log_in(page, dashboard_brain)
    page.goto(f"{dashboard_brain.url}/projects/default/tasks/{result.id}")
    expect(page.locator("[data-canvas] svg")).to_be_visible()
    chord_edges = page.locator('[data-canvas] polyline[data-kind="chord"]')
    expect(chord_edges).to_have_count(3)
    targets = {chord_edges.nth(i).get_attribute("data-edge") for i in range(3)}
    assert {edge.split(">")[1] for edge in targets if edge} == {result.id}
    expect(page.locator(f'[data-canvas] [data-node="{result.id}"]')).to_be_visible()
    screenshot(page, "canvas-chord")

    # The same canvas from a header task's page: all four tasks, the same three edges.
    page.goto(f"{dashboard_brain.url}/projects/default/tasks/{header_ids[1]}")
    expect(page.locator("[data-canvas] svg")).to_be_visible()
    expect(page.locator("[data-canvas] [data-node]")).to_have_count(4)
    for task_id in [*header_ids, result.id]:
        expect(page.locator(f'[data-canvas] [data-node="{task_id}"]')).to_be_visible()
    edges = page.locator('[data-canvas] polyline[data-kind="chord"]')
    expect(edges).to_have_count(3)
    drawn = {edges.nth(i).get_attribute("data-edge") for i in range(3)}
    assert drawn == {f"{header_id}>{result.id}" for header_id in header_ids}
    expect(page.locator(f'[data-canvas] [data-node="{header_ids[1]}"]')).to_have_class(
        re.compile(r"\bcurrent\b")
    )
    expect(page.locator("[data-canvas] polyline")).to_have_count(3)
