"""The reconciler: decides which unfinished tasks to probe or to declare lost.

A task must never stay ``started`` forever, yet a long-running task on a live
worker must never be touched. :func:`reconcile` is a pure function of what the
brain knows at ``now`` (the project's unfinished tasks, its workers, what live
workers last said they hold, and the answers to probes so far) and returns at
most one :data:`Decision` per task. The shell runs it every
:attr:`ReconcilePolicy.reconcile_interval` and carries the decisions out.

**Liveness.** A worker is live while it is ``online`` and has been silent
(since its last heartbeat, or since it was first seen) for at most
:attr:`ReconcilePolicy.heartbeat_window`; it is offline as soon as it said
goodbye (status ``offline``). Silence only counts while the brain was
listening: with ``listening_since`` (when the brain started), a brain restart
does not make every worker look dead at once. See :func:`is_worker_live`.

**Which tasks are suspect.** Terminal tasks never are. A task that any live
worker's latest :class:`ActivityReport` lists is left alone, whatever else is
known. Otherwise a task is suspect, from a moment called its *due time*, when

* its worker is offline: due when the worker went offline, plus
  :attr:`~ReconcilePolicy.unstarted_grace` if the task has not started (a
  broker may redeliver a prefetched message). A worker the brain has no record
  of counts as offline one heartbeat window after the task's last event (or
  after ``listening_since``, if later);
* its worker is live, but that worker's latest report, made at least
  :attr:`~ReconcilePolicy.report_grace` after the task's last event (or after
  a report last listed it, if later), does not list it (a worker restarted
  under the same name, or an outcome event that was dropped): due at that
  moment plus the grace. Without reports this
  never happens, so tasks on live workers are then never touched;
* no worker is known for its current attempt (not received yet; a retry
  waiting in the queue is judged by its new attempt, not by the old one's
  worker) and the opt-in
  :attr:`~ReconcilePolicy.probe_unassigned_after` has passed since it was first
  seen. By default such tasks are left alone: a queue may hold them for hours.

**What a suspect task gets.** The answers that count are those given at or
after the due time. An answer naming a worker that is not live is out of date:
it counts for nothing and starts a new round of probes after it (after that
worker went offline, if later). Then, in this order:

1. an answer says a live worker holds the task: leave it;
2. an answer carries a terminal result-backend state (``SUCCESS``,
   ``FAILURE``, ``REVOKED``, ``RETRY``, ``REJECTED``): :class:`MarkOutcome`
   with the matching event kind (the latest such answer wins);
3. an answer says nobody holds it and the backend knows no outcome:
   :class:`MarkLost`, naming the worker (never for a task with no worker);
4. no answer yet: :class:`Probe` until :attr:`~ReconcilePolicy.probe_timeout`
   has passed since the round started, then :class:`MarkLost` if the task's
   worker is offline. Silence proves nothing about a live worker (its agent may
   not answer probes), so a task on a live worker, or with none, is then left.

The shell turns :class:`MarkLost` and :class:`MarkOutcome` into task events
with :func:`verdict_event`, whose ids are derived from the decision, so a
verdict applied twice (or decided by two passes) is recorded once. Once
applied the task is terminal and is never decided on again; an event of a
higher delivery attempt starts it again under the fold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias

import attrs

from z4j_domain._validators import aware_utc, non_empty, non_negative, optional_aware_utc
from z4j_domain.encoding import canonical_json, utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import EventKind, Task, TaskEvent, TaskState
from z4j_domain.workers import Worker, WorkerStatus

__all__ = [
    "ActivityReport",
    "Decision",
    "MarkLost",
    "MarkOutcome",
    "Probe",
    "ProbeAnswer",
    "ReconcilePolicy",
    "is_worker_live",
    "reconcile",
    "verdict_event",
    "worker_offline_at",
]

#: Seconds between an agent's heartbeats, as the brain tells agents today.
DEFAULT_HEARTBEAT_INTERVAL: Final = timedelta(seconds=2)
#: How many heartbeat intervals may pass unheard before a worker is offline ...
HEARTBEAT_WINDOW_INTERVALS: Final = 3
#: ... plus this much, for a slow database write or a busy agent thread.
HEARTBEAT_WINDOW_GRACE: Final = timedelta(seconds=2)


def _timedelta(_instance: Any, attribute: Any, value: object) -> None:
    if not isinstance(value, timedelta):
        raise TypeError(f"{attribute.name} must be a timedelta, got {type(value).__name__}")


def _positive(instance: Any, attribute: Any, value: timedelta) -> None:
    _timedelta(instance, attribute, value)
    if value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _optional_positive(instance: Any, attribute: Any, value: timedelta | None) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _longer_than_heartbeat(instance: ReconcilePolicy, attribute: Any, value: timedelta) -> None:
    if value <= instance.heartbeat_interval:
        raise ValueError(f"{attribute.name} must be longer than heartbeat_interval, got {value}")


def _within_reconcile_interval(instance: ReconcilePolicy, attribute: Any, value: timedelta) -> None:
    _timedelta(instance, attribute, value)
    if not timedelta(0) <= value <= instance.reconcile_interval:
        raise ValueError(f"{attribute.name} must be between 0 and reconcile_interval, got {value}")


def _at_least_reconcile_interval(
    instance: ReconcilePolicy, attribute: Any, value: timedelta
) -> None:
    if value < instance.reconcile_interval:
        raise ValueError(f"{attribute.name} must be at least reconcile_interval, got {value}")


@attrs.frozen(kw_only=True)
class ReconcilePolicy:
    """How long silence, reports and probes are given before the reconciler acts.

    The defaults detect a dead worker's task within about 8 s (window) + 10 s
    (one pass) and declare it lost 30 s after the window expired if no agent
    can account for it: under a minute from the crash to ``lost``, whatever
    the phase of the passes. The probe timeout is as long as an agent's
    longest reconnection backoff (30 s), so after a brain restart every agent
    is back before a probe that nobody could answer turns into a verdict.
    """

    #: How often agents send heartbeats (the brain tells them in ``welcome``).
    heartbeat_interval: timedelta = attrs.field(
        default=DEFAULT_HEARTBEAT_INTERVAL, validator=_positive
    )
    #: Silence longer than this makes a worker offline; default 3 intervals + 2 s.
    heartbeat_window: timedelta = attrs.field(validator=[_positive, _longer_than_heartbeat])
    #: How often the shell runs :func:`reconcile`.
    reconcile_interval: timedelta = attrs.field(default=timedelta(seconds=10), validator=_positive)
    #: Extra time a received (not started) task on an offline worker gets before
    #: it is probed; at most one reconcile interval, so it never delays a decision
    #: by more than one pass.
    unstarted_grace: timedelta = attrs.field(
        default=timedelta(0), validator=_within_reconcile_interval
    )
    #: How long unanswered probes go on before a task on an offline worker is lost;
    #: at least one reconcile interval.
    probe_timeout: timedelta = attrs.field(
        default=timedelta(seconds=30), validator=[_positive, _at_least_reconcile_interval]
    )
    #: How long after a task's last event its live worker's report must have been
    #: made for the task's absence from it to count (reporting lag, clock skew).
    report_grace: timedelta = attrs.field(default=timedelta(seconds=30), validator=_positive)
    #: When set, a task that no worker has received is probed once this long after
    #: it was first seen (it is never declared lost); ``None`` leaves such tasks alone.
    probe_unassigned_after: timedelta | None = attrs.field(
        default=None, validator=_optional_positive
    )

    @heartbeat_window.default
    def _default_window(self) -> timedelta:
        return HEARTBEAT_WINDOW_INTERVALS * self.heartbeat_interval + HEARTBEAT_WINDOW_GRACE


def _task_ids(value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError("task_ids must be a collection of task ids, not a single string")
    ids = frozenset(value)
    if not all(isinstance(i, str) and i for i in ids):
        raise ValueError("task_ids must be non-empty strings")
    return ids


@attrs.frozen(kw_only=True)
class ActivityReport:
    """The tasks one worker last said it holds: active, reserved or scheduled (ETA)."""

    worker: str = attrs.field(validator=non_empty)
    task_ids: frozenset[str] = attrs.field(converter=_task_ids)
    #: When the brain received the report (the brain's clock).
    reported_at: datetime = attrs.field(converter=aware_utc)


def _optional_hostname(value: str | None) -> str | None:
    return value or None


def _backend_state(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip().upper() or None


@attrs.frozen(kw_only=True)
class ProbeAnswer:
    """What an agent found out about one task when the brain probed it."""

    task_id: str = attrs.field(validator=non_empty)
    #: The worker holding the task (active, reserved or scheduled), or ``None``.
    active_on: str | None = attrs.field(default=None, converter=_optional_hostname)
    #: Celery's state name in the result backend (``SUCCESS``, ``PENDING``, ...), or
    #: ``None`` without a backend; upper-cased.
    backend_state: str | None = attrs.field(default=None, converter=_backend_state)
    #: When the brain received the answer (the brain's clock).
    answered_at: datetime = attrs.field(converter=aware_utc)


@attrs.frozen(kw_only=True)
class Probe:
    """Ask a live agent of the project: does any worker hold the task, what does its backend say?"""

    task_id: str
    reason: str


@attrs.frozen(kw_only=True)
class MarkLost:
    """Declare the task's current attempt lost: its worker went away and nobody holds it."""

    task_id: str
    attempt: int = attrs.field(validator=non_negative)
    worker: str
    reason: str


