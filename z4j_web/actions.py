"""The action API: retry, cancel, bulk retry and cancel, purge, and the commands they become.

Every action answers ``202 Accepted`` with the command it stored (see
:mod:`z4j_web.commands`): ``{"id", "status": "pending", ...}``, and a
``Location`` to poll. The outcome (a retry's new task id, a bulk action's
per-task summary, a purge's count) appears in the command's ``result`` once
an agent of the project has carried it out. A client may send an idempotency
key (the ``Idempotency-Key`` header or an ``idempotency_key`` field): a repeat
with the same key answers with the first command and runs nothing again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from quart import Blueprint, request

from z4j_domain.commands import (
    CANCEL_SIGNALS,
    CommandKind,
    CommandStatus,
    check_retry_overrides,
    plan_retry,
    retry_task_id,
)
from z4j_domain.encoding import canonical_json
from z4j_domain.errors import Conflict, InvalidInput, NotFound
from z4j_domain.queries import TaskFilter
from z4j_domain.rbac import Permission
from z4j_domain.tasks import Task
from z4j_web import commands
from z4j_web.auth import current_access, current_change, require
from z4j_web.payloads import json_object
from z4j_web.runtime import current_runtime

__all__ = ["blueprint"]

_log = logging.getLogger("z4j.actions")

blueprint = Blueprint("actions", __name__, url_prefix="/api/v1/projects/<project>")

#: Tasks a bulk dry run shows as a sample.
DRY_RUN_SAMPLE: Final = 20
#: Most bytes of task ids one bulk request may list (about 5,000 Celery ids); a filter has no
#: such limit.
MAX_IDS_BYTES: Final = 200 * 1024
#: Most commands one list request returns.
MAX_COMMANDS_PAGE: Final = 200
_KEY_HEADER: Final = "Idempotency-Key"


async def _body(fields: dict[str, Any]) -> dict[str, Any]:
    """The JSON body (no body, or ``null``, is an empty object), checked against ``fields``."""
    if (await request.get_data()).strip() in (b"", b"null"):
        return {}
    return await json_object({**fields, "idempotency_key": str})


def _idempotency_key(body: dict[str, Any]) -> str | None:
    header = request.headers.get(_KEY_HEADER)
    field = body.get("idempotency_key")
    if header is not None and field is not None and header != field:
        raise InvalidInput(f"the {_KEY_HEADER} header and idempotency_key differ; send one")
    return header if header is not None else field


def _eta(body: dict[str, Any]) -> datetime | None:
    raw = body.get("eta")
    if raw is None:
        return None
    try:
        eta = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"eta is not an ISO 8601 time: {raw!r}") from None
    if eta.tzinfo is None:
        raise InvalidInput("eta needs a timezone offset, e.g. 2026-01-01T12:00:00Z")
    return eta


def _signal(body: dict[str, Any]) -> str:
    signal = body.get("signal") or "SIGTERM"
    if signal not in CANCEL_SIGNALS:
        raise InvalidInput(f"signal must be one of {', '.join(sorted(CANCEL_SIGNALS))}")
    return str(signal)


async def _task(task_id: str) -> Task:
    project = current_access().project
    async with current_runtime().uow() as uow:
        task = await uow.tasks.get(project.id, task_id)
    if task is None:
        raise NotFound(f"no task {task_id!r} in project {project.slug}")
    return task


async def _issue(
    kind: CommandKind, params: dict[str, Any], key: str | None, command_id: str | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    runtime = current_runtime()
    project = current_access().project
    command, created = await commands.issue(
        current_change(),
        project=project,
        command_id=command_id or commands.new_command_id(),
        kind=kind,
        params=params,
        time_limit=runtime.settings.command_timeout,
        idempotency_key=key,
    )
    if created:
        runtime.commands.wake()
    headers = {"Location": f"/api/v1/projects/{project.slug}/commands/{command.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return commands.command_to_dict(command), 202, headers


@blueprint.post("/tasks/<path:task_id>/retry")
@require(Permission.RETRY)
async def retry_task(project: str, task_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Publish the task again, as a new task linked to it (``retry_of``).

    Body (all optional): ``{"queue": "...", "countdown": seconds, "eta": "..."}``.
    The command's result names the new task: ``{"new_task_id": ...}``.
    """
    body = await _body({"queue": str, "countdown": (int, float), "eta": str})
    task = await _task(task_id)
    plan = plan_retry(
        task, queue=body.get("queue"), countdown=body.get("countdown"), eta=_eta(body)
    )
    command_id = commands.new_command_id()
    params = {
        "target": f"task:{task.id}",
        "item": plan.item(retry_task_id(command_id, task.id)).to_dict(),
    }
    return await _issue(CommandKind.RETRY, params, _idempotency_key(body), command_id)


