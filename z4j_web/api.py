"""The project-scoped API: tasks, a task's timeline and canvas, workers, queues, settings, agents.

Each view names the permission it needs (:func:`z4j_web.auth.require`);
changes are recorded in the audit log.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from quart import Blueprint, request
from werkzeug.datastructures import MultiDict

from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.projects import Project
from z4j_domain.queries import TaskQuery
from z4j_domain.rbac import Permission
from z4j_domain.redaction import RedactionSettings
from z4j_domain.serialization import (
    event_to_dict,
    task_summary_to_dict,
    task_to_dict,
    worker_to_dict,
)
from z4j_domain.users import Agent
from z4j_domain.workers import Worker
from z4j_web import services
from z4j_web.auth import current_access, current_change, require
from z4j_web.runtime import current_runtime

__all__ = ["agent_to_dict", "blueprint", "task_query_params", "workers_of"]

_log = logging.getLogger("z4j.api")

blueprint = Blueprint("api", __name__, url_prefix="/api/v1/projects/<project>")

_SCALAR_PARAMS: Final = frozenset(
    {"name", "queue", "worker", "retry_of", "since", "until", "text", "q", "limit", "cursor"}
)
_TASK_PARAMS: Final = _SCALAR_PARAMS | {"state"}
# "...T12:00:00 01:00": an offset whose "+" the query string decoded into a space.
_LOST_PLUS: Final = re.compile(r"(T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")


def task_query_params(args: MultiDict[str, str]) -> dict[str, Any]:
    """Turn the task list's query string into :meth:`TaskQuery.from_params` input.

    ``state`` may repeat or be comma-separated; ``q`` is an alias of ``text``.
    Unknown or repeated parameters are refused rather than ignored, so a typo
    (``status=failed``) cannot silently return every task.
    """
    unknown = sorted(set(args) - _TASK_PARAMS)
    if unknown:
        allowed = ", ".join(sorted(_TASK_PARAMS))
        raise InvalidInput(f"unknown parameter {unknown[0]!r}; expected one of: {allowed}")
    params: dict[str, Any] = {}
    for key in _SCALAR_PARAMS & set(args):
        values = args.getlist(key)
        if len(values) > 1:
            raise InvalidInput(f"parameter {key!r} given more than once")
        params[key] = values[0]
    states = [part for value in args.getlist("state") for part in value.split(",") if part]
    if states:
        params["state"] = states
    for key in ("since", "until"):
        if key in params:
            # Unencoded "+" is the most common way to get a timestamp wrong in a URL.
            params[key] = _LOST_PLUS.sub(r"\1+\2", params[key])
    alias = params.pop("q", None)
    if alias is not None:
        if params.get("text", alias) != alias:
            raise InvalidInput("pass either text or q, not both")
        params["text"] = alias
    return params


@blueprint.get("/tasks")
@require(Permission.READ_TASKS)
async def list_tasks(project: str) -> dict[str, Any]:
    """One page of the project's tasks, newest first, with the next page's cursor."""
    query = TaskQuery.from_params(task_query_params(request.args))
    page = await services.list_tasks(current_runtime().uow, current_access().project, query)
    return {
        "items": [task_to_dict(task) for task in page.items],
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    }


@blueprint.get("/tasks/<path:task_id>")
@require(Permission.READ_TASKS)
async def get_task(project: str, task_id: str) -> dict[str, Any]:
    """A task, its events in timeline order and the tasks that retried it, oldest first."""
    task, events, retries = await services.get_task(
        current_runtime().uow, current_access().project, task_id
    )
    # Not "retries": that is Celery's retry count, one of the task's own fields.
    return {
        **task_to_dict(task),
        "events": [event_to_dict(event) for event in events],
        "retried_by": [task_summary_to_dict(retry) for retry in retries],
    }


@blueprint.get("/tasks/<path:task_id>/canvas")
@require(Permission.READ_TASKS)
async def get_task_canvas(project: str, task_id: str) -> dict[str, Any]:
    """The task's whole chain, group or chord, laid out top-down for drawing."""
    root_id, layout = await services.get_task_canvas(
        current_runtime().uow, current_access().project, task_id
    )
    return {"task_id": task_id, "root_id": root_id, **layout.to_dict()}


@blueprint.get("/workers")
@require(Permission.READ_TASKS)
async def list_workers(project: str) -> dict[str, Any]:
    """The project's workers, by hostname: online or offline, and when each was last heard from."""
    return {"items": await workers_of(current_access().project)}


