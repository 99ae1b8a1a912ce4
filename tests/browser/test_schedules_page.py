"""The Schedules page in Chromium, against a real brain, a real ``celery beat`` and a worker.

One ``z4j serve`` (SQLite) serves the module, with the dashboard tests' worker
and a ``celery beat`` (:class:`tests.beat.beat.Beat`, Celery's file
scheduler, the ``static-nightly`` entry of ``beat_schedule``) whose z4j beat
agent connects as the minted agent ``beat``. Beat publishes to the worker's
broker, so an entry's task runs on that worker: the page shows the state of
the task a fire sent. Every change goes from the page through the API to the
beat agent, which writes beat's schedule file; the tests read the outcome
back through the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import pytest
from playwright.sync_api import Page, expect

from tests.agents.e2e import BROKER, Brain, Worker, wait_until
from tests.beat.beat import Beat
from tests.browser.conftest import QUEUE, Screenshot, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCHEDULES: Final = "/api/v1/projects/default/schedules"
#: The worker's task; beat's app does not register it (the page warns, and beat sends it).
TASK: Final = "tests.agents.celery_app.add"
NAME: Final = "browser-sums"
RENAMED: Final = "browser-sums-every-2h"


def scheduler(brain: Brain) -> dict[str, Any] | None:
    """The ``beat`` scheduler as the API lists it, once its agent has reported."""
    listed = brain.api("GET", SCHEDULES)
    return next((s for s in listed["schedulers"] if s["name"] == "beat"), None)


def stored(brain: Brain, name: str) -> dict[str, Any] | None:
    """The entry ``name`` of scheduler ``beat`` as the API shows it, or ``None``."""
    status, body = brain.call("GET", f"{SCHEDULES}/beat/{name}")
    if status == 404:
        return None
    assert status == 200, body
    entry: dict[str, Any] = body
    return entry


@pytest.fixture(scope="module")
def beat(
    dashboard_brain: Brain, worker: Worker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Beat]:
    """``celery beat`` with the file scheduler and the z4j beat agent, connected as ``beat``."""
    agent = dashboard_brain.z4j("agent", "create", "--project", "default", "--name", "beat")
    started = Beat(
        tmp_path_factory.mktemp("beat"),
        scheduler="file",
        brain_url=dashboard_brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        agent_name="beat",
        broker=BROKER,
        environment={"Z4J_BEAT_STATIC": "1"},
    )
    try:
        assert wait_until(lambda: (scheduler(dashboard_brain) or {}).get("connected", False), 60), (
            started.output()
        )
        yield started
    finally:
        started.stop()


def open_schedules(page: Page, brain: Brain) -> None:
    """Log in and open the Schedules page from the navigation; its live socket is up."""
    log_in(page, brain)
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Schedules").click()
    expect(page.get_by_role("heading", name="Schedules", exact=True)).to_be_visible()
    expect(page.locator("[data-schedules]")).to_have_attribute("data-connected", "yes")


def test_an_entry_is_created_toggled_run_edited_and_deleted_in_the_page(
    page: Page, dashboard_brain: Brain, beat: Beat
) -> None:
    """The form with its cron helper creates an entry in beat's file scheduler; the switch
    disables and enables it; Run now sends its task, which the worker runs, and the list and
    the entry's page show that fire with the task's state; Edit renames it and makes it an
    interval; Delete (confirmed) removes it. Each outcome is the beat agent's, read back
    through the API."""
    open_schedules(page, dashboard_brain)
    section = page.locator('section[data-scheduler="beat"]')
    expect(section.locator("[data-kind]")).to_have_text("file")
    expect(section.locator("[data-connected]")).to_have_text("connected")
    expect(section.locator("[data-timezone]")).to_have_text("UTC")
    expect(section.locator("[data-scheduler-note]")).to_contain_text("beat's schedule file")
    expect(section.locator('tr[data-entry="static-nightly"]')).to_contain_text("at 03:00 (UTC)")

    form = page.locator("[data-schedule-form]")
    # The task field offers the tasks beat's app registers.
    known = section.locator("datalist[data-known-tasks] option[value='tests.beat.beat_app.add']")
    expect(known).to_have_count(1)
    list_id = section.locator("datalist[data-known-tasks]").get_attribute("id")
    expect(form.get_by_label("Task", exact=True)).to_have_attribute("list", str(list_id))
    form.get_by_label("Name").fill(NAME)
    form.get_by_label("Task", exact=True).fill(TASK)
    # The cron helper: a wrong field is refused under it, in the API's words ...
    form.get_by_label("Minute").fill("61")
    expect(form.locator('[data-field-error="minute"]')).to_have_text(
        "minute: 61 is out of range 0-59 in '61'"
    )
    expect(form.get_by_label("Minute")).to_have_attribute("aria-invalid", "true")
    # ... and a valid schedule shows its next five fire times, in local time and UTC.
    form.get_by_label("Minute").fill("*/5")
    form.get_by_label("Hour").fill("9-17")
    form.get_by_label("Day of week").fill("mon-fri")
    times = form.locator("[data-preview-times] li")
    expect(times).to_have_count(5)
    expect(form.locator('[data-field-error="minute"]')).to_be_empty()
    for text in times.all_text_contents():
        assert re.search(r"· \d{4}-\d\d-\d\d (09|1[0-7]):[0-5][05]:00 UTC$", text), text
    # Arguments are JSON, checked as they are typed.
    args = form.get_by_label("Positional arguments (args)")
    args.fill("[2, 3")
    form.get_by_label("Keyword arguments (kwargs)").focus()
    expect(form.locator('[data-field-error="args"]')).to_contain_text("args: not valid JSON")
    args.fill("[2, 3]")
    form.get_by_text("Publishing options").click()
    form.get_by_label("Queue").fill(QUEUE)
    form.get_by_role("button", name="Create entry").click()
    status = form.locator("[data-form-status]")
    expect(status).to_contain_text(f"Entry {NAME} created in beat.")
    expect(status.locator("[data-form-warning]")).to_contain_text(
        f"task '{TASK}' is not registered in the beat app"
    )
    row = section.locator(f'tr[data-entry="{NAME}"]')
    expect(row.locator("[data-schedule-words]")).to_contain_text(
        "every 5 minutes of hour 9-17 on mon-fri (UTC)"
    )
    created = stored(dashboard_brain, NAME)
    assert created is not None
    assert created["schedule"] == {
        "kind": "crontab",
        "minute": "*/5",
        "hour": "9-17",
        "day_of_week": "mon-fri",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "UTC",
    }
    assert (created["args"], created["options"]["queue"], created["enabled"]) == (
        [2, 3],
        QUEUE,
        True,
    )

    # The switch: disabled, then enabled again, each by the beat agent.
    listing = page.locator("[data-schedules-status]")
    switch = row.get_by_role("switch", name=f"{NAME} enabled")
    expect(switch).to_be_checked()
    switch.click()
    expect(listing).to_have_text(f"Entry {NAME} disabled.")
    expect(switch).not_to_be_checked()
    assert (stored(dashboard_brain, NAME) or {})["enabled"] is False
    switch.click()
    expect(listing).to_have_text(f"Entry {NAME} enabled.")
    expect(switch).to_be_checked()
    assert (stored(dashboard_brain, NAME) or {})["enabled"] is True

    # Run now: beat sends the task, the worker runs it, the list shows the fire's task state.
    row.get_by_role("button", name=f"Run {NAME} now").click()
    expect(listing).to_contain_text(f"Run now: beat sent {NAME}'s task")
    task_id = listing.locator("[data-sent-task]").get_attribute("data-sent-task")
    assert task_id
    task = dashboard_brain.wait_task(task_id, "succeeded", "succeeded")
    assert (task["name"], task["result"]) == (TASK, 5)
    last = row.locator(f'[data-last-task="{task_id}"]')
    expect(last).to_have_text("succeeded")
    expect(row.locator("[data-last-run]")).to_contain_text("run now")

    # The entry's page: the fire, by hand, with its task's state; the next five fire times.
    row.get_by_role("link", name=NAME).click()
    expect(page.get_by_role("heading", name=NAME)).to_be_visible()
    fire = page.locator("tr[data-fire]").first
    expect(fire).to_contain_text("run now")
    expect(fire.locator(f'[data-fire-task="{task_id}"]')).to_be_visible()
    expect(fire).to_contain_text("succeeded")
    expect(page.locator("[data-next-times] li")).to_have_count(5)
    expect(page.locator("[data-next-times] li").first).to_contain_text("your time:")
    page.go_back()

    # Edit: renamed and made an interval.
    row.get_by_role("button", name=f"Edit {NAME}").click()
    expect(page.locator("[data-form-title]")).to_have_text(f"Edit {NAME}")
    expect(form.get_by_label("Minute")).to_have_value("*/5")
    expect(form.get_by_label("Queue")).to_have_value(QUEUE)
    expect(args).to_have_value("[2,3]")
    expect(form.get_by_label("Scheduler")).to_be_disabled()
    form.get_by_label("Name").fill(RENAMED)
    form.get_by_role("radio", name="Every N").check()
    form.get_by_label("Every", exact=True).fill("2")
    form.get_by_label("Unit").select_option("hours")
    expect(times).to_have_count(5)
    form.get_by_role("button", name="Save changes").click()
    expect(status).to_contain_text(f"Entry {RENAMED} saved in beat.")
    expect(page.locator("[data-form-title]")).to_have_text("New entry")
    renamed = section.locator(f'tr[data-entry="{RENAMED}"]')
    expect(renamed.locator("[data-schedule-words]")).to_have_text("every 2 hours")
    expect(row).to_have_count(0)
    edited = stored(dashboard_brain, RENAMED)
    assert edited is not None
    assert edited["schedule"] == {"kind": "interval", "every": 2, "period": "hours"}
    assert (edited["task"], edited["args"]) == (TASK, [2, 3])
    assert stored(dashboard_brain, NAME) is None

    # Delete: nothing happens without the confirmation; with it, the entry is gone.
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    renamed.get_by_role("button", name=f"Delete {RENAMED}").click()
    expect(renamed).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    renamed.get_by_role("button", name=f"Delete {RENAMED}").click()
    expect(listing).to_have_text(f"Entry {RENAMED} deleted.")
    expect(renamed).to_have_count(0)
    assert questions == [
        f'Delete the entry "{RENAMED}" from scheduler beat? Beat stops sending its task;'
        " its past fires stay in the history."
    ]
    assert stored(dashboard_brain, RENAMED) is None


def test_a_refused_change_is_said_in_words_and_changes_nothing(
    page: Page, dashboard_brain: Brain, beat: Beat
) -> None:
    """A name already taken is a 409 under the name field; a crontab in a zone the file
    scheduler cannot hold fails in the beat agent, with its reason; an impossible crontab is
    a 400 under its field; a clocked time forces one-off; a solar event says why it has no
    preview."""
    open_schedules(page, dashboard_brain)
    form = page.locator("[data-schedule-form]")
    status = form.locator("[data-form-status]")
    form.get_by_label("Name").fill("static-nightly")
    form.get_by_label("Task", exact=True).fill("tests.beat.beat_app.add")
    form.get_by_role("button", name="Create entry").click()
    expect(status).to_have_text(
        "Not saved: scheduler 'beat' already has an entry named 'static-nightly'"
    )
    expect(status).to_have_attribute("data-outcome", "error")
    expect(form.locator('[data-field-error="name"]')).to_contain_text("already has an entry")

    # The beat agent refuses what its scheduler cannot hold: the command fails with why.
    form.get_by_label("Name").fill("berlin-mornings")
    form.get_by_label("Hour").fill("7")
    form.get_by_label("Minute").fill("0")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_role("button", name="Create entry").click()
    expect(status).to_contain_text("Creating berlin-mornings failed: ")
    expect(status).to_contain_text("reads every crontab in beat's timezone (UTC)")
    expect(status).to_have_attribute("data-outcome", "error")
    assert stored(dashboard_brain, "berlin-mornings") is None

    form.get_by_label("Name").fill("never")
    form.get_by_label("Day of month").fill("30")
    form.get_by_label("Month", exact=True).fill("feb")
    expect(form.locator('[data-field-error="day_of_month"]')).to_contain_text(
        "day_of_month '30' never occurs in month_of_year 'feb'"
    )
    form.get_by_role("button", name="Create entry").click()
    expect(status).to_contain_text("Not saved: schedule.day_of_month '30' never occurs")
    assert stored(dashboard_brain, "never") is None

    form.get_by_role("radio", name="Once, at a time").check()
    one_off = form.get_by_label("One-off")
    expect(one_off).to_be_checked()
    expect(one_off).to_be_disabled()
    form.get_by_role("radio", name="Solar event").check()
    expect(one_off).to_be_enabled()
    form.get_by_label("Latitude").fill("48.85")
    form.get_by_label("Longitude").fill("2.35")
    expect(form.locator("[data-preview-text]")).to_contain_text(
        "No preview: solar schedules are not previewed"
    )


def test_the_list_and_its_screenshots_at_desktop_and_phone_widths(
    page: Page, dashboard_brain: Brain, beat: Beat, screenshot: Screenshot
) -> None:
    """A few entries of each kind, one disabled; the page fits a 375 px screen, where each
    entry is a card with its controls."""
    entries = [
        {
            "name": "weekday-report",
            "task": "tests.beat.beat_app.add",
            "schedule": {"kind": "crontab", "minute": "30", "hour": "9", "day_of_week": "mon-fri"},
            "args": [1, 2],
            "description": "The morning report, on working days",
        },
        {
            "name": "heartbeat",
            "task": TASK,
            "schedule": {"kind": "interval", "every": 30, "period": "seconds"},
            "args": [1, 1],
            "options": {"queue": QUEUE},
        },
        {
            "name": "lights-at-dusk",
            "task": "tests.beat.beat_app.ping",
            "schedule": {
                "kind": "solar",
                "event": "dusk_civil",
                "latitude": 48.85,
                "longitude": 2.35,
            },
            "enabled": False,
        },
    ]
    for entry in entries:
        done = dashboard_brain.api("POST", f"{SCHEDULES}?wait=20", {"entry": entry})
        assert done["status"] == "succeeded", done
    open_schedules(page, dashboard_brain)
    section = page.locator('section[data-scheduler="beat"]')
    for entry in entries:
        expect(section.locator(f'tr[data-entry="{entry["name"]}"]')).to_be_visible()
    expect(section.locator('tr[data-entry="lights-at-dusk"]')).to_have_class("off")
    expect(section.locator('tr[data-entry="heartbeat"] [data-schedule-words]')).to_have_text(
        "every 30 seconds"
    )
    # The heartbeat fires every 30 s, its task runs on the worker: both appear without a reload.
    expect(section.locator('tr[data-entry="heartbeat"] [data-fire-task]')).to_have_text(
        "succeeded", timeout=60_000
    )
    page.get_by_label("Name").fill("nightly-cleanup")
    page.get_by_label("Task", exact=True).fill("tests.beat.beat_app.ping")
    page.get_by_label("Minute").fill("0")
    page.get_by_label("Hour").fill("2")
    expect(page.locator("[data-preview-times] li")).to_have_count(5)
    expect(page.locator("[data-preview-times] li").first).to_contain_text("02:00:00 UTC")
    screenshot(page, "schedules")
    page.set_viewport_size({"width": 375, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    card = section.locator('tr[data-entry="weekday-report"]')
    expect(card.get_by_role("switch", name="weekday-report enabled")).to_be_visible()
    box = card.get_by_role("button", name="Delete weekday-report").bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 375
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "schedules-375")
    page.set_viewport_size({"width": 1280, "height": 800})
