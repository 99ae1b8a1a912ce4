"""Starting the agent in a ``celery beat`` process, and its log lines.

:func:`install` only connects one receiver to Celery's ``beat_init`` signal,
which Celery sends in ``celery beat`` (and in a worker's embedded beat,
``celery worker -B``) once the scheduler is set up, never in a worker or a
client. That receiver reads the environment, picks the store for beat's
scheduler instance (``sender.scheduler``, see
:func:`~z4j_agent_celerybeat.store.store_for`), wraps the scheduler and
starts the :class:`~z4j_agent_celerybeat.runtime.BeatRuntime`. Anything that
goes wrong is logged; beat runs on without the agent.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Final

from z4j_agent_celery.bootstrap import configure_logging as _configure
from z4j_agent_celery.transport import TransportSettings
from z4j_agent_celerybeat.config import BeatConfig, ConfigError
from z4j_agent_celerybeat.runtime import BeatRuntime
from z4j_agent_celerybeat.store import store_for

__all__ = [
    "BOOTSTRAP_LOGGER",
    "STARTED_MESSAGE",
    "configure_logging",
    "current_runtime",
    "install",
    "start",
]

#: The logger of the line operators look for.
BOOTSTRAP_LOGGER: Final = "z4j.celerybeat.beat_bootstrap"
#: The line itself (with Python's default format: ``INFO:<logger>:<message>``).
STARTED_MESSAGE: Final = "z4j beat bootstrap: agent runtime started"

logger = logging.getLogger(BOOTSTRAP_LOGGER)

_lock = threading.Lock()
_runtime: BeatRuntime | None = None
_apps: list[Any] = []


def configure_logging() -> None:
    """Show the beat agent's lines (``z4j.celerybeat``) and the transport's (``z4j.celery``)."""
    _configure(name="z4j.celerybeat")
    _configure(name="z4j.celery")


def current_runtime() -> BeatRuntime | None:
    """The running beat agent of this process, if any."""
    return _runtime


def start(
    service: Any,
    environ: Mapping[str, str] | None = None,
    *,
    settings: TransportSettings | None = None,
) -> BeatRuntime | None:
    """Start the agent for beat's ``service`` (a ``celery.beat.Service``); ``None`` if not
    configured."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        configure_logging()
        try:
            config = BeatConfig.from_env(os.environ if environ is None else environ)
        except ConfigError as error:
            logger.warning(
                "z4j beat agent not started: %s; beat runs normally without the agent", error
            )
            return None
        scheduler = service.scheduler
        app = getattr(service, "app", None) or scheduler.app
        store = store_for(scheduler, app)
        runtime = BeatRuntime(config, store=store, app=app, settings=settings)
        runtime.attach(scheduler)
        runtime.start()
        _runtime = runtime
    atexit.register(_stop, "beat shutdown")
    logger.info(STARTED_MESSAGE)
    logger.info(
        "z4j beat agent reports %s (%s, %s)",
        store.label,
        store.class_path,
        "writable" if store.writable else "read-only",
    )
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
        logger.exception("z4j beat agent did not stop cleanly")


def _on_beat_init(sender: Any = None, **_: Any) -> None:
    if _apps and getattr(sender, "app", None) not in _apps:
        return
    try:
        start(sender)
    except Exception:  # the agent must never keep beat from running
        logger.exception("z4j beat agent failed to start; beat runs without it")


def install(app: Any = None) -> None:
    """Start the agent in every ``celery beat`` of ``app`` (without ``app``: of any app).

    Connects one receiver to ``celery.signals.beat_init`` and nothing else.
    """
    from celery import signals

    if app is not None and app not in _apps:
        _apps.append(app)
    signals.beat_init.connect(_on_beat_init, weak=False, dispatch_uid="z4j-beat-bootstrap")
