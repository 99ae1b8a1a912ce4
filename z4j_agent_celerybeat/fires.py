"""The fires the agent reports: every time beat sends an entry's task, and every manual trigger.

:class:`FireLog` keeps the last :data:`KEPT_FIRES` of them in memory, all sent
again at the start of every session (the brain stores a fire once, by its id),
and the ones not yet sent. :meth:`FireLog.record` is called on beat's thread
(from the scheduler's ``apply_async``, see :meth:`FireLog.wrap`) and on the
command thread; it is a few appends under a lock and never raises.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from z4j_domain.beat import ScheduleFire

__all__ = ["KEPT_FIRES", "FireLog"]

logger = logging.getLogger("z4j.celerybeat.fires")

#: Fires kept in memory (and sent again in every new session).
KEPT_FIRES: Final = 200


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class FireLog:
    """The last fires, and the ones the brain has not been sent yet."""

    def __init__(self, kept: int = KEPT_FIRES, clock: Callable[[], datetime] | None = None) -> None:
        self._lock = threading.Lock()
        self._kept: deque[ScheduleFire] = deque(maxlen=kept)
        self._new: list[ScheduleFire] = []
        self._clock = clock or (lambda: datetime.now(UTC))
        #: Called (without arguments) after each fire is recorded: a report is due.
        self.on_fire: Callable[[], None] | None = None

    def record(
        self,
        schedule: str,
        *,
        task_id: str | None = None,
        error: str | None = None,
        manual: bool = False,
    ) -> ScheduleFire | None:
        """Note one fire; ``None`` when it cannot be reported (an entry name z4j refuses)."""
        try:
            fire = ScheduleFire(
                id=str(uuid.uuid4()),
                schedule=schedule,
                fired_at=self._clock(),
                task_id=task_id,
                manual=manual,
                error=error,
            )
        except Exception:  # an entry the report refuses (its name): nothing to link it to
            logger.debug("z4j beat agent cannot report a fire of %r", schedule, exc_info=True)
            return None
        with self._lock:
            self._kept.append(fire)
            self._new.append(fire)
        callback = self.on_fire
        if callback is not None:
            try:
                callback()
            except Exception:
                logger.debug("z4j beat agent: the fire callback failed", exc_info=True)
        return fire

    def take_new(self) -> list[ScheduleFire]:
        """The fires not yet handed over (and forget that they are new)."""
        with self._lock:
            new, self._new = self._new, []
        return new

    def all(self) -> list[ScheduleFire]:
        """Every kept fire, oldest first (and none is new any more)."""
        with self._lock:
            self._new = []
            return list(self._kept)

    def wrap(self, scheduler: Any) -> None:
        """Record a fire each time ``scheduler`` (beat's instance) sends an entry's task.

        Every scheduler sends through ``apply_async(entry, ...)``: Celery's
        ``apply_entry`` (default and django-celery-beat) and RedBeat's
        ``maybe_due``. The wrapper calls the original, records the task id (or
        the error, which is raised on, as beat expects) and never fails itself.
        """
        original = scheduler.apply_async

        def apply_async(entry: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                result = original(entry, *args, **kwargs)
            except Exception as error:
                self._safely(entry, error=_describe(error))
                raise
            task_id = getattr(result, "id", None)
            self._safely(entry, task_id=task_id if isinstance(task_id, str) else None)
            return result

        scheduler.apply_async = apply_async

    def _safely(self, entry: Any, **fields: Any) -> None:
        try:
            self.record(str(entry.name), **fields)
        except Exception:  # never into beat
            logger.debug("z4j beat agent could not record a fire", exc_info=True)
