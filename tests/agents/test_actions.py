"""The agent carries out the brain's commands: retry, cancel and purge, on real Celery and Redis.

One real ``celery worker`` (prefork, extended results on) with the agent,
connected to the fake brain, runs the tasks a retry publishes and receives
the revokes; its agent answers command frames from the fake brain. The
:class:`~z4j_agent_celery.actions.Executor` is also driven directly, with a
client app on the worker's broker and result backend, publishing to queues
no worker reads where a test counts what was (or was not) published. Purge
runs on Redis and on RabbitMQ (``Z4J_TEST_AMQP_URL``).

Redis databases 9 and 10 (the other agent tests use 11 to 14). Needs Redis at
``Z4J_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``): skipped with a
message naming it when unreachable, failed instead when
``Z4J_REQUIRE_SERVICES=1``, as the end-to-end tests; RabbitMQ the same, for
the purge on it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any, Final

import pytest
import redis
from celery import Celery

from tests.agents.e2e import (
    AMQP_URL,
    REDIS_URL,
    TASKS,
    Worker,
    require_redis,
    require_service,
    wait_until,
)
from tests.serving import free_port
from z4j_agent_celery.actions import Executor
from z4j_agent_celery.config import AgentConfig
from z4j_agent_celery.runtime import AgentRuntime
from z4j_domain.commands import CommandPart, PartReport, RetryItem, retry_task_id
from z4j_domain.redaction import REDACTED

from .fake_brain import FAST, SECRET, TOKEN, FakeBrain

pytestmark = pytest.mark.slow

BROKER: Final = f"{REDIS_URL}/9"
BACKEND: Final = f"{REDIS_URL}/10"
WHOAMI: Final = f"{TASKS}.whoami"
GATE: Final = f"{TASKS}.gate"


@pytest.fixture(scope="module")
def redis_ready() -> Iterator[None]:
    """Empty broker and result databases, or a skip (a failure in CI) naming Redis."""
    require_redis(BROKER, BACKEND)
    yield
    require_redis(BROKER, BACKEND)  # leave them empty


@pytest.fixture(scope="module")
def brain() -> Iterator[FakeBrain]:
    """One fake brain for the module."""
    with FakeBrain(heartbeat_interval=0.2) as fake:
        yield fake


@pytest.fixture(scope="module")
def worker(
    redis_ready: None, brain: FakeBrain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A worker (prefork, 2 children, extended results) whose agent said hello."""
    worker = Worker(
        tmp_path_factory.mktemp("actions") / "worker.log",
        brain_url=brain.url,
        token=TOKEN,
        secret=SECRET,
        queue=f"actions-{uuid.uuid4().hex[:6]}",
        broker=BROKER,
        backend=BACKEND,
        agent_name="actions",
        environment={"Z4J_E2E_RESULT_EXTENDED": "1"},
    )
    try:
        if not wait_until(lambda: hello_of(brain, worker.hostname) is not None, 60):
            pytest.fail(f"the worker's agent did not connect:\n{worker.output()}")
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def client(redis_ready: None) -> Celery:
    """A client of the worker's broker and result backend (tasks are sent by name)."""
    return Celery("actions-client", broker=BROKER, backend=BACKEND, set_as_current=False)


@pytest.fixture(scope="module")
def broker_db(redis_ready: None) -> Iterator[redis.Redis]:
    """The broker's Redis database, to count the messages waiting in a queue."""
    connection = redis.Redis.from_url(BROKER)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def backend_db(redis_ready: None) -> Iterator[redis.Redis]:
    """The result backend's Redis database, where the ``gate`` tasks wait for a push."""
    connection = redis.Redis.from_url(BACKEND)
    yield connection
    connection.close()


@pytest.fixture
def idle_queue() -> str:
    """A queue no worker reads: what is published there stays."""
    return f"idle-{uuid.uuid4().hex[:8]}"


def hello_of(brain: FakeBrain, hostname: str) -> dict[str, Any] | None:
    with brain.lock:
        return next((h for h in brain.hellos if h.get("hostname") == hostname), None)


