"""What the brain asks a worker's agent to do: retry tasks, cancel them, purge a queue.

The brain sends a command as parts (:class:`~z4j_domain.commands.CommandPart`);
:class:`Executor` carries one part out with the worker's own Celery app and
returns the :class:`~z4j_domain.commands.PartReport` the agent answers with:

* **retry**: each item is published again with ``app.send_task`` under the
  new task id the brain chose, to the queue and routing key it names, with the
  message header :data:`~z4j_domain.tasks.RETRY_OF_HEADER` naming the original
  task. Arguments the brain could not send (they held a redaction or
  truncation marker) are read back from the result backend's extended result
  (``result_extended=True``); without one the item is refused. A marker is
  never published, whether it came from the brain or the result backend.
* **cancel**: one ``app.control.revoke`` broadcast for the part's task ids,
  optionally terminating the process running one (with a signal from
  :data:`~z4j_domain.commands.CANCEL_SIGNALS`).
* **purge**: the queue's depth is measured on the broker and the queue purged
  only when the brain confirmed that exact depth; otherwise the part fails
  with the depth, for the operator to confirm.

A part runs once: the same ``(command id, part)`` again, after or while it
runs, gets the first report (the last :data:`MAX_REMEMBERED_PARTS` parts are
remembered). :meth:`Executor.run` never raises: every failure is a report.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any, Final

from z4j_agent_celery.activity import real_backend
from z4j_domain.commands import (
    CANCEL_SIGNALS,
    Action,
    CommandPart,
    ItemOutcome,
    ItemReport,
    PartReport,
    PartStatus,
    RetryItem,
    contains_marker,
)
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import RETRY_OF_HEADER

__all__ = ["CAPABILITIES", "MAX_REMEMBERED_PARTS", "Executor", "PartRunner"]

logger = logging.getLogger("z4j.celery.actions")

#: What an agent with an :class:`Executor` tells the brain it can do (in its hello).
CAPABILITIES: Final = ("retry", "cancel", "purge")
#: Parts whose reports are kept to answer a repeat without running it again.
MAX_REMEMBERED_PARTS: Final = 1_024
#: How a purge connects to the broker: one quick retry, never a long wait on the command thread.
_CONNECT: Final = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "timeout": 10}
#: Most characters of the reason reported for one item (what the brain keeps of it).
_MAX_REASON: Final = 2_000


def _task_id(item: Mapping[str, Any]) -> str | None:
    """The item's task id, if the brain sent a usable one."""
    task_id = item.get("task_id")
    if (
        isinstance(task_id, str)
        and task_id
        and len(task_id) <= 1_000
        and "\x00" not in task_id
        and not contains_marker(task_id)
    ):
        return task_id
    return None


def _label(item: Mapping[str, Any], index: int) -> str:
    """What an item's report names: its task id, or ``#<index>`` when it has no usable one."""
    return _task_id(item) or f"#{index}"


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _is_not_found(error: BaseException) -> bool:
    """Whether the broker said the queue does not exist (AMQP 404, or kombu's virtual one)."""
    return str(getattr(error, "reply_code", "")) == "404"


class _Refused(Exception):
    """An item not to publish; the message is the reason."""


class PartRunner:
    """Runs command parts once each and remembers their reports; :meth:`_run` says how.

    The dedupe the transport relies on (:class:`~z4j_agent_celery.transport.PartExecutor`):
    the same ``(command id, part)`` again, after or while it runs, gets the first
    report. Subclasses implement :meth:`_run`; an exception from it becomes a
    ``failed`` report. :meth:`run` is called from the transport's command thread
    (and is safe to call from several).
    """

    def __init__(self, *, remembered: int = MAX_REMEMBERED_PARTS) -> None:
        self._remembered = remembered
        self._lock = threading.Lock()
        self._reports: OrderedDict[tuple[str, int], PartReport] = OrderedDict()
        self._running: dict[tuple[str, int], threading.Event] = {}
        #: Parts actually run (a repeat answered from memory is not counted).
        self.runs = 0

    def finished(self, key: tuple[str, int]) -> PartReport | None:
        """The report of the part ``key`` if it ran already (and is still remembered)."""
        with self._lock:
            report = self._reports.get(key)
            if report is not None:
                self._reports.move_to_end(key)
            return report

    def run(self, part: CommandPart) -> PartReport:
        """Carry out ``part`` once; a repeat gets the first report and never runs it again."""
        while True:
            with self._lock:
                earlier = self._reports.get(part.key)
                if earlier is not None:
                    self._reports.move_to_end(part.key)
                    return earlier
                running = self._running.get(part.key)
                if running is None:
                    running = self._running[part.key] = threading.Event()
                    self.runs += 1
                    break
            running.wait()  # the same part on another thread: its report is ours
        report: PartReport | None = None
        try:
            report = self._attempt(part)
        finally:
            with self._lock:
                if report is not None:
                    self._reports[part.key] = report
                    while len(self._reports) > self._remembered:
                        self._reports.popitem(last=False)
                del self._running[part.key]
            running.set()
        return report

    def _attempt(self, part: CommandPart) -> PartReport:
        try:
            report = self._run(part)
        except Exception as error:  # never raise into the transport: report it
            logger.exception("z4j agent failed to run %s part %d", part.action.value, part.part)
            report = _failed(part, f"the agent failed to run the command: {_describe(error)}")
        logger.info(
            "z4j agent ran %s part %d of command %s: %s",
            part.action.value,
            part.part,
            part.command_id,
            self._summary(report),
        )
        return report

    def _summary(self, report: PartReport) -> str:
        """The report in a few words, for the log line of each part run."""
        return _summary(report)

    def _run(self, part: CommandPart) -> PartReport:
        """Carry ``part`` out; the report (an exception is turned into a ``failed`` one)."""
        return _failed(part, f"this agent cannot run {part.action.value!r} commands")


