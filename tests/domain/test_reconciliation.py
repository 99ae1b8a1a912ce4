"""Properties of the reconciler: dead workers' tasks are settled, live workers' tasks never.

Time is a plain ``now`` value (a fake clock), agents' activity reports and
probe answers are plain values. The strategies below are local to this module
for now; they belong in ``tests/strategies.py`` eventually.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import BASE_TIME
from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.reconciliation import (
    ActivityReport,
    Decision,
    MarkLost,
    MarkOutcome,
    Probe,
    ProbeAnswer,
    ReconcilePolicy,
    is_worker_live,
    reconcile,
    verdict_event,
    worker_offline_at,
)
from z4j_domain.tasks import EventKind, Task, TaskEvent, TaskState, apply, fold
from z4j_domain.workers import Worker, WorkerStatus

HOSTS = ("w1@host", "w2@host", "w3@host")
BACKEND_STATES = (None, "PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED", "RETRY", "REJECTED")
OUTCOME_OF_STATE = {
    "SUCCESS": EventKind.SUCCEEDED,
    "FAILURE": EventKind.FAILED,
    "REVOKED": EventKind.REVOKED,
    "RETRY": EventKind.RETRIED,
    "REJECTED": EventKind.REJECTED,
}
POLICY = ReconcilePolicy()


def at(seconds: float) -> datetime:
    """The fake clock: ``seconds`` after the strategies' base time."""
    return BASE_TIME + timedelta(seconds=seconds)


def history(
    worker: str | None,
    *,
    task_id: str = "task-1",
    kind: EventKind = EventKind.STARTED,
    seconds: float = 0,
    attempt: int = 0,
) -> list[TaskEvent]:
    """A task sent one second before it reached ``kind`` on ``worker`` at ``at(seconds)``."""
    sent = TaskEvent(
        id=f"{task_id}-{attempt}-sent",
        task_id=task_id,
        kind=EventKind.SENT,
        timestamp=at(seconds - 1),
        attempt=attempt,
        name="app.add",
    )
    events = [sent]
    if kind is not EventKind.SENT:
        events.append(
            TaskEvent(
                id=f"{task_id}-{attempt}-{kind}",
                task_id=task_id,
                kind=kind,
                timestamp=at(seconds),
                attempt=attempt,
                worker=worker,
            )
        )
    return events


def task_on(worker: str | None, **kwargs: Any) -> Task:
    """The fold of :func:`history`."""
    task = fold(history(worker, **kwargs))
    assert task is not None
    return task


def worker(
    hostname: str = "w1@host",
    *,
    heartbeat: float | None = 0,
    status: WorkerStatus = WorkerStatus.ONLINE,
    first_seen: float = 0,
) -> Worker:
    """A worker last heard from at ``at(heartbeat)``."""
    return Worker(
        hostname=hostname,
        status=status,
        first_seen_at=at(first_seen),
        last_heartbeat_at=None if heartbeat is None else at(heartbeat),
    )


def answer(
    task_id: str = "task-1",
    *,
    seconds: float,
    active_on: str | None = None,
    backend_state: str | None = None,
) -> ProbeAnswer:
    """A probe answer received at ``at(seconds)``."""
    return ProbeAnswer(
        task_id=task_id, active_on=active_on, backend_state=backend_state, answered_at=at(seconds)
    )


def current_worker(task: Task) -> str | None:
    """The worker of the task's current attempt: the one the reconciler judges it by."""
    return task.worker if task.field_attempts.get("worker", 0) == task.attempt else None


def decisions_by_task(decisions: tuple[Decision, ...]) -> dict[str, Decision]:
    return {d.task_id: d for d in decisions}


# -- strategies ----------------------------------------------------------------------------

moments = st.builds(
    lambda s, us: at(s) + timedelta(microseconds=us),
    st.integers(min_value=0, max_value=400),
    st.sampled_from([0, 1, 999_999]),
)


@st.composite
def policies(draw: st.DrawFn) -> ReconcilePolicy:
    """Valid policies around the defaults, small enough that the scenarios cross every line."""
    interval = draw(st.integers(min_value=1, max_value=5))
    window = draw(st.none() | st.integers(min_value=interval + 1, max_value=20))
    reconcile_interval = draw(st.integers(min_value=5, max_value=30))
    return ReconcilePolicy(
        heartbeat_interval=timedelta(seconds=interval),
        **({} if window is None else {"heartbeat_window": timedelta(seconds=window)}),
        reconcile_interval=timedelta(seconds=reconcile_interval),
        unstarted_grace=timedelta(seconds=draw(st.integers(0, reconcile_interval))),
        probe_timeout=timedelta(seconds=draw(st.integers(reconcile_interval, 90))),
        report_grace=timedelta(seconds=draw(st.integers(1, 60))),
        probe_unassigned_after=draw(st.none() | st.integers(1, 120).map(_secs)),
    )


