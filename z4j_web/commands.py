"""Commands to agents: stored first, audited, then carried out through a connected agent.

How a command goes (its states are :class:`~z4j_domain.commands.CommandStatus`):

1. **Issued.** An API request calls :func:`issue`: the command is stored
   ``pending`` and its request appended to the audit log in one transaction.
   A client's idempotency key makes a repeat return the first command instead
   of a second one (and a repeat for another target is a conflict).
2. **Claimed.** The :class:`Dispatcher` of each brain looks for pending
   commands of the projects whose agents are connected to it (at once when a
   command is issued or an agent connects, else every second) and claims one
   by a compare-and-set from ``pending`` to ``delivered``, so of several brains
   exactly one carries it out. A project with no agent connected keeps its
   commands pending until one connects.
3. **Carried out.** The claiming brain cuts the command into parts
   (:class:`~z4j_domain.commands.CommandPart`), sends each to a connected
   agent that announced the action in its ``hello``, and waits for the agent's
   reports: ``acked`` (the command becomes ``acked``), then ``done`` with one
   outcome per task, or ``failed``. A bulk command reads its targets a page at
   a time (the task list's filter, bounded by the moment it was issued, or the
   id list), so one part's tasks are in memory, never all of them; its
   :class:`~z4j_domain.commands.Progress` is stored after every part.
4. **Finished.** ``succeeded`` or ``failed`` with the result, audited with the
   requesting user as actor. A command not finished by its deadline is
   ``timed_out`` (also audited).

If the agent's connection drops before it acknowledged a part, the command
goes back to ``pending`` and any brain redelivers it. After an
acknowledgement the command is not handed to another brain (the agent may
already be acting on it): the claiming brain resends the unfinished part to
the next connected agent, which answers a part it already ran with its first
outcome; a retried task keeps its derived id
(:func:`~z4j_domain.commands.retry_task_id`) whichever agent publishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import attrs

from z4j_domain.audit import AuditRecord
from z4j_domain.beat import ScheduleOp, ScheduleOutcome, ScheduleRequest
from z4j_domain.commands import (
    MAX_PART_BYTES,
    MAX_PART_ITEMS,
    Action,
    Command,
    CommandKind,
    CommandPart,
    CommandStatus,
    ItemOutcome,
    ItemReport,
    PartReport,
    PartStatus,
    Progress,
    plan_retry,
    retry_task_id,
)
from z4j_domain.encoding import canonical_json, utc_isoformat
from z4j_domain.errors import Conflict, InvalidInput, NotFound
from z4j_domain.projects import Project
from z4j_domain.queries import TaskCursor, TaskFilter, TaskQuery
from z4j_domain.tasks import Task
from z4j_infra.errors import StorageError
from z4j_web import reconciler
from z4j_web.auditing import Actor, Change, audited

__all__ = [
    "Dispatcher",
    "bounded",
    "command_to_dict",
    "count_matching",
    "issue",
    "new_command_id",
]

_log = logging.getLogger("z4j.commands")

#: How often the dispatcher looks for pending and overdue commands without being woken.
POLL_INTERVAL: Final = 1.0
#: Pending commands one look claims per project.
CLAIM_BATCH: Final = 20
#: A command delivered this long ago and never acknowledged was lost with its brain.
STALE_DELIVERY: Final = timedelta(seconds=60)
#: Overdue commands one look times out.
EXPIRE_BATCH: Final = 100

#: The audit action of each kind; ``.requested`` and the outcome are appended.
_AUDIT_ACTIONS: Final = {
    CommandKind.RETRY: "task.retry",
    CommandKind.CANCEL: "task.cancel",
    CommandKind.BULK_RETRY: "tasks.bulk_retry",
    CommandKind.BULK_CANCEL: "tasks.bulk_cancel",
    CommandKind.PURGE: "queue.purge",
    CommandKind.SCHEDULE: "schedule",
}
_BULK: Final = frozenset({CommandKind.BULK_RETRY, CommandKind.BULK_CANCEL})


class AgentLink(reconciler.AgentLink, Protocol):
    """A connected agent that can be sent commands, and what it can run."""

    @property
    def capabilities(self) -> frozenset[str]:
        """The actions the agent said it can run (``retry``, ``cancel``, ``purge``)."""
        ...


def _audit_action(command: Command) -> str:
    """The audit action of a command: ``task.retry``, ..., ``schedule.<op>``."""
    base = _AUDIT_ACTIONS[command.kind]
    if command.kind is CommandKind.SCHEDULE:
        return f"{base}.{command.params['request']['op']}"
    return base


def new_command_id() -> str:
    """A fresh command id."""
    return str(uuid.uuid4())


def command_to_dict(command: Command) -> dict[str, Any]:
    """A command as the API shows it."""

    def when(value: datetime | None) -> str | None:
        return None if value is None else utc_isoformat(value)

    return {
        "id": command.id,
        "kind": command.kind.value,
        "status": command.status.value,
        "target": command.params.get("target"),
        "params": dict(command.params),
        "idempotency_key": command.idempotency_key,
        "requested_by": command.requested_by_name,
        "created_at": utc_isoformat(command.created_at),
        "deadline": utc_isoformat(command.deadline),
        "agent": command.agent,
        "delivered_at": when(command.delivered_at),
        "acked_at": when(command.acked_at),
        "finished_at": when(command.finished_at),
        "result": None if command.result is None else dict(command.result),
        "error": command.error,
    }


def _request_summary(command: Command) -> dict[str, Any]:
    """What the audit entry of a request records of its parameters."""
    params = command.params
    summary: dict[str, Any] = {"command": command.id}
    for key in ("terminate", "signal", "queue", "confirm_depth", "total", "countdown", "eta"):
        if params.get(key) is not None:
            summary[key] = params[key]
    item = params.get("item")
    if isinstance(item, Mapping):
        summary["name"] = item.get("name")
        summary["new_task_id"] = item.get("new_task_id")
        if item.get("queue") is not None:
            summary["queue"] = item.get("queue")
    if command.kind is CommandKind.SCHEDULE:
        request = params["request"]
        summary.update(scheduler=params["scheduler"], name=request["name"])
        summary.update(before=params.get("before"), requested=request.get("entry"))
    if params.get("filter") is not None:
        summary["filter"] = params["filter"]
    if params.get("ids") is not None:
        summary["ids"] = len(params["ids"])
    return summary


async def issue(
    change: Change,
    *,
    project: Project,
    command_id: str,
    kind: CommandKind,
    params: Mapping[str, Any],
    time_limit: timedelta,
    idempotency_key: str | None = None,
) -> tuple[Command, bool]:
    """Store a command (pending) and audit its request; returns it and whether it is new.

    ``params["target"]`` names what it acts on (``task:<id>``, ``queue:<name>``,
    ``tasks``). With an ``idempotency_key`` already used in the project, the
    first command is returned (nothing new is stored or audited) when it has
    the same kind and target; otherwise :class:`Conflict`.
    """
    now = change.clock.now()
    command = Command(
        id=command_id,
        project_id=project.id,
        kind=kind,
        params=params,
        idempotency_key=idempotency_key,
        requested_by=change.actor.user_id,
        requested_by_name=change.actor.name,
        created_at=now,
        deadline=now + time_limit,
    )
    async with change.audited() as work:
        stored, created = await work.uow.commands.create(command)
        if not created:
            if stored.kind is not command.kind or stored.params.get("target") != params.get(
                "target"
            ):
                raise Conflict(
                    f"the idempotency key {idempotency_key!r} was used for another request"
                    f" ({stored.kind.value} of {stored.params.get('target')})"
                )
            return stored, False
        await work.append(
            change.actor.record(
                f"{_audit_action(command)}.requested",
                now,
                target=str(params.get("target")),
                project_id=project.id,
                **_request_summary(command),
            )
        )
        await work.commit()
    _log.info(
        "project %s: %s %s of %s requested by %s",
        project.slug,
        kind.value,
        command.id,
        params.get("target"),
        change.actor.name,
    )
    return stored, True


def bounded(task_filter: TaskFilter, until: datetime) -> TaskFilter:
    """``task_filter`` narrowed to tasks first seen before ``until`` (a bulk command's snapshot)."""
    bound = until if task_filter.until is None else min(task_filter.until, until)
    return attrs.evolve(task_filter, until=bound)


async def _filtered(
    uow_factory: Any, project_id: int, task_filter: TaskFilter, limit: int
) -> AsyncIterator[Sequence[Task]]:
    """The tasks ``task_filter`` selects, newest first, a page at a time, at most ``limit``."""
    cursor: TaskCursor | None = None
    left = limit
    while left > 0:
        query = TaskQuery(filter=task_filter, limit=min(MAX_PART_ITEMS, left), cursor=cursor)
        async with uow_factory() as uow:
            page = await uow.tasks.list(project_id, query)
        if page.items:
            yield page.items
            left -= len(page.items)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def count_matching(
    uow_factory: Any, project_id: int, task_filter: TaskFilter, *, limit: int, sample: int
) -> tuple[int, Sequence[Task]]:
    """How many tasks ``task_filter`` selects, counting at most ``limit``, and the first ones."""
    async with uow_factory() as uow:
        count = await uow.tasks.count_matching(project_id, task_filter, limit)
        first = await uow.tasks.list(project_id, TaskQuery(filter=task_filter, limit=sample))
    return count, first.items


class _Undelivered(Exception):
    """No agent took the command (it goes back to pending)."""


class _Expired(Exception):
    """The command's deadline passed."""


@attrs.define
class _Exchange:
    """A part out to an agent: the link it went to and the reports coming back."""

    link: AgentLink
    reports: asyncio.Queue[PartReport | None] = attrs.Factory(asyncio.Queue)


class Dispatcher:
    """Claims and carries out the commands of the projects whose agents are connected here."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self._links: dict[int, list[AgentLink]] = {}
        self._links_changed = asyncio.Event()
        self._exchanges: dict[tuple[str, int], _Exchange] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rotation = itertools.count()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start looking for commands (in the serving event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="z4j-commands")

    async def stop(self) -> None:
        """Stop; commands being carried out stay where they stand (their deadline ends them)."""
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()

    def wake(self) -> None:
        """Look for pending commands now (one was issued)."""
        self._wake.set()

    @property
    def running(self) -> int:
        """Commands this brain is carrying out."""
        return len(self._running)

    async def settle(self) -> None:
        """Wait until the commands this brain is carrying out now are finished."""
        await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    # -- what the gateway tells -----------------------------------------------------------

    def connected(self, link: AgentLink) -> None:
        """An agent connected; it gets its project's pending commands if it can run them."""
        if link.capabilities:
            self._links.setdefault(link.project_id, []).append(link)
            self._links_changed.set()
            self.wake()

    def disconnected(self, link: AgentLink) -> None:
        """The agent's connection ended: parts out to it are lost."""
        links = self._links.get(link.project_id, [])
        with contextlib.suppress(ValueError):
            links.remove(link)
        for exchange in self._exchanges.values():
            if exchange.link is link:
                exchange.reports.put_nowait(None)

    def reported(self, link: AgentLink, report: PartReport) -> None:
        """An agent reported on a part (ignored unless that part is out to that agent)."""
        exchange = self._exchanges.get((report.command_id, report.part))
        if exchange is None or exchange.link is not link:
            _log.info(
                "agent %s reported on part %d of command %s, which is not out to it; ignored",
                link.agent_name,
                report.part,
                report.command_id,
            )
            return
        exchange.reports.put_nowait(report)

    # -- finding work ---------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            self._wake.clear()
            try:
                await self.look()
            except Exception:  # the loop must outlive any one look
                _log.exception("command dispatcher: a look failed; trying again shortly")

    async def look(self) -> None:
        """Time out overdue commands, recover stale deliveries, claim pending ones."""
        now = self._runtime.clock.now()
        await self._expire_overdue(now)
        for project_id, links in list(self._links.items()):
            if links:
                await self._claim(project_id, now)

    async def _expire_overdue(self, now: datetime) -> None:
        async with self._runtime.uow() as uow:
            overdue = await uow.commands.overdue(now, EXPIRE_BATCH)
        for command in overdue:
            if command.id not in self._running:
                await self._finish(command.expire(now))

    async def _claim(self, project_id: int, now: datetime) -> None:
        async with self._runtime.uow() as uow:
            pending = await uow.commands.pending(project_id, CLAIM_BATCH)
            delivered = await uow.commands.list(
                project_id, status=CommandStatus.DELIVERED, limit=CLAIM_BATCH
            )
        for command in delivered:
            stale = command.delivered_at is not None and now - command.delivered_at > STALE_DELIVERY
            if stale and command.id not in self._running:
                await self._save(command.redeliverable(), expected=CommandStatus.DELIVERED)
                _log.warning(
                    "command %s was delivered %s ago and never acknowledged; pending again",
                    command.id,
                    now - command.delivered_at if command.delivered_at else "?",
                )
        for command in pending:
            if command.id in self._running or now >= command.deadline:
                continue
            link = self._pick(project_id, Action.of(command.kind))
            if link is None:
                continue
            claimed = command.deliver(link.agent_name, now)
            if await self._save(claimed, expected=CommandStatus.PENDING):
                self._running[command.id] = asyncio.get_running_loop().create_task(
                    self._carry_out(claimed), name=f"z4j-command-{command.id}"
                )

    def _pick(
        self,
        project_id: int,
        action: Action,
        prefer: str | None = None,
        *,
        only: str | None = None,
    ) -> AgentLink | None:
        able = [
            link
            for link in self._links.get(project_id, [])
            if action in link.capabilities and (only is None or link.agent_name == only)
        ]
        if not able:
            return None
        for link in able:
            if link.agent_name == prefer:
                return link
        return able[next(self._rotation) % len(able)]

    async def _save(self, command: Command, *, expected: CommandStatus | None = None) -> bool:
        async with self._runtime.uow() as uow:
            saved: bool = await uow.commands.save(command, expected=expected)
            await uow.commit()
        return saved

    # -- carrying one out -----------------------------------------------------------------

    async def _carry_out(self, command: Command) -> None:
        try:
            final = await self._run(command)
        except _Undelivered:
            _log.info("command %s: no agent took it; pending again", command.id)
            return
        except _Expired:
            final = command.expire(max(self._runtime.clock.now(), command.deadline))
        except StorageError:
            _log.exception("command %s: storage failed; its deadline will end it", command.id)
            return
        except Exception as error:  # a bug must not leave the command hanging silently
            _log.exception("command %s failed in the brain", command.id)
            final = command.finish(self._runtime.clock.now(), error=f"internal error: {error!r}")
        finally:
            self._running.pop(command.id, None)
        try:
            await self._finish(final)
        except StorageError:
            _log.exception("command %s: could not store its outcome", command.id)

    async def _run(self, command: Command) -> Command:
        progress = Progress(total=command.params.get("total"))
        single: PartReport | None = None
        async for part, local in self._parts(command):
            progress = progress.add(local)
            if part is None:
                continue
            report, command = await self._exchange(command, part)
            if command.kind in _BULK:
                if report.status is PartStatus.FAILED:
                    reason = report.error or "the agent could not run this part"
                    progress = progress.add(
                        ItemReport(
                            task_id=str(item.get("task_id")),
                            outcome=ItemOutcome.FAILED,
                            reason=reason,
                        )
                        for item in part.items
                    )
                else:
                    progress = progress.add(report.outcomes)
                command = attrs.evolve(command, result=progress.to_dict())
                await self._save(command)
                self._publish(command)
            else:
                single = report
        now = self._runtime.clock.now()
        if command.kind in _BULK:
            return command.finish(now, result=progress.to_dict())
        if single is None:
            reason = "; ".join(str(r.get("reason")) for r in progress.problems) or "nothing to do"
            return command.finish(now, error=reason)
        return _single_outcome(command, single, now)

    async def _parts(
        self, command: Command
    ) -> AsyncIterator[tuple[CommandPart | None, list[ItemReport]]]:
        """The command's parts, each with the outcomes the brain decided itself."""
        params = command.params
        if command.kind is CommandKind.RETRY:
            yield (
                CommandPart(
                    command_id=command.id, action=Action.RETRY, part=0, items=[params["item"]]
                ),
                [],
            )
        elif command.kind is CommandKind.CANCEL:
            yield _cancel_part(command, 0, [{"task_id": params["task_id"]}]), []
        elif command.kind is CommandKind.SCHEDULE:
            yield (
                CommandPart(
                    command_id=command.id,
                    action=Action.SCHEDULE,
                    part=0,
                    options=params["request"],
                ),
                [],
            )
        elif command.kind is CommandKind.PURGE:
            options = {"queue": params["queue"], "confirm_depth": params.get("confirm_depth")}
            yield (
                CommandPart(command_id=command.id, action=Action.PURGE, part=0, options=options),
                [],
            )
        else:
            number = 0
            async for tasks, local in self._targets(command):
                items: list[dict[str, Any]] = []
                for task in tasks:
                    try:
                        items.append(_bulk_item(command, task))
                    except InvalidInput as refused:
                        local.append(
                            ItemReport(
                                task_id=task.id, outcome=ItemOutcome.REFUSED, reason=str(refused)
                            )
                        )
                chunks = _cut(items) or [[]]
                for chunk in chunks:
                    if not chunk:
                        yield None, local
                    else:
                        yield _part(command, number, chunk), local
                        number += 1
                    local = []

    async def _targets(
        self, command: Command
    ) -> AsyncIterator[tuple[Sequence[Task], list[ItemReport]]]:
        """A bulk command's tasks, a page at a time, with the ids it names that do not exist."""
        params = command.params
        total = int(params.get("total") or 0)
        ids = params.get("ids")
        if ids is not None:
            for start in range(0, len(ids), MAX_PART_ITEMS):
                chunk = ids[start : start + MAX_PART_ITEMS]
                async with self._runtime.uow() as uow:
                    found = {
                        task.id: task
                        for task in await uow.tasks.get_many(command.project_id, chunk)
                    }
                missing = [
                    ItemReport(
                        task_id=task_id,
                        outcome=ItemOutcome.REFUSED,
                        reason="no task with this id in the project",
                    )
                    for task_id in chunk
                    if task_id not in found
                ]
                yield [found[task_id] for task_id in chunk if task_id in found], missing
            return
        task_filter = bounded(
            TaskFilter.from_params(params.get("filter") or {}),
            datetime.fromisoformat(params["until"]),
        )
        async for page in _filtered(self._runtime.uow, command.project_id, task_filter, total):
            yield page, []

    async def _exchange(self, command: Command, part: CommandPart) -> tuple[PartReport, Command]:
        """Send ``part`` to an agent until one reports its outcome; the command as it now stands."""
        action = part.action
        while True:
            link = await self._link_for(command, action)
            exchange = _Exchange(link=link)
            self._exchanges[part.key] = exchange
            try:
                if not link.send_command(part.body()):
                    await asyncio.sleep(0.1)
                    continue
                while True:
                    report = await self._next_report(command, exchange)
                    if report is None:
                        if command.status is CommandStatus.DELIVERED:
                            await self._save(
                                command.redeliverable(), expected=CommandStatus.DELIVERED
                            )
                            raise _Undelivered
                        _log.warning(
                            "command %s: agent %s went away during part %d; sending it again",
                            command.id,
                            link.agent_name,
                            part.part,
                        )
                        break
                    if report.status is PartStatus.ACKED:
                        if command.status is CommandStatus.DELIVERED:
                            acked = command.acknowledge(self._runtime.clock.now())
                            if await self._save(acked, expected=CommandStatus.DELIVERED):
                                command = acked
                        continue
                    return report, command
            finally:
                if self._exchanges.get(part.key) is exchange:
                    del self._exchanges[part.key]

    async def _next_report(self, command: Command, exchange: _Exchange) -> PartReport | None:
        left = (command.deadline - self._runtime.clock.now()).total_seconds()
        if left <= 0:
            raise _Expired
        try:
            return await asyncio.wait_for(exchange.reports.get(), left)
        except TimeoutError:
            raise _Expired from None

    async def _link_for(self, command: Command, action: Action) -> AgentLink:
        """A connected agent that can run ``action``; waits for one until the deadline.

        Before the command was acknowledged, no agent means it goes back to pending.
        """
        while True:
            # A schedule change goes to the agent of its scheduler, and no other.
            only = command.params.get("scheduler") if action is Action.SCHEDULE else None
            link = self._pick(command.project_id, action, prefer=command.agent, only=only)
            if link is not None:
                return link
            if command.status is CommandStatus.DELIVERED:
                await self._save(command.redeliverable(), expected=CommandStatus.DELIVERED)
                raise _Undelivered
            left = (command.deadline - self._runtime.clock.now()).total_seconds()
            if left <= 0:
                raise _Expired
            self._links_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._links_changed.wait(), min(left, POLL_INTERVAL))

    async def _finish(self, command: Command) -> None:
        """Store a finished command and audit its outcome, together (nothing if it was finished)."""
        runtime = self._runtime
        actor = Actor(name=command.requested_by_name, user_id=command.requested_by)
        async with audited(runtime.uow, runtime.audit_key) as work:
            if not await work.uow.commands.save(command):
                return
            await work.append(_outcome_record(actor, command))
            if command.kind is CommandKind.SCHEDULE and command.status is CommandStatus.SUCCEEDED:
                await _store_schedule_outcome(work.uow, command)
            await work.commit()
        _log.log(
            logging.INFO if command.status is CommandStatus.SUCCEEDED else logging.WARNING,
            "command %s (%s of %s) %s%s",
            command.id,
            command.kind.value,
            command.params.get("target"),
            command.status.value,
            f": {command.error}" if command.error else "",
        )
        self._publish(command)

    def _publish(self, command: Command) -> None:
        self._runtime.live.publish(
            command.project_id, {"type": "commands", "items": [command_to_dict(command)]}
        )
        if command.kind is CommandKind.SCHEDULE and command.status.is_finished:
            self._runtime.live.publish(command.project_id, {"type": "schedules"})


