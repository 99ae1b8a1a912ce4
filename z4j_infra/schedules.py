"""SQL repository of Celery Beat schedulers, their entries and their fires.

A scheduler's header row is the lock of its entries: every write to them
(:meth:`~SqlScheduleRepository.replace`, ``put``, ``remove``) first writes that
row, so writers of one scheduler take turns, and a report's comparison with
the stored entries always reads the previous writer's committed result
(PostgreSQL holds the row lock to the end of the transaction and reads each
statement afresh; SQLite has one writer at a time, and a transaction that
writes before it reads never fails on a stale snapshot).

Entries are JSON text (:mod:`z4j_infra.jsontext`) of
:func:`~z4j_domain.schedules.entry_to_dict`; a report rewrites only the
entries that changed, so an entry's ``updated_at`` is when it last changed.
Fires are stored once by ``(project, id)`` with ``ON CONFLICT DO NOTHING``,
however often and however concurrently an agent reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from z4j_domain.beat import RefusedEntry, ScheduleFire, SchedulerInfo, SchedulerReport, StoredEntry
from z4j_domain.errors import InvalidInput, NotFound
from z4j_domain.schedules import ScheduleEntry, entry_from_dict, entry_to_dict
from z4j_infra import jsontext
from z4j_infra.repositories import _SqlRepository
from z4j_infra.schema import schedule_entries, schedule_fires, schedulers

__all__ = ["SqlScheduleRepository"]

#: Rows per statement: well under both drivers' limits on bound parameters.
_CHUNK: Final = 1_000
_HEADER_COLUMNS: Final = (
    "kind",
    "class_path",
    "timezone",
    "writable",
    "note",
    "known_tasks",
    "refused",
    "reported_at",
)
_ENTRY_COLUMNS: Final = ("task", "enabled", "entry", "next_run_at", "last_run_at", "updated_at")


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]


def _header_row(project_id: int, info: SchedulerInfo) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "name": info.name,
        "kind": info.kind.value,
        "class_path": info.class_path,
        "timezone": info.timezone,
        "writable": info.writable,
        "note": info.note,
        "known_tasks": jsontext.dumps(sorted(info.known_tasks)),
        "refused": jsontext.dumps([refused.to_dict() for refused in info.refused]),
        "reported_at": info.reported_at,
    }


def _row_to_info(row: Any) -> SchedulerInfo:
    return SchedulerInfo(
        name=row.name,
        kind=row.kind,
        class_path=row.class_path,
        timezone=row.timezone,
        writable=row.writable,
        reported_at=row.reported_at,
        note=row.note,
        known_tasks=jsontext.loads(row.known_tasks),
        refused=[RefusedEntry(**refused) for refused in jsontext.loads(row.refused)],
    )


def _entry_row(
    project_id: int, scheduler: str, entry: ScheduleEntry, document: Mapping[str, Any], at: datetime
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "scheduler": scheduler,
        "name": entry.name,
        "task": entry.task,
        "enabled": entry.enabled,
        "entry": jsontext.dumps(document),
        "next_run_at": entry.next_run_at,
        "last_run_at": entry.last_run_at,
        "updated_at": at,
    }


def _row_to_stored(row: Any) -> StoredEntry:
    return StoredEntry(
        scheduler=row.scheduler,
        entry=entry_from_dict(jsontext.loads(row.entry)),
        updated_at=row.updated_at,
    )


def _fire_row(project_id: int, scheduler: str, fire: ScheduleFire) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "id": fire.id,
        "scheduler": scheduler,
        "schedule": fire.schedule,
        "task_id": fire.task_id,
        "fired_at": fire.fired_at,
        "manual": fire.manual,
        "error": fire.error,
    }


def _row_to_fire(row: Any) -> ScheduleFire:
    return ScheduleFire(
        id=row.id,
        schedule=row.schedule,
        fired_at=row.fired_at,
        task_id=row.task_id,
        manual=row.manual,
        error=row.error,
    )


def _newest_first() -> tuple[sa.UnaryExpression[Any], ...]:
    return schedule_fires.c.fired_at.desc(), schedule_fires.c.id.desc()


class SqlScheduleRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.ScheduleRepository` on SQLite or PostgreSQL."""

    async def replace(
        self, project_id: int, scheduler: str, report: SchedulerReport, at: datetime
    ) -> None:
        """Make the scheduler exactly ``report``: its header, and its entries (others removed).

        Only the entries that are new or differ from the stored ones are
        written. Raise :class:`~z4j_domain.errors.Conflict` if there is no
        such project.
        """
        header = self._insert(schedulers).values(
            _header_row(project_id, SchedulerInfo.of(scheduler, report, at))
        )
        await self._uow.execute(
            header.on_conflict_do_update(
                index_elements=["project_id", "name"],
                set_={name: header.excluded[name] for name in _HEADER_COLUMNS},
            )
        )
        result = await self._uow.execute(
            sa.select(schedule_entries.c.name, schedule_entries.c.entry).where(
                schedule_entries.c.project_id == project_id,
                schedule_entries.c.scheduler == scheduler,
            )
        )
        stored = {row.name: row.entry for row in result}
        reported = {entry.name for entry in report.entries}
        await self._delete(project_id, scheduler, [name for name in stored if name not in reported])
        rows = []
        for entry in report.entries:
            document = entry_to_dict(entry)
            text = stored.get(entry.name)
            # Compared as documents, not text: equal entries may encode
            # differently (the order of kwargs), and must not count as changed.
            if text is None or jsontext.loads(text) != document:
                rows.append(_entry_row(project_id, scheduler, entry, document, at))
        await self._upsert(rows)

    async def put(
        self,
        project_id: int,
        scheduler: str,
        entry: ScheduleEntry,
        at: datetime,
        *,
        replacing: str | None = None,
    ) -> None:
        """Store one entry of a known scheduler (replacing the one of its name).

        ``replacing`` names an entry removed in the same step (a rename). Raise
        :class:`~z4j_domain.errors.NotFound` if the scheduler is unknown.
        """
        if not await self._lock(project_id, scheduler):
            raise NotFound(f"no scheduler {scheduler!r} in the project")
        if replacing is not None and replacing != entry.name:
            await self._delete(project_id, scheduler, [replacing])
        await self._upsert([_entry_row(project_id, scheduler, entry, entry_to_dict(entry), at)])

    async def remove(self, project_id: int, scheduler: str, name: str) -> bool:
        """Remove one entry (its fires stay); whether there was one."""
        if not await self._lock(project_id, scheduler):
            return False  # no scheduler, so no entries
        return await self._delete(project_id, scheduler, [name]) == 1

    async def _lock(self, project_id: int, scheduler: str) -> bool:
        """Write the scheduler's header row unchanged (see the module's docstring); whether
        there is one."""
        result = await self._uow.execute(
            sa.update(schedulers)
            .where(schedulers.c.project_id == project_id, schedulers.c.name == scheduler)
            .values(writable=schedulers.c.writable)
        )
        return bool(result.rowcount)

    async def _delete(self, project_id: int, scheduler: str, names: Sequence[str]) -> int:
        """Delete the scheduler's entries of these names; how many there were."""
        deleted = 0
        for chunk in _chunks(names):
            result = await self._uow.execute(
                sa.delete(schedule_entries).where(
                    schedule_entries.c.project_id == project_id,
                    schedule_entries.c.scheduler == scheduler,
                    schedule_entries.c.name.in_(chunk),
                )
            )
            deleted += result.rowcount
        return deleted

    async def _upsert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert or overwrite these entry rows (of distinct names)."""
        if not rows:
            return
        statement = self._insert(schedule_entries)
        statement = statement.on_conflict_do_update(
            index_elements=["project_id", "scheduler", "name"],
            set_={name: statement.excluded[name] for name in _ENTRY_COLUMNS},
        )
        for chunk in _chunks(rows):
            await self._uow.execute(statement, chunk)

    async def schedulers(self, project_id: int) -> Sequence[SchedulerInfo]:
        """The project's schedulers, by name."""
        result = await self._uow.execute(
            sa.select(schedulers)
            .where(schedulers.c.project_id == project_id)
            .order_by(schedulers.c.name)
        )
        return [_row_to_info(row) for row in result]

    async def scheduler(self, project_id: int, name: str) -> SchedulerInfo | None:
        """One scheduler, or ``None``."""
        result = await self._uow.execute(
            sa.select(schedulers).where(
                schedulers.c.project_id == project_id, schedulers.c.name == name
            )
        )
        row = result.first()
        return None if row is None else _row_to_info(row)

    async def entries(self, project_id: int, scheduler: str | None = None) -> Sequence[StoredEntry]:
        """The project's entries (of one scheduler, if named), by scheduler then entry name."""
        statement = sa.select(schedule_entries).where(schedule_entries.c.project_id == project_id)
        if scheduler is not None:
            statement = statement.where(schedule_entries.c.scheduler == scheduler)
        result = await self._uow.execute(
            statement.order_by(schedule_entries.c.scheduler, schedule_entries.c.name)
        )
        return [_row_to_stored(row) for row in result]

    async def get(self, project_id: int, scheduler: str, name: str) -> StoredEntry | None:
        """One entry, or ``None``."""
        result = await self._uow.execute(
            sa.select(schedule_entries).where(
                schedule_entries.c.project_id == project_id,
                schedule_entries.c.scheduler == scheduler,
                schedule_entries.c.name == name,
            )
        )
        row = result.first()
        return None if row is None else _row_to_stored(row)

    async def add_fires(
        self, project_id: int, scheduler: str, fires: Sequence[ScheduleFire]
    ) -> int:
        """Store fires not stored yet (by id, in any scheduler); how many were new."""
        first: dict[str, ScheduleFire] = {}
        for fire in fires:
            first.setdefault(fire.id, fire)
        # In id order: concurrent batches that share ids wait on each other in
        # the same order, never in a cycle.
        rows = [_fire_row(project_id, scheduler, first[fire_id]) for fire_id in sorted(first)]
        added = 0
        for chunk in _chunks(rows):
            result = await self._uow.execute(
                self._insert(schedule_fires)
                .values(list(chunk))
                .on_conflict_do_nothing(index_elements=["project_id", "id"])
                .returning(schedule_fires.c.id)
            )
            added += len(result.all())
        return added

    async def fires(
        self, project_id: int, scheduler: str, name: str, limit: int
    ) -> Sequence[ScheduleFire]:
        """An entry's most recent fires, newest first (``limit`` at least 1)."""
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        result = await self._uow.execute(
            sa.select(schedule_fires)
            .where(
                schedule_fires.c.project_id == project_id,
                schedule_fires.c.scheduler == scheduler,
                schedule_fires.c.schedule == name,
            )
            .order_by(*_newest_first())
            .limit(limit)
        )
        return [_row_to_fire(row) for row in result]

    async def latest_fires(self, project_id: int) -> Mapping[tuple[str, str], ScheduleFire]:
        """The most recent fire of every entry that has one, by ``(scheduler, name)``."""
        ranked = (
            sa.select(
                schedule_fires,
                sa.func.row_number()
                .over(
                    partition_by=(schedule_fires.c.scheduler, schedule_fires.c.schedule),
                    order_by=_newest_first(),
                )
                .label("rank"),
            )
            .where(schedule_fires.c.project_id == project_id)
            .subquery()
        )
        result = await self._uow.execute(sa.select(ranked).where(ranked.c.rank == 1))
        return {(row.scheduler, row.schedule): _row_to_fire(row) for row in result}