def _outcome_kind(value: str) -> EventKind:
    kind = EventKind(value)
    if not kind.state.is_terminal or kind is EventKind.LOST:
        raise ValueError(f"an outcome must be a real terminal kind, got {kind}")
    return kind


@attrs.frozen(kw_only=True)
class MarkOutcome:
    """Record the outcome the result backend reports for the task's current attempt."""

    task_id: str
    attempt: int = attrs.field(validator=non_negative)
    kind: EventKind = attrs.field(converter=_outcome_kind)
    reason: str


#: What :func:`reconcile` may decide about one task (no decision means: leave it).
Decision: TypeAlias = Probe | MarkLost | MarkOutcome

#: Celery result-backend states that end an attempt, and the event each becomes.
_OUTCOME_OF_BACKEND_STATE: Final = {
    "SUCCESS": EventKind.SUCCEEDED,
    "FAILURE": EventKind.FAILED,
    "REVOKED": EventKind.REVOKED,
    "RETRY": EventKind.RETRIED,
    "REJECTED": EventKind.REJECTED,
}


def _silent_since(worker: Worker, listening_since: datetime | None) -> datetime:
    heard = worker.last_heartbeat_at or worker.first_seen_at
    if listening_since is not None and worker.status is WorkerStatus.ONLINE:
        return max(heard, aware_utc(listening_since))
    return heard


