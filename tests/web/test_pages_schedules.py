"""The dashboard's schedules pages (``z4j_web.pages_schedules``), as served HTML.

The beat side is the fake beat agent of ``test_schedules`` on the real
gateway. What the page's script does (the form, the cron helper, the
switches and buttons, live redraws) runs in Chromium under ``tests/browser``;
here what each page shows, to whom.
"""

from __future__ import annotations

import asyncio
import html as markup
import re
from datetime import timedelta
from typing import Any, Final

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock
from z4j_web.pages_schedules import schedule_in_words

from .support import T0, Backend, FakeAgent, Seeded
from .test_access import PASSWORD, add_user
from .test_dashboard import log_in, text
from .test_pages_admin import csrf_token
from .test_schedules import beat, beat_socket, entry, full, listed, schedules_body

pytestmark = pytest.mark.anyio

__all__ = ["beat"]  # the fixture, imported to be used here

PAGE: Final = "/projects/default/schedules"
API: Final = "/api/v1/projects/default/schedules"
NOTE: Final = "changes made in z4j survive a restart of beat"
VIEWER: Final = "schedules-viewer@example.com"
#: What the admin and operator see and a viewer does not.
CONTROLS: Final = ("data-toggle", "data-trigger", "data-edit", "data-delete", "data-schedule-form")

WEEKDAYS: Final = full(
    entry(
        "weekday-report",
        task="app.report",
        schedule={"kind": "crontab", "minute": "30", "hour": "9", "day_of_week": "1-5"},
        description="The morning report",
    )
)
PING: Final = full(entry("ping", task="app.pnig", enabled=False))


def row(html: str, name: str) -> str:
    """The entry table's row of the entry ``name``."""
    found = re.search(rf'<tr [^>]*data-entry="{re.escape(name)}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert found is not None, f"no row for entry {name!r}"
    return found.group(1)


def words(html: str) -> str:
    """The page's text without tags, spaces collapsed (what a reader sees)."""
    return " ".join(markup.unescape(re.sub(r"<[^>]+>", " ", html)).split())


async def fire(ws: Any, agent: FakeAgent, name: str, task_id: str, *, manual: bool) -> None:
    """Report one fire of ``name`` that sent ``task_id``."""
    body = {
        "fires": [
            {
                "id": f"fire-{name}-{task_id}",
                "schedule": name,
                "fired_at": (T0 + timedelta(minutes=5)).isoformat(),
                "task_id": task_id,
                "manual": manual,
                "error": None,
            }
        ]
    }
    await ws.send(agent.frame("schedule_fires", body))


async def fired(client: Client, key: str, name: str) -> None:
    """Wait until the entry ``name`` lists a last fire."""
    for _ in range(250):
        items = (await listed(client, key))["items"]
        if any(item["name"] == name and item["last_fire"] for item in items):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no fire of {name} was stored")


async def test_an_admin_sees_each_scheduler_its_entries_and_every_change_control(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    """The scheduler's kind, connection, time zone, note and refusals; per entry its schedule
    in words, the switch, the last fire with its task's state, Run now, Edit and Delete; the
    form with the scheduler's known tasks."""
    _, agent = beat
    refused = {"name": "custom", "reason": "a schedule class z4j cannot show"}
    async with beat_socket(client, beat, WEEKDAYS, PING, note=NOTE, timezone="Europe/Berlin") as ws:
        await ws.send(
            agent.frame(
                "schedules",
                {
                    **schedules_body(WEEKDAYS, PING, note=NOTE, timezone="Europe/Berlin"),
                    "refused": [refused],
                },
            )
        )
        await fire(ws, agent, "weekday-report", seeded.task_ids[-1], manual=True)
        await fired(client, seeded.key, "weekday-report")
        await log_in(client)
        response = await client.get(PAGE)
        html = await text(response)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert f'href="{PAGE}" aria-current="page">Schedules</a>' in html
    shown = words(html)
    assert 'data-scheduler="beat"' in html
    assert '<span class="tag" data-kind="file">file</span>' in html
    assert '<span class="state state-online" data-connected>connected</span>' in html
    assert "data-read-only" not in html
    assert f"Note: {NOTE}" in shown
    assert "time zone Europe/Berlin" in shown
    assert "<strong>custom</strong>: a schedule class z4j cannot show" in html

    weekdays = row(html, "weekday-report")
    assert f'href="{PAGE}/beat/weekday-report" data-history' in weekdays
    assert "The morning report" in weekdays
    assert "at 09:30 on Mon-Fri (UTC)" in words(weekdays)
    assert "30 9 * * 1-5</code>" in weekdays
    assert re.search(r'<input type="checkbox" role="switch" data-toggle\s+checked', weekdays)
    # The last fire: a manual one, its task linked with its state.
    task_id = seeded.task_ids[-1]
    assert f'href="/projects/default/tasks/{task_id}" data-last-task="{task_id}"' in weekdays
    assert "state-succeeded" in weekdays
    assert "run now" in weekdays
    assert 'aria-label="Run weekday-report now"' in weekdays
    assert 'aria-label="Edit weekday-report"' in weekdays
    assert 'aria-label="Delete weekday-report"' in weekdays

    ping = row(html, "ping")
    assert '<tr role="row" data-entry="ping" class="off">' in html
    assert "every 5 seconds" in ping
    assert re.search(r"data-toggle\s+aria-label", ping)  # not checked: disabled
    assert "disabled" in words(ping)
    assert "<code>app.pnig</code>" in ping
    assert "did you mean &#39;app.ping&#39;?" in ping
    assert "<summary>1 warning</summary>" in ping

    assert "data-schedule-form" in html
    assert '<option value="beat" data-timezone="Europe/Berlin">beat (file)</option>' in html
    assert '<datalist id="known-tasks-1" data-known-tasks="beat">' in html
    assert '<option value="app.report">' in html
    assert "Changing schedules: your role" not in shown


async def test_a_viewer_sees_the_entries_and_no_change_control(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], backend: Backend, clock: FakeClock
) -> None:
    await add_user(backend, clock, VIEWER, Role.VIEWER)
    async with beat_socket(client, beat, WEEKDAYS, PING):
        await listed(client, seeded.key, count=2)
        await log_in(client, VIEWER, PASSWORD)
        html = await text(await client.get(PAGE))
    assert "at 09:30 on Mon-Fri (UTC)" in words(row(html, "weekday-report"))
    for control in CONTROLS:
        assert control not in html, control
    assert '<span class="state state-succeeded">enabled</span>' in row(html, "weekday-report")
    assert '<span class="state state-revoked">disabled</span>' in row(html, "ping")
    assert "Changing schedules: your role in this project cannot" in words(html)
    assert f'href="{PAGE}/beat/ping"' in html  # the history is for every member


async def test_an_operator_may_change_schedules_in_the_page(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], backend: Backend, clock: FakeClock
) -> None:
    """An operator gets the controls, and the page's token lets its script use the API."""
    await add_user(backend, clock, "operator@example.com", Role.OPERATOR)
    async with beat_socket(client, beat, WEEKDAYS):
        await listed(client, seeded.key, count=1)
        await log_in(client, "operator@example.com", PASSWORD)
        html = await text(await client.get(PAGE))
        token = {"X-CSRF-Token": csrf_token(html)}
        preview = await client.post(
            f"{API}/preview",
            json={"schedule": {"kind": "crontab", "minute": "0", "hour": "*/6"}},
            headers=token,
        )
        disabled = await client.post(f"{API}/beat/weekday-report/disable", headers=token)
    for control in CONTROLS:
        assert control in html, control
    assert preview.status_code == 200
    assert len((await preview.get_json())["next_fire_times"]) == 5
    assert disabled.status_code == 202
    assert (await disabled.get_json())["kind"] == "schedule"