def part(action: str, items: list[dict[str, Any]] = [], **options: Any) -> CommandPart:  # noqa: B006
    """Part 0 of a new command."""
    return CommandPart(
        command_id=str(uuid.uuid4()), action=action, part=0, items=items, options=options
    )


def retry(
    command: CommandPart | str,
    task_id: str,
    queue: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A retry item of ``whoami`` as the brain sends it (arguments ``None``: recover them)."""
    command_id = command if isinstance(command, str) else command.command_id
    return RetryItem(
        task_id=task_id,
        new_task_id=retry_task_id(command_id, task_id),
        name=WHOAMI,
        queue=queue,
        args=args,
        kwargs=kwargs,
        recover_arguments=args is None,
        **fields,
    ).to_dict()


def retry_part(
    items: list[tuple[str, str, list[Any] | None, dict[str, Any] | None]],
) -> CommandPart:
    """A retry part of ``(task_id, queue, args, kwargs)`` items."""
    command_id = str(uuid.uuid4())
    return CommandPart(
        command_id=command_id,
        action="retry",
        part=0,
        items=[retry(command_id, *item) for item in items],
    )


def outcomes(report: PartReport) -> list[dict[str, Any]]:
    return [outcome.to_dict() for outcome in report.outcomes]


def ran(client: Celery, worker: Worker, *args: Any, **kwargs: Any) -> str:
    """Run ``whoami`` on the worker; its task id (the result backend holds its extended result)."""
    result = client.send_task(WHOAMI, args, kwargs, queue=worker.queue)
    result.get(timeout=30)
    return str(result.id)


# -- retry -----------------------------------------------------------------------------------


def test_a_retry_publishes_the_task_under_its_new_id_with_the_retry_header(
    worker: Worker, client: Celery
) -> None:
    """The worker runs the task the brain described, as the new id, told what it retries."""
    original = str(uuid.uuid4())
    command = retry_part([(original, worker.queue, [1, "two"], {"three": 3})])
    new_id = retry_task_id(command.command_id, original)
    report = Executor(client).run(command)
    assert report.body() == {
        "id": command.command_id,
        "command": "retry",
        "part": 0,
        "status": "done",
        "outcomes": [{"task_id": original, "outcome": "published", "new_task_id": new_id}],
    }
    assert client.AsyncResult(new_id).get(timeout=30) == {
        "id": new_id,
        "retry_of": original,
        "args": [1, "two"],
        "kwargs": {"three": 3},
    }


def test_recovered_arguments_come_from_the_extended_result(worker: Worker, client: Celery) -> None:
    """Arguments the brain could not send are the original ones, read from the result backend."""
    original = ran(client, worker, "card", 4242, pin=1234)
    command = retry_part([(original, worker.queue, None, None)])
    report = Executor(client).run(command)
    new_id = retry_task_id(command.command_id, original)
    assert outcomes(report) == [
        {"task_id": original, "outcome": "published", "new_task_id": new_id}
    ]
    assert client.AsyncResult(new_id).get(timeout=30) == {
        "id": new_id,
        "retry_of": original,
        "args": ["card", 4242],
        "kwargs": {"pin": 1234},
    }


def test_without_an_extended_result_a_recovery_is_refused_and_nothing_published(
    client: Celery, broker_db: redis.Redis, idle_queue: str
) -> None:
    """No result backend, a task never stored, a result stored without its arguments: refused."""
    never_stored, plain = str(uuid.uuid4()), str(uuid.uuid4())
    client.backend.store_result(plain, 5, "SUCCESS")  # as a worker without result_extended does
    without_backend = Executor(Celery("no-backend", broker=BROKER, set_as_current=False))
    report = without_backend.run(retry_part([(plain, idle_queue, None, None)]))
    (refused,) = outcomes(report)
    assert refused["outcome"] == "refused"
    assert "has no result backend" in refused["reason"]
    assert (
        "(set result_extended=True on the Celery app); nothing was published" in (refused["reason"])
    )
    report = Executor(client).run(
        retry_part([(never_stored, idle_queue, None, None), (plain, idle_queue, None, None)])
    )
    assert outcomes(report) == [
        {
            "task_id": task_id,
            "outcome": "refused",
            "reason": "the stored arguments were redacted or truncated and the result backend"
            f" holds no extended result for task {task_id} (set result_extended=True on the"
            " Celery app); nothing was published",
        }
        for task_id in (never_stored, plain)
    ]
    assert broker_db.llen(idle_queue) == 0


def test_a_marker_is_never_published(
    worker: Worker, client: Celery, broker_db: redis.Redis, idle_queue: str
) -> None:
    """In the brain's arguments or in the recovered ones, a redaction marker is refused."""
    marked = ran(client, worker, note=f"{REDACTED} by the sender")
    command_id = str(uuid.uuid4())
    sent = {**retry(command_id, "sent", idle_queue, [], {}), "kwargs": {"password": REDACTED}}
    command = CommandPart(
        command_id=command_id,
        action="retry",
        part=0,
        items=[retry(command_id, marked, idle_queue), sent],
    )
    assert outcomes(Executor(client).run(command)) == [
        {
            "task_id": marked,
            "outcome": "refused",
            "reason": f"the arguments of task {marked} in the result backend hold a redaction or"
            " truncation marker; z4j never publishes one; nothing was published",
        },
        {
            "task_id": "sent",
            "outcome": "refused",
            "reason": "invalid retry item: the arguments hold a redaction or truncation marker;"
            " z4j never publishes one; nothing was published",
        },
    ]
    assert broker_db.llen(idle_queue) == 0


def test_invalid_items_are_refused_one_by_one(
    client: Celery, broker_db: redis.Redis, idle_queue: str
) -> None:
    """A bad item is refused with the reason; the good ones of the part are published."""
    command_id = str(uuid.uuid4())
    good = retry(command_id, "good", idle_queue, [], {})
    both = retry(command_id, "both", idle_queue, [], {}, countdown=5.0)
    both["eta"] = "2030-01-01T00:00:00+00:00"
    command = CommandPart(
        command_id=command_id,
        action="retry",
        part=0,
        items=[{"name": WHOAMI, "args": [], "kwargs": {}}, good, both],
    )
    missing, published, timing = outcomes(Executor(client).run(command))
    assert (missing["task_id"], missing["outcome"]) == ("#0", "refused")
    assert "'task_id' must be a non-empty string" in missing["reason"]
    assert published["outcome"] == "published"
    assert timing == {
        "task_id": "both",
        "outcome": "refused",
        "reason": "invalid retry item: give countdown or eta, not both; nothing was published",
    }
    assert broker_db.llen(idle_queue) == 1


def test_a_part_runs_once(client: Celery, broker_db: redis.Redis, idle_queue: str) -> None:
    """The same part again, at once or later, gets the first report and publishes nothing."""
    executor = Executor(client)
    command = retry_part([(str(uuid.uuid4()), idle_queue, [1], {})])
    reports: list[PartReport] = []
    threads = [threading.Thread(target=lambda: reports.append(executor.run(command))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    reports.append(executor.run(command))
    assert executor.finished(command.key) is reports[0]
    assert all(report is reports[0] for report in reports)
    assert executor.runs == 1
    assert broker_db.llen(idle_queue) == 1
    # Another part of the same command is another part.
    second = CommandPart(
        command_id=command.command_id, action="retry", part=1, items=list(command.items)
    )
    assert executor.run(second) is not reports[0]
    assert (executor.runs, broker_db.llen(idle_queue)) == (2, 2)


def test_only_the_last_parts_are_remembered(
    client: Celery, broker_db: redis.Redis, idle_queue: str
) -> None:
    executor = Executor(client, remembered=2)
    parts = [retry_part([(str(uuid.uuid4()), idle_queue, [n], {})]) for n in range(3)]
    for each in parts:
        executor.run(each)
    assert executor.finished(parts[0].key) is None
    assert all(executor.finished(each.key) is not None for each in parts[1:])


def test_a_broker_that_cannot_be_reached_fails_the_items(idle_queue: str) -> None:
    """The first publish fails with the broker's error; the others are not tried again."""
    down = Celery("down", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    report = Executor(down).run(
        retry_part([(task_id, idle_queue, [], {}) for task_id in ("a", "b", "c")])
    )
    first, *rest = outcomes(report)
    assert first["outcome"] == "failed"
    assert first["reason"].startswith("the task could not be published: OperationalError")
    assert [r["outcome"] for r in rest] == ["failed", "failed"]
    assert all("the broker failed for an earlier task" in r["reason"] for r in rest)
    cancel = Executor(down).run(part("cancel", [{"task_id": "a"}, {"task_id": "b"}]))
    assert [o.outcome.value for o in cancel.outcomes] == ["failed", "failed"]
    assert all(
        (o.reason or "").startswith("the revoke could not be broadcast: OperationalError")
        for o in cancel.outcomes
    )
    purge = Executor(down).run(part("purge", queue=idle_queue, confirm_depth=0))
    assert purge.status.value == "failed"
    assert (purge.error or "").startswith("the broker failed: OperationalError")
    assert (purge.error or "").endswith("; nothing was purged")


# -- cancel ----------------------------------------------------------------------------------


def revoked_on(client: Celery, worker: Worker, task_id: str) -> bool:
    replies = client.control.inspect(destination=[worker.hostname], timeout=1).revoked() or {}
    return task_id in replies.get(worker.hostname, [])


def test_a_cancelled_task_never_runs(
    worker: Worker, client: Celery, brain: FakeBrain, backend_db: redis.Redis
) -> None:
    """Both pool processes held; the revoke reaches the worker first; the task ends revoked."""
    key = f"gate-{uuid.uuid4().hex}"
    gates = [client.send_task(GATE, (key,), queue=worker.queue) for _ in range(2)]
    assert wait_until(lambda: all("started" in brain.kinds_of(gate.id) for gate in gates))
    task = client.send_task(WHOAMI, ("never",), queue=worker.queue)
    report = Executor(client).run(part("cancel", [{"task_id": task.id}]))
    assert outcomes(report) == [{"task_id": task.id, "outcome": "revoked"}]
    assert wait_until(lambda: revoked_on(client, worker, task.id))
    backend_db.rpush(key, "go", "go")
    assert [gate.get(timeout=30) for gate in gates] == [True, True]
    assert wait_until(lambda: "revoked" in brain.kinds_of(task.id))
    assert client.AsyncResult(task.id).state == "REVOKED"
    assert not brain.kinds_of(task.id) & {"started", "succeeded", "failed"}


def test_a_terminate_kills_the_running_task(
    worker: Worker, client: Celery, brain: FakeBrain
) -> None:
    key = f"gate-{uuid.uuid4().hex}"
    gate = client.send_task(GATE, (key,), queue=worker.queue)
    assert wait_until(lambda: "started" in brain.kinds_of(gate.id))
    report = Executor(client).run(
        part("cancel", [{"task_id": gate.id}], terminate=True, signal="SIGKILL")
    )
    assert outcomes(report) == [{"task_id": gate.id, "outcome": "terminated"}]
    assert wait_until(lambda: client.AsyncResult(gate.id).state == "REVOKED")
    assert wait_until(lambda: "revoked" in brain.kinds_of(gate.id))
    assert "succeeded" not in brain.kinds_of(gate.id)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (
            {"terminate": True, "signal": "SIGHUP"},
            "signal 'SIGHUP' is not one a cancel sends (SIGINT, SIGKILL, SIGQUIT, SIGTERM,"
            " SIGUSR1); nothing was revoked",
        ),
        ({"terminate": "yes"}, "'terminate' must be true or false; nothing was revoked"),
    ],
)
def test_a_cancel_with_bad_options_is_refused(
    client: Celery, options: dict[str, Any], reason: str
) -> None:
    task_id = str(uuid.uuid4())
    report = Executor(client).run(part("cancel", [{"task_id": task_id}, {"id": 1}], **options))
    assert outcomes(report) == [
        {"task_id": task_id, "outcome": "refused", "reason": reason},
        {"task_id": "#1", "outcome": "refused", "reason": reason},
    ]
    assert client.AsyncResult(task_id).state == "PENDING"  # the worker never marked it revoked


# -- purge -----------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def purge_client(request: pytest.FixtureRequest, redis_ready: None) -> Iterator[Celery]:
    """A client of each broker."""
    if request.param == "redis":
        yield Celery("purge-redis", broker=BROKER, set_as_current=False)
        return
    app = Celery("purge-amqp", broker=AMQP_URL, set_as_current=False)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:
        require_service("RabbitMQ (Z4J_TEST_AMQP_URL)", AMQP_URL, error)
    yield app


def purge(executor: Executor, queue: str, confirm: int | None = None) -> dict[str, Any]:
    return executor.run(part("purge", queue=queue, confirm_depth=confirm)).body()


def broker_depth(client: Celery, queue: str) -> int:
    """Messages ready in ``queue``, as the broker counts them."""
    with client.connection_for_write() as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        finally:
            channel.close()


def test_a_purge_needs_the_current_depth_confirmed(purge_client: Celery, idle_queue: str) -> None:
    """Without the depth, or with another one, nothing is purged; with it the queue is emptied."""
    executor = Executor(purge_client)
    for n in range(3):
        purge_client.send_task(WHOAMI, (n,), queue=idle_queue)
    # AMQP publishes without waiting for the broker to enqueue: let the three arrive first.
    assert wait_until(lambda: broker_depth(purge_client, idle_queue) == 3, 30)
    try:
        for confirm in (None, 2):
            answer = purge(executor, idle_queue, confirm)
            assert (answer["status"], answer["result"]) == (
                "failed",
                {"queue": idle_queue, "depth": 3},
            )
            assert answer["error"] == (
                f"confirmation needed: queue {idle_queue!r} holds 3 messages now;"
                " purge again confirming 3"
            )
        done = purge(executor, idle_queue, 3)
        assert (done["status"], done["result"]) == (
            "done",
            {"queue": idle_queue, "depth": 3, "purged": 3},
        )
        assert "error" not in done
        # Empty now, and still known (on Redis, by its binding: an empty list has no key).
        assert purge(executor, idle_queue, 0)["result"] == {
            "queue": idle_queue,
            "depth": 0,
            "purged": 0,
        }
        unknown = purge(executor, f"unknown-{idle_queue}", 0)
        assert (unknown["status"], unknown["error"]) == (
            "failed",
            f"the broker has no queue 'unknown-{idle_queue}'; nothing was purged",
        )
    finally:
        with purge_client.connection_for_write() as connection:
            connection.default_channel.queue_delete(idle_queue)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"confirm_depth": 1}, "a purge needs the name of the queue ('queue')"),
        (
            {"queue": "q", "confirm_depth": "1"},
            "'confirm_depth' must be a number of messages or null",
        ),
        (
            {"queue": "q", "confirm_depth": True},
            "'confirm_depth' must be a number of messages or null",
        ),
    ],
)
def test_a_purge_with_bad_options_fails(
    client: Celery, options: dict[str, Any], error: str
) -> None:
    answer = Executor(client).run(part("purge", **options)).body()
    assert (answer["status"], answer["error"]) == ("failed", error)