async def workers_of(project: Project) -> list[dict[str, Any]]:
    """The project's workers as the API (and the workers page) shows them, status as of now."""
    runtime = current_runtime()
    workers = await services.list_workers(
        runtime.uow,
        project,
        now=runtime.clock.now(),
        policy=runtime.settings.reconcile,
        listening_since=runtime.reconciler.listening_since,
    )
    return [_worker_to_dict(worker) for worker in workers]


def _worker_to_dict(worker: Worker) -> dict[str, Any]:
    shown = worker_to_dict(worker)
    shown["last_seen_at"] = utc_isoformat(worker.last_heartbeat_at or worker.first_seen_at)
    return shown


@blueprint.get("/settings/redaction")
@require(Permission.READ_TASKS)
async def get_redaction(project: str) -> dict[str, Any]:
    """The project's additions to the default redaction (the defaults are always on)."""
    runtime = current_runtime()
    return (await runtime.redaction.settings(current_access().project.id)).to_dict()


@blueprint.put("/settings/redaction")
@require(Permission.CHANGE_SETTINGS)
async def put_redaction(project: str) -> dict[str, Any]:
    """Replace the project's redaction additions; connected agents get them at once.

    Body: ``{"extra_key_patterns": [...], "extra_value_patterns": [...],
    "fully_redacted_tasks": [...]}`` (missing lists are empty). An invalid
    pattern is refused with the reason and nothing changes.
    """
    body = await request.get_json(force=True, silent=True)
    settings = RedactionSettings.from_dict(body)
    runtime = current_runtime()
    project_id = current_access().project.id
    await runtime.redaction.save(project_id, settings, current_change())
    sent = runtime.reconciler.broadcast(
        project_id, {"command": "configure", "redaction": settings.to_dict()}
    )
    _log.info(
        "project %s: redaction settings changed (%d key, %d value patterns, %d whole tasks);"
        " sent to %d connected agents",
        project,
        len(settings.extra_key_patterns),
        len(settings.extra_value_patterns),
        len(settings.fully_redacted_tasks),
        sent,
    )
    return settings.to_dict()


@blueprint.get("/queues")
@require(Permission.READ_TASKS)
async def list_queues(project: str) -> dict[str, Any]:
    """Task counts per queue and state."""
    summaries = await services.queue_summaries(current_runtime().uow, current_access().project)
    return {
        "items": [
            {"queue": summary.queue, "counts": summary.counts, "total": summary.total}
            for summary in summaries
        ]
    }


def agent_to_dict(agent: Agent) -> dict[str, Any]:
    """An agent as the API shows it (never its token hash or salt)."""
    return {
        "name": agent.name,
        "active": agent.is_active,
        "created_at": utc_isoformat(agent.created_at),
        "last_seen_at": utc_isoformat(agent.last_seen_at) if agent.last_seen_at else None,
        "revoked_at": utc_isoformat(agent.revoked_at) if agent.revoked_at else None,
    }


@blueprint.post("/agents")
@require(Permission.MANAGE_AGENTS)
async def create_agent(project: str) -> tuple[dict[str, Any], int]:
    """Mint an agent; the answer holds its token and HMAC secret, shown this once only."""
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidInput('send a JSON object {"name": "<agent name>"}')
    unknown = sorted(set(body) - {"name"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; expected only 'name'")
    runtime = current_runtime()
    created = await services.mint_agent(
        current_change(),
        runtime.settings.secret,
        project_slug=project,
        name=body["name"],
    )
    return {
        "agent": agent_to_dict(created.agent),
        "project": created.project.slug,
        "token": created.token,
        "hmac_secret": created.hmac_secret,
    }, 201


@blueprint.get("/agents")
@require(Permission.READ_TASKS)
async def list_agents(project: str) -> dict[str, Any]:
    """The project's agents, revoked ones included, by name."""
    agents = await services.list_agents(current_runtime().uow, current_access().project)
    return {"items": [agent_to_dict(agent) for agent in agents]}


@blueprint.delete("/agents/<name>")
@require(Permission.MANAGE_AGENTS)
async def revoke_agent(project: str, name: str) -> dict[str, Any]:
    """Revoke an agent: its token stops authenticating new connections at once."""
    runtime = current_runtime()
    agent = await services.revoke_agent(
        current_change(),
        runtime.settings.secret,
        project_slug=project,
        name=name,
    )
    return agent_to_dict(agent)
