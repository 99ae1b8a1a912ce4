"""End to end: a worker crashes mid-task and z4j says so; an acks_late task survives the crash.

A real brain (``z4j serve`` on PostgreSQL, default reconciler settings) and
real prefork workers. The crash is ``SIGKILL`` to the worker's whole process
group (main process and pool children): no goodbye, no last events. Flower, in
the same situation, keeps showing the task ``STARTED`` for ever.

* Redis broker, a 60-second task: the task shows ``lost`` with the worker
  named, within the default settings' bound (under 60 s after the kill).
* RabbitMQ broker, ``acks_late=True`` and a second worker: the broker
  redelivers the message, the second worker runs it, and the task ends
  ``succeeded`` there (a delivery attempt above the crashed one's).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from tests.agents.e2e import (
    AMQP_URL,
    BACKEND,
    BROKER,
    TASKS,
    Brain,
    Worker,
    events_of,
    mint_agent,
    require_redis,
    require_service,
    running_brain,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

#: The bound the issue sets for default settings, from the kill to ``lost``.
LOST_WITHIN = 60.0


@pytest.fixture(scope="module")
def brain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Brain]:
    """A running brain on PostgreSQL with default reconciler settings."""
    require_redis()
    with running_brain(request, tmp_path_factory, "postgresql") as brain:
        yield brain


@pytest.fixture(scope="module")
def agent(brain: Brain) -> dict[str, str]:
    """The workers' agent credentials."""
    return mint_agent(brain)


def client(broker: str) -> Celery:
    """A Celery client app that sends by task name (nothing imported from the workers)."""
    return Celery("z4j_e2e_client", broker=broker, backend=BACKEND)


def start_worker(
    tmp_path: Any, brain: Brain, agent: dict[str, str], queue: str, broker: str, name: str
) -> Worker:
    return Worker(
        tmp_path / f"{name}.log",
        brain_url=brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        queue=queue,
        broker=broker,
        concurrency=1,
    )


def wait_started(brain: Brain, task_id: str) -> dict[str, Any]:
    """The task once the brain shows it started."""
    seen: dict[str, Any] = {}

    def started() -> bool:
        task = brain.task(task_id)
        if task is not None:
            seen.update(task)
        return task is not None and task["state"] == "started"

    assert wait_until(started, 60, every=0.1), seen
    return seen


def test_a_killed_workers_task_shows_lost_with_the_worker_named(
    brain: Brain, agent: dict[str, str], tmp_path: Any
) -> None:
    """SIGKILL during a 60 s task: ``lost`` (worker named) in under a minute; worker offline."""
    queue = f"crash-{uuid.uuid4().hex[:6]}"
    worker = start_worker(tmp_path, brain, agent, queue, BROKER, "crashing")
    try:
        result = client(BROKER).send_task(f"{TASKS}.sleepy", args=[60], queue=queue)
        wait_started(brain, result.id)
        worker.kill()
        killed_at = time.monotonic()
        lost: dict[str, Any] = {}

        def is_lost() -> bool:
            task = brain.task(result.id)
            lost.update(task or {})
            return task is not None and task["state"] == "lost"

        assert wait_until(is_lost, LOST_WITHIN, every=0.25), (lost, brain.server.stderr[-3000:])
        elapsed = time.monotonic() - killed_at
    finally:
        worker.kill()
    assert elapsed < LOST_WITHIN
    assert lost["worker"] == worker.hostname
    assert worker.hostname in lost["exception"]
    assert lost["exception"].startswith("reconciled: ")
    (verdict,) = events_of(lost, "lost")
    assert verdict["worker"] == worker.hostname
    listed = brain.worker(worker.hostname)
    assert listed is not None
    assert listed["status"] == "offline"
    assert f"task {result.id} marked lost (worker {worker.hostname})" in brain.server.stderr
    print(f"lost {elapsed:.1f} s after the kill")


@pytest.fixture(scope="module")
def amqp_ready() -> None:
    """RabbitMQ answers, or a skip (a failure in CI) naming it."""
    try:
        with client(AMQP_URL).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as error:
        require_service("RabbitMQ (Z4J_TEST_AMQP_URL)", AMQP_URL, error)


def test_an_acks_late_task_of_a_killed_worker_succeeds_on_the_other(
    brain: Brain, agent: dict[str, str], tmp_path: Any, amqp_ready: None
) -> None:
    """RabbitMQ redelivers the unacknowledged message; the second worker runs it to success."""
    queue = f"late-{uuid.uuid4().hex[:6]}"
    first = start_worker(tmp_path, brain, agent, queue, AMQP_URL, "first")
    second = start_worker(tmp_path, brain, agent, queue, AMQP_URL, "second")
    workers = {first.hostname: first, second.hostname: second}
    try:
        result = client(AMQP_URL).send_task(f"{TASKS}.sleepy_late", args=[6], queue=queue)
        started = wait_started(brain, result.id)
        crashed = workers.pop(started["worker"])
        (survivor,) = workers.values()
        crashed.kill()
        assert result.get(timeout=60) == 6
        task = brain.wait_task(
            result.id, "succeeded", until=lambda t: t["worker"] == survivor.hostname
        )
    finally:
        first.kill()
        second.kill()
    assert {e["worker"] for e in events_of(task, "started")} == {
        crashed.hostname,
        survivor.hostname,
    }
    assert task["attempt"] == 1  # the redelivery: above the crashed run's attempt 0
    assert task["retries"] == 0  # not a Celery retry
    # The survivor took over before the crashed worker's window expired: nothing was lost.
    assert "lost" not in {e["kind"] for e in task["events"]}