# -- through the agent's connection ------------------------------------------------------------


def test_the_agent_says_what_it_can_run(worker: Worker, brain: FakeBrain) -> None:
    hello = hello_of(brain, worker.hostname)
    assert hello is not None
    assert hello["capabilities"] == ["retry", "cancel", "purge"]


def test_a_command_is_acked_then_done_and_a_repeat_answered_alike(
    worker: Worker, brain: FakeBrain, client: Celery, broker_db: redis.Redis, idle_queue: str
) -> None:
    """The worker's agent publishes once; a repeat of the part gets the same report."""
    original = str(uuid.uuid4())
    command = retry_part([(original, worker.queue, [7], {}), (original, idle_queue, [8], {})])
    new_id = retry_task_id(command.command_id, original)
    assert brain.command(command.body(), hostname=worker.hostname) == 1
    acked, done = brain.results_of(command.command_id, 2)
    head = {"id": command.command_id, "command": "retry", "part": 0}
    assert acked == {**head, "status": "acked", "outcomes": []}
    published = {"task_id": original, "outcome": "published", "new_task_id": new_id}
    assert done == {**head, "status": "done", "outcomes": [published, published]}
    assert client.AsyncResult(new_id).get(timeout=30)["retry_of"] == original
    brain.command(command.body(), hostname=worker.hostname)
    assert brain.results_of(command.command_id, 3)[2] == done
    assert broker_db.llen(idle_queue) == 1  # the second item, published once


