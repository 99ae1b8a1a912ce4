"""Starting the agent in a worker's main process, and its log lines.

:func:`install` connects one receiver to Celery's ``worker_init`` signal,
which Celery sends in the main process of ``celery worker`` (never under
``celery beat``, ``inspect``, ``purge`` or in a client). That receiver reads
the environment and starts the :class:`~z4j_agent_celery.runtime.AgentRuntime`.
When the beat agent (z4j-celerybeat) is installed too, :func:`install` also
activates it (its receiver of ``beat_init``), so the same line starts it in
``celery beat``.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any, Final

from z4j_agent_celery.activity import worker_tasks
from z4j_agent_celery.config import AgentConfig, ConfigError
from z4j_agent_celery.runtime import AgentRuntime
from z4j_agent_celery.transport import TransportSettings

__all__ = [
    "BOOTSTRAP_LOGGER",
    "STARTED_MESSAGE",
    "configure_logging",
    "current_runtime",
    "install",
    "start",
    "worker_stats",
]

#: The logger of the line operators look for.
BOOTSTRAP_LOGGER: Final = "z4j.celery.worker_bootstrap"
#: The line itself (with Python's default format: ``INFO:<logger>:<message>``).
STARTED_MESSAGE: Final = "z4j worker bootstrap: agent runtime started"

logger = logging.getLogger(BOOTSTRAP_LOGGER)

_lock = threading.Lock()
_runtime: AgentRuntime | None = None
_apps: list[Any] = []
_shutdown_reason = "worker shutdown"


def configure_logging(stream: IO[str] | None = None, *, name: str = "z4j.celery") -> None:
    """Make the agent's log lines (logger ``name``) visible in Python's default format.

    Celery takes over the root logger in a worker (and in beat) and redirects
    ``sys.stdout``, so the agent's loggers get a handler of their own, on the
    process's real standard output, with :data:`logging.BASIC_FORMAT`. A
    logger that the application already configured is left alone. The beat
    agent uses it for ``z4j.celerybeat`` too.
    """
    parent = logging.getLogger(name)
    if parent.handlers:
        return
    handler = logging.StreamHandler(stream or sys.__stdout__ or sys.stdout)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    parent.addHandler(handler)
    if parent.level == logging.NOTSET:
        parent.setLevel(logging.INFO)
    parent.propagate = False


def _pool_name(pool_cls: Any) -> str | None:
    if pool_cls is None:
        return None
    if isinstance(pool_cls, str):
        return pool_cls.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    module = getattr(pool_cls, "__module__", "") or ""
    # celery.concurrency.prefork:TaskPool -> "prefork"
    if module.startswith("celery.concurrency."):
        return module.rsplit(".", 1)[-1]
    return f"{module}.{getattr(pool_cls, '__qualname__', type(pool_cls).__name__)}"


def _queues(worker: Any) -> list[str]:
    try:
        consumer = worker.consumer
        task_consumer = consumer.task_consumer
        if task_consumer is not None:
            return sorted({queue.name for queue in task_consumer.queues})
    except Exception:  # not started yet, or an exotic consumer
        logger.debug("z4j agent: the consumer's queues are not known yet", exc_info=True)
    try:
        return sorted(worker.app.amqp.queues.consume_from)
    except Exception:
        return []


def worker_stats(worker: Any) -> Callable[[], dict[str, Any]]:
    """The heartbeat's ``worker`` object for a Celery ``WorkController``, as a callable."""
    import celery
    from celery.worker import state

    def stats() -> dict[str, Any]:
        concurrency = getattr(worker, "concurrency", None)
        try:
            loadavg = [round(value, 2) for value in os.getloadavg()]
        except OSError:
            loadavg = []
        return {
            "hostname": worker.hostname,
            "pool": _pool_name(getattr(worker, "pool_cls", None)),
            "concurrency": concurrency if type(concurrency) is int else None,
            "active": len(state.active_requests),
            "processed": int(state.all_total_count[0]),
            "loadavg": loadavg,
            "queues": _queues(worker),
            "software": f"celery {celery.__version__}",
        }

    return stats


def current_runtime() -> AgentRuntime | None:
    """The running agent of this process, if any."""
    return _runtime


def start(
    worker: Any,
    environ: Mapping[str, str] | None = None,
    *,
    settings: TransportSettings | None = None,
) -> AgentRuntime | None:
    """Start the agent for ``worker`` (a ``WorkController``); ``None`` if not configured."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        configure_logging()
        try:
            config = AgentConfig.from_env(os.environ if environ is None else environ)
        except ConfigError as error:
            logger.warning(
                "z4j agent not started: %s; the worker runs normally without the agent", error
            )
            return None
        runtime = AgentRuntime(
            config,
            hostname=worker.hostname,
            worker_stats=worker_stats(worker),
            worker_tasks=worker_tasks(worker),
            app=getattr(worker, "app", None),
            settings=settings,
        )
        runtime.start()
        _runtime = runtime
    from celery import signals

    signals.worker_shutting_down.connect(
        _on_shutting_down, weak=False, dispatch_uid="z4j-agent-shutting-down"
    )
    signals.worker_shutdown.connect(_on_shutdown, weak=False, dispatch_uid="z4j-agent-shutdown")
    atexit.register(_stop, "process exit")
    logger.info(STARTED_MESSAGE)
    return runtime


def _stop(reason: str) -> None:
    global _runtime
    runtime = _runtime
    if runtime is None or os.getpid() != runtime.pid:
        return
    _runtime = None
    try:
        runtime.stop(reason)
    except Exception:  # shutting down: never raise into Celery
        logger.exception("z4j agent did not stop cleanly")


def _on_shutting_down(sig: Any = None, how: Any = None, **_: Any) -> None:
    # Runs inside Celery's signal handler: only remember why.
    global _shutdown_reason
    _shutdown_reason = f"{str(how or 'warm').lower()} shutdown ({sig})"


def _on_shutdown(**_: Any) -> None:
    # The pool has stopped: every child has flushed its events.
    _stop(_shutdown_reason)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    if _apps and getattr(sender, "app", None) not in _apps:
        return
    try:
        start(sender)
    except Exception:  # the agent must never keep a worker from starting
        logger.exception("z4j agent failed to start; the worker runs without it")


def install(app: Any = None) -> None:
    """Start the agent in the main process of every ``celery worker`` of ``app``.

    Connects one receiver to ``celery.signals.worker_init``: in a client,
    ``celery beat`` or ``celery inspect`` it never fires. Without ``app`` the
    agent starts for any worker of this process. With z4j-celerybeat
    installed, its beat agent is activated too (a receiver of ``beat_init``).
    """
    from celery import signals

    if app is not None and app not in _apps:
        _apps.append(app)
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="z4j-agent-bootstrap")
    _install_beat_agent(app)


#: The beat agent's package (z4j-celerybeat), loaded by name: it builds on this one.
BEAT_AGENT: Final = "z4j_agent_celerybeat"


def _install_beat_agent(app: Any) -> None:
    """Also activate the beat agent when z4j-celerybeat is installed: one line serves both.

    Its ``install`` connects a receiver to ``beat_init`` only; without the
    package nothing happens. Never raises into the application's import.
    """
    try:
        if importlib.util.find_spec(BEAT_AGENT) is None:
            return
        importlib.import_module(BEAT_AGENT).install(app)
    except Exception:
        logger.exception("z4j could not activate the beat agent (%s)", BEAT_AGENT)
