"""The dashboard's schedules pages: a project's Celery Beat entries, and one entry's history.

Both read server-side through what the schedules API shows
(:mod:`z4j_web.schedules`: :func:`~z4j_web.schedules.schedules_of`,
:func:`~z4j_web.schedules.entry_detail`), so the pages and the API agree. Every
change (create, edit, enable, disable, run now, delete) and the cron helper's
preview are made by ``static/app.js`` through the JSON API with the user's
session: the same checks, the same ``schedule`` commands to the scheduler's
beat agent, the same audit log. Viewers see the entries without change
controls, and a read-only scheduler's entries have none for anyone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from quart import Blueprint

from z4j_domain.beat import SchedulerKind
from z4j_domain.rbac import Permission
from z4j_domain.schedules import IntervalPeriod, SolarEvent
from z4j_web.dashboard import current_page, page, render
from z4j_web.schedules import FIRES_SHOWN, entry_detail, schedules_of

__all__ = ["SCHEDULER_KINDS", "blueprint", "schedule_in_words"]

blueprint = Blueprint("pages_schedules", __name__)

#: A scheduler's kind as the page names it.
SCHEDULER_KINDS: Final = {
    SchedulerKind.DJANGO.value: "django-celery-beat",
    SchedulerKind.REDBEAT.value: "RedBeat",
    SchedulerKind.FILE.value: "file",
    SchedulerKind.OTHER.value: "other",
}

# Fixed English names, not the locale's (calendar.day_abbr would follow LC_TIME).
_DAYS: Final = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_STEP: Final = re.compile(r"\*/(\d+)")
# A number that is not a step (the 2 of "*/2" stays a number).
_VALUE: Final = re.compile(r"(?<!/)\b\d+\b")


def _named(expression: str, names: Sequence[str], first: int) -> str:
    """``expression`` with its values as names ("1-5" is "Mon-Fri"); names already are."""
    return _VALUE.sub(lambda found: names[int(found.group()) - first], expression).replace(
        ",", ", "
    )


def _plural(count: int, unit: str) -> str:
    return f"every {unit}" if count == 1 else f"every {count} {unit}s"


def _time_of_day(minute: str, hour: str) -> str:
    if minute.isdigit() and hour.isdigit():
        return f"at {int(hour):02d}:{int(minute):02d}"
    if minute == "*":
        minutes = "every minute"
    elif step := _STEP.fullmatch(minute):
        minutes = _plural(int(step.group(1)), "minute")
    else:
        minutes = f"at minute {minute.replace(',', ', ')}"
    if hour == "*":
        return minutes if minute == "*" or _STEP.fullmatch(minute) else f"{minutes} of every hour"
    if step := _STEP.fullmatch(hour):
        return f"{minutes}, {_plural(int(step.group(1)), 'hour')}"
    return f"{minutes} of hour {hour.replace(',', ', ')}"


def _crontab_in_words(schedule: Mapping[str, Any]) -> str:
    words = [_time_of_day(schedule["minute"], schedule["hour"])]
    day_of_month, day_of_week = schedule["day_of_month"], schedule["day_of_week"]
    if day_of_month != "*":
        words.append(f"on day {day_of_month.replace(',', ', ')} of the month")
    if day_of_week != "*":
        days = _named(day_of_week, _DAYS, 0)
        # Celery's rule: with both restricted, a day must match both.
        words.append(f"if a {days}" if day_of_month != "*" else f"on {days}")
    if schedule["month_of_year"] != "*":
        words.append(f"in {_named(schedule['month_of_year'], _MONTHS, 1)}")
    words.append(f"({schedule['timezone']})")
    return " ".join(words)


def schedule_in_words(schedule: Mapping[str, Any]) -> str:
    """A schedule's JSON form said in words: "at 09:30 on Mon-Fri (UTC)", "every 5 minutes"."""
    kind = schedule.get("kind")
    if kind == "crontab":
        return _crontab_in_words(schedule)
    if kind == "interval":
        return _plural(int(schedule["every"]), str(schedule["period"]).removesuffix("s"))
    if kind == "solar":
        event = str(schedule["event"]).replace("_", " ")
        return f"at {event}, seen from {schedule['latitude']:g}, {schedule['longitude']:g}"
    if kind == "clocked":
        return f"once, at {schedule['clocked_time'][:16].replace('T', ' ')} UTC"
    return str(kind)


def _cron(schedule: Mapping[str, Any]) -> str | None:
    """A crontab's five fields in classic cron order (minute hour day month weekday)."""
    if schedule.get("kind") != "crontab":
        return None
    fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    return " ".join(str(schedule[field]) for field in fields)


def _shown(item: dict[str, Any]) -> dict[str, Any]:
    """An entry of the API, with what the page adds: its schedule in words and as cron."""
    return {
        **item,
        "in_words": schedule_in_words(item["schedule"]),
        "cron": _cron(item["schedule"]),
    }


def _scheduler_shown(view: dict[str, Any]) -> dict[str, Any]:
    return {**view, "kind_name": SCHEDULER_KINDS.get(view["kind"], view["kind"])}


@blueprint.get("/projects/<project>/schedules")
@page(Permission.READ_TASKS)
async def schedules_page(project: str) -> Any:
    """Every scheduler with its entries and their last fires; the form for operators."""
    current = current_page()
    assert current.access is not None
    listed = await schedules_of(current.access.project.id)
    schedulers = [_scheduler_shown(view) for view in listed["schedulers"]]
    known = {view["name"] for view in schedulers}
    groups = [
        {
            "scheduler": view,
            "items": [
                _shown(item) for item in listed["items"] if item["scheduler"] == view["name"]
            ],
        }
        for view in schedulers
    ]
    # Entries of a scheduler without a header cannot happen through the gateway (a report
    # stores both); shown all the same rather than hidden.
    orphans = [_shown(item) for item in listed["items"] if item["scheduler"] not in known]
    can_manage = current.can(Permission.MANAGE_SCHEDULES)
    return await render(
        "schedules.html",
        project=current.access.project,
        active="schedules",
        groups=groups,
        orphans=orphans,
        can_manage=can_manage,
        writable=[view for view in schedulers if view["writable"]],
        periods=[period.value for period in IntervalPeriod],
        events=[event.value for event in SolarEvent],
    )


@blueprint.get("/projects/<project>/schedules/<scheduler>/<path:name>")
@page(Permission.READ_TASKS)
async def schedule_page(project: str, scheduler: str, name: str) -> Any:
    """One entry: what it sends and when, its next fire times and its fires (with task states).

    The same data as ``GET /api/v1/projects/{p}/schedules/{scheduler}/{name}``.
    """
    current = current_page()
    assert current.access is not None
    detail = await entry_detail(current.access.project.id, scheduler, name)
    fires = detail.pop("fires")
    info = detail.pop("scheduler_info")
    return await render(
        "schedule.html",
        project=current.access.project,
        active="schedules",
        item=_shown(detail),
        scheduler=_scheduler_shown(info),
        next_fire_times=detail["next_fire_times"],
        preview_unavailable=detail.get("preview_unavailable"),
        fires=fires,
        fires_shown=FIRES_SHOWN,
    )
