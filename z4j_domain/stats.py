"""A project's task statistics: tasks per state, finishes per minute, failures by exception.

The overview must answer in the same time whether a project holds a thousand
tasks or a hundred million, so repositories keep two aggregates of the stored
tasks current with every write, in the same transaction:

* **state counts**: how many tasks are in each state now;
* **finish counts**: of the tasks now in a terminal state, how many finished
  (by ``finished_at``) in each minute, per state.

Both are functions of the stored tasks alone, not of how events were batched
or ordered: :func:`stats_delta` is what replacing some tasks changes in them,
and summing the deltas of any sequence of writes equals :func:`aggregate` of
the tasks written last. A retried or redelivered task that runs again leaves
the minute it had finished in, and counts where it finishes next.

:func:`throughput` turns finish counts into a chart's points over a
:class:`Window`; :func:`group_failures` groups recent failed tasks by the
type of their exception.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs

from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import Task, TaskState

__all__ = [
    "FailureGroup",
    "FailureSample",
    "FinishCount",
    "StatsDelta",
    "ThroughputPoint",
    "Window",
    "aggregate",
    "bucket_start",
    "check_step",
    "exception_type",
    "finish_minute",
    "group_failures",
    "stats_delta",
    "throughput",
]

#: The exception type of a failure whose exception text is missing or unreadable.
UNKNOWN_EXCEPTION: Final = "unknown"
#: How many task names a failure group lists (the most frequent first).
NAMES_PER_GROUP: Final = 3

_EXCEPTION_TYPE: Final = re.compile(r"\s*([A-Za-z_][\w.]*)")


def finish_minute(at: datetime) -> datetime:
    """The minute ``at`` falls in (seconds and below cleared): a finish count's bucket."""
    return at.replace(second=0, microsecond=0)


@attrs.frozen(kw_only=True)
class StatsDelta:
    """A change to a project's aggregates; zero entries are left out."""

    #: Change of the number of tasks per state.
    states: Mapping[TaskState, int] = attrs.field(factory=dict)
    #: Change of the number of finished tasks per (minute, terminal state).
    finishes: Mapping[tuple[datetime, TaskState], int] = attrs.field(factory=dict)

    def __bool__(self) -> bool:
        return bool(self.states or self.finishes)


def _finish_key(task: Task) -> tuple[datetime, TaskState] | None:
    if not task.state.is_terminal or task.finished_at is None:
        return None
    return finish_minute(task.finished_at), task.state


def stats_delta(changes: Iterable[tuple[Task | None, Task]]) -> StatsDelta:
    """What writing each ``(before, after)`` pair (``before`` is ``None`` for a new
    task) changes in the aggregates."""
    states: Counter[TaskState] = Counter()
    finishes: Counter[tuple[datetime, TaskState]] = Counter()
    for before, after in changes:
        if before is not None:
            states[before.state] -= 1
            old = _finish_key(before)
            if old is not None:
                finishes[old] -= 1
        states[after.state] += 1
        new = _finish_key(after)
        if new is not None:
            finishes[new] += 1
    return StatsDelta(
        states={state: n for state, n in states.items() if n},
        finishes={key: n for key, n in finishes.items() if n},
    )


def aggregate(tasks: Iterable[Task]) -> StatsDelta:
    """The aggregates of ``tasks`` (what a project holding exactly them has)."""
    return stats_delta((None, task) for task in tasks)


@attrs.frozen(kw_only=True)
class FinishCount:
    """How many tasks finished in a state during one bucket of time.

    ``minute`` is the bucket's first minute; a bucket is one minute unless a
    wider ``step`` was asked for (see :func:`check_step`).
    """

    minute: datetime
    state: TaskState
    count: int


#: The width of the finish counts as they are kept.
ONE_MINUTE: Final = timedelta(minutes=1)


def check_step(step: timedelta) -> int:
    """The whole number of minutes in a bucket ``step``; anything else raises
    :class:`~z4j_domain.errors.InvalidInput`."""
    minutes, rest = divmod(step, ONE_MINUTE)
    if rest or minutes < 1:
        raise InvalidInput(f"a bucket must be a whole number of minutes, got {step}")
    return int(minutes)