def worker_offline_at(
    worker: Worker, policy: ReconcilePolicy, *, listening_since: datetime | None = None
) -> datetime:
    """The moment after which ``worker`` is offline unless it is heard from again.

    That is its last heartbeat (or first sighting) plus the heartbeat window,
    or the last heartbeat itself once it said goodbye. ``listening_since``
    (when the brain started listening) stands in for an older heartbeat.
    """
    silent_since = _silent_since(worker, listening_since)
    if worker.status is WorkerStatus.OFFLINE:
        return silent_since
    return silent_since + policy.heartbeat_window


def is_worker_live(
    worker: Worker,
    now: datetime,
    policy: ReconcilePolicy,
    *,
    listening_since: datetime | None = None,
) -> bool:
    """Whether ``worker`` is online and has been silent no longer than the heartbeat window."""
    if worker.status is WorkerStatus.OFFLINE:
        return False
    return aware_utc(now) <= worker_offline_at(worker, policy, listening_since=listening_since)


def verdict_event(decision: MarkLost | MarkOutcome, *, now: datetime) -> TaskEvent:
    """The task event that carries out ``decision``, stamped ``now``.

    Its id is derived from the task id, the attempt and the worker (lost) or
    the kind (outcome), so every pass that reaches the same verdict yields the
    same event id and the brain's ingest records it once.
    """
    if isinstance(decision, MarkLost):
        kind, worker = EventKind.LOST, decision.worker
        identity: list[Any] = [kind.value, decision.task_id, decision.attempt, worker]
    else:
        kind, worker = decision.kind, None
        identity = [kind.value, decision.task_id, decision.attempt]
    digest = hashlib.sha256(canonical_json(identity)).hexdigest()
    return TaskEvent(
        id=f"z4j-{kind.value}-{digest}",
        task_id=decision.task_id,
        kind=kind,
        timestamp=now,
        attempt=decision.attempt,
        worker=worker,
        exception=None if kind is EventKind.SUCCEEDED else f"reconciled: {decision.reason}",
    )