async def _store_schedule_outcome(uow: Any, command: Command) -> None:
    """Keep the brain's copy of a changed entry as the agent now reports it, at once.

    The agent's next full report says the same; this saves the wait for it.
    """
    params = command.params
    request = ScheduleRequest.from_dict(params["request"])
    outcome = ScheduleOutcome.from_dict(command.result or {})
    scheduler = params["scheduler"]
    at = command.finished_at or command.created_at
    try:
        if request.op is ScheduleOp.DELETE:
            await uow.schedules.remove(command.project_id, scheduler, request.name)
        elif outcome.entry is not None:
            replacing = request.name if request.name != outcome.entry.name else None
            await uow.schedules.put(
                command.project_id, scheduler, outcome.entry, at, replacing=replacing
            )
    except NotFound:
        _log.info("command %s: scheduler %s is no longer known", command.id, scheduler)


def _outcome_record(actor: Actor, command: Command) -> AuditRecord:
    details: dict[str, Any] = {"command": command.id, "outcome": command.status.value}
    if command.kind is CommandKind.SCHEDULE:
        # Before and after, side by side: what the entry was, and what the scheduler now holds.
        details["scheduler"] = command.params["scheduler"]
        details["name"] = command.params["request"]["name"]
        details["before"] = command.params.get("before")
        if command.status is CommandStatus.SUCCEEDED and command.result is not None:
            details["after"] = command.result.get("entry")
    if command.error is not None:
        details["error"] = command.error
    if command.result is not None:
        details["result"] = dict(command.result)
    return actor.record(
        f"{_audit_action(command)}.{command.status.value}",
        command.finished_at or command.created_at,
        target=str(command.params.get("target")),
        project_id=command.project_id,
        **details,
    )


