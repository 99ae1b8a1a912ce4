"""What a beat agent tells the brain about its scheduler, and what the brain asks it to change.

A beat agent lives in one ``celery beat`` process. It reports its scheduler as
a whole (:class:`SchedulerReport`, the ``schedules`` frame) when it connects
and whenever the schedule changes, whoever changed it: the report replaces
what the brain knew of that scheduler. Entries the agent cannot express as a
:class:`~z4j_domain.schedules.ScheduleEntry` are listed in ``refused`` with
the reason, never silently dropped. Every time beat sends an entry's task (or
the brain triggers it) the agent reports a :class:`ScheduleFire` (the
``schedule_fires`` frame), which links the entry to the task it produced.

The brain changes a schedule with a command (:class:`ScheduleRequest`, the
options of a ``schedule`` command part) that only the agent of that scheduler
runs; its report's ``result`` is :meth:`ScheduleOutcome.to_dict`.

A scheduler is named by the agent that reports it (``Z4J_AGENT_NAME`` of the
beat process), so one project can have several beats.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc
from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import MAX_NAME_LENGTH, ScheduleEntry, entry_from_dict, entry_to_dict

__all__ = [
    "MAX_ENTRIES",
    "MAX_FIRES_PER_FRAME",
    "RefusedEntry",
    "ScheduleFire",
    "ScheduleOp",
    "ScheduleOutcome",
    "ScheduleRequest",
    "SchedulerInfo",
    "SchedulerKind",
    "SchedulerReport",
    "StoredEntry",
]

#: Most entries one scheduler report carries (beyond, the agent reports the first ones).
MAX_ENTRIES: Final = 2_000
#: Most fires one ``schedule_fires`` frame carries.
MAX_FIRES_PER_FRAME: Final = 500
#: Longest reason or error text kept.
_MAX_TEXT: Final = 2_000
#: Most task names a report lists.
_MAX_KNOWN_TASKS: Final = 5_000


class SchedulerKind(enum.StrEnum):
    """Which scheduler beat runs, as far as z4j knows how to write to it."""

    #: django-celery-beat's ``DatabaseScheduler`` (models in Django's database).
    DJANGO = "django"
    #: celery-redbeat's ``RedBeatScheduler`` (entries in Redis).
    REDBEAT = "redbeat"
    #: Celery's default ``PersistentScheduler`` (a shelve file beside beat).
    FILE = "file"
    #: Any other scheduler: reported, not written to.
    OTHER = "other"


class ScheduleOp(enum.StrEnum):
    """What a schedule command does to one entry."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ENABLE = "enable"
    DISABLE = "disable"
    TRIGGER = "trigger"

    @property
    def needs_entry(self) -> bool:
        """Whether the request carries the entry to write (create and update)."""
        return self in (ScheduleOp.CREATE, ScheduleOp.UPDATE)


def _text(field: str, value: object, *, limit: int = _MAX_TEXT, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise InvalidInput(f"{field} must be a non-empty string")
    if "\x00" in value:
        raise InvalidInput(f"{field} must not contain NUL characters")
    return value[:limit]


def _optional_text(field: str, value: object) -> str | None:
    return None if value is None else _text(field, value)


def _refused_name(value: object) -> str:
    return _text("refused name", value)


def _reason(value: object) -> str:
    return _text("refused reason", value)


def _class_path(value: object) -> str:
    return _text("class", value, limit=500)


def _timezone(value: object) -> str:
    return _text("timezone", value, limit=100)


def _note(value: object) -> str:
    return _text("note", value, empty=True)


def _fire_id(value: object) -> str:
    return _name("fire id", value)


def _schedule_name(value: object) -> str:
    return _name("schedule", value)


def _entry_name(value: object) -> str:
    return _name("name", value)


def _scheduler_name(value: object) -> str:
    return _name("scheduler", value)


def _refusals(value: Iterable[RefusedEntry]) -> tuple[RefusedEntry, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"expected true or false, got {value!r}")
    return value


def _kind(value: object) -> SchedulerKind:
    try:
        return SchedulerKind(str(value))
    except ValueError:
        raise InvalidInput(
            f"unknown scheduler kind {value!r}; one of {[kind.value for kind in SchedulerKind]}"
        ) from None


def _name(field: str, value: object) -> str:
    text = _text(field, value, limit=MAX_NAME_LENGTH + 1)
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{field} is longer than {MAX_NAME_LENGTH} characters")
    return text


def _mapping(what: str, data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{what} must be a JSON object")
    return data


def _entry(where: str, data: object) -> ScheduleEntry:
    try:
        return entry_from_dict(data)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error}") from None


@attrs.frozen(kw_only=True)
class RefusedEntry:
    """An entry of the scheduler that z4j cannot show as a schedule entry, and why."""

    name: str = attrs.field(converter=_refused_name)
    reason: str = attrs.field(converter=_reason)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "reason": self.reason}


