"""End to end: retry, cancel, bulk retry and purge from the API, through real agents and workers.

A real ``z4j serve`` (SQLite and PostgreSQL), real ``celery worker`` processes
(prefork, Redis broker and result backend) with the agent, and the brain's
HTTP API as the only way in: what the migration guide's checklist asks ("a
task you intentionally retry from z4j actually re-runs"; "the audit log entry
for the retry shows your user, the timestamp, and the action").

Two workers share the module: one stores Celery's extended results (the
originals of redacted arguments can be recovered), the other does not. Their
agents connect as the same minted agent; the brain hands each command to
either of them, and both read the same result backend.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import pytest
import redis

from tests.agents.e2e import (
    ADMIN_EMAIL,
    BACKEND,
    TASKS,
    Brain,
    Worker,
    mint_agent,
    require_redis,
    running_brain,
    tasks_module,
    wait_until,
)
from z4j_domain.redaction import REDACTED

pytestmark = pytest.mark.slow

#: The queue of the worker that stores extended results, and of the one that does not.
EXTENDED: Final = "e2e-actions-ext"
PLAIN: Final = "e2e-actions-plain"


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
    """The agent's credentials, minted with ``z4j agent create``."""
    return mint_agent(brain)


def start_worker(
    brain: Brain, agent: dict[str, str], tmp_path_factory: Any, queue: str, **environment: str
) -> Worker:
    log = tmp_path_factory.mktemp("worker") / f"{queue}.log"
    return Worker(
        log,
        brain_url=brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        queue=queue,
        environment=environment,
    )


@pytest.fixture(scope="module")
def workers(
    e2e_app: Any, brain: Brain, agent: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Worker]]:
    """A worker with extended results on EXTENDED, one without on PLAIN, both connected."""
    started = {
        EXTENDED: start_worker(
            brain, agent, tmp_path_factory, EXTENDED, Z4J_E2E_RESULT_EXTENDED="1"
        ),
    }
    try:
        started[PLAIN] = start_worker(brain, agent, tmp_path_factory, PLAIN)
        for worker in started.values():
            assert wait_until(lambda w=worker: brain.worker(w.hostname) is not None), (
                brain.server.stderr
            )
        yield started
    finally:
        for worker in started.values():
            worker.stop()


# -- talking to the brain -------------------------------------------------------------------


def call(
    brain: Brain,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    **headers: str,
) -> tuple[int, Any]:
    """``method /api/v1/projects/default/<path>``; status and JSON answer."""
    return brain.call(method, f"/api/v1/projects/default/{path}", body, key=key, **headers)


def failed_task(brain: Brain, result: Any) -> dict[str, Any]:
    """Wait for the Celery task behind ``result`` to fail, in Celery and in the brain."""
    with pytest.raises(RuntimeError, match="the first run fails"):
        result.get(timeout=30)
    return brain.wait_task(result.id, "failed", "failed")


def counter(key: str) -> int:
    """How often a ``fails_first`` task with ``key`` ran (kept in the result backend's Redis)."""
    client = redis.Redis.from_url(BACKEND)
    try:
        return int(client.get(key) or 0)
    finally:
        client.close()


def retry(brain: Brain, task_id: str, **body: Any) -> dict[str, Any]:
    status, command = call(brain, "POST", f"tasks/{task_id}/retry", body or None)
    assert status == 202, command
    assert command["status"] in ("pending", "delivered", "acked")
    return command


# -- the tests ------------------------------------------------------------------------------


def test_a_retried_failed_task_runs_again_and_succeeds_linked_to_the_original(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any
) -> None:
    """fails_first fails on its first run and succeeds after: its retry ends succeeded, linked."""
    key = f"fails-first:{uuid.uuid4().hex}"
    original = failed_task(brain, e2e_app.fails_first.apply_async((key,), queue=EXTENDED))
    command = retry(brain, original["id"])
    done = brain.wait_command(command["id"])
    assert done["status"] == "succeeded", done
    new_id = done["result"]["new_task_id"]
    assert done["result"]["outcome"] == "published"
    retried = brain.wait_task(new_id, "succeeded", "succeeded")
    assert retried["retry_of"] == original["id"]
    assert (retried["name"], retried["queue"], retried["args"]) == (
        f"{TASKS}.fails_first",
        EXTENDED,
        [key],
    )
    assert retried["result"] == 2
    assert counter(key) == 2
    assert [t["id"] for t in brain.task(original["id"])["retried_by"]] == [new_id]  # type: ignore[index]
    status, page = call(brain, "GET", "audit?action=task.retry.")
    assert status == 200, page
    mine = [e for e in page["items"] if e["target"] == f"task:{original['id']}"]
    assert [e["action"] for e in reversed(mine)] == ["task.retry.requested", "task.retry.succeeded"]
    assert {e["actor"] for e in mine} == {ADMIN_EMAIL}
    assert all(e["at"] for e in mine)
    assert mine[0]["details"]["result"]["new_task_id"] == new_id