@attrs.frozen(kw_only=True)
class _Suspicion:
    """Why and since when one task is suspect, and what silence or denial may lead to."""

    due: datetime
    why: str
    lost_on_silence: bool
    lost_on_denial: bool


@attrs.frozen(kw_only=True)
class _View:
    """The inputs of one reconcile pass, indexed."""

    now: datetime
    policy: ReconcilePolicy
    listening_since: datetime | None
    workers: Mapping[str, Worker]
    live: frozenset[str]
    reports: Mapping[str, ActivityReport]
    held: frozenset[str]
    answers: Mapping[str, tuple[ProbeAnswer, ...]]
    last_listed: Mapping[str, datetime]


def _index_by(items: Iterable[Any], key: str, what: str) -> dict[str, Any]:
    index: dict[str, Any] = {}
    for item in items:
        name = getattr(item, key)
        if name in index:
            raise InvalidInput(f"{what} {name!r} is given twice")
        index[name] = item
    return index


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g} s"


def _current_worker(task: Task) -> str | None:
    """The worker of the task's current attempt (a retry waiting in the queue has none yet)."""
    if task.field_attempts.get("worker", 0) < task.attempt:
        return None
    return task.worker


def _suspicion(task: Task, view: _View) -> _Suspicion | None:
    policy = view.policy
    hostname = _current_worker(task)
    if hostname is None:
        if policy.probe_unassigned_after is None:
            return None
        return _Suspicion(
            due=task.first_seen_at + policy.probe_unassigned_after,
            why=f"no worker has received it since {utc_isoformat(task.first_seen_at)}",
            lost_on_silence=False,
            lost_on_denial=False,
        )
    if hostname in view.live:
        report = view.reports.get(hostname)
        seen = max(task.updated_at, view.last_listed.get(task.id, task.updated_at))
        due = seen + policy.report_grace
        if report is None or report.reported_at < due:
            return None
        reported_at = utc_isoformat(report.reported_at)
        return _Suspicion(
            due=due,
            why=f"its live worker {hostname} did not list it at {reported_at}",
            lost_on_silence=False,
            lost_on_denial=True,
        )
    worker = view.workers.get(hostname)
    if worker is None:
        since = task.updated_at
        if view.listening_since is not None:
            since = max(since, view.listening_since)
        offline_at = since + policy.heartbeat_window
        if view.now <= offline_at:
            return None
        why = f"its worker {hostname} was never heard from"
    else:
        offline_at = worker_offline_at(worker, policy, listening_since=view.listening_since)
        if worker.status is WorkerStatus.OFFLINE:
            why = f"its worker {hostname} said goodbye"
        else:
            why = f"its worker {hostname} is offline since {utc_isoformat(offline_at)}"
    grace = timedelta(0) if task.state is TaskState.STARTED else policy.unstarted_grace
    return _Suspicion(due=offline_at + grace, why=why, lost_on_silence=True, lost_on_denial=True)


def _offline_at(hostname: str, view: _View) -> datetime | None:
    worker = view.workers.get(hostname)
    if worker is None:
        return None
    return worker_offline_at(worker, view.policy, listening_since=view.listening_since)