def _single_outcome(command: Command, report: PartReport, now: datetime) -> Command:
    if report.status is PartStatus.FAILED:
        return command.finish(
            now, result=report.result, error=report.error or "the agent could not run it"
        )
    if command.kind is CommandKind.SCHEDULE:
        try:
            changed = ScheduleOutcome.from_dict(report.result or {})
        except InvalidInput as error:
            return command.finish(now, error=f"the agent's outcome is unreadable: {error}")
        return command.finish(now, result=changed.to_dict())
    if command.kind is CommandKind.PURGE:
        return command.finish(now, result=report.result or {})
    if not report.outcomes:
        return command.finish(now, error="the agent reported no outcome")
    outcome = report.outcomes[0]
    result = outcome.to_dict()
    if outcome.outcome.is_success:
        return command.finish(now, result=result)
    return command.finish(now, result=result, error=outcome.reason or outcome.outcome.value)


def _cancel_options(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"terminate": bool(params.get("terminate")), "signal": params.get("signal")}


def _cancel_part(command: Command, number: int, items: list[dict[str, Any]]) -> CommandPart:
    return CommandPart(
        command_id=command.id,
        action=Action.CANCEL,
        part=number,
        items=items,
        options=_cancel_options(command.params),
    )


def _part(command: Command, number: int, items: list[dict[str, Any]]) -> CommandPart:
    if command.kind is CommandKind.BULK_CANCEL:
        return _cancel_part(command, number, items)
    return CommandPart(command_id=command.id, action=Action.RETRY, part=number, items=items)


def _bulk_item(command: Command, task: Task) -> dict[str, Any]:
    """One task's item of a bulk part; :class:`InvalidInput` when the brain refuses it."""
    params = command.params
    if command.kind is CommandKind.BULK_CANCEL:
        if task.state.is_terminal:
            raise InvalidInput(f"the task already ended ({task.state.value}); nothing to cancel")
        return {"task_id": task.id}
    eta = params.get("eta")
    plan = plan_retry(
        task,
        queue=params.get("queue"),
        countdown=params.get("countdown"),
        eta=None if eta is None else datetime.fromisoformat(eta),
    )
    return plan.item(retry_task_id(command.id, task.id)).to_dict()


def _cut(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Items in parts of at most :data:`MAX_PART_ITEMS` and about :data:`MAX_PART_BYTES`."""
    parts: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(canonical_json(item))
        if current and (len(current) >= MAX_PART_ITEMS or size + item_size > MAX_PART_BYTES):
            parts.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        parts.append(current)
    return parts
