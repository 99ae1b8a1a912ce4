"""The project overview: the API and the page agree, both read the kept aggregates."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock

from .support import T0, Backend, Seeded, bearer
from .test_access import PASSWORD, add_user
from .test_dashboard import log_in, text

pytestmark = pytest.mark.anyio

API: Final = "/api/v1/projects/default/overview"
PAGE: Final = "/projects/default/overview"


async def overview(client: Client, seeded: Seeded, window: str = "hour") -> dict:
    response = await client.get(f"{API}?window={window}", headers=bearer(seeded.key))
    assert response.status_code == 200, await response.get_data()
    body: dict = await response.get_json()
    return body


async def test_the_overview_counts_states_charts_finishes_and_groups_failures(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """The seeded tasks: counts per state, the hour's 60 one-minute bars holding the five
    finishes (failure rate 1 in 3), the failure grouped by its type, both workers online."""
    clock.current = T0 + timedelta(minutes=10)
    body = await overview(client, seeded)
    assert body["states"] == {
        "pending": 1,
        "received": 0,
        "started": 1,
        "succeeded": 2,
        "failed": 1,
        "retried": 1,
        "revoked": 1,
        "rejected": 0,
        "lost": 0,
    }
    assert body["tasks"] == 7
    chart = body["throughput"]
    assert (chart["finished"], chart["succeeded"], chart["failed"], chart["other"]) == (5, 2, 1, 2)
    assert chart["failure_rate"] == pytest.approx(1 / 3)
    assert chart["step_seconds"] == 60
    points = chart["points"]
    assert len(points) == 60
    assert points[-1]["start"] == "2026-01-01T12:10:00.000000+00:00"
    by_start = {p["start"]: p for p in points if p["succeeded"] + p["failed"] + p["other"]}
    assert by_start["2026-01-01T12:01:00.000000+00:00"] == {
        "start": "2026-01-01T12:01:00.000000+00:00",
        "succeeded": 0,
        "failed": 1,
        "other": 0,
        "failure_rate": 1.0,
    }
    assert sorted(by_start) == [f"2026-01-01T12:0{m}:00.000000+00:00" for m in (0, 1, 2, 4, 6)]
    assert body["failures"] == {
        "sampled": 1,
        "groups": [
            {
                "exception_type": "ValueError",
                "count": 1,
                "names": ["app.send_mail"],
                "latest": {
                    "task_id": "t-01",
                    "name": "app.send_mail",
                    "exception": "ValueError('boom')",
                    "finished_at": "2026-01-01T12:01:18.000000+00:00",
                },
            }
        ],
    }
    assert (body["workers"]["online"], body["workers"]["offline"]) == (2, 0)
    assert body["agents"] == {"active": 0, "connected": 0, "items": []}


async def test_the_window_decides_the_chart_and_a_wrong_one_is_refused(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """Two hours later the last hour is empty and the last day still holds the finishes
    in 96 quarter-hour bars; ``window=week`` is a 400 naming the choices."""
    clock.current = T0 + timedelta(hours=2)
    hour = await overview(client, seeded, "hour")
    assert hour["throughput"]["finished"] == 0
    assert hour["throughput"]["failure_rate"] is None
    day = await overview(client, seeded, "day")
    assert len(day["throughput"]["points"]) == 96
    assert day["throughput"]["step_seconds"] == 900
    assert day["throughput"]["finished"] == 5
    assert day["states"]["succeeded"] == 2  # counts by state are of every stored task
    wrong = await client.get(f"{API}?window=week", headers=bearer(seeded.key))
    assert wrong.status_code == 400
    assert "window must be one of: hour, day" in (await wrong.get_json())["error"]["message"]


async def test_the_overview_page_draws_what_the_api_says(
    client: Client, seeded: Seeded, clock: FakeClock, backend: Backend
) -> None:
    """Tiles link to the task list by state, the chart has a bar per minute with the
    finished ones filled, the failure group links to its latest task; a viewer sees it."""
    clock.current = T0 + timedelta(minutes=10)
    await add_user(backend, clock, "viewer@example.com", Role.VIEWER)
    await log_in(client, "viewer@example.com", PASSWORD)
    response = await client.get(PAGE)
    assert response.status_code == 200
    html = await text(response)
    assert '<a href="/projects/default/tasks?state=failed" data-state="failed">' in html
    assert re.search(
        r'data-state="succeeded"><span class="state state-succeeded">'
        r"succeeded</span><strong>2</strong>",
        html,
    )
    assert html.count('<g class="bar">') == 60
    assert html.count('<rect class="succeeded"') == 2
    assert html.count('<rect class="failed"') == 1
    assert html.count('<rect class="other"') == 2
    assert '<polyline class="rate"' in html
    assert html.count('<circle class="rate"') == 3  # the minutes with a success or failure
    assert "failure rate 33.3%" in html
    assert '<tr data-exception="ValueError">' in html
    assert 'href="/projects/default/tasks/t-01"' in html
    assert "<strong>2</strong> workers online" in html
    assert '<a href="/projects/default/overview" aria-current="page">Overview</a>' in html
    day = await text(await client.get(f"{PAGE}?window=day"))
    assert day.count('<g class="bar">') == 96
    wrong = await client.get(f"{PAGE}?window=week")
    assert wrong.status_code == 400
    assert "window must be one of: hour, day" in await text(wrong)


async def test_the_overview_page_of_an_empty_project_says_what_to_do(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """A new project: zero counts, an empty chart, no failures, a pointer to mint an agent."""
    created = await client.post(
        "/api/v1/projects", headers=bearer(seeded.key), json={"slug": "fresh", "name": "Fresh"}
    )
    assert created.status_code == 201, await created.get_data()
    await log_in(client)
    html = await text(await client.get("/projects/fresh/overview"))
    assert "No failed task stored." in html
    assert "mint one" in html
    assert "<rect" not in html
    assert "(0 stored)" in html
