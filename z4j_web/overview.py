"""A project's overview: tasks per state, throughput and failure rate, failures, workers, agents.

One function, :func:`project_overview`, gathers it for both the API
(``GET /api/v1/projects/{project}/overview?window=hour|day``) and the
dashboard's overview page, so they always agree. Everything it reads is
bounded whatever the number of stored tasks: the counts and the chart come
from the aggregates kept with every write (:mod:`z4j_domain.stats`), the
failure groups from the last :data:`RECENT_FAILURES` failed tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from quart import Blueprint, request

from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.projects import Project
from z4j_domain.rbac import Permission
from z4j_domain.stats import FailureSample, ThroughputPoint, Window, group_failures, throughput
from z4j_domain.tasks import TaskState
from z4j_web import services
from z4j_web.api import workers_of
from z4j_web.auth import current_access, require
from z4j_web.dashboard import current_page, page, render
from z4j_web.runtime import current_runtime

__all__ = ["RECENT_FAILURES", "blueprint", "parse_window", "project_overview"]

blueprint = Blueprint("overview", __name__)

#: How many of the latest failed tasks the failure groups are made of.
RECENT_FAILURES: Final = 500

#: The chart's drawing box (SVG user units) and the room kept for the axis labels.
CHART_WIDTH: Final = 960
CHART_HEIGHT: Final = 220
_PLOT_TOP: Final = 12
_PLOT_BOTTOM: Final = 196
_PLOT_LEFT: Final = 44
_PLOT_RIGHT: Final = 916


def parse_window(value: str | None) -> Window:
    """The ``window`` query parameter (``hour`` when absent); anything else is refused."""
    if value is None or value == "":
        return Window.HOUR
    try:
        return Window(value)
    except ValueError:
        choices = ", ".join(w.value for w in Window)
        raise InvalidInput(f"window must be one of: {choices}; got {value!r}") from None


def _sample_to_dict(sample: FailureSample) -> dict[str, Any]:
    return {
        "task_id": sample.task_id,
        "name": sample.name,
        "exception": sample.exception,
        "finished_at": utc_isoformat(sample.finished_at) if sample.finished_at else None,
    }


def _point_to_dict(point: ThroughputPoint) -> dict[str, Any]:
    return {
        "start": utc_isoformat(point.start),
        "succeeded": point.succeeded,
        "failed": point.failed,
        "other": point.other,
        "failure_rate": point.failure_rate,
    }


async def project_overview(project: Project, window: Window) -> dict[str, Any]:
    """The project's overview as the API returns it (the page renders the same dict)."""
    runtime = current_runtime()
    now = runtime.clock.now()
    async with runtime.uow() as uow:
        states = await uow.tasks.state_counts(project.id)
        finishes = await uow.tasks.finish_counts(project.id, window.start(now), window.step)
        failures = await uow.tasks.recent_failures(project.id, RECENT_FAILURES)
    points = throughput(finishes, window, now)
    total = ThroughputPoint(
        start=points[0].start,
        succeeded=sum(p.succeeded for p in points),
        failed=sum(p.failed for p in points),
        other=sum(p.other for p in points),
    )
    workers = await workers_of(project)
    agents = await services.list_agents(runtime.uow, project)
    connected = runtime.reconciler.connected_agents(project.id)
    active = [agent for agent in agents if agent.is_active]
    return {
        "project": project.slug,
        "window": window.value,
        "as_of": utc_isoformat(now),
        "states": {state.value: states.get(state, 0) for state in TaskState},
        "tasks": sum(states.values()),
        "throughput": {
            "step_seconds": int(window.step.total_seconds()),
            "finished": total.total,
            "succeeded": total.succeeded,
            "failed": total.failed,
            "other": total.other,
            "failure_rate": total.failure_rate,
            "points": [_point_to_dict(point) for point in points],
        },
        "failures": {
            "sampled": len(failures),
            "groups": [
                {
                    "exception_type": group.exception_type,
                    "count": group.count,
                    "names": list(group.names),
                    "latest": _sample_to_dict(group.latest),
                }
                for group in group_failures(failures)
            ],
        },
        "workers": {
            "online": sum(1 for w in workers if w["status"] == "online"),
            "offline": sum(1 for w in workers if w["status"] != "online"),
            "items": [
                {
                    "hostname": w["hostname"],
                    "status": w["status"],
                    "last_seen_at": w["last_seen_at"],
                }
                for w in workers
            ],
        },
        "agents": {
            "active": len(active),
            "connected": sum(1 for agent in active if agent.name in connected),
            "items": [
                {
                    "name": agent.name,
                    "connected": agent.name in connected,
                    "last_seen_at": utc_isoformat(agent.last_seen_at)
                    if agent.last_seen_at
                    else None,
                }
                for agent in active
            ],
        },
    }


@blueprint.get("/api/v1/projects/<project>/overview")
@require(Permission.READ_TASKS)
async def get_overview(project: str) -> dict[str, Any]:
    """Counts by state, the chart of ``window`` (``hour`` or ``day``), failures, workers, agents."""
    window = parse_window(request.args.get("window"))
    return await project_overview(current_access().project, window)


# -- the page -------------------------------------------------------------------------------


def _chart(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where to draw each bar and the failure-rate line in the chart's box."""
    height = _PLOT_BOTTOM - _PLOT_TOP
    peak = max((p["succeeded"] + p["failed"] + p["other"] for p in points), default=0)
    scale = height / peak if peak else 0.0
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / max(len(points), 1)
    width = max(slot * 0.8, 1.0)
    bars: list[dict[str, Any]] = []
    rate_points: list[tuple[float, float]] = []
    for index, point in enumerate(points):
        x = _PLOT_LEFT + index * slot + (slot - width) / 2
        y = float(_PLOT_BOTTOM)
        parts = []
        for column in ("succeeded", "failed", "other"):
            size = point[column] * scale
            if size:
                y -= size
                parts.append({"state": column, "y": round(y, 2), "height": round(size, 2)})
        bars.append({"x": round(x, 2), "width": round(width, 2), "parts": parts, "point": point})
        if point["failure_rate"] is not None:
            rate_y = _PLOT_BOTTOM - point["failure_rate"] * height
            rate_points.append((round(x + width / 2, 2), round(rate_y, 2)))
    labels = [
        {"x": bar["x"] + bar["width"] / 2, "text": bar["point"]["start"][11:16]}
        for index, bar in enumerate(bars)
        if index % max(len(bars) // 6, 1) == 0
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "top": _PLOT_TOP,
        "bottom": _PLOT_BOTTOM,
        "left": _PLOT_LEFT,
        "right": _PLOT_RIGHT,
        "peak": peak,
        "bars": bars,
        "rate": " ".join(f"{x},{y}" for x, y in rate_points),
        # A dot per bar too: a rate of a single bar is no line.
        "rate_dots": rate_points,
        "labels": labels,
    }


@blueprint.get("/projects/<project>/overview")
@page(Permission.READ_TASKS)
async def overview_page(project: str) -> Any:
    """The overview page: the same data as the API, drawn; ``?window=day`` for the last day."""
    access = current_page().access
    assert access is not None
    error = None
    try:
        window = parse_window(request.args.get("window"))
    except InvalidInput as invalid:
        error, window = str(invalid), Window.HOUR
    shown = await project_overview(access.project, window)
    return await render(
        "overview.html",
        400 if error else 200,
        project=access.project,
        active="overview",
        overview=shown,
        chart=_chart(shown["throughput"]["points"]),
        windows=[w.value for w in Window],
        error=error,
    )
