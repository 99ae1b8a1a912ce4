"""Celery's default scheduler (``PersistentScheduler``): the schedule in beat's shelve file.

This scheduler keeps its entries in memory, in the ``entries`` of a
:mod:`shelve` file (``celerybeat-schedule``) that it writes back now and then,
so z4j changes them **inside the running beat**: on the agent's command
thread, under a lock that the agent also holds around every one of beat's
ticks (and its syncs), it replaces entries in ``scheduler.schedule`` and then
calls ``scheduler.sync()``, which writes the file the way this scheduler
always does. Beat's next tick sees the changed schedule and rebuilds its
queue of due entries, so a change takes effect within seconds.

**Restarts.** When beat starts, Celery merges the app's ``beat_schedule``
setting into the file (``merge_inplace``): an entry not in the setting is
removed, and an entry in it gets the setting's task, schedule, arguments and
options back. To keep the changes made in z4j, the agent also records each
of them in the same file, under its own key (:data:`CHANGES_KEY`: plain
dicts, so the file stays readable without z4j), and applies them again right
after Celery's merge each time beat starts with the agent: entries created
in z4j come back (with their last run and run count), edits, deletions and
disabled states of the setting's entries stay. The exception: when the
``beat_schedule`` item of an entry changed since it was changed in z4j, the
setting wins: z4j's change is dropped, logged as a WARNING and listed in the
report's note. (Celery itself empties the file when beat's timezone or
``enable_utc`` changes; z4j's record goes with it.)

**Disabled entries.** Celery's entries have no "enabled" flag: a disabled
entry is taken out of beat's schedule and kept in z4j's record only (shown
disabled), and put back when it is enabled again. The same record keeps an
entry's description. This scheduler has no one-off entries and no clocked
schedules, and reads every crontab in beat's own timezone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from z4j_agent_celerybeat.conversion import (
    beat_timezone,
    celery_options,
    celery_schedule,
    fingerprint,
)
from z4j_agent_celerybeat.errors import (
    EntryExists,
    NoSuchEntry,
    SchedulerClosed,
    Unsupported,
)
from z4j_agent_celerybeat.store import (
    Publication,
    ScheduleStore,
    Snapshot,
    celery_entry,
    publication_of,
    refusal,
)
from z4j_domain.beat import RefusedEntry, SchedulerKind
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import ScheduleEntry, entry_from_dict, entry_to_dict

__all__ = ["CHANGES_KEY", "FileScheduleStore"]

logger = logging.getLogger("z4j.celerybeat.file_store")

#: The shelve key of z4j's record of its changes (beside Celery's ``entries``, ``tz``...).
CHANGES_KEY: Final = "z4j.changes"
_PUT: Final = "put"
_DELETE: Final = "delete"
_LABEL: Final = "Celery's file scheduler"


def _definition(entry: ScheduleEntry) -> dict[str, Any]:
    """The entry's JSON form without what beat reports (kept apart, per entry)."""
    return entry_to_dict(attrs.evolve(entry, last_run_at=None, total_run_count=0, next_run_at=None))