@pytest.mark.parametrize(("queue", "extended"), [(EXTENDED, True), (PLAIN, False)])
def test_a_retry_of_a_redacted_password_recovers_it_only_from_extended_results(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any, queue: str, extended: bool
) -> None:
    """The stored kwargs say [z4j redacted]; the retry sends the real password or refuses."""
    key = f"login:{uuid.uuid4().hex}"
    result = e2e_app.login.apply_async(kwargs={"key": key, "password": "hunter2"}, queue=queue)
    original = failed_task(brain, result)
    assert original["kwargs"]["password"] == REDACTED
    assert original["arguments_redacted"] is True
    command = retry(brain, original["id"])
    done = brain.wait_command(command["id"])
    if extended:
        assert done["status"] == "succeeded", done
        retried = brain.wait_task(done["result"]["new_task_id"], "succeeded", "succeeded")
        # The worker got the real password (it checks it), and z4j shows it redacted again.
        assert retried["kwargs"]["password"] == REDACTED
        assert retried["retry_of"] == original["id"]
        assert counter(key) == 2
    else:
        assert done["status"] == "failed", done
        assert "extended" in done["error"]
        assert "result_extended=True" in done["error"]
        assert "nothing was published" in done["error"]
        assert done["result"]["outcome"] == "refused"
        assert "new_task_id" not in done["result"]
        time.sleep(1)  # anything published would have run by now
        assert counter(key) == 1
        assert brain.task(original["id"])["retried_by"] == []  # type: ignore[index]


