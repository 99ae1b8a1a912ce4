"""End to end: a real ``celery worker`` (prefork, Redis) with the agent, talking to a brain.

For now the brain is :class:`~tests.agents.fake_brain.FakeBrain`, which speaks
the agent protocol; switch ``e2e_brain`` to the real gateway when it lands.
Needs Redis at ``Z4J_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``);
skipped with a message naming Redis when it is unreachable, failed instead
when ``Z4J_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .fake_brain import SECRET, TOKEN, FakeBrain

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("Z4J_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
BROKER = f"{REDIS_URL}/13"
BACKEND = f"{REDIS_URL}/14"
STARTED_LINE = "INFO:z4j.celery.worker_bootstrap:z4j worker bootstrap: agent runtime started"
UNAUTHORIZED = "ERROR:z4j.celery.transport:z4j rejected the agent: unauthorized (check Z4J_TOKEN)"


@pytest.fixture(scope="module")
def redis_ready() -> None:
    import redis

    try:
        for url in (BROKER, BACKEND):
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            client.flushdb()
            client.close()
    except redis.RedisError as error:
        message = (
            f"Redis is not reachable at {REDIS_URL} ({error}); start it or point "
            "Z4J_TEST_REDIS_URL at one"
        )
        if os.environ.get("Z4J_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " [Z4J_REQUIRE_SERVICES=1]")
        pytest.skip(message)


@pytest.fixture(scope="module")
def e2e_app(redis_ready: None) -> Any:
    from tests.agents import celery_app

    celery_app.app.conf.update(broker_url=BROKER, result_backend=BACKEND)
    return celery_app


class Worker:
    """A ``celery worker`` subprocess whose stdout and stderr go to one file."""

    def __init__(self, log: Path, *, brain_url: str, token: str, queue: str) -> None:
        self.log = log
        env = {
            **os.environ,
            "Z4J_BRAIN_URL": brain_url,
            "Z4J_TOKEN": token,
            "Z4J_HMAC_SECRET": SECRET,
            "Z4J_AGENT_NAME": f"e2e-{queue}",
            "Z4J_E2E_BROKER": BROKER,
            "Z4J_E2E_BACKEND": BACKEND,
            "PYTHONUNBUFFERED": "1",
        }
        self.hostname = f"{queue}-{uuid.uuid4().hex[:6]}@localhost"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.agents.celery_app",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=2",
                    "--loglevel=INFO",
                    "-n",
                    self.hostname,
                    "-Q",
                    queue,
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(lambda: " ready." in self.output(), 60):
            self.stop()
            pytest.fail(f"the worker did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="module")
def e2e_brain() -> Iterator[FakeBrain]:
    with FakeBrain(heartbeat_interval=1.0) as brain:
        yield brain


@pytest.fixture(scope="module")
def worker(
    e2e_app: Any, e2e_brain: FakeBrain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = Worker(log, brain_url=e2e_brain.url, token=TOKEN, queue="e2e")
    try:
        yield worker
    finally:
        worker.stop()


def events(brain: FakeBrain, task_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in brain.events_of(task_id) if kind is None or e["kind"] == kind]


def wait_kinds(brain: FakeBrain, task_id: str, *kinds: str) -> None:
    if not brain.wait_for(lambda: set(kinds) <= brain.kinds_of(task_id), timeout=20):
        raise AssertionError(f"{task_id}: wanted {kinds}, got {brain.kinds_of(task_id)}")


def test_the_bootstrap_line_is_printed_once(worker: Worker) -> None:
    lines = worker.output().splitlines()
    assert lines.count(STARTED_LINE) == 1, worker.output()


def test_a_task_that_succeeds(worker: Worker, e2e_brain: FakeBrain, e2e_app: Any) -> None:
    result = e2e_app.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    wait_kinds(e2e_brain, result.id, "received", "started", "succeeded")
    (received,) = events(e2e_brain, result.id, "received")
    assert received["args"] == [2, 3]
    assert received["kwargs"] == {}
    assert received["name"] == "tests.agents.celery_app.add"
    assert received["queue"] == "e2e"
    assert received["worker"] == worker.hostname
    (succeeded,) = events(e2e_brain, result.id, "succeeded")
    assert succeeded["result"] == 5
    assert succeeded["runtime"] >= 0
    assert succeeded["attempt"] == 0
    assert succeeded["timestamp"].endswith("+00:00")


def test_a_failure_arrives_with_its_traceback(
    worker: Worker, e2e_brain: FakeBrain, e2e_app: Any
) -> None:
    result = e2e_app.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=20)
    wait_kinds(e2e_brain, result.id, "received", "started", "failed")
    (failed,) = events(e2e_brain, result.id, "failed")
    assert failed["exception"] == "ValueError('boom')"
    assert failed["traceback"].startswith("Traceback (most recent call last):")
    assert failed["traceback"].rstrip().endswith("ValueError: boom")


def test_retries_are_attempts(worker: Worker, e2e_brain: FakeBrain, e2e_app: Any) -> None:
    result = e2e_app.flaky.delay(2)
    assert result.get(timeout=20) == 2
    wait_kinds(e2e_brain, result.id, "retried", "succeeded")
    assert e2e_brain.wait_for(lambda: len(events(e2e_brain, result.id, "retried")) == 2)
    retried = sorted(e["attempt"] for e in events(e2e_brain, result.id, "retried"))
    assert retried == [0, 1]
    assert [e["attempt"] for e in events(e2e_brain, result.id, "succeeded")] == [2]
    # The retry is re-published from the pool child: "sent" for attempts 1 and 2.
    assert e2e_brain.wait_for(lambda: len(events(e2e_brain, result.id, "sent")) == 2)
    assert sorted(e["attempt"] for e in events(e2e_brain, result.id, "sent")) == [1, 2]
    assert "RuntimeError('attempt 0')" in {
        e["exception"] for e in events(e2e_brain, result.id, "retried")
    }


def test_a_revoked_task(worker: Worker, e2e_brain: FakeBrain, e2e_app: Any) -> None:
    task_id = str(uuid.uuid4())
    e2e_app.app.control.revoke(task_id)
    time.sleep(1.0)  # let the broadcast reach the worker before the message
    e2e_app.sleepy.apply_async((0,), task_id=task_id)
    wait_kinds(e2e_brain, task_id, "revoked")
    assert "succeeded" not in e2e_brain.kinds_of(task_id)


def test_big_arguments_are_cut(worker: Worker, e2e_brain: FakeBrain, e2e_app: Any) -> None:
    result = e2e_app.echo.delay("x" * 100_000, small=1)
    result.get(timeout=20)
    wait_kinds(e2e_brain, result.id, "received", "succeeded")
    (received,) = events(e2e_brain, result.id, "received")
    assert received["args"][0].startswith("[z4j truncated")
    assert received["kwargs"] == {"small": 1}


def test_chain_group_and_chord_carry_their_canvas_ids(
    worker: Worker, e2e_brain: FakeBrain, e2e_app: Any
) -> None:
    from celery import chain, chord, group

    add, total = e2e_app.add, e2e_app.total
    chained = chain(add.s(1, 2), add.s(3)).apply_async()
    assert chained.get(timeout=20) == 6
    first, second = chained.parent.id, chained.id
    wait_kinds(e2e_brain, first, "succeeded")
    wait_kinds(e2e_brain, second, "received", "succeeded")
    (received,) = events(e2e_brain, second, "received")
    assert (received["parent_id"], received["root_id"]) == (first, first)
    assert received["args"] == [3, 3]

    grouped = group(add.s(i, i) for i in range(3)).apply_async()
    assert grouped.get(timeout=20) == [0, 2, 4]
    for child in grouped.results:
        wait_kinds(e2e_brain, child.id, "received", "succeeded")
        assert {e.get("group_id") for e in events(e2e_brain, child.id)} == {grouped.id}

    chorded = chord([add.s(1, 1), add.s(2, 2)])(total.s())
    assert chorded.get(timeout=20) == 6
    header = chorded.parent.results
    for child in header:
        wait_kinds(e2e_brain, child.id, "received", "succeeded")
        (received,) = events(e2e_brain, child.id, "received")
        assert received["chord_id"] == chorded.id
        assert received["group_id"] == chorded.parent.id
    wait_kinds(e2e_brain, chorded.id, "sent", "received", "succeeded")
    (body,) = events(e2e_brain, chorded.id, "received")
    assert body["args"] == [[2, 4]]
    assert body["root_id"] == header[0].id


def test_one_connection_and_heartbeats(worker: Worker, e2e_brain: FakeBrain) -> None:
    assert e2e_brain.wait_for(lambda: len(e2e_brain.heartbeats) >= 1)
    assert len(e2e_brain.hellos) == 1
    hello = e2e_brain.hellos[0]
    assert (hello["kind"], hello["hostname"], hello["project"]) == (
        "celery-worker",
        worker.hostname,
        "default",
    )
    assert hello["pid"] == worker.process.pid
    stats = e2e_brain.heartbeats[-1]["worker"]
    assert (stats["pool"], stats["concurrency"], stats["queues"]) == ("prefork", 2, ["e2e"])
    assert e2e_brain.errors == []


def test_a_wrong_token_is_logged_and_tasks_still_run(
    e2e_app: Any, e2e_brain: FakeBrain, tmp_path: Path
) -> None:
    worker = Worker(
        tmp_path / "unauthorized.log", brain_url=e2e_brain.url, token="wrong", queue="e2e-unauth"
    )
    try:
        assert wait_until(lambda: UNAUTHORIZED in worker.output()), worker.output()
        result = e2e_app.add.apply_async((2, 2), queue="e2e-unauth")
        assert result.get(timeout=20) == 4
        assert worker.output().count(UNAUTHORIZED) == 1
        assert STARTED_LINE in worker.output().splitlines()
    finally:
        assert worker.stop() == 0


def test_bye_on_shutdown(worker: Worker, e2e_brain: FakeBrain) -> None:
    """Last: stops the module's worker."""
    assert worker.stop() == 0
    assert e2e_brain.wait_for(lambda: len(e2e_brain.byes) == 1)
    assert e2e_brain.byes[0] == {"reason": "warm shutdown (SIGTERM)", "worker": worker.hostname}
