"""Why the beat agent could not change a schedule: each message is what the brain is told."""

from __future__ import annotations

__all__ = [
    "EntryExists",
    "NoSuchEntry",
    "ReadOnlyScheduler",
    "ScheduleError",
    "SchedulerClosed",
    "Unsupported",
]


class ScheduleError(Exception):
    """A schedule change the agent refused or could not make; the message says why."""


class EntryExists(ScheduleError):
    """A create, or a rename, names an entry the scheduler already has."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the scheduler already has an entry named {name!r}; nothing was changed")


class NoSuchEntry(ScheduleError):
    """The entry a change is about is not in the scheduler."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the scheduler has no entry named {name!r}; nothing was changed")


class ReadOnlyScheduler(ScheduleError):
    """The scheduler is not one z4j writes to."""

    def __init__(self, class_path: str) -> None:
        super().__init__(
            f"this scheduler ({class_path}) is read-only in z4j: z4j writes to"
            " django-celery-beat, RedBeat and Celery's default file scheduler"
        )


class Unsupported(ScheduleError):
    """The scheduler cannot hold what the change asks for (a clocked schedule in RedBeat...)."""


class SchedulerClosed(ScheduleError):
    """Beat is shutting down and has closed its schedule."""

    def __init__(self) -> None:
        super().__init__("beat is shutting down and has closed its schedule; nothing was changed")