class FileScheduleStore(ScheduleStore):
    """Celery's ``PersistentScheduler``, changed in beat's memory and its shelve file."""

    kind = SchedulerKind.FILE
    writable = True
    label = _LABEL

    def __init__(self, scheduler: Any, app: Any) -> None:
        super().__init__(scheduler, app)
        self._lock = threading.RLock()
        self.tick_lock = self._lock
        self._closed = False
        #: What happened to z4j's changes when beat started (for the report's note).
        self.restored_warnings: list[str] = []

    @property
    def note(self) -> str:
        text = (
            "Changes made in z4j are kept in beat's schedule file and applied again each time"
            " beat starts with the z4j agent, except for an entry whose beat_schedule setting"
            " changed since: there the setting wins."
        )
        return " ".join([text, *self.restored_warnings])

    # -- the shelve -----------------------------------------------------------------------

    @property
    def _schedule(self) -> dict[str, Any]:
        if self._closed:
            raise SchedulerClosed
        schedule: dict[str, Any] = self.scheduler.schedule
        return schedule

    def _changes(self) -> dict[str, dict[str, Any]]:
        shelf = self.scheduler._store
        return dict(shelf.get(CHANGES_KEY) or {}) if shelf is not None else {}

    def _save(self, changes: Mapping[str, dict[str, Any]]) -> None:
        self.scheduler._store[CHANGES_KEY] = dict(changes)
        self._sync()

    def _sync(self) -> None:
        self.scheduler.sync()

    def _static(self, name: str) -> str | None:
        return fingerprint((self.app.conf.beat_schedule or {}).get(name))

    # -- beat's thread ----------------------------------------------------------------------

    def attach(self) -> None:
        """Hold the lock around beat's syncs and close, and apply z4j's changes again."""
        scheduler = self.scheduler
        sync, close = scheduler.sync, scheduler.close

        def locked_sync() -> None:
            with self._lock:
                if not self._closed:
                    self._remember_runs()
                sync()

        def locked_close() -> None:
            with self._lock:
                try:
                    close()
                finally:
                    self._closed = True

        scheduler.sync = locked_sync
        scheduler.close = locked_close
        with self._lock:
            self.restore()

    def restore(self) -> None:
        """Apply z4j's recorded changes after Celery's merge of ``beat_schedule`` (at start)."""
        changes = self._changes()
        if not changes:
            return
        schedule = self._schedule
        kept: dict[str, dict[str, Any]] = {}
        for name, change in sorted(changes.items()):
            if change.get("static") != self._static(name):
                self._dropped(
                    f"The beat_schedule setting of {name!r} changed since it was changed in z4j,"
                    " so the setting wins and z4j's change was dropped."
                )
                continue
            try:
                if change.get("op") == _DELETE:
                    schedule.pop(name, None)
                else:
                    entry = entry_from_dict(change["entry"])
                    current = schedule.get(name)
                    if entry.enabled:
                        schedule[name] = self._celery_entry(
                            entry,
                            extra=change.get("options") or {},
                            last_run_at=getattr(current, "last_run_at", None)
                            or change.get("last_run_at"),
                            total_run_count=getattr(current, "total_run_count", None)
                            or change.get("total_run_count", 0),
                        )
                    else:
                        schedule.pop(name, None)
            except (InvalidInput, Unsupported, KeyError, TypeError) as error:
                self._dropped(f"z4j's change of {name!r} could not be applied again: {error}.")
                continue
            kept[name] = change
        self._save(kept)

    def _dropped(self, message: str) -> None:
        logger.warning("z4j beat agent: %s", message)
        self.restored_warnings.append(message)

    def _remember_runs(self) -> None:
        """Copy the last run and run count of z4j's entries into its record (at each sync)."""
        shelf = self.scheduler._store
        if shelf is None:
            return
        changes = shelf.get(CHANGES_KEY)
        if not changes:
            return
        schedule = self.scheduler.schedule
        changed = False
        for name, change in changes.items():
            entry = schedule.get(name)
            if change.get("op") != _PUT or entry is None:
                continue
            runs = (entry.last_run_at, entry.total_run_count)
            if (change.get("last_run_at"), change.get("total_run_count")) != runs:
                change["last_run_at"], change["total_run_count"] = runs
                changed = True
        if changed:
            shelf[CHANGES_KEY] = changes

    # -- helpers --------------------------------------------------------------------------

    def _celery_entry(
        self,
        entry: ScheduleEntry,
        *,
        extra: Mapping[str, Any],
        last_run_at: datetime | None = None,
        total_run_count: int = 0,
    ) -> Any:
        if entry.one_off:
            raise Unsupported(
                f"{_LABEL} has no one-off entries (they are django-celery-beat's);"
                " nothing was changed"
            )
        schedule = celery_schedule(
            entry.schedule, timezone=beat_timezone(self.app), scheduler=_LABEL
        )
        return self.scheduler.Entry(
            name=entry.name,
            task=entry.task,
            schedule=schedule,
            args=list(entry.args),
            kwargs=dict(entry.kwargs),
            options=celery_options(entry.options, keep=extra),
            last_run_at=last_run_at,
            total_run_count=total_run_count,
            app=self.app,
        )

    def _record(
        self,
        entry: ScheduleEntry,
        *,
        extra: Mapping[str, Any],
        last_run_at: datetime | None,
        total_run_count: int,
    ) -> dict[str, Any]:
        return {
            "op": _PUT,
            "entry": _definition(entry),
            "options": dict(extra),
            "static": self._static(entry.name),
            "last_run_at": last_run_at,
            "total_run_count": total_run_count,
        }

    def _disabled(self, changes: Mapping[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
        """z4j's record of ``name`` when it holds the entry disabled (out of beat's schedule)."""
        change = changes.get(name)
        if change is None or change.get("op") != _PUT or change["entry"].get("enabled", True):
            return None
        return change

    def _exists(self, changes: Mapping[str, dict[str, Any]], name: str) -> bool:
        return name in self._schedule or self._disabled(changes, name) is not None

    def _forget(self, changes: dict[str, dict[str, Any]], name: str) -> None:
        """Record that ``name`` is gone: a setting's entry stays deleted; z4j's own is forgotten."""
        static = self._static(name)
        if static is None:
            changes.pop(name, None)
        else:
            changes[name] = {"op": _DELETE, "static": static}

    def _restart_warning(self, name: str) -> list[str]:
        if self._static(name) is None:
            return []
        return [
            f"{name!r} is in the Celery app's beat_schedule setting: z4j applies this change"
            " again each time beat starts, until that setting of the entry changes; then the"
            " setting wins"
        ]

    @staticmethod
    def _description_of(change: Mapping[str, Any] | None) -> str:
        if change is None or change.get("op") != _PUT:
            return ""
        return str(change["entry"].get("description", ""))

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self, now: datetime) -> Snapshot:
        with self._lock:
            items = list(self._schedule.items())
            changes = self._changes()
        timezone = beat_timezone(self.app)
        entries: list[ScheduleEntry] = []
        refused: list[RefusedEntry] = []
        for name, entry in items:
            try:
                entries.append(
                    celery_entry(
                        name,
                        entry,
                        timezone=timezone,
                        now=now,
                        description=self._description_of(changes.get(name)),
                    )
                )
            except (InvalidInput, AttributeError, TypeError) as error:
                refused.append(refusal(name, str(error) or type(error).__name__))
        held = {name for name, _ in items}
        for name in sorted(changes):
            change = self._disabled(changes, name)
            if change is None or name in held:
                continue
            try:
                entry = entry_from_dict(change["entry"])
                count = int(change.get("total_run_count") or 0)
                entries.append(
                    attrs.evolve(
                        entry,
                        last_run_at=change.get("last_run_at") if count else None,
                        total_run_count=count,
                    )
                )
            except (InvalidInput, KeyError, TypeError) as error:
                refused.append(refusal(name, f"z4j's record of it is unreadable: {error}"))
        entries.sort(key=lambda entry: entry.name)
        return Snapshot(entries=tuple(entries), refused=tuple(refused))

    def publication(self, name: str) -> Publication:
        with self._lock:
            entry = self._schedule.get(name)
            if entry is not None:
                return publication_of(entry)
            change = self._disabled(self._changes(), name)
        if change is None:
            raise NoSuchEntry(name)
        options = celery_options(entry_from_dict(change["entry"]).options, keep=change["options"])
        return Publication(
            task=change["entry"]["task"],
            args=list(change["entry"]["args"]),
            kwargs=dict(change["entry"]["kwargs"]),
            options=options,
        )

    # -- changing -----------------------------------------------------------------------------

    def create(self, entry: ScheduleEntry) -> list[str]:
        with self._lock:
            schedule = self._schedule
            changes = self._changes()
            if self._exists(changes, entry.name):
                raise EntryExists(entry.name)
            celery = self._celery_entry(entry, extra={})
            if entry.enabled:
                schedule[entry.name] = celery
            changes[entry.name] = self._record(
                entry, extra={}, last_run_at=celery.last_run_at, total_run_count=0
            )
            self._save(changes)
            return self._restart_warning(entry.name)

    def _current(
        self, changes: Mapping[str, dict[str, Any]], name: str
    ) -> tuple[dict[str, Any], datetime | None, int]:
        """The options z4j does not edit, the last run and the run count of ``name``."""
        held = self._schedule.get(name)
        if held is not None:
            return dict(held.options or {}), held.last_run_at, int(held.total_run_count or 0)
        change = self._disabled(changes, name)
        if change is None:
            raise NoSuchEntry(name)
        return (
            dict(change.get("options") or {}),
            change.get("last_run_at"),
            int(change.get("total_run_count") or 0),
        )

    def update(self, name: str, entry: ScheduleEntry) -> list[str]:
        with self._lock:
            schedule = self._schedule
            changes = self._changes()
            extra, last_run_at, count = self._current(changes, name)
            renamed = entry.name != name
            if renamed and self._exists(changes, entry.name):
                raise EntryExists(entry.name)
            celery = self._celery_entry(
                entry, extra=extra, last_run_at=last_run_at, total_run_count=count
            )
            schedule.pop(name, None)
            if renamed:
                self._forget(changes, name)
            if entry.enabled:
                schedule[entry.name] = celery
            changes[entry.name] = self._record(
                entry, extra=extra, last_run_at=celery.last_run_at, total_run_count=count
            )
            self._save(changes)
            warnings = self._restart_warning(entry.name)
            if renamed:
                warnings += self._restart_warning(name)
            return warnings

    def delete(self, name: str) -> list[str]:
        with self._lock:
            changes = self._changes()
            if not self._exists(changes, name):
                raise NoSuchEntry(name)
            self._schedule.pop(name, None)
            self._forget(changes, name)
            self._save(changes)
            return self._restart_warning(name)

    def set_enabled(self, name: str, enabled: bool) -> list[str]:
        with self._lock:
            schedule = self._schedule
            changes = self._changes()
            held = schedule.get(name)
            disabled = self._disabled(changes, name)
            if held is None and disabled is None:
                raise NoSuchEntry(name)
            if enabled and disabled is not None and held is None:
                entry = attrs.evolve(entry_from_dict(disabled["entry"]), enabled=True)
                count = int(disabled.get("total_run_count") or 0)
                schedule[name] = self._celery_entry(
                    entry,
                    extra=disabled.get("options") or {},
                    last_run_at=disabled.get("last_run_at"),
                    total_run_count=count,
                )
                changes[name] = {**disabled, "entry": _definition(entry)}
            elif not enabled and held is not None:
                try:
                    current = celery_entry(
                        name,
                        held,
                        timezone=beat_timezone(self.app),
                        now=datetime.now(UTC),
                        description=self._description_of(changes.get(name)),
                    )
                except (InvalidInput, AttributeError, TypeError) as error:
                    raise Unsupported(
                        f"z4j cannot disable {name!r}, which it cannot show ({error});"
                        " nothing was changed"
                    ) from None
                entry = attrs.evolve(current, enabled=False)
                schedule.pop(name)
                changes[name] = self._record(
                    entry,
                    extra=dict(held.options or {}),
                    last_run_at=held.last_run_at,
                    total_run_count=int(held.total_run_count or 0),
                )
            else:
                return []  # already so
            self._save(changes)
            return self._restart_warning(name)