def _secs(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


@st.composite
def unfinished_tasks(draw: st.DrawFn, task_id: str) -> Task:
    """A pending, received or started task on one of the hosts (or none), at some moment."""
    return task_on(
        draw(st.sampled_from((None, *HOSTS))),
        task_id=task_id,
        kind=draw(st.sampled_from([EventKind.SENT, EventKind.RECEIVED, EventKind.STARTED])),
        seconds=draw(st.integers(min_value=1, max_value=250)),
        attempt=draw(st.integers(min_value=0, max_value=2)),
    )


@st.composite
def folded_tasks(draw: st.DrawFn, task_id: str) -> Task:
    """The fold of a few arbitrary events (any kind, attempt and worker; terminal included).

    Only what the reconciler reads is drawn (``tests.strategies.event_sets`` draws
    payloads too, which costs ten times as much here and changes nothing).
    """
    size = draw(st.integers(min_value=1, max_value=4))
    events = [
        TaskEvent(
            id=f"{task_id}-e{i}",
            task_id=task_id,
            kind=draw(st.sampled_from(EventKind)),
            timestamp=at(draw(st.integers(min_value=0, max_value=250))),
            attempt=draw(st.integers(min_value=0, max_value=2)),
            worker=draw(st.sampled_from((None, *HOSTS))),
        )
        for i in range(size)
    ]
    task = fold(events)
    assert task is not None
    return task


@st.composite
def any_tasks(draw: st.DrawFn, task_id: str) -> Task:
    """Either an unfinished task or the fold of arbitrary events."""
    if draw(st.booleans()):
        return draw(unfinished_tasks(task_id))
    return draw(folded_tasks(task_id))


def around(now: datetime) -> st.SearchStrategy[datetime]:
    """Any moment, or one shortly before ``now`` (so that about half the workers are live)."""
    recent = st.integers(min_value=0, max_value=25).map(lambda s: now - timedelta(seconds=s))
    return moments | recent


@st.composite
def workers(draw: st.DrawFn, hostname: str, now: datetime | None = None) -> Worker:
    return Worker(
        hostname=hostname,
        # Mostly online: a goodbye settles everything at once, leaving less to check.
        status=draw(st.sampled_from([WorkerStatus.ONLINE] * 3 + [WorkerStatus.OFFLINE])),
        first_seen_at=at(draw(st.integers(min_value=0, max_value=60))),
        last_heartbeat_at=draw(st.none() | (moments if now is None else around(now))),
    )


@attrs.frozen(kw_only=True)
class Scenario:
    """Everything one reconcile pass sees."""

    tasks: tuple[Task, ...]
    workers: tuple[Worker, ...]
    reports: tuple[ActivityReport, ...]
    answers: tuple[ProbeAnswer, ...]
    now: datetime
    policy: ReconcilePolicy
    listening_since: datetime | None

    def run(self, **changes: object) -> tuple[Decision, ...]:
        s = attrs.evolve(self, **changes)
        return reconcile(
            s.tasks,
            s.workers,
            now=s.now,
            policy=s.policy,
            reports=s.reports,
            answers=s.answers,
            listening_since=s.listening_since,
        )

    def live(self, hostname: str | None) -> bool:
        found = [w for w in self.workers if w.hostname == hostname]
        return bool(found) and is_worker_live(
            found[0], self.now, self.policy, listening_since=self.listening_since
        )


@st.composite
def scenarios(
    draw: st.DrawFn, *, tasks: Callable[[str], st.SearchStrategy[Task]] = any_tasks
) -> Scenario:
    """A project's tasks, workers, reports and answers; small pools so that they collide."""
    now = draw(moments)
    task_ids = [f"task-{i}" for i in range(draw(st.integers(min_value=1, max_value=5)))]
    made = tuple(draw(st.permutations([draw(tasks(task_id)) for task_id in task_ids])))
    hosts = draw(st.lists(st.sampled_from(HOSTS), unique=True, min_size=1))
    reporters = draw(st.lists(st.sampled_from(HOSTS), unique=True))
    return Scenario(
        tasks=made,
        workers=tuple(draw(workers(h, now)) for h in hosts),
        reports=tuple(
            ActivityReport(
                worker=h,
                task_ids=draw(st.frozensets(st.sampled_from(task_ids))),
                reported_at=draw(around(now)),
            )
            for h in reporters
        ),
        answers=tuple(
            draw(
                st.lists(
                    st.builds(
                        ProbeAnswer,
                        task_id=st.sampled_from(task_ids),
                        active_on=st.sampled_from((None, *HOSTS)),
                        backend_state=st.sampled_from(BACKEND_STATES),
                        answered_at=around(now),
                    ),
                    max_size=6,
                )
            )
        ),
        now=now,
        policy=draw(policies()),
        listening_since=draw(st.none() | moments),
    )


# -- policy and values ---------------------------------------------------------------------


def test_the_default_policy_is_small_and_derived_from_the_heartbeat_interval() -> None:
    """Defaults: 2 s heartbeats, an 8 s window (3 intervals + 2 s), a 10 s pass, 30 s probes."""
    assert POLICY.heartbeat_interval == timedelta(seconds=2)
    assert POLICY.heartbeat_window == timedelta(seconds=8)
    assert POLICY.reconcile_interval == timedelta(seconds=10)
    assert POLICY.probe_timeout == timedelta(seconds=30)
    assert POLICY.unstarted_grace == timedelta(0)
    assert POLICY.probe_unassigned_after is None
    slower = ReconcilePolicy(heartbeat_interval=timedelta(seconds=10))
    assert slower.heartbeat_window == timedelta(seconds=32)


@pytest.mark.parametrize(
    "changes",
    [
        {"heartbeat_interval": timedelta(0)},
        {"heartbeat_interval": 2.0},
        {"heartbeat_window": timedelta(seconds=2)},
        {"reconcile_interval": timedelta(seconds=-1)},
        {"unstarted_grace": timedelta(seconds=-1)},
        {"unstarted_grace": timedelta(seconds=16)},
        {"probe_timeout": timedelta(seconds=9)},
        {"report_grace": timedelta(0)},
        {"probe_unassigned_after": timedelta(0)},
    ],
)
def test_a_policy_refuses_values_that_make_no_sense(changes: dict[str, object]) -> None:
    """Durations are positive timedeltas; the window outlasts a heartbeat interval; the
    unstarted grace fits in one pass and the probe timeout lasts at least one."""
    with pytest.raises((ValueError, TypeError)):
        ReconcilePolicy(**changes)  # type: ignore[arg-type]


def test_values_refuse_naive_datetimes_and_a_bare_string_of_task_ids() -> None:
    """Every datetime is timezone-aware; a report's ids are a collection, not one string."""
    naive = datetime(2026, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        ProbeAnswer(task_id="t", answered_at=naive)
    with pytest.raises(ValueError, match="naive"):
        ActivityReport(worker="w1@host", task_ids=(), reported_at=naive)
    with pytest.raises(TypeError):
        ActivityReport(worker="w1@host", task_ids="task-1", reported_at=at(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive"):
        reconcile([], [], now=naive, policy=POLICY)
    with pytest.raises(ValueError, match="terminal"):
        MarkOutcome(task_id="t", attempt=0, kind=EventKind.LOST, reason="r")
    assert ProbeAnswer(task_id="t", backend_state=" success ", answered_at=at(0)).backend_state == (
        "SUCCESS"
    )


def test_duplicate_tasks_workers_or_reports_are_refused() -> None:
    """One pass sees each task, worker and worker's report once."""
    task = task_on("w1@host")
    with pytest.raises(InvalidInput):
        reconcile([task, task], [], now=at(0), policy=POLICY)
    with pytest.raises(InvalidInput):
        reconcile([], [worker(), worker()], now=at(0), policy=POLICY)
    report = ActivityReport(worker="w1@host", task_ids=(), reported_at=at(0))
    with pytest.raises(InvalidInput):
        reconcile([], [worker()], now=at(0), policy=POLICY, reports=[report, report])


# -- liveness ------------------------------------------------------------------------------


@given(policy=policies(), silent=st.integers(min_value=0, max_value=100_000_000))
def test_a_worker_is_live_exactly_while_silent_for_at_most_its_window(
    policy: ReconcilePolicy, silent: int
) -> None:
    """Silence up to the window (inclusive) keeps an online worker live; a microsecond more not."""
    w = worker(heartbeat=10)
    now = at(10) + timedelta(microseconds=silent)
    assert is_worker_live(w, now, policy) == (now - at(10) <= policy.heartbeat_window)
    assert worker_offline_at(w, policy) == at(10) + policy.heartbeat_window
    assert is_worker_live(w, worker_offline_at(w, policy), policy)
    assert not is_worker_live(w, worker_offline_at(w, policy) + timedelta(microseconds=1), policy)


@given(policy=policies(), now=moments, heartbeat=moments)
def test_a_worker_that_said_goodbye_is_offline_at_once(
    policy: ReconcilePolicy, now: datetime, heartbeat: datetime
) -> None:
    """Status offline (the agent's bye) means offline, however recent the last heartbeat."""
    w = Worker(
        hostname="w1@host",
        status=WorkerStatus.OFFLINE,
        first_seen_at=at(0),
        last_heartbeat_at=heartbeat,
    )
    assert not is_worker_live(w, now, policy)
    assert not is_worker_live(w, now, policy, listening_since=now)
    assert worker_offline_at(w, policy) == heartbeat


@given(policy=policies(), w=workers("w1@host"), now=moments, later=st.integers(0, 10_000))
def test_liveness_only_ends_with_silence_and_a_heartbeat_revives(
    policy: ReconcilePolicy, w: Worker, now: datetime, later: int
) -> None:
    """A worker offline at some moment stays offline later unless heard from; one heartbeat
    (the gateway stores it as online) makes it live again."""
    if not is_worker_live(w, now, policy):
        assert not is_worker_live(w, now + timedelta(seconds=later), policy)
    revived = attrs.evolve(w, status=WorkerStatus.ONLINE, last_heartbeat_at=now)
    assert is_worker_live(revived, now, policy)


@given(policy=policies(), silent=st.integers(min_value=0, max_value=3600))
def test_silence_before_the_brain_listened_does_not_count(
    policy: ReconcilePolicy, silent: int
) -> None:
    """After a brain restart, a worker's old heartbeat is as good as one at start-up."""
    w = worker(heartbeat=0, first_seen=0)
    started = at(silent)
    assert is_worker_live(w, started + policy.heartbeat_window, policy, listening_since=started)
    assert (
        worker_offline_at(w, policy, listening_since=started)
        == max(at(0), started) + policy.heartbeat_window
    )


def test_a_worker_never_heard_from_is_silent_since_it_was_first_seen() -> None:
    """Without any heartbeat, silence is counted from the worker's first sighting."""
    w = worker(heartbeat=None, first_seen=100)
    assert worker_offline_at(w, POLICY) == at(108)
    assert is_worker_live(w, at(108), POLICY)
    assert not is_worker_live(w, at(109), POLICY)


# -- the invariants ------------------------------------------------------------------------


def _without_protection(s: Scenario) -> Scenario:
    """The scenario minus every sign that a live worker holds a task (reports, answers)."""
    return attrs.evolve(
        s,
        reports=tuple(
            attrs.evolve(r, task_ids=frozenset()) if s.live(r.worker) else r for r in s.reports
        ),
        answers=tuple(a for a in s.answers if not s.live(a.active_on)),
    )


@given(scenario=scenarios(tasks=unfinished_tasks))
def test_a_task_on_an_offline_worker_is_decided_within_one_pass_of_the_window(
    scenario: Scenario,
) -> None:
    """Started or received on a worker that went offline, and held by no live worker: by one
    reconcile interval after the window expired (at once if started), it is probed, or
    settled."""
    s = _without_protection(scenario)
    policy = s.policy
    decided = decisions_by_task(s.run())
    for task in s.tasks:
        known = {w.hostname: w for w in s.workers}
        hostname = current_worker(task)
        if hostname is None or task.state is TaskState.PENDING:
            continue
        if hostname in known:
            w = known[hostname]
            if is_worker_live(w, s.now, policy, listening_since=s.listening_since):
                continue
            expired = worker_offline_at(w, policy, listening_since=s.listening_since)
        else:
            # Never heard from: offline once a window has passed since the task's last event.
            since = max(task.updated_at, s.listening_since or task.updated_at)
            expired = since + policy.heartbeat_window
            if s.now <= expired:
                continue
        if s.now >= expired + policy.reconcile_interval or (
            task.state is TaskState.STARTED and s.now >= expired
        ):
            assert task.id in decided, (task, expired)
            assert isinstance(decided[task.id], Probe | MarkLost | MarkOutcome)


@given(scenario=scenarios())
def test_a_task_a_live_worker_holds_is_never_touched(scenario: Scenario) -> None:
    """No decision at all, let alone lost, for a task any live worker reports holding."""
    decided = decisions_by_task(scenario.run())
    for report in scenario.reports:
        if scenario.live(report.worker):
            assert not report.task_ids & decided.keys()
    for decision in decided.values():
        if isinstance(decision, MarkLost):
            task = next(t for t in scenario.tasks if t.id == decision.task_id)
            assert decision.worker == current_worker(task)
            reported = any(
                r.worker == decision.worker and task.id in r.task_ids for r in scenario.reports
            )
            assert not (scenario.live(decision.worker) and reported)


@given(scenario=scenarios())
def test_without_reports_tasks_on_live_workers_are_never_touched(scenario: Scenario) -> None:
    """With no activity reports, a live worker's tasks get no decision, whatever the answers."""
    s = attrs.evolve(scenario, reports=())
    decided = decisions_by_task(s.run())
    for task in s.tasks:
        if s.live(current_worker(task)):
            assert task.id not in decided


@given(
    policy=policies(),
    running_for=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
    answers=st.lists(
        st.builds(
            ProbeAnswer,
            task_id=st.just("task-1"),
            active_on=st.sampled_from((None, *HOSTS)),
            backend_state=st.sampled_from(BACKEND_STATES),
            answered_at=moments,
        ),
        max_size=4,
    ),
    reported=moments,
)
def test_a_long_running_task_on_a_live_worker_that_reports_it_is_left_alone(
    policy: ReconcilePolicy,
    running_for: timedelta,
    answers: list[ProbeAnswer],
    reported: datetime,
) -> None:
    """However long it has been running, and whatever probes said."""
    task = task_on("w1@host", seconds=0)
    now = task.updated_at + running_for
    w = Worker(hostname="w1@host", status="online", first_seen_at=at(-10), last_heartbeat_at=now)
    report = ActivityReport(worker="w1@host", task_ids={"task-1"}, reported_at=reported)
    assert reconcile([task], [w], now=now, policy=policy, reports=[report], answers=answers) == ()


@given(scenario=scenarios())
def test_terminal_tasks_are_never_touched_and_each_task_gets_one_decision(
    scenario: Scenario,
) -> None:
    """Decisions name given unfinished tasks, once each, in task id order."""
    decisions = scenario.run()
    ids = [d.task_id for d in decisions]
    assert ids == sorted(set(ids))
    unfinished = {t.id for t in scenario.tasks if not t.state.is_terminal}
    assert set(ids) <= unfinished
    for decision in decisions:
        if isinstance(decision, MarkLost | MarkOutcome):
            task = next(t for t in scenario.tasks if t.id == decision.task_id)
            assert decision.attempt == task.attempt


@given(scenario=scenarios(), data=st.data())
def test_the_same_inputs_in_any_order_give_the_same_decisions(
    scenario: Scenario, data: st.DataObject
) -> None:
    """Reconciling is a pure function: again, or with every input shuffled, nothing changes."""
    decisions = scenario.run()
    assert scenario.run() == decisions
    shuffled = scenario.run(
        tasks=tuple(data.draw(st.permutations(scenario.tasks))),
        workers=tuple(data.draw(st.permutations(scenario.workers))),
        reports=tuple(data.draw(st.permutations(scenario.reports))),
        answers=tuple(data.draw(st.permutations(scenario.answers))),
    )
    assert shuffled == decisions


@given(scenario=scenarios(), later=st.integers(min_value=0, max_value=3600))
def test_applied_verdicts_are_idempotent_and_never_decided_again(
    scenario: Scenario, later: int
) -> None:
    """A verdict's event applied twice is applied once; the task is then terminal, and no
    later pass decides anything about it."""
    decisions = scenario.run()
    verdicts = [d for d in decisions if isinstance(d, MarkLost | MarkOutcome)]
    settled = {t.id: t for t in scenario.tasks}
    for verdict in verdicts:
        event = verdict_event(verdict, now=scenario.now)
        once = apply(settled[verdict.task_id], event)
        assert apply(once, event) == once
        assert fold([event, event], settled[verdict.task_id]) == once
        assert once.state.is_terminal
        expected = TaskState.LOST if isinstance(verdict, MarkLost) else verdict.kind.state
        assert once.state is expected
        settled[verdict.task_id] = once
    again = decisions_by_task(
        scenario.run(tasks=tuple(settled.values()), now=scenario.now + timedelta(seconds=later))
    )
    assert not {v.task_id for v in verdicts} & again.keys()


@given(scenario=scenarios(), later=st.integers(min_value=1, max_value=3600))
def test_every_pass_that_reaches_a_verdict_yields_the_same_event_id(
    scenario: Scenario, later: int
) -> None:
    """Two passes deciding the same verdict (the first not yet applied) record one event."""
    for verdict in scenario.run():
        if isinstance(verdict, MarkLost | MarkOutcome):
            first = verdict_event(verdict, now=scenario.now)
            second = verdict_event(verdict, now=scenario.now + timedelta(seconds=later))
            assert first.id == second.id
            assert first.timestamp == scenario.now
            assert len(first.id) <= 255


@given(
    attempt=st.integers(min_value=0, max_value=3),
    data=st.data(),
    redelivered_on=st.sampled_from(["w1@host", "w2@host"]),
)
def test_a_task_redelivered_after_being_lost_starts_again(
    attempt: int, data: st.DataObject, redelivered_on: str
) -> None:
    """A higher attempt's ``started`` leaves ``lost`` under the fold, in any arrival order,
    and the reconciler leaves the task alone while its new worker is live."""
    events = history("w1@host", seconds=0, attempt=attempt)
    task = task_on("w1@host", seconds=0, attempt=attempt)
    dead = worker("w1@host", heartbeat=0)
    now = at(100)
    (verdict,) = reconcile([task], [dead], now=now, policy=POLICY)
    assert isinstance(verdict, MarkLost)
    lost = verdict_event(verdict, now=now)
    started = TaskEvent(
        id="redelivered",
        task_id="task-1",
        kind=EventKind.STARTED,
        timestamp=at(101),
        attempt=attempt + 1,
        worker=redelivered_on,
    )
    everything = [*events, lost, started]
    again = fold(data.draw(st.permutations(everything)))
    assert again is not None
    assert again.state is TaskState.STARTED
    assert again.worker == redelivered_on
    assert again.attempt == attempt + 1
    assert apply(apply(task, lost), started) == again
    alive = worker(redelivered_on, heartbeat=110)
    assert reconcile([again], [alive], now=at(112), policy=POLICY) == ()
    # If that worker dies too, the new attempt gets its own verdict (a new event id).
    (second,) = reconcile([again], [alive], now=at(1000), policy=POLICY)
    assert isinstance(second, MarkLost)
    assert verdict_event(second, now=at(1000)).id != lost.id


@given(scenario=scenarios())
def test_tasks_no_worker_received_are_left_alone_by_default(scenario: Scenario) -> None:
    """No worker for the current attempt: no decision unless the policy opts in, never lost."""
    default = attrs.evolve(
        scenario, policy=attrs.evolve(scenario.policy, probe_unassigned_after=None)
    )
    unassigned = {t.id for t in scenario.tasks if current_worker(t) is None}
    assert not unassigned & decisions_by_task(default.run()).keys()
    for decision in scenario.run():
        if decision.task_id in unassigned:
            assert isinstance(decision, Probe | MarkOutcome)


def test_a_retry_waiting_in_the_queue_is_not_blamed_on_the_old_attempts_worker() -> None:
    """Retried on a worker that then died: the new attempt is pending, not on that worker."""
    events = [
        *history("w1@host", seconds=0),
        TaskEvent(
            id="retried",
            task_id="task-1",
            kind=EventKind.RETRIED,
            timestamp=at(1),
            worker="w1@host",
        ),
        TaskEvent(id="resent", task_id="task-1", kind=EventKind.SENT, timestamp=at(1), attempt=1),
    ]
    task = fold(events)
    assert task is not None
    assert (task.state, task.attempt, task.worker) == (TaskState.PENDING, 1, "w1@host")
    dead = worker(heartbeat=0, status=WorkerStatus.OFFLINE)
    assert reconcile([task], [dead], now=at(3600), policy=POLICY) == ()


def test_a_task_no_worker_received_is_probed_once_the_policy_says_so() -> None:
    """With ``probe_unassigned_after``, it is probed, settled by a terminal backend answer,
    and left after a denial or silence."""
    policy = ReconcilePolicy(probe_unassigned_after=timedelta(minutes=10))
    task = task_on(None, kind=EventKind.SENT, seconds=1)  # first seen at at(0)
    assert reconcile([task], [], now=at(599), policy=policy) == ()
    assert reconcile([task], [], now=at(600), policy=policy) == (
        Probe(task_id="task-1", reason=f"no worker has received it since {utc_isoformat(at(0))}"),
    )
    (done,) = reconcile(
        [task],
        [],
        now=at(610),
        policy=policy,
        answers=[answer(seconds=605, backend_state="SUCCESS")],
    )
    assert isinstance(done, MarkOutcome)
    assert done.kind is EventKind.SUCCEEDED
    denied = [answer(seconds=605, backend_state="PENDING")]
    assert reconcile([task], [], now=at(610), policy=policy, answers=denied) == ()
    assert reconcile([task], [], now=at(661), policy=policy) == ()


# -- probes, answers and timeouts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "kind"),
    [*OUTCOME_OF_STATE.items(), ("success", EventKind.SUCCEEDED)],
)
def test_a_terminal_backend_answer_becomes_an_event_of_that_kind(
    state: str, kind: EventKind
) -> None:
    """The result backend's verdict wins over declaring the task lost."""
    task = task_on("w1@host")
    (decision,) = reconcile(
        [task],
        [worker(heartbeat=0)],
        now=at(20),
        policy=POLICY,
        answers=[answer(seconds=12, backend_state=state)],
    )
    assert isinstance(decision, MarkOutcome)
    assert decision.kind is kind
    event = verdict_event(decision, now=at(20))
    assert event.kind is kind
    assert apply(task, event).state is kind.state


@given(
    heartbeat=st.integers(min_value=0, max_value=100),
    timing=st.integers(min_value=0, max_value=200),
)
def test_an_unanswered_probe_of_a_dead_workers_task_ends_in_lost(
    heartbeat: int, timing: int
) -> None:
    """Probe from the window's expiry until the probe timeout, then lost, naming the worker."""
    task = task_on("w1@host", seconds=0)
    w = worker(heartbeat=heartbeat)
    expired = worker_offline_at(w, POLICY)
    now = expired + timedelta(seconds=timing, microseconds=1)
    (decision,) = reconcile([task], [w], now=now, policy=POLICY)
    if now < expired + POLICY.probe_timeout:
        assert isinstance(decision, Probe)
    else:
        assert isinstance(decision, MarkLost)
        assert decision.worker == "w1@host"
        assert "w1@host" in decision.reason
        assert "no answer" in decision.reason


def test_nobody_holding_it_makes_a_dead_workers_task_lost_at_once() -> None:
    """An answer that no worker holds it and the backend knows nothing: lost, with the worker."""
    task = task_on("w1@host")
    w = worker(heartbeat=0, status=WorkerStatus.OFFLINE)
    (decision,) = reconcile(
        [task], [w], now=at(3), policy=POLICY, answers=[answer(seconds=2, backend_state="PENDING")]
    )
    assert isinstance(decision, MarkLost)
    assert decision.reason.startswith("its worker w1@host said goodbye; no worker holds it")
    event = verdict_event(decision, now=at(3))
    assert event.kind is EventKind.LOST
    assert event.worker == "w1@host"
    assert event.exception == f"reconciled: {decision.reason}"


def test_answers_from_before_the_task_was_due_do_not_count() -> None:
    """An old denial, or an old claim that another worker holds it (from before the worker
    went offline at 8 s), is no evidence either way."""
    task = task_on("w1@host")
    w1 = worker(heartbeat=0)
    stale = [answer(seconds=5, backend_state=None)]
    (decision,) = reconcile([task], [w1], now=at(20), policy=POLICY, answers=stale)
    assert isinstance(decision, Probe)
    w2 = worker("w2@host", heartbeat=50)  # offline after 58 s
    claim = [answer(seconds=5, active_on="w2@host")]
    (decision,) = reconcile([task], [w1, w2], now=at(70), policy=POLICY, answers=claim)
    assert isinstance(decision, MarkLost)


def test_the_latest_terminal_answer_wins() -> None:
    """Answers that disagree on the outcome: the most recent one is recorded."""
    task = task_on("w1@host")
    answers = [
        answer(seconds=14, backend_state="SUCCESS"),
        answer(seconds=12, backend_state="RETRY"),
        answer(seconds=13, backend_state=None),
    ]
    (decision,) = reconcile(
        [task], [worker(heartbeat=0)], now=at(20), policy=POLICY, answers=answers
    )
    assert isinstance(decision, MarkOutcome)
    assert decision.kind is EventKind.SUCCEEDED


def test_an_answer_naming_a_live_worker_protects_and_a_dead_one_restarts_the_probes() -> None:
    """Held by a live worker: leave it. Held by a worker since gone: probe again from then,
    and lost only a probe timeout after that."""
    task = task_on("w1@host")
    w1 = worker("w1@host", heartbeat=0)
    w2_live = worker("w2@host", heartbeat=95)
    held = [answer(seconds=10, active_on="w2@host")]
    assert reconcile([task], [w1, w2_live], now=at(100), policy=POLICY, answers=held) == ()
    w2_dead = worker("w2@host", heartbeat=50)  # offline since at(58)
    (probe,) = reconcile([task], [w1, w2_dead], now=at(87), policy=POLICY, answers=held)
    assert isinstance(probe, Probe)
    (lost,) = reconcile([task], [w1, w2_dead], now=at(88), policy=POLICY, answers=held)
    assert isinstance(lost, MarkLost)
    # A claim about a worker with no record at all restarts the probes from the claim.
    unknown = [answer(seconds=70, active_on="w9@host")]
    (probe,) = reconcile([task], [w1], now=at(99), policy=POLICY, answers=unknown)
    assert isinstance(probe, Probe)
    (lost,) = reconcile([task], [w1], now=at(100), policy=POLICY, answers=unknown)
    assert isinstance(lost, MarkLost)


def test_a_task_its_live_worker_no_longer_lists_is_probed_and_lost_only_on_denial() -> None:
    """A report made well after the task's last event that omits it: probe; a denial makes it
    lost; silence does not (the agent may not answer probes), nor does an early report."""
    task = task_on("w1@host", seconds=0)
    w = worker(heartbeat=200)
    fresh = [ActivityReport(worker="w1@host", task_ids=set(), reported_at=at(30))]
    early = [ActivityReport(worker="w1@host", task_ids=set(), reported_at=at(29))]
    now = at(201)
    assert reconcile([task], [w], now=now, policy=POLICY, reports=early) == ()
    (probe,) = reconcile([task], [w], now=at(40), policy=POLICY, reports=fresh)
    assert isinstance(probe, Probe)
    assert "did not list it" in probe.reason
    assert reconcile([task], [w], now=now, policy=POLICY, reports=fresh) == ()
    denial = [answer(seconds=41)]
    (lost,) = reconcile([task], [w], now=now, policy=POLICY, reports=fresh, answers=denial)
    assert isinstance(lost, MarkLost)
    assert lost.worker == "w1@host"


def test_a_worker_never_heard_from_counts_as_offline_a_window_after_the_task() -> None:
    """A task's worker with no record at all is probed once a window has passed since the task
    was last heard of (and since the brain started listening)."""
    task = task_on("w9@host", seconds=10)
    assert reconcile([task], [], now=at(18), policy=POLICY) == ()
    (probe,) = reconcile([task], [], now=at(18.5), policy=POLICY)
    assert probe == Probe(task_id="task-1", reason="its worker w9@host was never heard from")
    assert reconcile([task], [], now=at(18.5), policy=POLICY, listening_since=at(15)) == ()


def test_a_received_task_gets_the_unstarted_grace() -> None:
    """Not started yet on a dead worker: probed only after the grace (a broker may redeliver)."""
    policy = ReconcilePolicy(unstarted_grace=timedelta(seconds=10))
    received = task_on("w1@host", kind=EventKind.RECEIVED)
    started = task_on("w1@host", task_id="task-2")
    w = worker(heartbeat=0)
    assert [d.task_id for d in reconcile([received, started], [w], now=at(9), policy=policy)] == [
        "task-2"
    ]
    assert len(reconcile([received, started], [w], now=at(18), policy=policy)) == 2


@given(
    died=st.integers(min_value=0, max_value=120),
    phase=st.integers(min_value=0, max_value=14_999),
    answered=st.booleans(),
)
def test_a_periodic_runner_settles_a_dead_workers_task(
    died: int, phase: int, answered: bool
) -> None:
    """Simulated passes every reconcile interval: the first pass after the window expires
    probes; an agent's terminal answer or the probe timeout settles the task, within one pass
    of the deadline; after that, passes decide nothing."""
    policy = POLICY
    task = task_on("w1@host", seconds=0)
    w = worker(heartbeat=died)
    expired = worker_offline_at(w, policy)
    answers: list[ProbeAnswer] = []
    now = at(0) + timedelta(milliseconds=phase)
    probed_at: datetime | None = None
    settled_at: datetime | None = None
    while now < expired + policy.probe_timeout + 3 * policy.reconcile_interval:
        for decision in reconcile([task], [w], now=now, policy=policy, answers=answers):
            if isinstance(decision, Probe):
                probed_at = probed_at or now
                if answered:  # the agent answers before the next pass
                    answers.append(
                        ProbeAnswer(task_id=task.id, backend_state="FAILURE", answered_at=now)
                    )
            else:
                assert settled_at is None
                settled_at = now
                task = apply(task, verdict_event(decision, now=now))
        now += policy.reconcile_interval
    assert probed_at is not None
    assert expired < probed_at <= expired + policy.reconcile_interval
    assert settled_at is not None
    if answered:
        assert task.state is TaskState.FAILED
        assert settled_at == probed_at + policy.reconcile_interval
    else:
        assert task.state is TaskState.LOST
        deadline = expired + policy.probe_timeout
        assert deadline <= settled_at < deadline + policy.reconcile_interval


def test_datetimes_in_any_timezone_are_compared_in_utc() -> None:
    """A ``now`` given in another timezone means the same instant."""
    task = task_on("w1@host")
    w = worker(heartbeat=0)
    tokyo = timezone(timedelta(hours=9))
    assert reconcile([task], [w], now=at(20).astimezone(tokyo), policy=POLICY) == reconcile(
        [task], [w], now=at(20), policy=POLICY
    )


def test_a_task_dropped_from_reports_after_days_is_judged_from_its_last_listing() -> None:
    """Listed until day 3, then missing: probed from then (not left alone because the
    probe window after its last event closed long ago), and lost if nobody holds it."""
    task = task_on("w1@host")
    day3 = 3 * 86_400
    live = worker("w1@host", heartbeat=day3 + 40)
    unlisted = ActivityReport(worker="w1@host", task_ids=(), reported_at=at(day3 + 40))
    listed = {"task-1": at(day3)}
    assert reconcile([task], [live], now=at(day3 + 40), policy=POLICY, reports=[unlisted]) == ()
    (probe,) = reconcile(
        [task], [live], now=at(day3 + 40), policy=POLICY, reports=[unlisted], last_listed=listed
    )
    assert isinstance(probe, Probe)
    denied = [answer(seconds=day3 + 41)]
    (lost,) = reconcile(
        [task],
        [live],
        now=at(day3 + 42),
        policy=POLICY,
        reports=[unlisted],
        answers=denied,
        last_listed=listed,
    )
    assert isinstance(lost, MarkLost)
    # Still listed within the grace: nothing yet.
    assert (
        reconcile(
            [task],
            [live],
            now=at(day3 + 20),
            policy=POLICY,
            reports=[unlisted],
            last_listed={"task-1": at(day3 + 10)},
        )
        == ()
    )
