"""Celery's schedule objects and options as z4j's, the next run, and the setting's fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from celery.schedules import crontab, schedule

from z4j_agent_celerybeat.conversion import (
    beat_timezone,
    celery_options,
    celery_schedule,
    fingerprint,
    next_run_at,
    schedule_of,
)
from z4j_agent_celerybeat.errors import Unsupported
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import (
    ClockedSchedule,
    CrontabSchedule,
    EntryOptions,
    IntervalSchedule,
)

NOW = datetime(2025, 3, 4, 10, 5, tzinfo=UTC)


def test_next_run_of_a_crontab_counts_from_the_last_run() -> None:
    """Beat sends a crontab at its first match after the last run, or now when overdue."""
    every_quarter = CrontabSchedule(minute="*/15")
    ten = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    assert next_run_at(every_quarter, now=NOW, last_run_at=ten) == ten + timedelta(minutes=15)
    yesterday = ten - timedelta(days=1)
    assert next_run_at(every_quarter, now=NOW, last_run_at=yesterday) == NOW
    assert next_run_at(every_quarter, now=NOW, last_run_at=None) == ten + timedelta(minutes=15)


def test_next_run_of_an_interval_clocked_and_disabled_entry() -> None:
    """Intervals count from the last run; a clocked time once; disabled or done: none."""
    minute = IntervalSchedule(every=1, period="minutes")
    assert next_run_at(minute, now=NOW, last_run_at=NOW - timedelta(seconds=20)) == NOW + (
        timedelta(seconds=40)
    )
    assert next_run_at(minute, now=NOW, last_run_at=None) == NOW + timedelta(minutes=1)
    assert next_run_at(minute, now=NOW, last_run_at=None, enabled=False) is None
    later = datetime(2030, 1, 1, tzinfo=UTC)
    clocked = ClockedSchedule(clocked_time=later)
    assert next_run_at(clocked, now=NOW, last_run_at=None) == later
    tomorrow = NOW + timedelta(days=1)
    passed = ClockedSchedule(clocked_time=NOW)  # not sent yet: due now
    assert next_run_at(passed, now=tomorrow, last_run_at=None) == tomorrow
    assert next_run_at(clocked, now=NOW, last_run_at=None, done=True) is None


def test_celery_crontab_fields_in_any_form_read_as_text() -> None:
    """Celery takes numbers and lists for crontab fields; z4j shows them as expressions."""
    held = crontab(minute=[0, 30], hour=8, day_of_week="mon-fri")
    assert schedule_of(held, timezone="Europe/Paris") == CrontabSchedule(
        minute="0,30", hour="8", day_of_week="mon-fri", timezone="Europe/Paris"
    )
    assert schedule_of(schedule(timedelta(hours=2)), timezone="UTC") == IntervalSchedule(
        every=2, period="hours"
    )
    with pytest.raises(InvalidInput, match="local time"):
        schedule_of(held, timezone=None)


def test_beats_timezone() -> None:
    """The app's timezone; UTC when it has none and enable_utc is on; else the local time."""
    app = Celery("tz", set_as_current=False)
    assert beat_timezone(app) == "UTC"
    app.conf.timezone = "Asia/Tokyo"
    assert beat_timezone(app) == "Asia/Tokyo"
    local = Celery("local", set_as_current=False)
    local.conf.enable_utc = False
    assert beat_timezone(local) is None
    with pytest.raises(Unsupported, match="machine's local time"):
        celery_schedule(CrontabSchedule(), timezone=None, scheduler="RedBeat")


def test_options_z4j_does_not_edit_are_kept() -> None:
    """Editing options replaces z4j's five and keeps the rest (headers, an expiry date)."""
    until = datetime(2030, 1, 1, tzinfo=UTC)
    kept = {"queue": "old", "headers": {"h": 1}, "expires": until, "countdown": 3}
    assert celery_options(EntryOptions(queue="new", priority=2), keep=kept) == {
        "queue": "new",
        "priority": 2,
        "headers": {"h": 1},
        "expires": until,
        "countdown": 3,
    }
    assert celery_options(EntryOptions(expires=30), keep=kept)["expires"] == 30


def test_a_settings_fingerprint_is_stable_and_tells_changes() -> None:
    """The same item in any key order has one fingerprint; a change gives another."""
    one = {"task": "a", "schedule": crontab(minute="0"), "args": (1,)}
    same = {"args": (1,), "schedule": crontab(minute="0"), "task": "a"}
    assert fingerprint(one) == fingerprint(same)
    assert fingerprint(one) != fingerprint({**one, "args": (2,)})
    assert fingerprint(None) is None