def bucket_start(minute: datetime, since: datetime, step: timedelta) -> datetime:
    """The start of the ``step``-wide bucket, counted from ``since``, that ``minute`` is in."""
    return since + ((minute - since) // step) * step


class Window(enum.StrEnum):
    """The span an overview chart covers, and the width of its bars."""

    HOUR = "hour"
    DAY = "day"

    @property
    def span(self) -> timedelta:
        """How far back the chart reaches."""
        return timedelta(hours=1) if self is Window.HOUR else timedelta(days=1)

    @property
    def step(self) -> timedelta:
        """One bar's width: a minute of the last hour, a quarter of an hour of the last day."""
        return timedelta(minutes=1) if self is Window.HOUR else timedelta(minutes=15)

    def start(self, now: datetime) -> datetime:
        """The start of the chart's first bar, so that the last bar holds ``now``."""
        step = self.step
        minute = finish_minute(now)
        last = minute - timedelta(minutes=minute.minute % int(step.total_seconds() // 60))
        return last - self.span + step


@attrs.frozen(kw_only=True)
class ThroughputPoint:
    """One bar of the chart: tasks finished in ``[start, start + step)``."""

    start: datetime
    succeeded: int = 0
    failed: int = 0
    #: Finished otherwise: retried, revoked, rejected or lost.
    other: int = 0

    @property
    def total(self) -> int:
        """All the tasks that finished in the bar."""
        return self.succeeded + self.failed + self.other

    @property
    def failure_rate(self) -> float | None:
        """Failed among succeeded and failed (``None`` when neither happened)."""
        decided = self.succeeded + self.failed
        return self.failed / decided if decided else None


#: The states a chart shows apart; the other terminal states share one column.
_CHARTED: Final = frozenset({TaskState.SUCCEEDED, TaskState.FAILED})


def throughput(
    counts: Iterable[FinishCount], window: Window, now: datetime
) -> list[ThroughputPoint]:
    """The chart of ``window`` ending at ``now``: one point per step, oldest first, empty
    steps included; counts outside the window are ignored."""
    start = window.start(now)
    step = window.step
    size = int(window.span / step)
    bars: list[Counter[str]] = [Counter() for _ in range(size)]
    for count in counts:
        index = (count.minute - start) // step
        if 0 <= index < size:
            column = count.state.value if count.state in _CHARTED else "other"
            bars[index][column] += count.count
    return [
        ThroughputPoint(
            start=start + index * step,
            succeeded=bar["succeeded"],
            failed=bar["failed"],
            other=bar["other"],
        )
        for index, bar in enumerate(bars)
    ]


def exception_type(text: str | None) -> str:
    """The exception type named at the start of an exception's text.

    ``"ValueError('boom')"`` and ``"ValueError: boom"`` give ``ValueError``;
    a dotted name is kept whole; missing or unreadable text gives
    :data:`UNKNOWN_EXCEPTION`.
    """
    if text:
        found = _EXCEPTION_TYPE.match(text)
        if found is not None:
            return found.group(1)
    return UNKNOWN_EXCEPTION


@attrs.frozen(kw_only=True)
class FailureSample:
    """A failed task, as much of it as grouping failures needs."""

    task_id: str
    name: str | None
    exception: str | None
    finished_at: datetime | None


@attrs.frozen(kw_only=True)
class FailureGroup:
    """Failures that raised the same exception type."""

    exception_type: str
    count: int
    #: The group's most recent failure (by ``finished_at``; first given on a tie).
    latest: FailureSample
    #: The task names that failed so, the most frequent first (at most :data:`NAMES_PER_GROUP`).
    names: Sequence[str]


def group_failures(samples: Iterable[FailureSample]) -> list[FailureGroup]:
    """``samples`` grouped by exception type, the largest group first (then the most recent)."""
    members: dict[str, list[FailureSample]] = {}
    for sample in samples:
        members.setdefault(exception_type(sample.exception), []).append(sample)
    groups = []
    for kind, found in members.items():
        latest = found[0]
        for sample in found[1:]:
            if _finished(sample) > _finished(latest):
                latest = sample
        names = Counter(sample.name for sample in found if sample.name)
        groups.append(
            FailureGroup(
                exception_type=kind,
                count=len(found),
                latest=latest,
                names=[name for name, _ in names.most_common(NAMES_PER_GROUP)],
            )
        )
    groups.sort(key=lambda group: (-group.count, -_finished(group.latest).timestamp()))
    return groups


_NEVER: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _finished(sample: FailureSample) -> datetime:
    return _NEVER if sample.finished_at is None else sample.finished_at