def _entries(value: Iterable[ScheduleEntry]) -> tuple[ScheduleEntry, ...]:
    entries = tuple(value)
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise InvalidInput("a scheduler report names an entry twice")
    if len(entries) > MAX_ENTRIES:
        raise InvalidInput(f"a scheduler report carries at most {MAX_ENTRIES} entries")
    return entries


def _known(value: Iterable[str]) -> frozenset[str]:
    names = frozenset(value)
    if len(names) > _MAX_KNOWN_TASKS:
        raise InvalidInput(f"a scheduler report lists at most {_MAX_KNOWN_TASKS} task names")
    for name in names:
        _name("known task", name)
    return names


@attrs.frozen(kw_only=True)
class SchedulerReport:
    """One scheduler's whole schedule, as its beat agent sees it now.

    ``class_path`` is the scheduler class (``module:Class``); ``writable``
    says whether the agent can change it (false for :attr:`SchedulerKind.OTHER`);
    ``note`` is what an operator should know about changes made through z4j
    (for the file scheduler: which changes survive a beat restart).
    ``known_tasks`` are the task names the beat app has registered.
    """

    kind: SchedulerKind = attrs.field(converter=_kind)
    class_path: str = attrs.field(converter=_class_path)
    timezone: str = attrs.field(converter=_timezone)
    writable: bool = attrs.field(converter=_bool)
    entries: tuple[ScheduleEntry, ...] = attrs.field(default=(), converter=_entries)
    refused: tuple[RefusedEntry, ...] = attrs.field(default=(), converter=_refusals)
    known_tasks: frozenset[str] = attrs.field(default=frozenset(), converter=_known)
    note: str = attrs.field(default="", converter=_note)

    def to_body(self) -> dict[str, Any]:
        """The ``schedules`` frame's body."""
        return {
            "scheduler": {
                "kind": self.kind.value,
                "class": self.class_path,
                "timezone": self.timezone,
                "writable": self.writable,
                "note": self.note,
            },
            "entries": [entry_to_dict(entry) for entry in self.entries],
            "refused": [refused.to_dict() for refused in self.refused],
            "known_tasks": sorted(self.known_tasks),
        }

    @classmethod
    def from_body(cls, body: object) -> SchedulerReport:
        """Read a ``schedules`` frame's body; :class:`InvalidInput` says what is wrong."""
        data = _mapping("a schedules frame", body)
        scheduler = _mapping("'scheduler'", data.get("scheduler"))
        entries = data.get("entries", [])
        refused = data.get("refused", [])
        known = data.get("known_tasks", [])
        for field, value in (("entries", entries), ("refused", refused), ("known_tasks", known)):
            if not isinstance(value, list):
                raise InvalidInput(f"'{field}' must be a list")
        refusals = []
        for item in refused:
            record = _mapping("a refused entry", item)
            refusals.append(RefusedEntry(name=record.get("name"), reason=record.get("reason")))
        if not all(isinstance(name, str) for name in known):
            raise InvalidInput("'known_tasks' must be a list of strings")
        return cls(
            kind=scheduler.get("kind"),
            class_path=scheduler.get("class"),
            timezone=scheduler.get("timezone"),
            writable=scheduler.get("writable"),
            entries=[_entry(f"entry {index}", item) for index, item in enumerate(entries)],
            refused=refusals,
            known_tasks=known,
            note=scheduler.get("note", ""),
        )


def _optional_error(value: object) -> str | None:
    return _optional_text("error", value)


def _optional_id(value: object) -> str | None:
    return None if value is None else _name("task_id", value)


@attrs.frozen(kw_only=True)
class ScheduleFire:
    """Beat sent an entry's task (or tried to): when, which task, by schedule or by hand.

    ``id`` is the agent's, unique (a random UUID, say): the brain stores a fire
    once however often it is reported. ``task_id`` is ``None`` when sending failed (``error``
    says why).
    """

    id: str = attrs.field(converter=_fire_id)
    schedule: str = attrs.field(converter=_schedule_name)
    fired_at: datetime = attrs.field(converter=aware_utc)
    task_id: str | None = attrs.field(default=None, converter=_optional_id)
    manual: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    error: str | None = attrs.field(default=None, converter=_optional_error)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "id": self.id,
            "schedule": self.schedule,
            "fired_at": utc_isoformat(self.fired_at),
            "task_id": self.task_id,
            "manual": self.manual,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: object) -> ScheduleFire:
        """Read one fire; :class:`InvalidInput` says what is wrong."""
        record = _mapping("a fire", data)
        fired_at = record.get("fired_at")
        if not isinstance(fired_at, str):
            raise InvalidInput("a fire's 'fired_at' must be an ISO 8601 string")
        try:
            when = datetime.fromisoformat(fired_at)
        except ValueError:
            raise InvalidInput(f"a fire's 'fired_at' is not ISO 8601: {fired_at!r}") from None
        try:
            return cls(
                id=record.get("id"),
                schedule=record.get("schedule"),
                fired_at=when,
                task_id=record.get("task_id"),
                manual=record.get("manual", False),
                error=record.get("error"),
            )
        except (TypeError, ValueError) as error:
            if isinstance(error, InvalidInput):
                raise
            raise InvalidInput(f"a fire: {error}") from None

    @staticmethod
    def body(fires: Iterable[ScheduleFire]) -> dict[str, Any]:
        """The ``schedule_fires`` frame's body."""
        return {"fires": [fire.to_dict() for fire in fires]}

    @classmethod
    def from_body(cls, body: object) -> tuple[ScheduleFire, ...]:
        """Read a ``schedule_fires`` frame's body."""
        fires = _mapping("a schedule_fires frame", body).get("fires")
        if not isinstance(fires, list):
            raise InvalidInput("'fires' must be a list")
        if len(fires) > MAX_FIRES_PER_FRAME:
            raise InvalidInput(f"a frame carries at most {MAX_FIRES_PER_FRAME} fires")
        return tuple(cls.from_dict(item) for item in fires)


