"""The agent inside one ``celery beat``: its reports, its fires, and the transport to the brain.

One :class:`BeatRuntime` lives in the beat process, beside the scheduler it
reports (through a :class:`~z4j_agent_celerybeat.store.ScheduleStore`). It
speaks to the brain over the worker agent's
:class:`~z4j_agent_celery.transport.Transport`, as a :class:`FrameSource`:

* ``hello`` with ``"kind": "celerybeat"`` and ``"capabilities": ["schedule"]``;
* a ``schedules`` frame (:meth:`~z4j_domain.beat.SchedulerReport.to_body`)
  at the start of every session, after each command it ran, and whenever a
  poll (every ``Z4J_BEAT_POLL_INTERVAL`` seconds, 5 by default, on a thread of
  its own) finds the schedule different: changed elsewhere (the admin, the
  ORM, RedBeat's API) or run by beat (its last run and run count), so at most
  one report per poll interval for those;
* ``schedule_fires`` (:meth:`~z4j_domain.beat.ScheduleFire.body`): the last
  200 fires at the start of every session, then each new one as it happens;
* heartbeats ``{"worker": null, "tasks": null}`` (a beat has no worker) and
  a ``bye`` naming no worker.

It also wraps beat's scheduler instance (:meth:`BeatRuntime.attach`): its
``apply_async`` records the fires, and its ``tick`` returns at most the poll
interval, so beat never sleeps longer than that and a new or re-enabled entry
fires within seconds on every scheduler (Celery's default scheduler and
RedBeat would otherwise sleep up to 5 minutes); for the file scheduler the
tick also runs under the store's lock. Nothing here raises into beat.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from z4j_agent_celery.transport import Transport, TransportSettings
from z4j_agent_celerybeat.actions import CAPABILITIES, ScheduleExecutor
from z4j_agent_celerybeat.config import BeatConfig
from z4j_agent_celerybeat.fires import FireLog
from z4j_agent_celerybeat.store import ScheduleStore, Snapshot, refusal
from z4j_domain.beat import (
    MAX_ENTRIES,
    MAX_FIRES_PER_FRAME,
    RefusedEntry,
    ScheduleFire,
    SchedulerReport,
)
from z4j_domain.frames import PROTOCOL_VERSION, FrameType
from z4j_domain.protocol import OutboundBuffer
from z4j_domain.schedules import ScheduleEntry, entry_to_dict

__all__ = ["BeatRuntime", "build_report", "fit_report"]

logger = logging.getLogger("z4j.celerybeat.runtime")

#: How often a scheduler that cannot be read is logged again (seconds).
_WARN_EVERY: Final = 300.0
#: What a frame body may take when the brain has not said (before the first welcome).
_DEFAULT_MAX_BYTES: Final = 1_000_000 - 4096


def _version() -> str:
    from z4j_agent_celerybeat import __version__

    return __version__


def build_report(store: ScheduleStore, snapshot: Snapshot) -> SchedulerReport:
    """The report of ``snapshot``: at most :data:`MAX_ENTRIES` entries, each name once."""
    entries: list[ScheduleEntry] = []
    refused: list[RefusedEntry] = list(snapshot.refused)
    seen: set[str] = set()
    for entry in snapshot.entries:
        if entry.name in seen:
            refused.append(refusal(entry.name, "another entry of the scheduler has this name"))
        elif len(entries) >= MAX_ENTRIES:
            refused.append(refusal(entry.name, f"a report carries at most {MAX_ENTRIES} entries"))
        else:
            seen.add(entry.name)
            entries.append(entry)
    try:
        known = store.known_tasks()
    except Exception:
        logger.debug("z4j beat agent could not list the app's tasks", exc_info=True)
        known = frozenset()
    return SchedulerReport(
        kind=store.kind,
        class_path=store.class_path,
        timezone=store.timezone,
        writable=store.writable,
        entries=entries,
        refused=refused,
        known_tasks=sorted(known)[:5_000],
        note=store.note,
    )


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def fit_report(report: SchedulerReport, max_bytes: int) -> dict[str, Any]:
    """The report's body, within ``max_bytes``: the largest entries refused until it fits."""
    body = report.to_body()
    if _size(body) <= max_bytes:
        return body
    sized = sorted(
        ((_size(entry_to_dict(entry)), entry) for entry in report.entries),
        key=lambda item: item[0],
        reverse=True,
    )
    dropped: set[str] = set()
    extra: list[RefusedEntry] = []
    total = _size(body)
    for size, entry in sized:
        if total <= max_bytes:
            break
        dropped.add(entry.name)
        extra.append(
            refusal(entry.name, f"too large to report ({size} bytes of JSON in one frame)")
        )
        total -= size
    smaller = attrs.evolve(
        report,
        entries=[entry for entry in report.entries if entry.name not in dropped],
        refused=[*report.refused, *extra],
    )
    return smaller.to_body()


def _comparable(report: SchedulerReport) -> SchedulerReport:
    """The report without next runs: they move with the clock, not with the schedule."""
    return attrs.evolve(
        report, entries=[attrs.evolve(entry, next_run_at=None) for entry in report.entries]
    )


