"""What a worker is holding right now, and the answers to the brain's probes.

The brain's reconciler needs two things from the agent to decide about a task
that looks stuck (see ``z4j_domain.reconciliation``):

* **Activity reports**, in every heartbeat: the ids of every task this worker
  holds, ``"tasks": [...]``, or ``null`` when that is not known. "Holds" is
  *active* (executing in the pool), *reserved* (prefetched, waiting for a pool
  slot) and *scheduled* (an ETA/countdown waiting in the worker's timer). They
  come from ``celery.worker.state`` in the worker's main process:
  ``requests`` (id -> request) holds all three in the Celery versions that
  have ``scheduled_requests``; the ``active_requests``, ``reserved_requests``
  and ``scheduled_requests`` sets, and the entries of the consumer's timer
  (where older Celery versions keep ETA tasks and nowhere else), are added for
  the others. The consumer thread mutates them while the transport thread
  reads: each is copied with a retry when it changed size mid-copy.
* **Probes**: ``{"command": "probe", "id": ..., "task_ids": [...]}`` is
  answered with, per task, the worker that holds it (this one from its own
  state; others through Celery's remote control, ``inspect().query_task``)
  and what the result backend says. :class:`Prober` does that within a
  deadline and answers with what it knows by then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "MAX_PROBE_IDS",
    "MAX_REPORTED_TASKS",
    "Prober",
    "worker_tasks",
]

logger = logging.getLogger("z4j.celery.activity")

#: Above this many held tasks a heartbeat says ``"tasks": null`` (unknown).
MAX_REPORTED_TASKS: Final = 10_000
#: Most task ids one probe asks about.
MAX_PROBE_IDS: Final = 500
#: How long the remote-control round asks other workers, in seconds.
INSPECT_TIMEOUT: Final = 1.0
#: How long a whole probe may take before it answers with what it knows, in seconds.
PROBE_DEADLINE: Final = 5.0
#: The states ``query_task`` reports for a task a worker holds ("ready" means done).
_HELD_STATES: Final = frozenset({"active", "reserved", "scheduled"})
#: Tries at copying a collection another thread keeps changing.
_COPY_TRIES: Final = 10


def _copy_ids(source: Callable[[], Iterable[Any]], id_of: Callable[[Any], Any]) -> list[str]:
    """The ids of what ``source()`` yields, copied while another thread may mutate it."""
    for _ in range(_COPY_TRIES):
        try:
            items = tuple(source())
        except RuntimeError:  # "changed size during iteration": try again
            continue
        ids = []
        for item in items:
            task_id = id_of(item)
            if isinstance(task_id, str) and task_id:
                ids.append(task_id)
        return ids
    raise RuntimeError("the worker's task state kept changing while it was read")


def _timer_requests(worker: Any) -> Iterable[Any]:
    """The requests waiting in the consumer's timer (ETA/countdown tasks)."""
    consumer = getattr(worker, "consumer", None)
    timer = getattr(consumer, "timer", None)
    queue = getattr(getattr(timer, "schedule", None), "queue", None)
    if not queue:
        return ()
    requests = []
    for waiting in list(queue):
        args = getattr(getattr(waiting, "entry", None), "args", None)
        if isinstance(args, (list, tuple)) and args:
            requests.append(args[0])
    return requests


def worker_tasks(worker: Any = None) -> Callable[[], list[str] | None]:
    """The heartbeat's ``tasks`` for this process's worker (``worker``: its ``WorkController``).

    The callable returns the sorted ids of the tasks the worker holds, or
    ``None`` when there are more than :data:`MAX_REPORTED_TASKS` or the state
    cannot be read.
    """
    from celery.worker import state

    def request_id(request: Any) -> Any:
        return getattr(request, "id", None)

    def identity(task_id: Any) -> Any:
        return task_id

    sources: list[tuple[Callable[[], Iterable[Any]], Callable[[Any], Any]]] = [
        (lambda: state.requests, identity)
    ]
    for name in ("active_requests", "reserved_requests", "scheduled_requests"):
        held = getattr(state, name, None)
        if held is not None:
            sources.append((lambda held=held: held, request_id))
    if worker is not None:
        sources.append((lambda: _timer_requests(worker), request_id))

    def tasks() -> list[str] | None:
        try:
            ids: set[str] = set()
            for source, id_of in sources:
                ids.update(_copy_ids(source, id_of))
                if len(ids) > MAX_REPORTED_TASKS:
                    return None
            return sorted(ids)
        except Exception:
            logger.debug("z4j agent could not read the worker's tasks", exc_info=True)
            return None

    return tasks


