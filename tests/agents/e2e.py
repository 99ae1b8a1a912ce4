"""What the end-to-end tests share: a real brain (``z4j serve``) and real worker processes.

Each test module builds its own module-scoped fixtures from these (starting a
brain or a worker takes seconds). Redis (``Z4J_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379``) carries the default broker and the result backend;
RabbitMQ (``Z4J_TEST_AMQP_URL``, default ``amqp://guest:guest@127.0.0.1:5672//``)
is the broker where a test needs AMQP's redelivery. An unreachable service
skips with a message naming it, or fails when ``Z4J_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

import pytest

from tests.conftest import fresh_postgres_database
from tests.serving import (
    Server,
    call_json,
    clean_environment,
    free_port,
    get_json,
    run_z4j,
    z4j_environment,
)

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("Z4J_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
BROKER = f"{REDIS_URL}/13"
BACKEND = f"{REDIS_URL}/14"
AMQP_URL = os.environ.get("Z4J_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

ADMIN_EMAIL: Final = "e2e@example.com"
ADMIN_PASSWORD: Final = "an end-to-end admin password"
AGENT: Final = "e2e-worker"
QUEUE: Final = "e2e"
TASKS: Final = "tests.agents.celery_app"

STARTED_LINE: Final = "INFO:z4j.celery.worker_bootstrap:z4j worker bootstrap: agent runtime started"
UNAUTHORIZED: Final = (
    "ERROR:z4j.celery.transport:z4j rejected the agent: unauthorized (check Z4J_TOKEN)"
)
BRAIN_UNAUTHORIZED: Final = re.compile(
    r"^WARNING:z4j\.gateway:unauthorized agent connection from 127\.0\.0\.1\S*:"
    r" unknown or revoked token$",
    re.MULTILINE,
)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, every: float = 0.05) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


# -- the services ---------------------------------------------------------------------------


def require_redis(*urls: str) -> None:
    """Empty Redis databases (default: the broker's and the backend's), or a skip naming Redis."""
    import redis

    try:
        for url in urls or (BROKER, BACKEND):
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            client.flushdb()
            client.close()
    except redis.RedisError as error:
        require_service("Redis (Z4J_TEST_REDIS_URL)", REDIS_URL, error)


def tasks_module() -> Any:
    """The tasks module of the worker's Celery app, its client pointed at the test Redis."""
    from tests.agents import celery_app

    celery_app.app.conf.update(broker_url=BROKER, result_backend=BACKEND)
    return celery_app


class Brain:
    """``z4j serve`` on a database of its own, restartable on the same port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.servers: list[Server] = []
        self.key = ""

    @property
    def server(self) -> Server:
        """The current (last started) server."""
        return self.servers[-1]

    def start(self) -> Server:
        """Start ``z4j serve`` and wait until it answers."""
        server = Server(self.env, self.port)
        self.servers.append(server)
        server.wait_until_healthy()
        return server

    def close(self) -> None:
        """Stop the running server cleanly; kill anything left."""
        if self.servers and self.server.process.poll() is None:
            self.server.stop()
        for server in self.servers:
            server.kill()

    def z4j(self, *args: str) -> Any:
        """Run a ``z4j ... --json`` command against this brain's database; its JSON output."""
        done = run_z4j(self.env, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def get(self, path: str) -> tuple[int, Any]:
        """``GET /api/v1/projects/default/<path>`` with the API key."""
        return get_json(f"{self.url}/api/v1/projects/default/{path}", self.key)

    def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None, **headers: str
    ) -> tuple[int, Any]:
        """``method <path>`` (from ``/api/...``) with the API key (or ``key``); status and JSON."""
        return call_json(f"{self.url}{path}", key or self.key, method, body, **headers)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Like :meth:`call`, for a request that must succeed; the JSON answer."""
        status, answer = self.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, answer)
        return answer

    def wait_command(self, command_id: str, timeout: float = 60) -> dict[str, Any]:
        """The default project's command once it is finished (succeeded, failed, timed out)."""
        seen: dict[str, Any] = {}

        def finished() -> bool:
            nonlocal seen
            seen = self.api("GET", f"/api/v1/projects/default/commands/{command_id}")
            return seen["status"] in ("succeeded", "failed", "timed_out")

        assert wait_until(finished, timeout, every=0.1), seen
        return seen

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The task with its ``events``, or ``None`` while the brain does not know it."""
        status, body = self.get(f"tasks/{task_id}")
        if status == 404:
            return None
        assert status == 200, body
        task: dict[str, Any] = body
        return task

    def worker(self, hostname: str) -> dict[str, Any] | None:
        """The worker as ``/workers`` lists it, if it is listed."""
        status, body = self.get("workers")
        assert status == 200, body
        return next((w for w in body["items"] if w["hostname"] == hostname), None)

    def wait_task(
        self,
        task_id: str,
        state: str,
        *kinds: str,
        until: Callable[[dict[str, Any]], bool] = lambda task: True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Poll until the task is in ``state`` and has events of every kind in ``kinds``."""
        seen: dict[str, Any] | None = None

        def arrived() -> bool:
            nonlocal seen
            seen = self.task(task_id)
            return (
                seen is not None
                and seen["state"] == state
                and set(kinds) <= kinds_of(seen)
                and until(seen)
            )

        if not wait_until(arrived, timeout, every=0.1):
            got = None if seen is None else (seen["state"], sorted(kinds_of(seen)))
            raise AssertionError(f"task {task_id}: wanted {state} with {kinds}, got {got}")
        assert seen is not None
        return seen


