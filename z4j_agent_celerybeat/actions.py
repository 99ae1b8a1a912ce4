"""What the brain asks a beat agent to do: change one schedule entry, or send its task now.

A ``schedule`` command part carries a :class:`~z4j_domain.beat.ScheduleRequest`
in its ``options``. :class:`ScheduleExecutor` carries it out on the
scheduler's store and answers ``done`` with a
:class:`~z4j_domain.beat.ScheduleOutcome` (the entry as the scheduler now
holds it, ``None`` after a delete; the task a trigger sent; warnings), or
``failed`` saying why (the entry exists, there is no such entry, the
scheduler is read-only (every command, a trigger too), the scheduler cannot
hold it, its storage failed).
A part runs once: a repeat is answered with the first report (the worker
agent's :class:`~z4j_agent_celery.actions.PartRunner`).

A **trigger** publishes the entry's task now, with its arguments and
publishing options (queue, routing key, exchange, priority, expires), through
the beat app as beat would (the registered task's ``apply_async``, or
``send_task`` for a name the app does not know), without touching the
entry's last run, run count or schedule; it is reported as a manual fire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from z4j_agent_celery.actions import PartRunner
from z4j_agent_celerybeat.errors import ReadOnlyScheduler, ScheduleError
from z4j_agent_celerybeat.fires import FireLog
from z4j_agent_celerybeat.store import Publication, ScheduleStore
from z4j_domain.beat import ScheduleOp, ScheduleOutcome, ScheduleRequest
from z4j_domain.commands import Action, CommandPart, PartReport, PartStatus
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import task_name_warnings

__all__ = ["CAPABILITIES", "ScheduleExecutor", "publish"]

logger = logging.getLogger("z4j.celerybeat.actions")

#: What a beat agent tells the brain it can do (in its hello).
CAPABILITIES: Final = ("schedule",)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def publish(app: Any, publication: Publication) -> str:
    """Send the task now, as beat would; the new task's id."""
    registered = app.tasks.get(publication.task)
    if registered is not None:
        result = registered.apply_async(publication.args, publication.kwargs, **publication.options)
    else:
        result = app.send_task(
            publication.task, publication.args, publication.kwargs, **publication.options
        )
    return str(result.id)


class ScheduleExecutor(PartRunner):
    """Runs ``schedule`` parts on one scheduler ``store`` (beat's), with beat's ``app``.

    ``fires`` records manual triggers; ``changed`` is called after every part
    that reached the scheduler (a new report is due).
    """

    def __init__(
        self,
        store: ScheduleStore,
        app: Any,
        *,
        fires: FireLog,
        changed: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__()
        self.store = store
        self.app = app
        self.fires = fires
        self._changed = changed

    def _run(self, part: CommandPart) -> PartReport:
        if part.action is not Action.SCHEDULE:
            return part.report(
                PartStatus.FAILED,
                error=f"a beat agent cannot run {part.action.value!r} commands",
            )
        try:
            request = ScheduleRequest.from_dict(part.options)
        except InvalidInput as error:
            return part.report(PartStatus.FAILED, error=f"invalid schedule request: {error}")
        try:
            outcome = self.apply(request)
        except ScheduleError as error:
            return part.report(PartStatus.FAILED, error=str(error))
        except Exception as error:  # the scheduler's storage: database, Redis, the file
            logger.exception("z4j beat agent: %s of %r failed", request.op.value, request.name)
            return part.report(
                PartStatus.FAILED,
                error=f"{self.store.label} failed: {_describe(error)}; the change may not"
                " have been made",
            )
        finally:
            self._changed()
        return part.report(PartStatus.DONE, result=outcome.to_dict())

    def _summary(self, report: PartReport) -> str:
        if report.status is PartStatus.FAILED:
            return f"failed ({report.error})"
        result = report.result or {}
        entry = result.get("entry") or {}
        parts = [f"entry {entry['name']!r}" if entry else "no entry"]
        if result.get("task_id"):
            parts.append(f"sent task {result['task_id']}")
        warnings = result.get("warnings") or []
        if warnings:
            parts.append(f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''}")
        return "done: " + ", ".join(parts)

    def apply(self, request: ScheduleRequest) -> ScheduleOutcome:
        """Carry out one request on the store; :class:`ScheduleError` when it cannot be."""
        store = self.store
        if not store.writable:
            raise ReadOnlyScheduler(store.class_path)
        if request.op is ScheduleOp.TRIGGER:
            return self._trigger(request.name)
        warnings: list[str] = []
        name = request.name
        if request.op is ScheduleOp.CREATE:
            assert request.entry is not None
            warnings += self._task_warnings(request.entry)
            warnings += store.create(request.entry)
            name = request.entry.name
        elif request.op is ScheduleOp.UPDATE:
            assert request.entry is not None
            warnings += self._task_warnings(request.entry)
            warnings += store.update(request.name, request.entry)
            name = request.entry.name
        elif request.op is ScheduleOp.DELETE:
            warnings += store.delete(request.name)
            return ScheduleOutcome(entry=None, warnings=warnings)
        else:
            warnings += store.set_enabled(request.name, request.op is ScheduleOp.ENABLE)
        entry = store.get(name, datetime.now(UTC))
        if entry is None:
            warnings.append(f"z4j cannot show {name!r} as the scheduler now holds it")
        return ScheduleOutcome(entry=entry, warnings=warnings)

    def _task_warnings(self, entry: Any) -> list[str]:
        try:
            known = self.store.known_tasks()
        except Exception:  # unknown is an answer: no warning
            logger.debug("z4j beat agent could not list the app's tasks", exc_info=True)
            return []
        return task_name_warnings(entry, known)

    def _trigger(self, name: str) -> ScheduleOutcome:
        publication = self.store.publication(name)
        try:
            task_id = publish(self.app, publication)
        except Exception as error:
            reason = f"the task could not be published: {_describe(error)}"
            self.fires.record(name, error=reason, manual=True)
            raise ScheduleError(reason) from None
        self.fires.record(name, task_id=task_id, manual=True)
        try:
            entry = self.store.get(name, datetime.now(UTC))
        except Exception:  # sent all the same; the report will tell
            logger.debug("z4j beat agent could not read %r back", name, exc_info=True)
            entry = None
        return ScheduleOutcome(entry=entry, task_id=task_id)