def _judge(task: Task, suspicion: _Suspicion, view: _View) -> Decision | None:
    worker = _current_worker(task)
    answers = [a for a in view.answers.get(task.id, ()) if a.answered_at >= suspicion.due]
    # An answer naming a worker that is not live is out of date: a new round of
    # probes starts after it (and after that worker went offline).
    start = suspicion.due
    for answer in answers:
        if answer.active_on is not None and answer.active_on not in view.live:
            start = max(start, answer.answered_at)
            offline_at = _offline_at(answer.active_on, view)
            if offline_at is not None:
                start = max(start, offline_at)
    counted = [
        a
        for a in answers
        if a.answered_at >= start and (a.active_on is None or a.active_on in view.live)
    ]
    if any(a.active_on is not None for a in counted):
        return None
    outcomes = [
        (a.answered_at, kind.value, a.backend_state)
        for a in counted
        if (kind := _OUTCOME_OF_BACKEND_STATE.get(a.backend_state or "")) is not None
    ]
    if outcomes:
        answered_at, kind_value, state = max(outcomes)
        return MarkOutcome(
            task_id=task.id,
            attempt=task.attempt,
            kind=EventKind(kind_value),
            reason=(
                f"{suspicion.why}; the result backend says {state} ({utc_isoformat(answered_at)})"
            ),
        )
    if counted:
        if not suspicion.lost_on_denial or worker is None:
            return None
        answered_at = max(a.answered_at for a in counted)
        return MarkLost(
            task_id=task.id,
            attempt=task.attempt,
            worker=worker,
            reason=f"{suspicion.why}; no worker holds it ({utc_isoformat(answered_at)})",
        )
    deadline = start + view.policy.probe_timeout
    if view.now < deadline:
        return Probe(task_id=task.id, reason=suspicion.why)
    if not suspicion.lost_on_silence or worker is None:
        return None
    return MarkLost(
        task_id=task.id,
        attempt=task.attempt,
        worker=worker,
        reason=(
            f"{suspicion.why}; no answer to probes in {_seconds(view.policy.probe_timeout)}"
            f" (since {utc_isoformat(start)})"
        ),
    )


def reconcile(
    tasks: Iterable[Task],
    workers: Iterable[Worker],
    *,
    now: datetime,
    policy: ReconcilePolicy,
    reports: Iterable[ActivityReport] = (),
    answers: Iterable[ProbeAnswer] = (),
    listening_since: datetime | None = None,
    last_listed: Mapping[str, datetime] | None = None,
) -> tuple[Decision, ...]:
    """Decide, for one project at ``now``, which tasks to probe or to settle.

    ``tasks`` are the project's unfinished tasks (terminal ones are skipped),
    ``workers`` its workers, ``reports`` the latest :class:`ActivityReport` of
    each worker, ``answers`` every :class:`ProbeAnswer` received so far (older
    ones are harmless), ``listening_since`` when the brain started
    listening to agents, and ``last_listed`` when a report last listed each
    task (a task listed for days and then dropped is judged from then, not
    from its last event). Returns at most one decision per task, by task id;
    the same inputs always give the same decisions, whatever their order.
    Raises :class:`~z4j_domain.errors.InvalidInput` if a task, worker or
    worker's report is given twice.
    """
    now = aware_utc(now)
    listening_since = optional_aware_utc(listening_since)
    by_hostname: dict[str, Worker] = _index_by(workers, "hostname", "worker")
    live = frozenset(
        name
        for name, worker in by_hostname.items()
        if is_worker_live(worker, now, policy, listening_since=listening_since)
    )
    by_worker: dict[str, ActivityReport] = _index_by(reports, "worker", "the report of worker")
    live_reports = {name: report for name, report in by_worker.items() if name in live}
    answers_of: dict[str, list[ProbeAnswer]] = {}
    for answer in answers:
        answers_of.setdefault(answer.task_id, []).append(answer)
    view = _View(
        now=now,
        policy=policy,
        listening_since=listening_since,
        workers=by_hostname,
        live=live,
        reports=live_reports,
        held=frozenset(i for report in live_reports.values() for i in report.task_ids),
        answers={task_id: tuple(found) for task_id, found in answers_of.items()},
        last_listed={k: aware_utc(v) for k, v in (last_listed or {}).items()},
    )
    decisions: list[Decision] = []
    for task in sorted(_index_by(tasks, "id", "task").values(), key=lambda t: t.id):
        if task.state.is_terminal or task.id in view.held:
            continue
        suspicion = _suspicion(task, view)
        if suspicion is None or now < suspicion.due:
            continue
        decision = _judge(task, suspicion, view)
        if decision is not None:
            decisions.append(decision)
    return tuple(decisions)