class Executor(PartRunner):
    """Carries out the brain's command parts with one Celery ``app`` (the worker's own).

    Built once per agent; :meth:`run` is called from the transport's command
    thread (and is safe to call from several).
    """

    def __init__(self, app: Any, *, remembered: int = MAX_REMEMBERED_PARTS) -> None:
        super().__init__(remembered=remembered)
        self.app = app

    def _run(self, part: CommandPart) -> PartReport:
        if part.action is Action.RETRY:
            return self._retry(part)
        if part.action is Action.CANCEL:
            return self._cancel(part)
        if part.action is Action.PURGE:
            return self._purge(part)
        return _failed(part, f"this agent cannot run {part.action.value!r} commands")

    # -- retry ----------------------------------------------------------------------------

    def _retry(self, part: CommandPart) -> PartReport:
        outcomes = []
        broker_down: str | None = None
        for index, data in enumerate(part.items):
            task_id = _label(data, index)
            try:
                item = RetryItem.from_dict(data)
            except InvalidInput as invalid:
                reason = f"invalid retry item: {invalid}; nothing was published"
                outcomes.append(_item(task_id, ItemOutcome.REFUSED, reason))
                continue
            try:
                args, kwargs = self._arguments(item)
            except _Refused as refusal:
                outcomes.append(_item(task_id, ItemOutcome.REFUSED, str(refusal)))
                continue
            except Exception as error:  # the result backend could not be read
                outcomes.append(
                    _item(
                        task_id,
                        ItemOutcome.FAILED,
                        f"the result backend could not be read for task {task_id}"
                        f" ({_describe(error)}); nothing was published",
                    )
                )
                continue
            if broker_down is not None:
                # Each publish to an unreachable broker takes its retries; one tells for all.
                outcomes.append(_item(task_id, ItemOutcome.FAILED, broker_down))
                continue
            try:
                self._publish(item, args, kwargs)
            except Exception as error:
                reason = f"the task could not be published: {_describe(error)}"
                if _is_connection_error(error):
                    broker_down = f"not published: the broker failed for an earlier task ({reason})"
                outcomes.append(_item(task_id, ItemOutcome.FAILED, reason))
                continue
            outcomes.append(
                ItemReport(
                    task_id=item.task_id,
                    outcome=ItemOutcome.PUBLISHED,
                    new_task_id=item.new_task_id,
                )
            )
        return _done(part, outcomes)

    def _arguments(self, item: RetryItem) -> tuple[list[Any], dict[str, Any]]:
        """The arguments to publish: the brain's, or the originals from the result backend."""
        if not item.recover_arguments:
            return list(item.args or []), dict(item.kwargs or {})
        fix = "(set result_extended=True on the Celery app); nothing was published"
        backend = real_backend(self.app)
        if backend is None:
            raise _Refused(
                "the stored arguments were redacted or truncated and the agent's Celery app"
                f" has no result backend to recover task {item.task_id}'s from {fix}"
            )
        meta = backend.get_task_meta(item.task_id)
        args = meta.get("args") if isinstance(meta, Mapping) else None
        kwargs = meta.get("kwargs") if isinstance(meta, Mapping) else None
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, Mapping):
            raise _Refused(
                "the stored arguments were redacted or truncated and the result backend holds"
                f" no extended result for task {item.task_id} {fix}"
            )
        if contains_marker(args) or contains_marker(kwargs):
            raise _Refused(
                f"the arguments of task {item.task_id} in the result backend hold a redaction or"
                " truncation marker; z4j never publishes one; nothing was published"
            )
        return list(args), dict(kwargs)

    def _publish(self, item: RetryItem, args: list[Any], kwargs: dict[str, Any]) -> None:
        options: dict[str, Any] = {}
        if item.queue is not None:
            options["queue"] = item.queue
        if item.routing_key is not None:
            options["routing_key"] = item.routing_key
        if item.countdown is not None:
            options["countdown"] = item.countdown
        if item.eta is not None:
            options["eta"] = item.eta
        # Custom headers reach the message's headers (celery.app.amqp.send_task_message),
        # so the worker that runs the new task, and the agent's capture, see them.
        self.app.send_task(
            item.name,
            args=args,
            kwargs=kwargs,
            task_id=item.new_task_id,
            headers={RETRY_OF_HEADER: item.task_id},
            **options,
        )

    # -- cancel ---------------------------------------------------------------------------

    def _cancel(self, part: CommandPart) -> PartReport:
        terminate = part.options.get("terminate", False)
        signal = part.options.get("signal", "SIGTERM")
        refusal = None
        if not isinstance(terminate, bool):
            refusal = "'terminate' must be true or false; nothing was revoked"
        elif not isinstance(signal, str) or signal not in CANCEL_SIGNALS:
            allowed = ", ".join(sorted(CANCEL_SIGNALS))
            refusal = (
                f"signal {signal!r} is not one a cancel sends ({allowed}); nothing was revoked"
            )
        outcomes: list[ItemReport | None] = []
        task_ids: list[str] = []
        for index, data in enumerate(part.items):
            task_id = _task_id(data)
            if refusal is not None:
                outcomes.append(_item(_label(data, index), ItemOutcome.REFUSED, refusal))
            elif task_id is None:
                reason = "a cancel item needs a usable 'task_id'; nothing was revoked"
                outcomes.append(_item(_label(data, index), ItemOutcome.REFUSED, reason))
            else:
                outcomes.append(None)
                task_ids.append(task_id)
        failure = None
        if task_ids:
            try:
                self.app.control.revoke(
                    list(dict.fromkeys(task_ids)), terminate=terminate, signal=signal
                )
            except Exception as error:
                failure = f"the revoke could not be broadcast: {_describe(error)}"
        success = ItemOutcome.TERMINATED if terminate else ItemOutcome.REVOKED
        ids = iter(task_ids)
        reports = [
            outcome
            if outcome is not None
            else _item(
                next(ids),
                success if failure is None else ItemOutcome.FAILED,
                failure,
            )
            for outcome in outcomes
        ]
        return _done(part, reports)

    # -- purge ----------------------------------------------------------------------------

    def _purge(self, part: CommandPart) -> PartReport:
        queue = part.options.get("queue")
        confirm = part.options.get("confirm_depth")
        if not isinstance(queue, str) or not queue or len(queue) > 1_000 or "\x00" in queue:
            return _failed(part, "a purge needs the name of the queue ('queue')")
        if confirm is not None and (type(confirm) is not int or confirm < 0):
            return _failed(part, "'confirm_depth' must be a number of messages or null")
        purging = False
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(**_CONNECT)
                channel = connection.channel()
                try:
                    depth = self._depth(channel, queue)
                    if depth is None:
                        return _failed(
                            part, f"the broker has no queue {queue!r}; nothing was purged"
                        )
                    if confirm != depth:
                        return _failed(
                            part,
                            f"confirmation needed: queue {queue!r} holds {depth} messages now;"
                            f" purge again confirming {depth}",
                            result={"queue": queue, "depth": depth},
                        )
                    purging = True
                    purged = channel.queue_purge(queue)
                finally:
                    _close(channel)
        except Exception as error:
            after = " while purging" if purging else "; nothing was purged"
            return _failed(part, f"the broker failed: {_describe(error)}{after}")
        return part.report(
            PartStatus.DONE,
            result={
                "queue": queue,
                "depth": depth,
                "purged": purged if type(purged) is int else None,
            },
        )

    def _depth(self, channel: Any, queue: str) -> int | None:
        """Messages ready in ``queue``; ``None`` when the broker knows no such queue.

        A passive declare counts them (AMQP and kombu's virtual transports). On
        Redis an empty queue has no key, so its passive declare fails as an
        unknown queue's does: it is known, and empty, if an exchange binds it.
        """
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except Exception as error:
            if not _is_not_found(error):
                raise
        get_table = getattr(channel, "get_table", None)
        if get_table is None:
            return None
        exchanges = {queue}
        declared = self.app.amqp.queues.get(queue)
        if declared is not None and declared.exchange is not None and declared.exchange.name:
            exchanges.add(declared.exchange.name)
        for exchange in sorted(exchanges):
            if any(binding[-1] == queue for binding in get_table(exchange)):
                return 0
        return None


def _is_connection_error(error: BaseException) -> bool:
    from kombu.exceptions import OperationalError

    return isinstance(error, (OperationalError, ConnectionError, OSError))


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the broker closed (AMQP 404) is closed already
        logger.debug("z4j agent could not close a broker channel", exc_info=True)


def _item(task_id: str, outcome: ItemOutcome, reason: str | None = None) -> ItemReport:
    return ItemReport(
        task_id=task_id, outcome=outcome, reason=None if reason is None else reason[:_MAX_REASON]
    )


def _done(part: CommandPart, outcomes: list[ItemReport]) -> PartReport:
    return part.report(PartStatus.DONE, outcomes)


def _failed(
    part: CommandPart, error: str, *, result: Mapping[str, Any] | None = None
) -> PartReport:
    return part.report(PartStatus.FAILED, result=result, error=error)


def _summary(report: PartReport) -> str:
    if report.status is PartStatus.FAILED:
        return f"failed ({report.error})"
    if report.result is not None:
        return f"done {dict(report.result)}"
    counts = Counter(outcome.outcome.value for outcome in report.outcomes)
    return ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())) or "done"
