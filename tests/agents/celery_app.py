"""A tiny Celery app for the agent's end-to-end tests (``celery -A tests.agents.celery_app``).

The broker and result backend come from ``Z4J_E2E_BROKER`` / ``Z4J_E2E_BACKEND``
(Redis databases of their own); ``Z4J_E2E_RESULT_EXTENDED=1`` turns on Celery's
extended results (the task's name and arguments stored with its result). The
agent is activated with the documented line.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import z4j_agent_celery
from z4j_domain.tasks import RETRY_OF_HEADER

app = Celery(
    "z4j_e2e",
    broker=os.environ.get("Z4J_E2E_BROKER", "redis://127.0.0.1:6379/13"),
    backend=os.environ.get("Z4J_E2E_BACKEND", "redis://127.0.0.1:6379/14"),
)
app.conf.update(
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="e2e",
    result_extended=os.environ.get("Z4J_E2E_RESULT_EXTENDED") == "1",
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


@app.task(bind=True)
def whoami(self, *args: object, **kwargs: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What the worker ran: the task's id, its ``z4j_retry_of`` header and its arguments."""
    return {
        "id": self.request.id,
        "retry_of": getattr(self.request, RETRY_OF_HEADER, None),
        "args": list(args),
        "kwargs": kwargs,
    }


@app.task
def gate(key: str) -> bool:
    """Hold a pool process until a test pushes to the list ``key`` (result backend's Redis)."""
    import redis

    client = redis.Redis.from_url(app.conf.result_backend)
    try:
        return client.blpop([key], timeout=60) is not None
    finally:
        client.close()


def _runs(key: str) -> int:
    """Count one more run of ``key`` (in the result backend's Redis); how many so far."""
    import redis

    client = redis.Redis.from_url(app.conf.result_backend)
    try:
        return int(client.incr(key))
    finally:
        client.close()


@app.task
def fails_first(key: str) -> int:
    """Fail the first time it runs for ``key``, succeed after: what a retry from z4j fixes."""
    runs = _runs(key)
    if runs == 1:
        raise RuntimeError(f"the first run fails ({key})")
    return runs


@app.task
def login(key: str, password: str) -> int:
    """Like :func:`fails_first`, and only with the real password (z4j shows it redacted)."""
    if password != "hunter2":
        raise ValueError(f"wrong password {password!r}")
    return fails_first(key)
