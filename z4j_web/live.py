"""Live updates: an in-process hub of changed tasks and workers, and the dashboard's socket.

The ingest writer and the gateway publish what changed; each ``/ws/dashboard``
connection subscribes to one project and forwards the messages as JSON::

    {"type": "tasks", "items": [<task as in the REST API>, ...]}
    {"type": "workers", "items": [<worker as in the REST API>, ...]}
    {"type": "commands", "items": [<command as in the REST API>]}   (progress, outcome)

The hub is per process. Several brain processes on one PostgreSQL database
will fan out through LISTEN/NOTIFY (DESIGN.md, section 8); until then a
dashboard sees the changes ingested by the process it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from quart import Blueprint, Response, websocket

from z4j_domain.errors import NotFound
from z4j_domain.rbac import Permission
from z4j_domain.serialization import task_to_dict, worker_to_dict
from z4j_domain.tasks import Task
from z4j_domain.workers import Worker
from z4j_infra.errors import StorageError
from z4j_web import accounts
from z4j_web.auth import authenticate, is_cross_site
from z4j_web.errors import AuthenticationFailed, PermissionDenied
from z4j_web.runtime import current_runtime

__all__ = ["LiveUpdates", "blueprint"]

_log = logging.getLogger("z4j.live")

blueprint = Blueprint("live", __name__)

#: Messages a slow dashboard socket may fall behind by before the oldest are dropped.
SUBSCRIBER_BACKLOG: Final = 256


class LiveUpdates:
    """Publish/subscribe of per-project change messages, within one process.

    Publishing never blocks: a subscriber that falls more than
    :data:`SUBSCRIBER_BACKLOG` messages behind loses its oldest ones (a
    dashboard shows current state; the REST API has the full history), and
    ``on_drop`` counts each loss.
    """

    def __init__(
        self, *, backlog: int = SUBSCRIBER_BACKLOG, on_drop: Callable[[], None] | None = None
    ) -> None:
        self._backlog = backlog
        self._on_drop = on_drop
        self._subscribers: dict[int, set[asyncio.Queue[dict[str, Any]]]] = {}

    def subscribers(self, project_id: int) -> int:
        """How many sockets listen to the project."""
        return len(self._subscribers.get(project_id, ()))

    @contextlib.asynccontextmanager
    async def subscribe(self, project_id: int) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving the project's messages while the block runs."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self._backlog)
        self._subscribers.setdefault(project_id, set()).add(queue)
        try:
            yield queue
        finally:
            listeners = self._subscribers.get(project_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._subscribers[project_id]

    def publish(self, project_id: int, message: dict[str, Any]) -> None:
        """Hand ``message`` to every subscriber of the project."""
        for queue in self._subscribers.get(project_id, ()):
            while True:
                try:
                    queue.put_nowait(message)
                    break
                except asyncio.QueueFull:
                    queue.get_nowait()
                    if self._on_drop is not None:
                        self._on_drop()

    def tasks_changed(self, project_id: int, tasks: Sequence[Task]) -> None:
        """Publish changed tasks (nothing when nobody listens or nothing changed)."""
        if tasks and project_id in self._subscribers:
            self.publish(project_id, {"type": "tasks", "items": [task_to_dict(t) for t in tasks]})

    def workers_changed(self, project_id: int, workers: Sequence[Worker]) -> None:
        """Publish changed workers."""
        if workers and project_id in self._subscribers:
            items = [worker_to_dict(w) for w in workers]
            self.publish(project_id, {"type": "workers", "items": items})


def _credentials() -> tuple[dict[str, str], dict[str, str]]:
    headers = {"Authorization": websocket.headers.get("Authorization", "")}
    # Browsers cannot set headers on a WebSocket: they authenticate with the
    # session cookie, or a key in the query string (which may end up in proxy
    # access logs, so prefer the cookie or header wherever the client allows).
    key = websocket.args.get("key")
    if not headers["Authorization"] and key:
        headers["Authorization"] = f"Bearer {key}"
    return headers, dict(websocket.cookies)


def _refuse(status: int, message: str) -> Response:
    response = Response(
        json.dumps(
            {"error": {"code": "unauthorized" if status == 401 else "refused", "message": message}}
        ),
        status=status,
        content_type="application/json",
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="z4j"'
    return response


@blueprint.websocket("/ws/dashboard")
async def dashboard_socket() -> Response | None:
    """Push the project's task and worker changes to a dashboard as they happen."""
    runtime = current_runtime()
    headers, cookies = _credentials()
    try:
        principal = await authenticate(runtime, headers, cookies, "GET")
        if principal.session is not None and is_cross_site(websocket.headers, websocket.host):
            return _refuse(403, "cross-site WebSocket refused: open it from this server's pages")
        async with runtime.uow() as uow:
            granted = await accounts.access(
                uow, principal, websocket.args.get("project", "default"), Permission.READ_TASKS
            )
        project = granted.project
    except AuthenticationFailed as error:
        return _refuse(401, str(error))
    except PermissionDenied as error:
        return _refuse(403, str(error))
    except NotFound as error:
        return _refuse(404, str(error))
    except StorageError:
        _log.exception("storage failed authenticating a dashboard socket")
        return _refuse(503, "the database is unavailable; try again shortly")
    await websocket.accept()
    async with runtime.live.subscribe(project.id) as queue:
        # Reading runs alongside so a client's close ends the handler promptly.
        reader = asyncio.ensure_future(_discard_incoming())
        try:
            while not reader.done():
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await websocket.send(json.dumps(getter.result(), separators=(",", ":")))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
    return None


async def _discard_incoming() -> None:
    # The dashboard socket is one-way; whatever a client sends is ignored.
    while True:
        await websocket.receive()