def _op(value: object) -> ScheduleOp:
    try:
        return ScheduleOp(str(value))
    except ValueError:
        raise InvalidInput(
            f"unknown schedule operation {value!r}; one of {[op.value for op in ScheduleOp]}"
        ) from None


@attrs.frozen(kw_only=True)
class ScheduleRequest:
    """One change to one entry, as a ``schedule`` command part carries it (its ``options``).

    ``name`` is the entry the operation is about; for an update it is the
    entry's current name, and ``entry`` (create and update only) the whole
    entry as it should be, which may carry a new name (a rename).
    """

    op: ScheduleOp = attrs.field(converter=_op)
    name: str = attrs.field(converter=_entry_name)
    entry: ScheduleEntry | None = None

    def __attrs_post_init__(self) -> None:
        if self.op.needs_entry and self.entry is None:
            raise InvalidInput(f"a schedule {self.op.value} needs the entry")
        if not self.op.needs_entry and self.entry is not None:
            raise InvalidInput(f"a schedule {self.op.value} carries no entry")
        if self.op is ScheduleOp.CREATE and self.entry is not None and self.entry.name != self.name:
            raise InvalidInput("a created entry's name must be the request's name")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a command part's ``options``)."""
        return {
            "op": self.op.value,
            "name": self.name,
            "entry": None if self.entry is None else entry_to_dict(self.entry),
        }

    @classmethod
    def from_dict(cls, data: object) -> ScheduleRequest:
        """Read a request; :class:`InvalidInput` says what is wrong."""
        record = _mapping("a schedule request", data)
        entry = record.get("entry")
        return cls(
            op=record.get("op"),
            name=record.get("name"),
            entry=None if entry is None else _entry("entry", entry),
        )


@attrs.frozen(kw_only=True)
class ScheduleOutcome:
    """What the agent did: the entry as the scheduler now holds it (``None`` once deleted).

    A trigger names the task it sent (``task_id``) and leaves the entry as it
    was. ``warnings`` are things worth telling the operator that did not stop
    the change (an unknown task name, a change a beat restart will undo).
    """

    entry: ScheduleEntry | None = None
    task_id: str | None = attrs.field(default=None, converter=_optional_id)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a part report's ``result``)."""
        return {
            "entry": None if self.entry is None else entry_to_dict(self.entry),
            "task_id": self.task_id,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: object) -> ScheduleOutcome:
        """Read an outcome; :class:`InvalidInput` says what is wrong."""
        record = _mapping("a schedule outcome", data)
        entry = record.get("entry")
        warnings = record.get("warnings", [])
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise InvalidInput("'warnings' must be a list of strings")
        return cls(
            entry=None if entry is None else _entry("entry", entry),
            task_id=record.get("task_id"),
            warnings=[_text("warning", warning) for warning in warnings],
        )


@attrs.frozen(kw_only=True)
class SchedulerInfo:
    """What the brain keeps of a scheduler besides its entries: its last report's header.

    ``name`` is the reporting agent's name; ``reported_at`` when the last
    report arrived (the brain's clock).
    """

    name: str = attrs.field(converter=_scheduler_name)
    kind: SchedulerKind = attrs.field(converter=_kind)
    class_path: str
    timezone: str
    writable: bool
    reported_at: datetime = attrs.field(converter=aware_utc)
    note: str = ""
    known_tasks: frozenset[str] = attrs.field(default=frozenset(), converter=_known)
    refused: tuple[RefusedEntry, ...] = attrs.field(default=(), converter=_refusals)

    @classmethod
    def of(cls, name: str, report: SchedulerReport, at: datetime) -> SchedulerInfo:
        """The header of ``report``, from scheduler ``name``, received ``at``."""
        return cls(
            name=name,
            kind=report.kind,
            class_path=report.class_path,
            timezone=report.timezone,
            writable=report.writable,
            reported_at=at,
            note=report.note,
            known_tasks=report.known_tasks,
            refused=report.refused,
        )


@attrs.frozen(kw_only=True)
class StoredEntry:
    """One entry as the brain keeps it: which scheduler holds it, and when it last changed."""

    scheduler: str
    entry: ScheduleEntry
    updated_at: datetime = attrs.field(converter=aware_utc)
