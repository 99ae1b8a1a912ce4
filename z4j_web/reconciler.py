"""The reconciler's shell: runs :func:`z4j_domain.reconciliation.reconcile` and carries it out.

The decisions are the domain's (see :mod:`z4j_domain.reconciliation`); this
module gathers their inputs and acts on them, for every project, every
:attr:`~z4j_domain.reconciliation.ReconcilePolicy.reconcile_interval` and
at once when a worker says goodbye:

* **inputs**: the project's unfinished tasks (``received`` and ``started``;
  ``sent`` too when the policy probes unassigned tasks), its workers, the
  latest activity report of each connected worker (the task ids its agent
  listed in its last heartbeat), and the answers to probes so far;
* **liveness**: a worker that has been silent past its heartbeat window is
  logged and published to the dashboard as offline once (the workers API
  judges silence the same way on every read);
* **probes** go, as a ``command`` frame, to one connected agent of the
  project, which asks every worker (Celery's remote control) and the result
  backend; its answers come back in a ``command_result`` and count from the
  next pass;
* **verdicts** (``lost``, or the outcome the result backend knows) become task
  events with deterministic ids (:func:`~z4j_domain.reconciliation.verdict_event`)
  and go through the ingest writer like any agent's events: applied once,
  folded, pushed to the dashboard.

Reports and answers live in this brain's memory: they are only meaningful
while the agents that gave them are connected, and each brain of a scaled-out
deployment runs its own passes (verdict ids make their work idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import attrs

from z4j_domain.errors import InvalidInput
from z4j_domain.queries import MAX_PAGE_SIZE, TaskFilter, TaskQuery
from z4j_domain.reconciliation import (
    ActivityReport,
    Decision,
    MarkLost,
    Probe,
    ProbeAnswer,
    ReconcilePolicy,
    is_worker_live,
    reconcile,
    verdict_event,
)
from z4j_domain.tasks import Task, TaskState
from z4j_domain.workers import Worker, WorkerStatus
from z4j_infra.errors import StorageError
from z4j_infra.secrets import new_token
from z4j_web.ingest import IngestBatch, IngestClosed

__all__ = ["AgentLink", "ConnectedAgent", "Reconciler", "parse_probe_answers"]

_log = logging.getLogger("z4j.reconciler")

#: Most unfinished tasks one pass looks at per project (oldest first).
MAX_TASKS_PER_PASS: Final = 20_000
#: Most task ids in one probe command.
MAX_PROBE_IDS: Final = 500
#: Answers older than this are forgotten (they can no longer matter).
ANSWER_RETENTION: Final = timedelta(minutes=10)
#: Most answers one ``command_result`` may carry.
MAX_ANSWERS: Final = MAX_PROBE_IDS


class AgentLink(Protocol):
    """A connected agent the reconciler can send commands to."""

    @property
    def project_id(self) -> int:
        """The project the agent belongs to."""
        ...

    @property
    def agent_name(self) -> str:
        """The agent's name as minted."""
        ...

    @property
    def agent_version(self) -> str | None:
        """The agent software's version its hello gave, if any."""
        ...

    def send_command(self, body: Mapping[str, Any]) -> bool:
        """Queue a ``command`` frame; ``False`` if the connection is closing."""
        ...


@attrs.frozen(kw_only=True)
class ConnectedAgent:
    """An agent with at least one open connection to this brain."""

    name: str
    #: Open connections (one per worker using the agent's token).
    connections: int
    #: The versions their hellos gave, sorted, without repeats.
    versions: tuple[str, ...]


def parse_probe_answers(body: Mapping[str, Any], answered_at: datetime) -> list[ProbeAnswer]:
    """The answers in a probe's ``command_result`` body; raises :class:`InvalidInput`."""
    raw = body.get("answers")
    if not isinstance(raw, list) or len(raw) > MAX_ANSWERS:
        raise InvalidInput(f"'answers' must be a list of at most {MAX_ANSWERS} objects")
    answers: list[ProbeAnswer] = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidInput("each answer must be a JSON object")
        task_id, active_on, state = (
            item.get("task_id"),
            item.get("active_on"),
            item.get("backend_state"),
        )
        if not isinstance(task_id, str) or not task_id or len(task_id) > 255:
            raise InvalidInput("an answer needs a task_id")
        for name, value in (("active_on", active_on), ("backend_state", state)):
            if value is not None and (not isinstance(value, str) or len(value) > 255):
                raise InvalidInput(f"an answer's {name} must be a short string or null")
        try:
            answers.append(
                ProbeAnswer(
                    task_id=task_id,
                    active_on=active_on,
                    backend_state=state,
                    answered_at=answered_at,
                )
            )
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"invalid answer: {error}") from None
    return answers


