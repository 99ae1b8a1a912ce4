"""The port to beat's scheduler: read its whole schedule, change one entry, say how to send it.

One :class:`ScheduleStore` wraps the scheduler instance of the running beat
(:func:`store_for` picks the adapter by the instance's class):
:class:`~z4j_agent_celerybeat.django_store.DjangoScheduleStore`,
:class:`~z4j_agent_celerybeat.redbeat_store.RedBeatScheduleStore`,
:class:`~z4j_agent_celerybeat.file_store.FileScheduleStore`, or
:class:`ReadOnlyScheduleStore` for any other scheduler. Every method runs on
the agent's own threads (the poller and the command thread), never on beat's;
only :meth:`ScheduleStore.attach` runs on beat's thread, once, before the
agent starts. A change either happens whole or raises a
:class:`~z4j_agent_celerybeat.errors.ScheduleError` and changes nothing.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from z4j_agent_celerybeat.conversion import (
    beat_timezone,
    class_path,
    entry_of,
    options_of,
    schedule_of,
)
from z4j_agent_celerybeat.errors import NoSuchEntry, ReadOnlyScheduler
from z4j_domain.beat import RefusedEntry, SchedulerKind
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import ScheduleEntry

__all__ = [
    "Publication",
    "ReadOnlyScheduleStore",
    "ScheduleStore",
    "Snapshot",
    "celery_entry",
    "refusal",
    "store_for",
]


@attrs.frozen(kw_only=True)
class Snapshot:
    """The scheduler's entries as z4j shows them, and the ones it cannot, with why."""

    entries: tuple[ScheduleEntry, ...] = ()
    refused: tuple[RefusedEntry, ...] = ()

    def get(self, name: str) -> ScheduleEntry | None:
        """The entry named ``name``, if z4j can show it."""
        return next((entry for entry in self.entries if entry.name == name), None)


@attrs.frozen(kw_only=True)
class Publication:
    """What sending an entry's task takes: its name, arguments and Celery publishing options."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]


def refusal(name: object, reason: str) -> RefusedEntry:
    """A refused entry; a name the report cannot carry is shown as its ``repr``."""
    text = name if isinstance(name, str) and name.strip() and "\x00" not in name else repr(name)
    return RefusedEntry(name=text[:200] if len(text) > 200 else text, reason=reason)


def _lazy(value: Any) -> Any:
    from celery.beat import BeatLazyFunc

    return value() if isinstance(value, BeatLazyFunc) else value


def celery_entry(
    name: str,
    entry: Any,
    *,
    timezone: str | None,
    now: datetime,
    description: str = "",
) -> ScheduleEntry:
    """A Celery ``ScheduleEntry`` as z4j's; :class:`InvalidInput` says why it cannot be.

    Celery sets a new entry's ``last_run_at`` to when it was made: it is shown
    only once the entry ran (``total_run_count`` above 0), and the next run is
    counted from it either way.
    """
    count = int(getattr(entry, "total_run_count", 0) or 0)
    last = getattr(entry, "last_run_at", None)
    return entry_of(
        name=name,
        task=entry.task,
        schedule=schedule_of(entry.schedule, timezone=timezone),
        args=list(entry.args or ()),
        kwargs=dict(entry.kwargs or {}),
        options=options_of(entry.options),
        enabled=bool(getattr(entry, "enabled", True)),
        description=description,
        last_run_at=last if count else None,
        total_run_count=count,
        due_from=last,
        now=now,
    )


def publication_of(entry: Any) -> Publication:
    """How beat would send a Celery entry's task (lazy arguments evaluated, as beat does)."""
    return Publication(
        task=entry.task,
        args=[_lazy(value) for value in entry.args or ()],
        kwargs={key: _lazy(value) for key, value in (entry.kwargs or {}).items()},
        options=dict(entry.options or {}),
    )