async def test_a_read_only_scheduler_offers_no_change_even_to_an_admin(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    async with beat_socket(
        client,
        beat,
        WEEKDAYS,
        kind="other",
        writable=False,
        note="entries come from the app's configuration",
        **{"class": "x.y:Custom"},
    ):
        await listed(client, seeded.key, count=1)
        await log_in(client)
        html = await text(await client.get(PAGE))
    assert "data-read-only>read-only</span>" in html
    assert '<span class="tag" data-kind="other">other</span>' in html
    assert "Note: entries come from the app's configuration" in words(html)
    assert "x.y:Custom" in html
    for control in CONTROLS:
        assert control not in html, control
    assert "No scheduler here is writable in z4j" in words(html)


async def test_a_disconnected_scheduler_says_its_changes_wait(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    async with beat_socket(client, beat, WEEKDAYS):
        await listed(client, seeded.key, count=1)
    await log_in(client)
    html = await text(await client.get(PAGE))
    assert '<span class="state state-offline" data-connected>not connected</span>' in html
    assert "Its beat agent is not connected: changes wait until it is." in words(html)
    assert "data-trigger" in html


async def test_without_a_scheduler_the_page_says_how_to_get_one(
    client: Client, seeded: Seeded
) -> None:
    await log_in(client)
    response = await client.get(PAGE)
    html = await text(response)
    assert response.status_code == 200
    assert "data-no-schedulers" in html
    assert "No scheduler has reported yet" in html
    assert "data-schedule-form" not in html


async def test_an_entrys_page_shows_its_fires_and_next_fire_times(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], clock: FakeClock
) -> None:
    """Each fire: when, scheduled or by hand, its task linked with the task's state."""
    _, agent = beat
    async with beat_socket(client, beat, WEEKDAYS, PING) as ws:
        await fire(ws, agent, "weekday-report", seeded.task_ids[-1], manual=True)
        await fired(client, seeded.key, "weekday-report")
        await log_in(client)
        response = await client.get(f"{PAGE}/beat/weekday-report")
        html = await text(response)
    assert response.status_code == 200
    shown = words(html)
    assert f'<a href="{PAGE}">Schedules</a>' in html
    assert 'aria-current="page">Schedules</a>' in html
    assert "weekday-report enabled" in shown
    assert "at 09:30 on Mon-Fri (UTC)" in shown
    assert "app.report" in shown
    assert "The morning report" in shown
    times = re.findall(r'<time datetime="([^"]+)" data-local-time>', html)
    assert len(times) == 5
    assert all(moment > clock.now().isoformat() and "T09:30:00" in moment for moment in times)
    task_id = seeded.task_ids[-1]
    fire_row = re.search(r'<tr data-fire="[^"]+">(.*?)</tr>', html, re.DOTALL)
    assert fire_row is not None
    assert f'href="/projects/default/tasks/{task_id}"' in fire_row.group(1)
    assert "state-succeeded" in fire_row.group(1)
    assert "run now" in fire_row.group(1)


async def test_a_disabled_entrys_page_and_one_without_fires(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    async with beat_socket(client, beat, WEEKDAYS, PING):
        await listed(client, seeded.key, count=2)
        await log_in(client)
        html = await text(await client.get(f"{PAGE}/beat/ping"))
    shown = words(html)
    assert "ping disabled" in shown
    assert "Disabled: beat does not fire it." in shown
    assert "Not fired yet." in shown
    assert "did you mean 'app.ping'?" in shown


async def test_a_solar_entrys_page_says_why_it_has_no_fire_times(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent]
) -> None:
    solar = full(
        entry(
            "dawn",
            schedule={"kind": "solar", "event": "sunrise", "latitude": 48.85, "longitude": 2.35},
        )
    )
    async with beat_socket(client, beat, solar):
        await listed(client, seeded.key, count=1)
        await log_in(client)
        html = await text(await client.get(f"{PAGE}/beat/dawn"))
    shown = words(html)
    assert "at sunrise, seen from 48.85, 2.35" in shown
    assert re.search(r"No preview: [^.]*solar", shown)


@pytest.mark.parametrize("path", [f"{PAGE}/nobeat/ping", f"{PAGE}/beat/nothing"])
async def test_an_unknown_scheduler_or_entry_is_a_not_found_page(
    client: Client, seeded: Seeded, beat: tuple[str, FakeAgent], path: str
) -> None:
    async with beat_socket(client, beat, PING):
        await listed(client, seeded.key, count=1)
        await log_in(client)
        response = await client.get(path)
    html = await text(response)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Not found" in html
    assert ("nobeat" if "nobeat" in path else "nothing") in html


@pytest.mark.parametrize(
    ("schedule", "said"),
    [
        ({"kind": "crontab", "minute": "*"}, "every minute (UTC)"),
        ({"kind": "crontab", "minute": "*/15"}, "every 15 minutes (UTC)"),
        ({"kind": "crontab", "minute": "0"}, "at minute 0 of every hour (UTC)"),
        ({"kind": "crontab", "minute": "0", "hour": "*/6"}, "at minute 0, every 6 hours (UTC)"),
        (
            {"kind": "crontab", "minute": "0,30", "hour": "8-17"},
            "at minute 0, 30 of hour 8-17 (UTC)",
        ),
        (
            {
                "kind": "crontab",
                "minute": "0",
                "hour": "7",
                "day_of_week": "mon",
                "day_of_month": "1-7",
                "month_of_year": "1,7",
                "timezone": "Asia/Tokyo",
            },
            "at 07:00 on day 1-7 of the month if a mon in Jan, Jul (Asia/Tokyo)",
        ),
        (
            {"kind": "crontab", "minute": "5", "hour": "4", "day_of_week": "0,6"},
            "at 04:05 on Sun, Sat (UTC)",
        ),
        ({"kind": "interval", "every": 1, "period": "hours"}, "every hour"),
        ({"kind": "interval", "every": 90, "period": "seconds"}, "every 90 seconds"),
        (
            {"kind": "solar", "event": "dusk_civil", "latitude": -33.9, "longitude": 151.2},
            "at dusk civil, seen from -33.9, 151.2",
        ),
        (
            {"kind": "clocked", "clocked_time": "2026-03-01T08:00:00+00:00"},
            "once, at 2026-03-01 08:00 UTC",
        ),
    ],
)
def test_a_schedule_is_said_in_words(schedule: dict[str, Any], said: str) -> None:
    from z4j_domain.schedules import schedule_from_dict, schedule_to_dict

    assert schedule_in_words(schedule_to_dict(schedule_from_dict(schedule))) == said