class BeatRuntime:
    """The beat agent: :meth:`attach` to beat's scheduler, :meth:`start` once, :meth:`stop`."""

    def __init__(
        self,
        config: BeatConfig,
        *,
        store: ScheduleStore,
        app: Any,
        settings: TransportSettings | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.app = app
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pid = os.getpid()
        self.fires = FireLog(clock=self._clock)
        self.executor = ScheduleExecutor(store, app, fires=self.fires, changed=self.refresh)
        agent = config.agent
        hello: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "agent": agent.agent_name,
            "project": agent.project,
            "hostname": socket.gethostname(),
            "pid": self._pid,
            "agent_version": _version(),
            "kind": "celerybeat",
            "capabilities": list(CAPABILITIES),
        }
        self.transport = Transport(
            url=agent.url,
            token=agent.token,
            secret=agent.secret,
            hello=hello,
            hostname=None,  # the bye names no worker
            buffer=OutboundBuffer(capacity=1),  # a beat sends no task events
            lock=threading.Lock(),
            worker_stats=lambda: None,
            executor=self.executor,
            frames=self,
            settings=settings,
            user_agent=f"z4j-celerybeat/{_version()}",
        )
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._report: SchedulerReport | None = None
        self._body: dict[str, Any] | None = None
        self._body_size = 0
        self._report_due = False
        self._fires_due = False
        self._max_bytes = _DEFAULT_MAX_BYTES
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        self._last_warning = 0.0
        self._stopped = False
        #: Reports built that differed from the one before (tests wait on it).
        self.reports = 0

    @property
    def pid(self) -> int:
        """The beat process the runtime belongs to."""
        return self._pid

    @property
    def report(self) -> SchedulerReport | None:
        """The last report built."""
        return self._report

    # -- beat's scheduler ---------------------------------------------------------------

    def attach(self, scheduler: Any) -> None:
        """Wrap beat's scheduler instance (on beat's thread, before :meth:`start`).

        The store prepares it (the file scheduler applies z4j's changes again),
        ``apply_async`` records fires, and ``tick`` returns at most the poll
        interval (under the store's lock, when it has one).
        """
        self.store.attach()
        self.fires.wrap(scheduler)
        tick = scheduler.tick
        lock = self.store.tick_lock
        cap = self.config.poll_interval

        def capped_tick(*args: Any, **kwargs: Any) -> Any:
            if lock is None:
                interval = tick(*args, **kwargs)
            else:
                with lock:
                    interval = tick(*args, **kwargs)
            if isinstance(interval, (int, float)) and interval > cap:
                return cap
            return interval

        scheduler.tick = capped_tick

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the poller and the transport threads."""
        self._poller = threading.Thread(target=self._poll_loop, name="z4j-beat-poller", daemon=True)
        self._poller.start()
        self.transport.start()

    def stop(self, reason: str = "beat shutdown", timeout: float = 3.0) -> None:
        """Say bye to the brain and stop the threads (in the beat process only)."""
        if self._stopped or os.getpid() != self._pid:
            return
        self._stopped = True
        self._stopping.set()
        self.transport.stop(reason, timeout=timeout)

    # -- reports ------------------------------------------------------------------------

    def refresh(self) -> SchedulerReport | None:
        """Read the schedule now; a report is sent if it differs from the last one."""
        with self._refreshing:
            try:
                report = build_report(self.store, self.store.snapshot(self._clock()))
            except Exception as error:
                now = time.monotonic()
                if now - self._last_warning >= _WARN_EVERY:
                    self._last_warning = now
                    logger.warning(
                        "z4j beat agent could not read the schedule (%s): %s; retrying",
                        self.store.label,
                        error,
                    )
                else:
                    logger.debug("z4j beat agent could not read the schedule", exc_info=True)
                return None
            previous = self._report
            if previous is not None and _comparable(previous) == _comparable(report):
                return report
            body = report.to_body()
            with self._lock:
                self._report = report
                self._body = body
                self._body_size = _size(body)
                self._report_due = True
                self.reports += 1
            return report

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            self.refresh()
            self._stopping.wait(self.config.poll_interval)

    # -- FrameSource (the transport's thread) --------------------------------------------

    def session_started(self, max_bytes: int) -> None:
        """A new session: the whole schedule and the last fires are due again."""
        with self._lock:
            self._max_bytes = max_bytes
            self._report_due = self._report is not None
            self._fires_due = True

    def pending(self) -> Sequence[tuple[FrameType, Mapping[str, Any]]]:
        """The report when one is due, then the fires to send (all of them in a new session)."""
        frames: list[tuple[FrameType, Mapping[str, Any]]] = []
        with self._lock:
            report, body = self._report, self._body
            due, self._report_due = self._report_due, False
            resend, self._fires_due = self._fires_due, False
            too_large = self._body_size > self._max_bytes
            max_bytes = self._max_bytes
        if due and report is not None and body is not None:
            frames.append(
                (FrameType.SCHEDULES, fit_report(report, max_bytes) if too_large else body)
            )
        fires = self.fires.all() if resend else self.fires.take_new()
        for start in range(0, len(fires), MAX_FIRES_PER_FRAME):
            chunk = fires[start : start + MAX_FIRES_PER_FRAME]
            frames.append((FrameType.SCHEDULE_FIRES, ScheduleFire.body(chunk)))
        return frames
