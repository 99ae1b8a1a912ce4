"""The schedules API: Celery Beat entries of every scheduler of a project, and changes to them.

Reading (any member)::

    GET  /api/v1/projects/{p}/schedules                    schedulers and entries, with last fires
    GET  /api/v1/projects/{p}/schedules/{scheduler}/{name} one entry, its next fire times and fires
    POST /api/v1/projects/{p}/schedules/preview            next fire times of a schedule (no change)

Changing (operators and above, :attr:`~z4j_domain.rbac.Permission.MANAGE_SCHEDULES`)::

    POST   /api/v1/projects/{p}/schedules                     create {"scheduler"?, "entry"}
    PUT    /api/v1/projects/{p}/schedules/{scheduler}/{name}  update {"entry"} (may rename)
    DELETE /api/v1/projects/{p}/schedules/{scheduler}/{name}
    POST   /api/v1/projects/{p}/schedules/{scheduler}/{name}/enable
    POST   /api/v1/projects/{p}/schedules/{scheduler}/{name}/disable
    POST   /api/v1/projects/{p}/schedules/{scheduler}/{name}/trigger

A change is validated here (:mod:`z4j_domain.schedules`: cron fields, intervals,
time zones, JSON arguments; an invalid one is a 400 and nothing is stored),
then becomes a ``schedule`` command (see :mod:`z4j_web.commands`) that only
the beat agent of that scheduler carries out, writing to the scheduler beat
uses. It answers ``202`` with the command, like every action; ``?wait=N``
(up to 30 seconds) waits for the outcome and answers ``200`` with the
finished command when it came in time. Its ``result`` is the entry as the
scheduler then holds it (``entry``), the task a trigger sent (``task_id``)
and ``warnings``. The audit log records the request and the outcome with the
entry before and after.

A scheduler is named after the minted agent of its beat (one agent per beat).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from quart import Blueprint, request

from z4j_domain.beat import (
    ScheduleFire,
    ScheduleOp,
    ScheduleRequest,
    SchedulerInfo,
    StoredEntry,
)
from z4j_domain.commands import Command, CommandKind
from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import Conflict, InvalidInput, NotFound, PreviewUnavailable
from z4j_domain.ports import UnitOfWork
from z4j_domain.rbac import Permission
from z4j_domain.schedules import (
    Schedule,
    ScheduleEntry,
    entry_from_dict,
    entry_to_dict,
    next_fire_times,
    schedule_from_dict,
    task_name_warnings,
)
from z4j_domain.tasks import Task
from z4j_web import commands
from z4j_web.auth import current_access, current_change, require
from z4j_web.payloads import json_object
from z4j_web.runtime import current_runtime

__all__ = ["blueprint", "entry_detail", "entry_view", "scheduler_view", "schedules_of"]

_log = logging.getLogger("z4j.schedules")

blueprint = Blueprint("schedules", __name__, url_prefix="/api/v1/projects/<project>/schedules")

#: Longest ``?wait=`` for a change's outcome, in seconds.
MAX_WAIT: Final = 30.0
#: How soon, then how often at most, a waiting request looks at its command.
_WAIT_STEP: Final = 0.1
_MAX_WAIT_STEP: Final = 1.0
#: Next fire times the API shows (the dashboard's cron helper shows five).
PREVIEW_COUNT: Final = 5
_MAX_PREVIEW: Final = 20
#: Fires an entry's page lists.
FIRES_SHOWN: Final = 50
#: What beat reports of an entry; a client's values for these are ignored.
_REPORTED: Final = ("last_run_at", "total_run_count", "next_run_at")


def _when(value: datetime | None) -> str | None:
    return None if value is None else utc_isoformat(value)


def scheduler_view(info: SchedulerInfo, connected: bool) -> dict[str, Any]:
    """A scheduler as the API shows it."""
    return {
        "name": info.name,
        "kind": info.kind.value,
        "class": info.class_path,
        "timezone": info.timezone,
        "writable": info.writable,
        "note": info.note,
        "connected": connected,
        "reported_at": utc_isoformat(info.reported_at),
        "refused": [refused.to_dict() for refused in info.refused],
        "known_tasks": sorted(info.known_tasks),
    }


def _fire_view(fire: ScheduleFire, tasks: Mapping[str, Task]) -> dict[str, Any]:
    view = fire.to_dict()
    task = tasks.get(fire.task_id) if fire.task_id is not None else None
    view["task_state"] = None if task is None else task.state.value
    return view


def entry_view(
    stored: StoredEntry,
    info: SchedulerInfo | None,
    last_fire: ScheduleFire | None,
    tasks: Mapping[str, Task],
) -> dict[str, Any]:
    """An entry as the API shows it: the entry, its scheduler, warnings and last fire."""
    view = entry_to_dict(stored.entry)
    view["scheduler"] = stored.scheduler
    view["updated_at"] = utc_isoformat(stored.updated_at)
    view["warnings"] = task_name_warnings(stored.entry, info.known_tasks if info else ())
    view["last_fire"] = None if last_fire is None else _fire_view(last_fire, tasks)
    return view


async def _tasks_of(project_id: int, fires: Sequence[ScheduleFire]) -> dict[str, Task]:
    ids = [fire.task_id for fire in fires if fire.task_id is not None]
    if not ids:
        return {}
    async with current_runtime().uow() as uow:
        return {task.id: task for task in await uow.tasks.get_many(project_id, ids)}


def _connected(project_id: int) -> set[str]:
    return set(current_runtime().reconciler.connected_agents(project_id))


async def schedules_of(project_id: int) -> dict[str, Any]:
    """Every scheduler of the project and every entry, with its last fire (the list's data)."""
    async with current_runtime().uow() as uow:
        infos = await uow.schedules.schedulers(project_id)
        stored = await uow.schedules.entries(project_id)
        latest = await uow.schedules.latest_fires(project_id)
    tasks = await _tasks_of(project_id, list(latest.values()))
    connected = _connected(project_id)
    by_name = {info.name: info for info in infos}
    return {
        "schedulers": [scheduler_view(info, info.name in connected) for info in infos],
        "items": [
            entry_view(
                entry,
                by_name.get(entry.scheduler),
                latest.get((entry.scheduler, entry.entry.name)),
                tasks,
            )
            for entry in stored
        ],
    }


@blueprint.get("")
@require(Permission.READ_TASKS)
async def list_schedules(project: str) -> dict[str, Any]:
    """The project's schedulers and their entries (each with its last fire and task state)."""
    return await schedules_of(current_access().project.id)


def _preview(
    schedule: Schedule,
    now: datetime,
    count: int = PREVIEW_COUNT,
    last_run_at: datetime | None = None,
) -> dict[str, Any]:
    try:
        times = next_fire_times(schedule, now, count, last_run_at=last_run_at)
    except PreviewUnavailable as reason:
        return {"next_fire_times": None, "preview_unavailable": str(reason)}
    return {"next_fire_times": [utc_isoformat(moment) for moment in times]}


async def _stored(project_id: int, scheduler: str, name: str) -> tuple[StoredEntry, SchedulerInfo]:
    async with current_runtime().uow() as uow:
        info = await uow.schedules.scheduler(project_id, scheduler)
        stored = await uow.schedules.get(project_id, scheduler, name)
    if info is None:
        raise NotFound(f"no scheduler {scheduler!r} in the project")
    if stored is None:
        raise NotFound(f"no schedule entry {name!r} in scheduler {scheduler!r}")
    return stored, info


async def entry_detail(project_id: int, scheduler: str, name: str) -> dict[str, Any]:
    """One entry (:func:`entry_view`) with ``next_fire_times`` (or ``preview_unavailable``),
    ``scheduler_info`` and its latest ``fires``; :class:`NotFound` for an unknown one."""
    stored, info = await _stored(project_id, scheduler, name)
    async with current_runtime().uow() as uow:
        fires = await uow.schedules.fires(project_id, scheduler, name, FIRES_SHOWN)
    tasks = await _tasks_of(project_id, fires)
    view = entry_view(stored, info, fires[0] if fires else None, tasks)
    now = current_runtime().clock.now()
    view.update(_preview(stored.entry.schedule, now, last_run_at=stored.entry.last_run_at))
    view["scheduler_info"] = scheduler_view(info, info.name in _connected(project_id))
    view["fires"] = [_fire_view(fire, tasks) for fire in fires]
    return view


@blueprint.get("/<scheduler>/<path:name>")
@require(Permission.READ_TASKS)
async def get_schedule(project: str, scheduler: str, name: str) -> dict[str, Any]:
    """One entry: the entry, its scheduler, its next five fire times and its recent fires."""
    return await entry_detail(current_access().project.id, scheduler, name)


@blueprint.post("/preview")
@require(Permission.READ_TASKS)
async def preview(project: str) -> dict[str, Any]:
    """The next fire times of ``{"schedule": {...}, "count"?: 1-20}``; a 400 says what is invalid.

    The dashboard's cron helper: nothing is stored.
    """
    body = await json_object({"schedule": dict, "count": int}, required=frozenset({"schedule"}))
    count = body.get("count", PREVIEW_COUNT)
    if not 1 <= count <= _MAX_PREVIEW:
        raise InvalidInput(f"count must be between 1 and {_MAX_PREVIEW}")
    schedule = schedule_from_dict(body["schedule"])
    return _preview(schedule, current_runtime().clock.now(), count)


def _entry(data: Any) -> ScheduleEntry:
    if not isinstance(data, dict):
        raise InvalidInput("entry must be a JSON object")
    return entry_from_dict({key: value for key, value in data.items() if key not in _REPORTED})


def _check_writable(info: SchedulerInfo) -> SchedulerInfo:
    if not info.writable:
        raise Conflict(
            f"scheduler {info.name!r} ({info.class_path}) is read-only in z4j:"
            " change its entries where they are defined"
        )
    return info


async def _create_target(uow: UnitOfWork, project_id: int, named: str | None) -> SchedulerInfo:
    """The scheduler a create names, or the project's one scheduler when it names none."""
    if named is not None:
        found = await uow.schedules.scheduler(project_id, named)
        if found is None:
            raise NotFound(f"no scheduler {named!r} in the project")
        return found
    infos = await uow.schedules.schedulers(project_id)
    if not infos:
        raise NotFound(
            "no beat has reported a scheduler in this project yet: run celery beat"
            " with z4j-celerybeat and its agent's variables"
        )
    if len(infos) > 1:
        names = ", ".join(info.name for info in infos)
        raise InvalidInput(f"name the scheduler: this project has several ({names})")
    return infos[0]


def _wait() -> float:
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidInput(f"wait must be a number of seconds, got {raw!r}") from None
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidInput(f"wait must be between 0 and {MAX_WAIT:.0f} seconds")
    return wait


async def _finished(project_id: int, command: Command, wait: float) -> Command | None:
    """The command once finished, if it finishes within ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    step = _WAIT_STEP
    while loop.time() < deadline:
        await asyncio.sleep(min(step, max(0.0, deadline - loop.time())))
        # The command may finish on another brain: its row is where to look, less often
        # the longer it takes.
        step = min(step * 1.5, _MAX_WAIT_STEP)
        async with current_runtime().uow() as uow:
            current = await uow.commands.get(project_id, command.id)
        if current is not None and current.status.is_finished:
            return current
    return None


async def _change(
    info: SchedulerInfo,
    schedule_request: ScheduleRequest,
    before: StoredEntry | None,
    warnings: Sequence[str] = (),
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Issue the schedule command; answer 202 with it, or 200 finished within ``?wait``."""
    wait = _wait()
    runtime = current_runtime()
    project = current_access().project
    params = {
        "target": f"schedule:{info.name}/{schedule_request.name}",
        "scheduler": info.name,
        "request": schedule_request.to_dict(),
        "before": None if before is None else entry_to_dict(before.entry),
        "warnings": list(warnings),
    }
    command, created = await commands.issue(
        current_change(),
        project=project,
        command_id=commands.new_command_id(),
        kind=CommandKind.SCHEDULE,
        params=params,
        time_limit=runtime.settings.command_timeout,
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    if created:
        runtime.commands.wake()
    headers = {"Location": f"/api/v1/projects/{project.slug}/commands/{command.id}"}
    finished = await _finished(project.id, command, wait) if wait > 0 else None
    if finished is not None:
        return commands.command_to_dict(finished), 200, headers
    return commands.command_to_dict(command), 202, headers


@blueprint.post("")
@require(Permission.MANAGE_SCHEDULES)
async def create_schedule(project: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Create an entry: ``{"scheduler"?: name, "entry": {...}}`` (the scheduler may be left
    out when the project has one)."""
    body = await json_object({"scheduler": str, "entry": dict}, required=frozenset({"entry"}))
    entry = _entry(body["entry"])
    project_id = current_access().project.id
    async with current_runtime().uow() as uow:
        info = _check_writable(await _create_target(uow, project_id, body.get("scheduler")))
        existing = await uow.schedules.get(project_id, info.name, entry.name)
    if existing is not None:
        raise Conflict(f"scheduler {info.name!r} already has an entry named {entry.name!r}")
    schedule_request = ScheduleRequest(op=ScheduleOp.CREATE, name=entry.name, entry=entry)
    return await _change(info, schedule_request, None, task_name_warnings(entry, info.known_tasks))


@blueprint.put("/<scheduler>/<path:name>")
@require(Permission.MANAGE_SCHEDULES)
async def update_schedule(
    project: str, scheduler: str, name: str
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Replace an entry with ``{"entry": {...}}`` (a different ``name`` renames it)."""
    body = await json_object({"entry": dict}, required=frozenset({"entry"}))
    entry = _entry(body["entry"])
    project_id = current_access().project.id
    stored, info = await _stored(project_id, scheduler, name)
    _check_writable(info)
    if entry.name != name:
        async with current_runtime().uow() as uow:
            taken = await uow.schedules.get(project_id, scheduler, entry.name)
        if taken is not None:
            raise Conflict(f"scheduler {scheduler!r} already has an entry named {entry.name!r}")
    schedule_request = ScheduleRequest(op=ScheduleOp.UPDATE, name=name, entry=entry)
    return await _change(
        info, schedule_request, stored, task_name_warnings(entry, info.known_tasks)
    )


@blueprint.delete("/<scheduler>/<path:name>", defaults={"action": "delete"})
@blueprint.post("/<scheduler>/<path:name>/<any(enable, disable, trigger):action>")
@require(Permission.MANAGE_SCHEDULES)
async def act_on_schedule(
    project: str, scheduler: str, name: str, action: str
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """``DELETE`` the entry (its fires stay in the history); ``POST .../enable`` or
    ``.../disable`` it; ``POST .../trigger``: send its task now, with its arguments and
    options, its schedule untouched."""
    stored, info = await _stored(current_access().project.id, scheduler, name)
    return await _change(_check_writable(info), ScheduleRequest(op=action, name=name), stored)
