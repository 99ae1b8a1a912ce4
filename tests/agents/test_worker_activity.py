"""Real ``celery worker`` processes (prefork, Redis) with the agent, against the fake brain.

What only a real worker can show: the heartbeats' ``tasks`` (read from
``celery.worker.state`` while the consumer runs) hold a running task and an
ETA task; a probe names the worker that runs a task, its own or, through
Celery's remote control, another one; the result backend's state comes back;
and the project's redaction settings from ``welcome`` reach the events of the
pool children, forked before the settings arrived.

Two workers on queues of their own, on Redis databases 11 and 12 (the
end-to-end tests and the benchmarks use, and flush, 13 and 14). Needs Redis at
``Z4J_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``): skipped with a
message naming it when unreachable, failed instead when
``Z4J_REQUIRE_SERVICES=1``, as the end-to-end tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

import pytest
from celery import Celery

from tests.agents.e2e import REDIS_URL, TASKS, Worker, require_redis, wait_until
from z4j_domain.redaction import REDACTED

from .fake_brain import SECRET, TOKEN, FakeBrain

pytestmark = pytest.mark.slow

BROKER: Final = f"{REDIS_URL}/11"
BACKEND: Final = f"{REDIS_URL}/12"


def task(name: str) -> str:
    return f"{TASKS}.{name}"


@pytest.fixture(scope="module")
def redis_ready() -> Iterator[None]:
    """Empty broker and result databases, or a skip (a failure in CI) naming Redis."""
    require_redis(BROKER, BACKEND)
    yield
    require_redis(BROKER, BACKEND)  # leave them empty


@pytest.fixture(scope="module")
def brain() -> Iterator[FakeBrain]:
    """One fake brain for the module, with project redaction settings in its welcome."""
    with FakeBrain(heartbeat_interval=0.2) as fake:
        fake.redaction = {"extra_key_patterns": ["pin"]}
        yield fake


@pytest.fixture(scope="module")
def client(redis_ready: None) -> Celery:
    """A client of the workers' broker and result backend (the tasks are sent by name)."""
    return Celery("activity-client", broker=BROKER, backend=BACKEND, set_as_current=False)


def start_worker(log: Path, brain: FakeBrain, name: str) -> Worker:
    """A worker (prefork, 2 children) on a queue of its own, once its agent said hello."""
    worker = Worker(
        log,
        brain_url=brain.url,
        token=TOKEN,
        secret=SECRET,
        queue=f"{name}-{uuid.uuid4().hex[:6]}",
        broker=BROKER,
        backend=BACKEND,
        agent_name=name,
    )

    def connected() -> bool:
        with brain.lock:
            return any(h.get("hostname") == worker.hostname for h in brain.hellos)

    if not wait_until(connected, 60):
        worker.stop()
        pytest.fail(f"the worker's agent did not connect:\n{worker.output()}")
    return worker


@pytest.fixture(scope="module")
def workers(
    redis_ready: None, brain: FakeBrain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, Worker]]:
    logs = tmp_path_factory.mktemp("workers")
    with ExitStack() as stack:
        first = start_worker(logs / "a.log", brain, "worker-a")
        stack.callback(first.stop)
        second = start_worker(logs / "b.log", brain, "worker-b")
        stack.callback(second.stop)
        yield first, second


def heartbeat_tasks(brain: FakeBrain, hostname: str) -> list[list[str] | None]:
    with brain.lock:
        return [hb["tasks"] for hb in brain.heartbeats if hb["worker"].get("hostname") == hostname]


def test_heartbeats_list_running_and_eta_tasks_and_probes_find_them(
    brain: FakeBrain, client: Celery, workers: tuple[Worker, Worker]
) -> None:
    a, b = workers
    running = client.send_task(task("sleepy"), (120,), queue=a.queue)
    eta = client.send_task(task("add"), (1, 2), queue=a.queue, countdown=3600)
    done = client.send_task(task("add"), (2, 3), queue=a.queue)
    unknown = str(uuid.uuid4())
    try:
        assert done.get(timeout=30) == 5
        assert brain.wait_for(lambda: "started" in brain.kinds_of(running.id), 30)
        assert brain.wait_for(
            lambda: any(
                tasks is not None and {running.id, eta.id} <= set(tasks)
                for tasks in heartbeat_tasks(brain, a.hostname)
            ),
            30,
        ), heartbeat_tasks(brain, a.hostname)[-3:]
        latest = heartbeat_tasks(brain, a.hostname)[-1]
        assert latest is not None
        assert done.id not in latest
        assert heartbeat_tasks(brain, b.hostname)[-1] == []

        # Worker A answers from its own state.
        asked = [running.id, eta.id, done.id, unknown]
        answers = brain.result_of(brain.probe(asked, hostname=a.hostname), 30)["answers"]
        assert answers == [
            {"task_id": running.id, "active_on": a.hostname, "backend_state": "PENDING"},
            {"task_id": eta.id, "active_on": a.hostname, "backend_state": "PENDING"},
            {"task_id": done.id, "active_on": None, "backend_state": "SUCCESS"},
            {"task_id": unknown, "active_on": None, "backend_state": "PENDING"},
        ]
        # Worker B does not hold them: it asks the others over Celery's remote control.
        # A reply later than the agent's 1 s inspect window is "unknown" by design (a
        # busy test machine), so B is asked up to three times.
        expected = [a.hostname, a.hostname, None, None]
        for _ in range(3):
            answers = brain.result_of(brain.probe(asked, hostname=b.hostname), 30)["answers"]
            if [answer["active_on"] for answer in answers] == expected:
                break
        assert [answer["active_on"] for answer in answers] == expected
    finally:
        client.control.revoke([running.id, eta.id], terminate=True, signal="SIGKILL")
    assert brain.wait_for(lambda: "revoked" in brain.kinds_of(running.id), 30)


def test_the_projects_settings_reach_the_pool_childrens_events(
    brain: FakeBrain, client: Celery, workers: tuple[Worker, Worker]
) -> None:
    a, _ = workers
    plain = client.send_task(
        task("echo"), ("x",), {"pin": 1234, "password": "hunter2", "note": "ok"}, queue=a.queue
    )
    private = client.send_task(task("private_echo"), ("ann",), {"age": 42}, queue=a.queue)
    assert plain.get(timeout=30)["kwargs"]["pin"] == 1234  # the task itself is untouched
    assert private.get(timeout=30) == {"args": ["ann"], "kwargs": {"age": 42}}

    def events(task_id: str) -> dict[str, dict[str, Any]]:
        assert brain.wait_for(
            lambda: {"received", "started", "succeeded"} <= brain.kinds_of(task_id), 30
        )
        return {e["kind"]: e for e in brain.events_of(task_id)}

    plain_events = events(plain.id)
    # received: built in the main process; succeeded: in a pool child, then the second pass.
    assert plain_events["received"]["kwargs"] == {
        "pin": REDACTED,
        "password": REDACTED,
        "note": "ok",
    }
    assert plain_events["succeeded"]["result"]["kwargs"] == {
        "pin": REDACTED,
        "password": REDACTED,
        "note": "ok",
    }
    assert plain_events["received"]["arguments_redacted"] is True
    assert plain_events["succeeded"]["redacted"] is True
    assert "arguments_redacted" not in plain_events["succeeded"]

    private_events = events(private.id)
    assert private_events["received"]["args"] == [REDACTED]
    assert private_events["received"]["kwargs"] == {"age": REDACTED}
    assert private_events["succeeded"]["result"] == REDACTED
    assert {e["attempt"] for e in private_events.values()} == {0}