@blueprint.post("/tasks/<path:task_id>/cancel")
@require(Permission.CANCEL)
async def cancel_task(project: str, task_id: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Revoke the task (``{"terminate": true}`` also kills it if it is running).

    Body (optional): ``{"terminate": false, "signal": "SIGTERM"}``. A task that
    already ended is refused with 409.
    """
    body = await _body({"terminate": bool, "signal": str})
    task = await _task(task_id)
    if task.state.is_terminal:
        raise Conflict(f"task {task.id!r} already ended ({task.state.value}); nothing to cancel")
    params = {
        "target": f"task:{task.id}",
        "task_id": task.id,
        "terminate": bool(body.get("terminate", False)),
        "signal": _signal(body),
    }
    return await _issue(CommandKind.CANCEL, params, _idempotency_key(body))


async def _bulk(
    kind: CommandKind, extra: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    body = await json_object(
        {"filter": dict, "ids": list, "dry_run": bool, "idempotency_key": str, **extra}
    )
    runtime = current_runtime()
    project = current_access().project
    cap = runtime.settings.bulk_cap
    if ("filter" in body) == ("ids" in body):
        raise InvalidInput('send either "filter" (as the task list takes it) or "ids", not both')
    params: dict[str, Any] = {"target": "tasks"}
    if "ids" in body:
        ids = body["ids"]
        if not all(isinstance(i, str) and 0 < len(i) <= 255 for i in ids):
            raise InvalidInput('"ids" must be a list of task ids (strings)')
        ids = list(dict.fromkeys(ids))
        if not ids:
            raise InvalidInput('"ids" is empty: nothing to do')
        if len(ids) > cap:
            raise InvalidInput(
                f"{len(ids)} ids is more than the cap of {cap} per request (Z4J_BULK_CAP)"
            )
        size = len(canonical_json(ids))
        if size > MAX_IDS_BYTES:
            raise InvalidInput(
                f"the id list is {size} bytes, more than {MAX_IDS_BYTES} a request may carry:"
                " send fewer ids per request, or select the tasks with a filter"
            )
        params.update(ids=ids, total=len(ids))
        if body.get("dry_run"):
            first = ids[:DRY_RUN_SAMPLE]
            async with runtime.uow() as uow:
                found = {t.id: t for t in await uow.tasks.get_many(project.id, first)}
            listed = [found[i] for i in first if i in found]
            return _dry_run(len(ids), False, cap, listed), 200, {}
    else:
        task_filter = TaskFilter.from_params(body["filter"])
        until = runtime.clock.now()
        bounded = commands.bounded(task_filter, until)
        count, sample = await commands.count_matching(
            runtime.uow, project.id, bounded, limit=cap + 1, sample=DRY_RUN_SAMPLE
        )
        capped = count > cap
        if body.get("dry_run"):
            return _dry_run(min(count, cap), capped, cap, sample), 200, {}
        if capped:
            raise InvalidInput(
                f"the filter selects more than {cap} tasks, the cap per request (Z4J_BULK_CAP);"
                " narrow it (a state, a name, a time range) and send it again"
            )
        if count == 0:
            raise InvalidInput("the filter selects no tasks: nothing to do")
        params.update(filter=task_filter.to_params(), until=until.isoformat(), total=count)
    for name in extra:
        if name in body:
            params[name] = body[name]
    if kind is CommandKind.BULK_CANCEL:
        params.update(terminate=bool(body.get("terminate", False)), signal=_signal(body))
    else:
        # Checked now with the domain's rules, not only when each task is planned.
        check_retry_overrides(
            queue=body.get("queue"), countdown=body.get("countdown"), eta=_eta(body)
        )
    return await _issue(kind, params, _idempotency_key(body))


def _dry_run(count: int, capped: bool, cap: int, sample: Sequence[Task]) -> dict[str, Any]:
    return {
        "dry_run": True,
        "count": count,
        "capped": capped,
        "cap": cap,
        "sample": [
            {"id": t.id, "name": t.name, "state": t.state.value, "queue": t.queue} for t in sample
        ],
    }


@blueprint.post("/tasks/bulk-retry")
@require(Permission.BULK_ACTIONS)
async def bulk_retry(project: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Retry every task a filter selects (or the listed ids), each once.

    Body: ``{"filter": {...}, "dry_run": true}`` counts and samples without
    doing anything; ``{"filter": {...}}`` or ``{"ids": [...]}`` (optionally
    ``queue``, ``countdown``, ``eta``) issues the command. At most
    ``Z4J_BULK_CAP`` tasks per request.
    """
    return await _bulk(
        CommandKind.BULK_RETRY, {"queue": str, "countdown": (int, float), "eta": str}
    )


@blueprint.post("/tasks/bulk-cancel")
@require(Permission.BULK_ACTIONS)
async def bulk_cancel(project: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Cancel every task a filter selects (or the listed ids); tasks that ended are skipped.

    Body as for bulk retry, with ``terminate`` and ``signal`` as for a cancel.
    """
    return await _bulk(CommandKind.BULK_CANCEL, {"terminate": bool, "signal": str})


@blueprint.post("/queues/<queue>/purge")
@require(Permission.PURGE)
async def purge_queue(project: str, queue: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Delete every message waiting in a broker queue (admin only).

    Body: ``{"confirm_depth": N}``, N being the queue's current depth. Without
    it (or with a depth that no longer holds) the command fails and its result
    says the depth now: ``{"queue", "depth"}``; send again confirming that.
    """
    body = await _body({"confirm_depth": (int, type(None))})
    depth = body.get("confirm_depth")
    if depth is not None and depth < 0:
        raise InvalidInput("confirm_depth must be the queue's depth, a number of messages >= 0")
    if not queue or len(queue) > 255:
        raise InvalidInput("queue must be a name of 1 to 255 characters")
    params = {"target": f"queue:{queue}", "queue": queue, "confirm_depth": depth}
    return await _issue(CommandKind.PURGE, params, _idempotency_key(body))


@blueprint.get("/commands")
@require(Permission.READ_TASKS)
async def list_commands(project: str) -> dict[str, Any]:
    """The project's commands, newest first (``status``, ``limit``, ``before`` to page)."""
    args = request.args
    unknown = sorted(set(args) - {"status", "limit", "before"})
    if unknown:
        raise InvalidInput(f"unknown parameter {unknown[0]!r}; expected status, limit or before")
    status = None
    if args.get("status"):
        try:
            status = CommandStatus(args["status"])
        except ValueError:
            allowed = ", ".join(s.value for s in CommandStatus)
            raise InvalidInput(f"status must be one of {allowed}") from None
    try:
        limit = int(args.get("limit", "50"))
    except ValueError:
        raise InvalidInput("limit must be an integer") from None
    if not 1 <= limit <= MAX_COMMANDS_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_COMMANDS_PAGE}")
    before = None
    if args.get("before"):
        try:
            before = datetime.fromisoformat(args["before"].replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("before must be an ISO 8601 time (a command's created_at)") from None
        if before.tzinfo is None:
            raise InvalidInput("before needs a timezone offset")
    async with current_runtime().uow() as uow:
        found = await uow.commands.list(
            current_access().project.id, status=status, limit=limit, before=before
        )
    items = [commands.command_to_dict(command) for command in found]
    return {"items": items, "next_before": items[-1]["created_at"] if len(items) == limit else None}


@blueprint.get("/commands/<command_id>")
@require(Permission.READ_TASKS)
async def get_command(project: str, command_id: str) -> dict[str, Any]:
    """One command and where it stands (its result once finished)."""
    access = current_access()
    async with current_runtime().uow() as uow:
        command = await uow.commands.get(access.project.id, command_id)
    if command is None:
        raise NotFound(f"no command {command_id!r} in project {access.project.slug}")
    return commands.command_to_dict(command)
