"""z4j agent for Celery workers: task lifecycle and worker health, sent to the z4j brain.

Activate it with one line in the module that creates your Celery app::

    import z4j_agent_celery; z4j_agent_celery.install(app)

(or, on two lines, ``import z4j_agent_celery`` and ``z4j_agent_celery.install(app)``
right after ``app = Celery(...)``). That only connects a receiver to Celery's
``worker_init`` signal: the agent starts in the main process of ``celery
worker`` and never under ``celery beat``, ``celery inspect``, ``celery purge``
or in the processes that merely send tasks. Importing this package does nothing.
When ``z4j-celerybeat`` is installed as well, the same line also activates the
beat agent (:mod:`z4j_agent_celerybeat`, a receiver of ``beat_init``), which
starts in ``celery beat`` only.

Configuration, from the worker's environment:

``Z4J_BRAIN_URL`` (required)
    The brain, e.g. ``https://z4j.example.com``; the agent connects to
    ``wss://z4j.example.com/ws/agent`` (``http`` gives ``ws``).
``Z4J_TOKEN`` (required)
    The agent's bearer token, minted in the dashboard or with ``z4j agent create``.
``Z4J_HMAC_SECRET`` (required)
    The agent's frame-signing secret, minted with the token.
``Z4J_PROJECT_ID``
    The project the agent reports to; default ``default``.
``Z4J_AGENT_NAME``
    The agent's name; default the host name.
``Z4J_BUFFER_SIZE``
    Events kept in memory while the brain is away or has not acknowledged
    them; default 100000, oldest dropped (and counted) beyond that.
``Z4J_MAX_PAYLOAD_BYTES``
    Largest JSON of a task's args, kwargs or result sent as it is; default 16384.

Credentials in args, kwargs, results, exceptions and tracebacks are redacted
in the worker before anything is sent (the defaults, plus the project's own
patterns that the brain sends). A task declared with
``@app.task(z4j_fully_redacted=True)`` has its arguments' values and its
result replaced whole.

When the agent starts, the worker prints::

    INFO:z4j.celery.worker_bootstrap:z4j worker bootstrap: agent runtime started

If a required variable is missing it logs one WARNING naming it and the worker
runs normally without the agent. A wrong token is logged once as
``z4j rejected the agent: unauthorized (check Z4J_TOKEN)``; the agent keeps
retrying and the tasks keep running.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "install"]

__version__ = "0.1.0"


def install(app: Any = None) -> None:
    """Start the agent in every ``celery worker`` of ``app`` (see the module's documentation)."""
    from z4j_agent_celery.bootstrap import install as _install

    _install(app)
