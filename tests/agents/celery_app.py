"""A tiny Celery app for the agent's end-to-end tests (``celery -A tests.agents.celery_app``).

The broker and result backend come from ``Z4J_E2E_BROKER`` / ``Z4J_E2E_BACKEND``
(Redis databases of their own). The agent is activated with the documented line.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import z4j_agent_celery

app = Celery(
    "z4j_e2e",
    broker=os.environ.get("Z4J_E2E_BROKER", "redis://127.0.0.1:6379/13"),
    backend=os.environ.get("Z4J_E2E_BACKEND", "redis://127.0.0.1:6379/14"),
)
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="e2e",
)
z4j_agent_celery.install(app)


class Opaque:
    """Not JSON: the agent reports it as its repr."""

    def __repr__(self) -> str:
        return "<Opaque>"


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(bind=True, max_retries=3)
def flaky(self, succeed_on: int) -> int:  # type: ignore[no-untyped-def]
    if self.request.retries < succeed_on:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"), countdown=0.1)
    return int(self.request.retries)


@app.task
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


@app.task(z4j_fully_redacted=True)
def private_echo(*args: object, **kwargs: object) -> dict[str, object]:
    """Declared fully redacted: the agent replaces its arguments' values and its result."""
    return {"args": list(args), "kwargs": kwargs}


@app.task(acks_late=True)
def sleepy_late(seconds: float) -> float:
    """Acknowledged after it ran: a worker's crash leaves it for the broker to redeliver."""
    time.sleep(seconds)
    return seconds