@attrs.define
class _Project:
    """What the reconciler holds about one project between passes."""

    reports: dict[str, ActivityReport] = attrs.Factory(dict)
    answers: dict[str, list[ProbeAnswer]] = attrs.Factory(dict)
    links: list[AgentLink] = attrs.Factory(list)
    #: When a worker's report last listed each task.
    last_listed: dict[str, datetime] = attrs.Factory(dict)
    #: Workers already reported as gone silent (logged and published once).
    silent: set[str] = attrs.Factory(set)


class Reconciler:
    """Runs the reconciler passes of every project; one per app, started with serving."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self._projects: dict[int, _Project] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rotation = itertools.count()
        #: When this brain started listening to agents (silence before it does not count).
        self.listening_since: datetime | None = None

    @property
    def policy(self) -> ReconcilePolicy:
        """The timings, from the settings."""
        policy: ReconcilePolicy = self._runtime.settings.reconcile
        return policy

    def _project(self, project_id: int) -> _Project:
        return self._projects.setdefault(project_id, _Project())

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic passes (in the serving event loop)."""
        self.listening_since = self._runtime.clock.now()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="z4j-reconciler")

    async def stop(self) -> None:
        """Stop the passes."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poke(self) -> None:
        """Run a pass now (a worker went offline)."""
        self._wake.set()

    async def _run(self) -> None:
        interval = self.policy.reconcile_interval.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.run_pass()
            except Exception:  # the loop must outlive any one pass
                _log.exception("reconciler pass failed; trying again next interval")

    # -- what agents tell -----------------------------------------------------------------

    def connected(self, link: AgentLink) -> None:
        """An agent of ``link.project_id`` can now take probes."""
        self._project(link.project_id).links.append(link)

    def disconnected(self, link: AgentLink) -> None:
        """The agent's connection ended."""
        links = self._project(link.project_id).links
        with contextlib.suppress(ValueError):
            links.remove(link)

    def connected_agents(self, project_id: int) -> dict[str, ConnectedAgent]:
        """The project's agents connected to this brain now, by name (every link, whatever
        it can run: agents that announce no actions are connected all the same)."""
        state = self._projects.get(project_id)
        found: dict[str, list[AgentLink]] = {}
        for link in list(state.links) if state is not None else []:
            found.setdefault(link.agent_name, []).append(link)
        return {
            name: ConnectedAgent(
                name=name,
                connections=len(links),
                versions=tuple(sorted({v for link in links if (v := link.agent_version)})),
            )
            for name, links in found.items()
        }

    def broadcast(self, project_id: int, body: Mapping[str, Any]) -> int:
        """Send a command to every connected agent of the project; returns how many took it."""
        return sum(link.send_command(body) for link in list(self._project(project_id).links))

    def report(self, project_id: int, hostname: str, task_ids: Iterable[str] | None) -> None:
        """A worker's heartbeat listed the tasks it holds (``None``: it could not say)."""
        state = self._project(project_id)
        if task_ids is None:
            state.reports.pop(hostname, None)
            return
        now = self._runtime.clock.now()
        report = ActivityReport(worker=hostname, task_ids=task_ids, reported_at=now)
        state.reports[hostname] = report
        state.last_listed.update(dict.fromkeys(report.task_ids, now))

    def worker_left(self, project_id: int, hostname: str) -> None:
        """The worker said goodbye: forget its report and reconcile now."""
        self._project(project_id).reports.pop(hostname, None)
        self.poke()

    def answered(self, project_id: int, answers: Sequence[ProbeAnswer]) -> None:
        """An agent answered a probe."""
        known = self._project(project_id).answers
        for answer in answers:
            known.setdefault(answer.task_id, []).append(answer)

    # -- the passes -----------------------------------------------------------------------

    async def run_pass(self) -> dict[int, tuple[Decision, ...]]:
        """One pass over every project; returns each project's decisions."""
        async with self._runtime.uow() as uow:
            projects = await uow.projects.list()
        decided: dict[int, tuple[Decision, ...]] = {}
        for project in projects:
            try:
                decided[project.id] = await self.reconcile_project(project.id)
            except StorageError:
                _log.exception("reconciler: could not read project %s", project.slug)
        return decided

    async def reconcile_project(self, project_id: int) -> tuple[Decision, ...]:
        """Reconcile one project now and carry the decisions out."""
        policy = self.policy
        states = {TaskState.RECEIVED, TaskState.STARTED}
        if policy.probe_unassigned_after is not None:
            states.add(TaskState.PENDING)
        async with self._runtime.uow() as uow:
            workers = list(await uow.workers.list(project_id))
            tasks = await _unfinished(uow, project_id, states)
        now = self._runtime.clock.now()
        self._note_silence(project_id, workers, now)
        state = self._project(project_id)
        self._prune(state, now)
        decisions = reconcile(
            tasks,
            workers,
            now=now,
            policy=policy,
            reports=state.reports.values(),
            answers=[a for found in state.answers.values() for a in found],
            listening_since=self.listening_since,
            last_listed=state.last_listed,
        )
        await self._carry_out(project_id, decisions, now)
        return decisions

    def _note_silence(self, project_id: int, workers: list[Worker], now: datetime) -> None:
        """Log and publish each worker that went silent past its window, once per silence.

        The stored row keeps its status and last heartbeat: "offline" in the
        store means the worker said goodbye, and silence is judged afresh by
        every reader (this pass, the workers API) from the heartbeat window.
        """
        state = self._project(project_id)
        for worker in workers:
            silent = worker.status is WorkerStatus.ONLINE and not is_worker_live(
                worker, now, self.policy, listening_since=self.listening_since
            )
            if not silent:
                state.silent.discard(worker.hostname)
                continue
            if worker.hostname in state.silent:
                continue
            state.silent.add(worker.hostname)
            state.reports.pop(worker.hostname, None)
            heard = worker.last_heartbeat_at or worker.first_seen_at
            _log.warning(
                "worker %s went offline: no heartbeat since %s", worker.hostname, heard.isoformat()
            )
            self._runtime.live.workers_changed(
                project_id, [attrs.evolve(worker, status=WorkerStatus.OFFLINE)]
            )

    def _prune(self, state: _Project, now: datetime) -> None:
        policy = self.policy
        # Past this, a listing no longer delays anything (the probes' window closed).
        listed_before = now - (policy.report_grace + policy.probe_timeout + ANSWER_RETENTION)
        for task_id in [k for k, at in state.last_listed.items() if at < listed_before]:
            del state.last_listed[task_id]
        oldest = now - ANSWER_RETENTION
        for task_id in list(state.answers):
            kept = [a for a in state.answers[task_id] if a.answered_at >= oldest]
            if kept:
                state.answers[task_id] = kept
            else:
                del state.answers[task_id]

    async def _carry_out(
        self, project_id: int, decisions: Sequence[Decision], now: datetime
    ) -> None:
        probes = [d for d in decisions if isinstance(d, Probe)]
        verdicts = [verdict_event(d, now=now) for d in decisions if not isinstance(d, Probe)]
        for decision in decisions:
            if isinstance(decision, MarkLost):
                _log.warning(
                    "task %s marked lost (worker %s): %s",
                    decision.task_id,
                    decision.worker,
                    decision.reason,
                )
            elif not isinstance(decision, Probe):
                _log.info(
                    "task %s settled as %s: %s", decision.task_id, decision.kind, decision.reason
                )
        for event in verdicts:
            self._runtime.metrics.verdicts.labels(kind=event.kind.value).inc()
        if verdicts:
            try:
                await self._runtime.ingest.submit(
                    IngestBatch(project_id=project_id, events=verdicts, done=_verdicts_done)
                )
            except IngestClosed:
                return
        if probes:
            self._send_probes(project_id, [p.task_id for p in probes])

    def _send_probes(self, project_id: int, task_ids: list[str]) -> None:
        links = self._project(project_id).links
        if not links:
            _log.debug(
                "reconciler: %d tasks of project %d to probe, but no agent is connected",
                len(task_ids),
                project_id,
            )
            return
        for start in range(0, len(task_ids), MAX_PROBE_IDS):
            chunk = task_ids[start : start + MAX_PROBE_IDS]
            body = {"id": new_token()[:16], "command": "probe", "task_ids": chunk}
            for _ in range(len(links)):
                link = links[next(self._rotation) % len(links)]
                if link.send_command(body):
                    break


def _verdicts_done(committed: bool) -> None:
    if not committed:
        _log.error("reconciler: could not store verdicts; the next pass decides them again")


async def _unfinished(uow: Any, project_id: int, states: set[TaskState]) -> list[Task]:
    """The project's tasks in ``states``, at most :data:`MAX_TASKS_PER_PASS`, newest first."""
    found: dict[str, Task] = {}  # by id: a task whose first_seen_at moved may show up twice
    cursor = None
    while len(found) < MAX_TASKS_PER_PASS:
        page = await uow.tasks.list(
            project_id,
            TaskQuery(
                filter=TaskFilter(states=frozenset(states)), limit=MAX_PAGE_SIZE, cursor=cursor
            ),
        )
        found.update((task.id, task) for task in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return list(found.values())