class ScheduleStore:
    """One running beat's scheduler, as z4j reads and changes it.

    This base is the read-only behaviour; the adapters override what they can
    write. ``scheduler`` is beat's scheduler instance, ``app`` its Celery app.
    """

    #: Which scheduler this is, for the brain.
    kind: SchedulerKind = SchedulerKind.OTHER
    #: Whether z4j writes to it.
    writable: bool = False
    #: How messages name it.
    label: str = "this scheduler"

    def __init__(self, scheduler: Any, app: Any) -> None:
        self.scheduler = scheduler
        self.app = app
        #: Held around beat's tick by the agent when set (the file scheduler's in-memory schedule).
        self.tick_lock: threading.RLock | None = None

    @property
    def class_path(self) -> str:
        """The scheduler's class, ``module:Class``."""
        return class_path(self.scheduler)

    @property
    def timezone(self) -> str:
        """Beat's timezone, as the report names it."""
        return beat_timezone(self.app) or "localtime"

    @property
    def note(self) -> str:
        """What an operator should know about changes made in z4j (see the adapters)."""
        return (
            f"z4j does not write to this scheduler ({self.class_path}): its entries are shown"
            " as beat holds them, read-only."
        )

    def static_names(self) -> frozenset[str]:
        """The entries of the Celery app's ``beat_schedule`` setting."""
        try:
            return frozenset(str(name) for name in (self.app.conf.beat_schedule or {}))
        except Exception:
            return frozenset()

    def known_tasks(self) -> frozenset[str]:
        """The task names the beat app registered, Celery's own ``celery.*`` included.

        Beat's default schedule sends ``celery.backend_cleanup``: it is a known
        task, not one to warn about.
        """
        return frozenset(self.app.tasks)

    # -- beat's thread, once -------------------------------------------------------------

    def attach(self) -> None:
        """Prepare the scheduler (on beat's thread, before the agent starts); default nothing."""

    # -- reading -------------------------------------------------------------------------

    def snapshot(self, now: datetime) -> Snapshot:
        """Every entry of the scheduler now."""
        raise NotImplementedError

    def get(self, name: str, now: datetime) -> ScheduleEntry | None:
        """One entry as the scheduler holds it (``None``: none, or not one z4j can show)."""
        return self.snapshot(now).get(name)

    def publication(self, name: str) -> Publication:
        """How beat sends the entry's task; :class:`NoSuchEntry` when there is none."""
        raise NoSuchEntry(name)

    # -- changing (one entry each; a ScheduleError changes nothing) ------------------------

    def create(self, entry: ScheduleEntry) -> list[str]:
        """Add ``entry``; warnings worth telling the operator."""
        raise ReadOnlyScheduler(self.class_path)

    def update(self, name: str, entry: ScheduleEntry) -> list[str]:
        """Replace the entry ``name`` with ``entry`` (which may carry a new name)."""
        raise ReadOnlyScheduler(self.class_path)

    def delete(self, name: str) -> list[str]:
        """Remove the entry ``name``."""
        raise ReadOnlyScheduler(self.class_path)

    def set_enabled(self, name: str, enabled: bool) -> list[str]:
        """Enable or disable the entry ``name``."""
        raise ReadOnlyScheduler(self.class_path)


class ReadOnlyScheduleStore(ScheduleStore):
    """Any scheduler z4j does not know how to write to: reported as beat holds it, read-only.

    Its entries are read from ``scheduler.schedule`` only when that is Celery's
    plain attribute (a dict); a scheduler that computes its schedule on access
    (reading a database, say) is not read from the agent's thread, and the
    report says so.
    """

    def _plain(self) -> bool:
        from celery.beat import PersistentScheduler, Scheduler

        prop = getattr(type(self.scheduler), "schedule", None)
        return prop is Scheduler.schedule or prop is PersistentScheduler.schedule

    @property
    def note(self) -> str:
        base = super().note
        if self._plain():
            return base
        return (
            f"z4j does not write to this scheduler ({self.class_path}), nor read its entries:"
            " its schedule is computed when beat reads it."
        )

    def _schedule(self) -> Mapping[str, Any]:
        if not self._plain():
            return {}
        schedule = self.scheduler.schedule
        return dict(schedule) if isinstance(schedule, Mapping) else {}

    def snapshot(self, now: datetime) -> Snapshot:
        entries: list[ScheduleEntry] = []
        refused: list[RefusedEntry] = []
        timezone = beat_timezone(self.app)
        for name, entry in sorted(self._schedule().items(), key=lambda item: str(item[0])):
            try:
                entries.append(celery_entry(str(name), entry, timezone=timezone, now=now))
            except (InvalidInput, AttributeError, TypeError) as error:
                refused.append(refusal(name, str(error) or type(error).__name__))
        return Snapshot(entries=tuple(entries), refused=tuple(refused))

    def publication(self, name: str) -> Publication:
        entry = self._schedule().get(name)
        if entry is None:
            raise NoSuchEntry(name)
        return publication_of(entry)


def _is_instance(scheduler: Any, module: str, name: str) -> bool:
    """``isinstance`` against a class of a module only if beat imported it (never import it)."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return isinstance(cls, type) and isinstance(scheduler, cls)


def store_for(scheduler: Any, app: Any) -> ScheduleStore:
    """The adapter for beat's scheduler instance: by its class, read-only when unknown."""
    from celery.beat import PersistentScheduler

    if _is_instance(scheduler, "django_celery_beat.schedulers", "DatabaseScheduler"):
        from z4j_agent_celerybeat.django_store import DjangoScheduleStore

        return DjangoScheduleStore(scheduler, app)
    if _is_instance(scheduler, "redbeat.schedulers", "RedBeatScheduler"):
        from z4j_agent_celerybeat.redbeat_store import RedBeatScheduleStore

        return RedBeatScheduleStore(scheduler, app)
    if isinstance(scheduler, PersistentScheduler):
        from z4j_agent_celerybeat.file_store import FileScheduleStore

        return FileScheduleStore(scheduler, app)
    return ReadOnlyScheduleStore(scheduler, app)