def kinds_of(task: dict[str, Any]) -> set[str]:
    """The kinds of event in a task's timeline."""
    return {event["kind"] for event in task["events"]}


def events_of(task: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """A task's events of one kind, in timeline order."""
    return [event for event in task["events"] if event["kind"] == kind]


@contextlib.contextmanager
def running_brain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[Brain]:
    """A running brain on ``backend`` with the ``default`` project and an API key."""
    env = z4j_environment(
        tmp_path_factory.mktemp(f"brain-{backend}") / "home",
        Z4J_BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
        Z4J_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    with ExitStack() as stack:
        if backend == "postgresql":
            admin_url = request.getfixturevalue("postgres_admin_url")
            env["Z4J_DATABASE_URL"] = stack.enter_context(fresh_postgres_database(admin_url))
        brain = Brain(env)
        stack.callback(brain.close)
        brain.start()
        brain.key = brain.z4j("api-key", "create", "--email", ADMIN_EMAIL, "--name", "e2e")["key"]
        assert brain.get("workers") == (200, {"items": []})
        yield brain


def mint_agent(brain: Brain) -> dict[str, str]:
    """The agent's credentials, minted with ``z4j agent create``."""
    created: dict[str, str] = brain.z4j("agent", "create", "--project", "default", "--name", AGENT)
    return created


class CeleryProcess:
    """A ``celery`` subprocess (in a process group of its own) writing to the file ``log``."""

    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """Warm shutdown (SIGTERM, as a supervisor does); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (pool children too): a crash, no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


class Worker(CeleryProcess):
    """A ``celery worker`` subprocess whose stdout and stderr go to one file.

    ``environment`` adds variables to the worker's (e.g. ``Z4J_E2E_RESULT_EXTENDED``),
    ``arguments`` options to its command line (e.g. ``-B`` for an embedded beat).
    """

    def __init__(
        self,
        log: Path,
        *,
        brain_url: str,
        token: str,
        secret: str,
        queue: str,
        broker: str = BROKER,
        backend: str = BACKEND,
        agent_name: str = AGENT,
        concurrency: int = 2,
        environment: Mapping[str, str] | None = None,
        arguments: Sequence[str] = (),
    ) -> None:
        self.log = log
        self.queue = queue
        env = clean_environment(
            Z4J_BRAIN_URL=brain_url,
            Z4J_TOKEN=token,
            Z4J_HMAC_SECRET=secret,
            Z4J_AGENT_NAME=agent_name,
            Z4J_E2E_BROKER=broker,
            Z4J_E2E_BACKEND=backend,
            **(environment or {}),
        )
        self.hostname = f"{queue}-{uuid.uuid4().hex[:6]}@localhost"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    TASKS,
                    "worker",
                    "--pool=prefork",
                    f"--concurrency={concurrency}",
                    "--loglevel=INFO",
                    "-n",
                    self.hostname,
                    "-Q",
                    queue,
                    "--without-gossip",
                    "--without-mingle",
                    *arguments,
                ],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                # A process group of its own, so that kill() reaches the pool children too.
                start_new_session=True,
            )
        if not wait_until(lambda: " ready." in self.output(), 60):
            self.stop()
            pytest.fail(f"the worker did not start:\n{self.output()}")


def require_service(name: str, url: str, error: BaseException) -> None:
    """Skip (or fail, with ``Z4J_REQUIRE_SERVICES=1``) because ``name`` is unreachable."""
    message = f"{name} is not reachable at {url} ({error}); start it (see SERVICES.md)"
    if os.environ.get("Z4J_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " [Z4J_REQUIRE_SERVICES=1]")
    pytest.skip(message)


def stored_rows_text(brain: Brain, task_id: str) -> str:
    """Every stored column of the task's row and of its events' rows, as one text."""
    import asyncio
    import sqlite3

    url = brain.env.get("Z4J_DATABASE_URL")
    queries = (
        "SELECT * FROM tasks WHERE id = {0}",
        "SELECT * FROM task_events WHERE task_id = {0}",
    )
    rows: list[Any] = []
    if url is None:
        path = Path(brain.env["Z4J_HOME"]) / "z4j.db"
        with contextlib.closing(sqlite3.connect(path)) as connection:
            for query in queries:
                rows += connection.execute(query.format("?"), (task_id,)).fetchall()
    else:
        import asyncpg

        async def fetch() -> None:
            dsn = url.replace("postgresql+asyncpg://", "postgresql://")
            connection = await asyncpg.connect(dsn)
            try:
                for query in queries:
                    rows.extend(await connection.fetch(query.format("$1"), task_id))
            finally:
                await connection.close()

        asyncio.run(fetch())
    assert rows, f"no stored rows for task {task_id}"
    return "\n".join(repr(tuple(row)) for row in rows)