def test_a_purge_through_the_agent(
    worker: Worker, brain: FakeBrain, client: Celery, idle_queue: str
) -> None:
    """Refused with the depth to confirm, then done; each answered acked first."""
    for n in range(2):
        client.send_task(WHOAMI, (n,), queue=idle_queue)
    asked = part("purge", queue=idle_queue)
    brain.command(asked.body(), hostname=worker.hostname)
    acked, refused = brain.results_of(asked.command_id, 2)
    assert (acked["status"], refused["status"]) == ("acked", "failed")
    assert refused["result"] == {"queue": idle_queue, "depth": 2}
    confirmed = part("purge", queue=idle_queue, confirm_depth=refused["result"]["depth"])
    brain.command(confirmed.body(), hostname=worker.hostname)
    acked, done = brain.results_of(confirmed.command_id, 2)
    assert (acked["status"], done["status"]) == ("acked", "done")
    assert done["result"] == {"queue": idle_queue, "depth": 2, "purged": 2}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"id": "bad-items", "command": "retry", "part": 0, "items": "all"},
            "the agent could not read the command: 'items' must be a list of at most 200 objects",
        ),
        (
            {"id": "bad-options", "command": "purge", "part": 3, "options": []},
            "the agent could not read the command: 'options' must be an object",
        ),
    ],
)
def test_a_malformed_command_is_answered_failed(
    worker: Worker, brain: FakeBrain, body: dict[str, Any], error: str
) -> None:
    brain.command(body, hostname=worker.hostname)
    (answer,) = brain.results_of(body["id"], 1)
    assert answer == {
        "id": body["id"],
        "command": body["command"],
        "part": body["part"],
        "status": "failed",
        "outcomes": [],
        "error": error,
    }
    assert wait_until(
        lambda: f"refuses a malformed {body['command']} command from the brain" in worker.output()
    )


