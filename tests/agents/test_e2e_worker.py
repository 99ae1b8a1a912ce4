"""End to end: a real ``celery worker`` (prefork, Redis) with the agent, reporting to a real brain.

The brain is ``z4j serve`` in a subprocess, on SQLite and on PostgreSQL (the
``brain`` fixture is parametrized; one brain and one worker per backend for the
whole module, since both are slow to start). Its first admin comes from
``Z4J_BOOTSTRAP_ADMIN_*``; the agent and the API key are minted with the real
``z4j agent create`` / ``z4j api-key create``. Everything is asserted through
the brain's HTTP API, polling until the expected state arrives.

Needs Redis at ``Z4J_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``);
skipped with a message naming Redis when it is unreachable, failed instead
when ``Z4J_REQUIRE_SERVICES=1``. The PostgreSQL half follows the same rule
(see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest

from tests.agents.e2e import (
    AGENT,
    BRAIN_UNAUTHORIZED,
    QUEUE,
    STARTED_LINE,
    TASKS,
    UNAUTHORIZED,
    Brain,
    Worker,
    events_of,
    kinds_of,
    mint_agent,
    require_redis,
    running_brain,
    stored_rows_text,
    tasks_module,
    wait_until,
)
from z4j_agent_celery.config import DEFAULT_MAX_PAYLOAD_BYTES
from z4j_domain.redaction import REDACTED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e_app() -> Any:
    """The worker's tasks module, its client on the test Redis (emptied first)."""
    require_redis()
    return tasks_module()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def brain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Brain]:
    """A running brain on each backend, with the ``default`` project and an API key."""
    with running_brain(request, tmp_path_factory, request.param) as brain:
        yield brain


@pytest.fixture(scope="module")
def agent(brain: Brain) -> dict[str, str]:
    """The agent ``e2e-worker``'s credentials, minted with ``z4j agent create``."""
    return mint_agent(brain)