def test_cancel_of_a_queued_task_keeps_it_from_running(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any
) -> None:
    """Both pool processes busy, the task waits in the queue; cancelled, it never starts."""
    gate = f"gate:{uuid.uuid4().hex}"
    blockers = [e2e_app.gate.apply_async((gate,), queue=PLAIN) for _ in range(2)]
    for blocker in blockers:
        brain.wait_task(blocker.id, "started", "started")
    key = f"queued:{uuid.uuid4().hex}"
    waiting = e2e_app.fails_first.apply_async((key,), queue=PLAIN)
    assert wait_until(
        lambda: (brain.task(waiting.id) or {}).get("state") in ("pending", "received")
    )
    status, command = call(brain, "POST", f"tasks/{waiting.id}/cancel")
    assert status == 202, command
    done = brain.wait_command(command["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"task_id": waiting.id, "outcome": "revoked"}
    release(gate, 2)
    for blocker in blockers:
        assert blocker.get(timeout=30) is True
    task = brain.wait_task(waiting.id, "revoked", "revoked")
    assert "started" not in {event["kind"] for event in task["events"]}
    assert counter(key) == 0


def release(gate: str, count: int) -> None:
    client = redis.Redis.from_url(BACKEND)
    try:
        client.rpush(gate, *["go"] * count)
    finally:
        client.close()


def test_terminate_stops_a_running_task(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any
) -> None:
    """A task sleeping a minute is killed by a cancel with terminate; it ends revoked at once."""
    running = e2e_app.sleepy.apply_async((60,), queue=EXTENDED)
    brain.wait_task(running.id, "started", "started")
    began = time.monotonic()
    status, command = call(brain, "POST", f"tasks/{running.id}/cancel", {"terminate": True})
    assert status == 202, command
    done = brain.wait_command(command["id"])
    assert done["result"] == {"task_id": running.id, "outcome": "terminated"}
    task = brain.wait_task(running.id, "revoked", "revoked", timeout=30)
    assert time.monotonic() - began < 60
    assert task["finished_at"] is not None
    assert running.state == "REVOKED"


def test_a_command_for_an_offline_agent_runs_after_it_reconnects(
    brain: Brain,
    agent: dict[str, str],
    e2e_app: Any,
    workers: dict[str, Worker],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every worker stopped: the retry waits (pending); a worker starts; the retry runs."""
    key = f"offline:{uuid.uuid4().hex}"
    original = failed_task(brain, e2e_app.fails_first.apply_async((key,), queue=EXTENDED))
    for worker in workers.values():
        worker.stop()
    assert wait_until(
        lambda: all(brain.worker(w.hostname)["status"] == "offline" for w in workers.values())  # type: ignore[index]
    )
    command = retry(brain, original["id"])
    time.sleep(2)  # two dispatcher looks with nobody to take it
    status, still = call(brain, "GET", f"commands/{command['id']}")
    assert (status, still["status"]) == (200, "pending")
    for queue in (EXTENDED, PLAIN):
        environment = {"Z4J_E2E_RESULT_EXTENDED": "1"} if queue == EXTENDED else {}
        workers[queue] = start_worker(brain, agent, tmp_path_factory, queue, **environment)
    done = brain.wait_command(command["id"])
    assert done["status"] == "succeeded", done
    brain.wait_task(done["result"]["new_task_id"], "succeeded", "succeeded")
    assert counter(key) == 2


def test_the_same_idempotency_key_runs_the_retry_once(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any
) -> None:
    """Three requests with one key: one command, one new task, one more run."""
    key = f"idempotent:{uuid.uuid4().hex}"
    original = failed_task(brain, e2e_app.fails_first.apply_async((key,), queue=EXTENDED))
    ids = set()
    for _ in range(3):
        status, command = call(
            brain, "POST", f"tasks/{original['id']}/retry", **{"Idempotency-Key": key}
        )
        assert status == 202, command
        ids.add(command["id"])
    assert len(ids) == 1
    done = brain.wait_command(ids.pop())
    brain.wait_task(done["result"]["new_task_id"], "succeeded", "succeeded")
    time.sleep(1)
    assert counter(key) == 2
    assert len(brain.task(original["id"])["retried_by"]) == 1  # type: ignore[index]


def test_a_viewers_retry_is_refused_and_runs_nothing(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any
) -> None:
    """A member with the viewer role gets 403; no command is stored, nothing runs."""
    email = f"viewer-{uuid.uuid4().hex[:8]}@example.com"
    status, created = brain.call(
        "POST", "/api/v1/users", {"email": email, "password": "a viewer's password"}
    )
    assert status == 201, created
    status, member = call(brain, "PUT", f"members/{email}", {"role": "viewer"})
    assert status == 200, member
    viewer_key = brain.z4j("api-key", "create", "--email", email, "--name", "viewer")["key"]
    key = f"viewer:{uuid.uuid4().hex}"
    original = failed_task(brain, e2e_app.fails_first.apply_async((key,), queue=EXTENDED))
    _, before = call(brain, "GET", "commands?limit=200")
    status, refused = call(brain, "POST", f"tasks/{original['id']}/retry", key=viewer_key)
    assert status == 403, refused
    _, after = call(brain, "GET", "commands?limit=200")
    assert after["items"] == before["items"]
    time.sleep(1)
    assert counter(key) == 1


def test_bulk_retry_of_a_thousand_failed_tasks_runs_each_exactly_once(
    workers: dict[str, Worker], brain: Brain, e2e_app: Any
) -> None:
    """1,000 failed tasks selected by filter: the dry run counts them; each re-runs once."""
    run = uuid.uuid4().hex[:8]
    since = datetime.now(UTC).isoformat()
    for n in range(1000):
        e2e_app.fails_first.apply_async((f"bulk:{run}:{n}",), queue=PLAIN)
    selection = {"filter": {"state": "failed", "name": f"{TASKS}.fails_first", "since": since}}
    dry: dict[str, Any] = {}

    def all_failed() -> bool:
        nonlocal dry
        status, dry = call(brain, "POST", "tasks/bulk-retry", selection | {"dry_run": True})
        assert status == 200, dry
        return bool(dry["count"] == 1000)

    assert wait_until(all_failed, 180, every=0.5), dry
    assert (dry["capped"], len(dry["sample"])) == (False, 20)
    status, command = call(brain, "POST", "tasks/bulk-retry", selection)
    assert status == 202, command
    done = brain.wait_command(command["id"], timeout=180)
    assert done["status"] == "succeeded", done
    assert done["result"] == {
        "total": 1000,
        "done": 1000,
        "outcomes": {"published": 1000},
        "problems": [],
    }

    def all_reran() -> bool:
        return all(counter(f"bulk:{run}:{n}") >= 2 for n in range(1000))

    assert wait_until(all_reran, 180, every=0.5)
    time.sleep(2)  # a second run of any of them would show by now
    assert [counter(f"bulk:{run}:{n}") for n in range(1000)] == [2] * 1000
    # The retries are tasks of their own, each linked to its original.
    retried = {"filter": {"state": "succeeded", "name": f"{TASKS}.fails_first", "since": since}}

    def all_stored() -> bool:
        status, counted = call(brain, "POST", "tasks/bulk-retry", retried | {"dry_run": True})
        return status == 200 and counted["count"] == 1000

    assert wait_until(all_stored, 60, every=0.5)
    for sample in dry["sample"]:
        task = brain.task(sample["id"])
        assert task is not None
        assert len(task["retried_by"]) == 1, task
        assert task["retried_by"][0]["state"] == "succeeded"


def test_the_audit_log_verifies_after_all_of_it(brain: Brain, workers: dict[str, Worker]) -> None:
    """``z4j audit verify`` passes on the log every action above appended to."""
    verified = brain.z4j("audit", "verify")
    assert verified["ok"] is True, verified
    assert verified["verified"] > 10