def test_a_command_without_an_id_is_only_logged(worker: Worker, brain: FakeBrain) -> None:
    """No id: nothing to answer; the connection stays and the next command is answered."""
    brain.command({"command": "cancel", "part": 0, "items": []}, hostname=worker.hostname)
    follow = part("cancel", [])
    brain.command(follow.body(), hostname=worker.hostname)
    acked, done = brain.results_of(follow.command_id, 2)
    assert (acked["status"], done["status"]) == ("acked", "done")
    assert "refuses a malformed cancel command" in worker.output()


def test_an_agent_without_an_app_cannot_run_commands(brain: FakeBrain) -> None:
    """It claims no capabilities, and a part sent anyway is answered failed."""
    hostname = f"no-app-{uuid.uuid4().hex[:6]}@test"
    config = AgentConfig(
        brain_url=brain.url, token=TOKEN, hmac_secret=SECRET, agent_name="no-app", project="p"
    )
    runtime = AgentRuntime(config, hostname=hostname, settings=FAST)
    runtime.start()
    try:
        assert runtime.transport.connected.wait(10)
        hello = hello_of(brain, hostname)
        assert hello is not None
        assert "capabilities" not in hello
        asked = part("cancel", [{"task_id": "t"}])
        brain.command(asked.body(), hostname=hostname)
        (answer,) = brain.results_of(asked.command_id, 1)
        assert (answer["status"], answer["error"]) == (
            "failed",
            "this agent cannot run commands",
        )
    finally:
        runtime.stop("test over", timeout=1)