@pytest.fixture(scope="module")
def worker(
    e2e_app: Any, brain: Brain, agent: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """The module's worker on queue ``e2e``, reporting to ``brain`` as agent ``e2e-worker``."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = Worker(
        log, brain_url=brain.url, token=agent["token"], secret=agent["hmac_secret"], queue=QUEUE
    )
    try:
        yield worker
    finally:
        worker.stop()


# -- the tests ------------------------------------------------------------------------------


def test_the_bootstrap_line_is_printed_once(worker: Worker) -> None:
    """The worker prints the agent's bootstrap line exactly once."""
    assert worker.output().splitlines().count(STARTED_LINE) == 1, worker.output()


def test_the_worker_connects_once_and_is_listed(worker: Worker, brain: Brain) -> None:
    """One connection per worker; its heartbeat lists it online with pool, concurrency, queues."""
    assert wait_until(lambda: brain.worker(worker.hostname) is not None), brain.server.stderr
    listed = brain.worker(worker.hostname)
    assert listed is not None
    assert listed["status"] == "online"
    assert (listed["pool"], listed["concurrency"], listed["queues"]) == ("prefork", 2, [QUEUE])
    assert listed["software"].startswith("celery ")
    assert listed["last_heartbeat_at"] is not None
    connected = (
        f"INFO:z4j.gateway:agent {AGENT} of project default connected from {worker.hostname}"
        f" (pid {worker.process.pid}, celery-worker "
    )
    assert brain.server.stderr.count(connected) == 1, brain.server.stderr


def test_a_task_that_succeeds(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """A succeeded task is stored with its arguments, result, queue, worker and runtime."""
    result = e2e_app.add.delay(2, 3)
    assert result.get(timeout=20) == 5
    task = brain.wait_task(result.id, "succeeded", "received", "started", "succeeded")
    assert task["name"] == f"{TASKS}.add"
    assert (task["args"], task["kwargs"], task["result"]) == ([2, 3], {}, 5)
    assert (task["queue"], task["routing_key"], task["worker"]) == (QUEUE, QUEUE, worker.hostname)
    assert (task["attempt"], task["retries"]) == (0, 0)
    assert isinstance(task["runtime"], float)
    assert task["runtime"] >= 0
    assert task["exception"] is None
    assert task["traceback"] is None
    moments = [
        datetime.fromisoformat(task[field])
        for field in ("received_at", "started_at", "finished_at", "updated_at")
    ]
    assert all(moment.utcoffset() == timedelta(0) for moment in moments)
    assert moments == sorted(moments)
    assert task["first_seen_at"] == task["received_at"]
    # Celery makes a task sent from outside any task its own root.
    assert (task["root_id"], task["parent_id"]) == (result.id, None)
    assert sorted(event["kind"] for event in task["events"]) == [
        "received",
        "started",
        "succeeded",
    ]


def test_a_failure_is_stored_with_its_traceback(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """A failed task keeps its exception and the same full traceback Celery stored."""
    result = e2e_app.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=20)
    task = brain.wait_task(result.id, "failed", "received", "started", "failed")
    assert task["exception"] == "ValueError('boom')"
    assert task["traceback"].startswith("Traceback (most recent call last):")
    assert 'celery_app.py", line' in task["traceback"]
    assert "raise ValueError(message)" in task["traceback"]
    assert task["traceback"].rstrip().endswith("ValueError: boom")
    assert task["traceback"] == result.traceback
    assert task["result"] is None
    assert task["runtime"] >= 0


def test_retries_are_attempts(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """A task retried twice: two retried events, then its third try succeeds."""
    result = e2e_app.flaky.delay(2)
    assert result.get(timeout=20) == 2
    task = brain.wait_task(
        result.id,
        "succeeded",
        "retried",
        "sent",
        until=lambda t: len(events_of(t, "retried")) == 2 and len(events_of(t, "sent")) == 2,
    )
    # The delivery attempt is 2 x retries (+1 for a broker redelivery, none here).
    assert (task["attempt"], task["retries"], task["result"]) == (4, 2, 2)
    retried = events_of(task, "retried")
    assert [e["attempt"] for e in retried] == [0, 2]
    assert [e["exception"] for e in retried] == [
        "RuntimeError('attempt 0')",
        "RuntimeError('attempt 1')",
    ]
    assert all(e["traceback"].startswith("Traceback") for e in retried)
    assert [e["attempt"] for e in events_of(task, "succeeded")] == [4]
    # Each retry is re-published from the pool child: "sent" for retries 1 and 2.
    assert sorted(e["attempt"] for e in events_of(task, "sent")) == [2, 4]
    assert sorted(e["attempt"] for e in events_of(task, "received")) == [0, 2, 4]


def test_a_revoked_task(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """A task revoked before it runs is stored as revoked and never started."""
    task_id = str(uuid.uuid4())
    replies = e2e_app.app.control.revoke(
        task_id, destination=[worker.hostname], reply=True, limit=1, timeout=10
    )
    assert replies, "the worker did not acknowledge the revoke"
    e2e_app.sleepy.apply_async((0,), task_id=task_id)
    task = brain.wait_task(task_id, "revoked", "revoked")
    assert wait_until(lambda: e2e_app.app.AsyncResult(task_id).state == "REVOKED")
    assert task["exception"] == "revoked"
    assert (task["name"], task["worker"]) == (f"{TASKS}.sleepy", worker.hostname)
    assert not kinds_of(task) & {"started", "succeeded", "failed"}


def test_big_arguments_are_cut(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """A 100,000-character argument is stored as a bounded prefix ending in the marker."""
    result = e2e_app.echo.delay("x" * 100_000, small=1)
    result.get(timeout=20)
    task = brain.wait_task(result.id, "succeeded", "received", "succeeded")
    marker = "[z4j truncated 100000 chars]"
    (cut,) = task["args"]
    assert cut.endswith(marker)
    assert set(cut.removesuffix(marker)) == {"x"}
    assert len(cut) <= DEFAULT_MAX_PAYLOAD_BYTES
    assert task["kwargs"] == {"small": 1}
    (returned,) = task["result"]["args"]
    assert returned.endswith(marker)
    assert len(returned) <= DEFAULT_MAX_PAYLOAD_BYTES
    assert task["result"]["kwargs"] == {"small": 1}


#: Secrets a task is called with, and the text around them that must survive.
SECRETS: Final = {
    "password": "hunter2-not-for-eyes",
    "api_key": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6NGoifQ.c2lnbmF0dXJlLXZhbHVl",
    "url_password": "pg-s3cret-pw",
}


def test_secrets_never_reach_the_api_or_the_database(
    worker: Worker, brain: Brain, e2e_app: Any
) -> None:
    """password=, api_key=, a Bearer header and a URL password: none shown, none stored."""
    dsn = f"postgres://app:{SECRETS['url_password']}@db.internal:5432/shop"
    result = e2e_app.echo.delay(
        dsn,
        password=SECRETS["password"],
        api_key=SECRETS["api_key"],
        headers={"Authorization": f"Bearer {SECRETS['bearer']}", "Accept": "json"},
    )
    result.get(timeout=20)
    task = brain.wait_task(result.id, "succeeded", "received", "started", "succeeded")
    shown = json.dumps(task)
    stored = stored_rows_text(brain, result.id)
    for name, secret in SECRETS.items():
        assert secret not in shown, name
        assert secret not in stored, name
    assert task["kwargs"]["password"] == REDACTED
    assert task["kwargs"]["headers"]["Accept"] == "json"
    assert task["args"] == [f"postgres://app:{REDACTED}@db.internal:5432/shop"]
    assert (task["redacted"], task["arguments_redacted"]) == (True, True)
    assert task["result"]["kwargs"]["api_key"] == REDACTED


def test_a_chain_links_each_step_to_its_parent(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """The second step of a chain has the first as parent and root, as Celery says."""
    from celery import chain

    chained = chain(e2e_app.add.s(1, 2), e2e_app.add.s(3)).apply_async()
    assert chained.get(timeout=20) == 6
    first_id, second_id = chained.parent.id, chained.id
    first = brain.wait_task(first_id, "succeeded")
    second = brain.wait_task(second_id, "succeeded", "sent", "received")
    assert (first["root_id"], first["parent_id"]) == (first_id, None)
    assert (second["root_id"], second["parent_id"]) == (first_id, first_id)
    assert (second["args"], second["result"]) == ([3, 3], 6)
    assert (first["group_id"], second["group_id"]) == (None, None)


def test_a_group_gives_its_tasks_the_group_id(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """Each task of a group carries the GroupResult's id."""
    from celery import group

    grouped = group(e2e_app.add.s(i, i) for i in range(3)).apply_async()
    assert grouped.get(timeout=20) == [0, 2, 4]
    for child, expected in zip(grouped.results, [0, 2, 4], strict=True):
        task = brain.wait_task(child.id, "succeeded", "received")
        assert (task["group_id"], task["result"]) == (grouped.id, expected)
        assert (task["root_id"], task["parent_id"], task["chord_id"]) == (child.id, None, None)


def test_a_chord_links_header_and_body(worker: Worker, brain: Brain, e2e_app: Any) -> None:
    """Header tasks carry the group and chord ids; the body's parent is a header task."""
    from celery import chord

    chorded = chord([e2e_app.add.s(1, 1), e2e_app.add.s(2, 2)])(e2e_app.total.s())
    assert chorded.get(timeout=20) == 6
    header_ids = [child.id for child in chorded.parent.results]
    header: dict[str, dict[str, Any]] = {}
    for task_id in header_ids:
        task = brain.wait_task(task_id, "succeeded", "received")
        assert (task["group_id"], task["chord_id"]) == (chorded.parent.id, chorded.id)
        header[task_id] = task
    body = brain.wait_task(chorded.id, "succeeded", "sent", "received")
    assert (body["name"], body["args"], body["result"]) == (f"{TASKS}.total", [[2, 4]], 6)
    # Celery freezes the body into the header's group, and publishes it from the
    # header task that finished last (whichever that is): that task is the body's
    # parent, and the body shares its parent's root.
    assert (body["group_id"], body["chord_id"]) == (chorded.parent.id, None)
    assert body["parent_id"] in header
    assert body["root_id"] == header[body["parent_id"]]["root_id"]


def test_a_wrong_token_is_refused_and_tasks_still_run(
    e2e_app: Any, brain: Brain, agent: dict[str, str], tmp_path: Path
) -> None:
    """A bad token: one ERROR in the worker, a WARNING in the brain, and the tasks still run."""
    worker = Worker(
        tmp_path / "unauthorized.log",
        brain_url=brain.url,
        token="z4ja_wrong",
        secret=agent["hmac_secret"],
        queue="e2e-unauth",
    )
    try:
        assert wait_until(lambda: UNAUTHORIZED in worker.output()), worker.output()
        assert wait_until(lambda: BRAIN_UNAUTHORIZED.search(brain.server.stderr) is not None), (
            brain.server.stderr
        )
        result = e2e_app.add.apply_async((2, 2), queue="e2e-unauth")
        assert result.get(timeout=20) == 4
        assert worker.output().count(UNAUTHORIZED) == 1
        assert worker.output().splitlines().count(STARTED_LINE) == 1
        # Nothing of that worker reached the brain.
        assert brain.task(result.id) is None
        assert brain.worker(worker.hostname) is None
    finally:
        assert worker.stop() == 0


def test_a_brain_restart_loses_and_duplicates_nothing(
    worker: Worker, brain: Brain, e2e_app: Any
) -> None:
    """Tasks flow while the brain restarts; then each is stored once, succeeded, no event twice."""
    count, first_part = 300, 100
    results: list[Any] = []
    resume = threading.Event()

    def enqueue() -> None:
        for i in range(count):
            if i == first_part:
                resume.wait(30)
            results.append(e2e_app.add.apply_async((i, 1_000_000)))
            time.sleep(0.01)

    since = urllib.parse.quote(datetime.now(UTC).isoformat())
    producer = threading.Thread(target=enqueue, daemon=True)
    producer.start()
    old = brain.server
    try:
        # Mid-stream: the brain has stored some of the first part...
        assert wait_until(lambda: len(results) >= first_part // 2)
        brain.wait_task(results[0].id, "succeeded")
        # ... and the rest is sent while it stops, is away, and comes back.
        resume.set()
        assert old.stop() == 0, old.stderr
        time.sleep(2)  # the brain stays away for a while
        brain.start()
    finally:
        resume.set()
        producer.join(60)
    assert len(results) == count
    for i, result in enumerate(results):
        assert result.get(timeout=60) == i + 1_000_000

    def stored() -> list[tuple[str, str]]:
        """(id, state) of every task first seen since the test began, all pages."""
        tasks: list[tuple[str, str]] = []
        cursor = ""
        while True:
            status, page = brain.get(f"tasks?since={since}&limit=500{cursor}")
            assert status == 200, page
            tasks += [(item["id"], item["state"]) for item in page["items"]]
            if page["next_cursor"] is None:
                return tasks
            cursor = f"&cursor={urllib.parse.quote(page['next_cursor'])}"

    expected = {(result.id, "succeeded") for result in results}
    assert wait_until(lambda: expected <= set(stored()), 60, every=0.5), (
        f"{len(expected - set(stored()))} tasks missing; worker:\n{worker.output()}"
    )
    counts = Counter(stored())
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    for i, result in enumerate(results):
        task = brain.task(result.id)
        assert task is not None
        assert (task["state"], task["result"], task["attempt"]) == ("succeeded", i + 1_000_000, 0)
        event_ids = [event["id"] for event in task["events"]]
        assert len(event_ids) == len(set(event_ids)), task["events"]
        assert sorted(event["kind"] for event in task["events"]) == [
            "received",
            "started",
            "succeeded",
        ]
    # The stopping brain told the agent to come back later, and it did.
    assert "z4j brain connection closed (code 1012 " in worker.output()
    assert f"agent {AGENT} of project default connected from {worker.hostname}" in (
        brain.server.stderr
    )
    for server in (old, brain.server):
        assert "Traceback" not in server.stderr, server.stderr


def test_bye_on_shutdown_marks_the_worker_offline(worker: Worker, brain: Brain) -> None:
    """Last (it stops the module's worker): the agent says bye and the brain marks it offline."""
    connected = f"agent {AGENT} of project default connected from {worker.hostname}"
    assert wait_until(lambda: connected in brain.server.stderr), brain.server.stderr
    assert worker.stop() == 0
    assert wait_until(lambda: (brain.worker(worker.hostname) or {}).get("status") == "offline"), (
        f"{brain.worker(worker.hostname)}\nbrain:\n{brain.server.stderr}\nworker:\n{worker.output()}"
    )
    assert f"INFO:z4j.gateway:agent {AGENT} said bye (warm shutdown (SIGTERM))" in (
        brain.server.stderr
    )