def real_backend(app: Any) -> Any:
    """The app's result backend if it can be asked about a task without side effects."""
    try:
        backend = app.backend
        from celery.backends.base import DisabledBackend
        from celery.backends.rpc import RPCBackend
    except Exception:
        logger.debug("z4j agent: no usable result backend", exc_info=True)
        return None
    # The RPC backend's results are messages for the process that sent the task:
    # reading them here would consume them. Without a backend nothing is stored.
    if isinstance(backend, (DisabledBackend, RPCBackend)):
        return None
    return backend


class Prober:
    """Answers the brain's probes for one worker.

    ``hostname`` is this worker; ``local_tasks`` returns the ids it holds
    (:func:`worker_tasks`); ``app`` is the Celery app whose remote control asks
    the other workers and whose result backend is read (``None``: answer from
    local state only, ``backend_state`` always ``null``).
    """

    def __init__(
        self,
        *,
        hostname: str,
        local_tasks: Callable[[], list[str] | None],
        app: Any = None,
        inspect_timeout: float = INSPECT_TIMEOUT,
        deadline: float = PROBE_DEADLINE,
    ) -> None:
        self.hostname = hostname
        self.local_tasks = local_tasks
        self.app = app
        self.inspect_timeout = inspect_timeout
        self.deadline = deadline

    def __call__(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One answer per id, in order: ``{"task_id", "active_on", "backend_state"}``.

        Returns within about :attr:`deadline` seconds, whatever hangs: the
        work runs on a daemon thread and what it found by then is answered.
        """
        answers = {
            task_id: {"task_id": task_id, "active_on": None, "backend_state": None}
            for task_id in task_ids
        }
        done = threading.Event()

        def work() -> None:
            try:
                self._fill(answers, time.monotonic() + self.deadline)
            except Exception:
                logger.debug("z4j agent probe failed", exc_info=True)
            finally:
                done.set()

        threading.Thread(target=work, name="z4j-agent-probe", daemon=True).start()
        done.wait(self.deadline)
        return [dict(answers[task_id]) for task_id in task_ids]

    def _fill(self, answers: Mapping[str, dict[str, Any]], deadline: float) -> None:
        local = set(self.local_tasks() or ())
        elsewhere = []
        for task_id, answer in answers.items():
            if task_id in local:
                answer["active_on"] = self.hostname
            else:
                elsewhere.append(task_id)
        if self.app is None:
            return
        if elsewhere:
            for task_id, hostname in self._held_elsewhere(elsewhere).items():
                if task_id in answers and answers[task_id]["active_on"] is None:
                    answers[task_id]["active_on"] = hostname
        backend = real_backend(self.app)
        if backend is None:
            return
        for task_id, answer in answers.items():
            if time.monotonic() >= deadline:
                return
            try:
                state = self.app.AsyncResult(task_id, backend=backend).state
            except Exception:
                logger.debug("z4j agent could not read %s from the result backend", task_id)
                continue
            answer["backend_state"] = state if isinstance(state, str) else None

    def _held_elsewhere(self, task_ids: list[str]) -> dict[str, str]:
        """task id -> the first worker (by name) that reports holding it; ``{}`` on failure."""
        try:
            replies = self.app.control.inspect(timeout=self.inspect_timeout).query_task(*task_ids)
        except Exception:
            logger.debug("z4j agent could not ask the other workers", exc_info=True)
            return {}
        held: dict[str, str] = {}
        if not isinstance(replies, Mapping):
            return held  # no worker answered
        for hostname in sorted(replies, key=str):
            tasks = replies[hostname]
            if not isinstance(tasks, Mapping):
                continue
            for task_id, info in tasks.items():
                state = info[0] if isinstance(info, (list, tuple)) and info else None
                if state in _HELD_STATES and task_id not in held:
                    held[task_id] = str(hostname)
        return held
