"""What the beat agent's tests share: a real ``celery beat`` subprocess, the broker, the frames.

:class:`Beat` runs ``celery -A tests.beat.beat_app beat`` with one of the
three schedulers (``file``, ``redbeat``, ``django``), the agent configured
from the arguments (any brain: the fake one here, ``z4j serve`` in the
end-to-end tests), its stdout and stderr in one file. :func:`migrate_django`
makes the SQLite database django-celery-beat needs; :func:`drain` reads the
messages beat (or a trigger) published from a broker queue; :func:`command`
builds a ``schedule`` command's body. The rest reads a
:class:`~tests.agents.fake_brain.FakeBrain`'s frames.

Redis (``Z4J_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379``) database 12
is the broker and RedBeat's store; :func:`require_redis` empties it, or skips
(fails with ``Z4J_REQUIRE_SERVICES=1``) naming Redis when it is unreachable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest

from tests.agents.e2e import CeleryProcess, require_service, wait_until
from tests.agents.fake_brain import FakeBrain
from tests.serving import clean_environment
from z4j_domain.beat import ScheduleFire, ScheduleOutcome, ScheduleRequest, SchedulerReport
from z4j_domain.frames import FrameType

ROOT: Final = Path(__file__).resolve().parents[2]
REDIS_URL: Final = os.environ.get("Z4J_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
#: The broker of every beat test, and RedBeat's Redis.
BROKER: Final = f"{REDIS_URL}/12"
BEAT_APP: Final = "tests.beat.beat_app"
DJANGO_SETTINGS: Final = "tests.beat.django_settings"
#: The scheduler class for ``celery beat -S``, per backend (``None``: Celery's default).
SCHEDULERS: Final[Mapping[str, str | None]] = {
    "file": None,
    "redbeat": "redbeat.RedBeatScheduler",
    "django": "django_celery_beat.schedulers:DatabaseScheduler",
}
STARTED_LINE: Final = "INFO:z4j.celerybeat.beat_bootstrap:z4j beat bootstrap: agent runtime started"


def require_redis(url: str = BROKER) -> None:
    """An empty Redis database ``url``, or a skip naming Redis."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except redis.RedisError as error:
        require_service("Redis (Z4J_TEST_REDIS_URL)", REDIS_URL, error)


def migrate_django(database: Path) -> dict[str, str]:
    """Create django-celery-beat's tables in the SQLite file ``database``; the environment
    that points Django at it."""
    env = {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS, "Z4J_BEAT_DJANGO_DB": str(database)}
    done = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity=0"],
        cwd=ROOT,
        env=clean_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env


class Beat(CeleryProcess):
    """A ``celery beat`` subprocess with the agent; stdout and stderr go to ``workdir/beat.log``.

    ``scheduler`` is ``file``, ``redbeat`` or ``django`` (give ``environment``
    from :func:`migrate_django` for the last). ``poll_interval`` is the agent's
    ``Z4J_BEAT_POLL_INTERVAL``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        scheduler: str,
        brain_url: str,
        token: str,
        secret: str,
        agent_name: str = "beat-1",
        poll_interval: float = 1.0,
        broker: str = BROKER,
        environment: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        self.workdir = workdir
        self.log = workdir / "beat.log"
        self.schedule_file = workdir / "celerybeat-schedule"
        env = clean_environment(
            Z4J_BRAIN_URL=brain_url,
            Z4J_TOKEN=token,
            Z4J_HMAC_SECRET=secret,
            Z4J_AGENT_NAME=agent_name,
            Z4J_BEAT_POLL_INTERVAL=str(poll_interval),
            Z4J_BEAT_BROKER=broker,
            **(environment or {}),
        )
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            BEAT_APP,
            "beat",
            "--loglevel=INFO",
            "-s",
            str(self.schedule_file),
        ]
        scheduler_class = SCHEDULERS[scheduler]
        if scheduler_class is not None:
            command += ["-S", scheduler_class]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait and not wait_until(lambda: STARTED_LINE in self.output(), 60):
            self.stop()
            pytest.fail(f"the beat agent did not start:\n{self.output()}")


def command(
    request: ScheduleRequest, command_id: str | None = None, part: int = 0
) -> dict[str, Any]:
    """The body of a ``schedule`` command frame carrying ``request``."""
    return {
        "id": command_id or str(uuid.uuid4()),
        "command": "schedule",
        "part": part,
        "items": [],
        "options": request.to_dict(),
    }


def drain(queue: str, *, broker: str = BROKER, timeout: float = 10.0, count: int = 1) -> list[Any]:
    """Read ``count`` task messages from ``queue`` on the broker (kombu ``Message`` objects).

    ``message.headers`` has the task's ``task`` name and ``id``;
    ``message.decode()`` is ``(args, kwargs, embed)``.
    """
    from kombu import Connection

    messages = []
    with Connection(broker) as connection:
        inbox = connection.SimpleQueue(queue)
        try:
            for _ in range(count):
                message = inbox.get(timeout=timeout)
                message.ack()
                messages.append(message)
        finally:
            inbox.close()
    return messages


# -- a fake brain's frames -----------------------------------------------------------------


def reports(brain: FakeBrain) -> list[SchedulerReport]:
    """Every ``schedules`` report the fake brain received, in order."""
    with brain.lock:
        bodies = [frame.body for frame in brain.frames if frame.type is FrameType.SCHEDULES]
    return [SchedulerReport.from_body(body) for body in bodies]


def fires(brain: FakeBrain) -> list[ScheduleFire]:
    """Every fire the fake brain received (a fire resent in a new session, again)."""
    with brain.lock:
        bodies = [frame.body for frame in brain.frames if frame.type is FrameType.SCHEDULE_FIRES]
    return [fire for body in bodies for fire in ScheduleFire.from_body(body)]


def last_report(brain: FakeBrain) -> SchedulerReport | None:
    """The latest report, if any."""
    received = reports(brain)
    return received[-1] if received else None


def wait_report(brain: FakeBrain, predicate: Any, timeout: float = 20.0) -> SchedulerReport:
    """The first report (from the latest back) for which ``predicate(report)`` holds; waits."""
    found: list[SchedulerReport] = []

    def arrived() -> bool:
        found[:] = [report for report in reports(brain) if predicate(report)]
        return bool(found)

    assert brain.wait_for(arrived, timeout), f"no such report; last: {last_report(brain)}"
    return found[-1]


def run(brain: FakeBrain, request: ScheduleRequest, timeout: float = 20.0) -> dict[str, Any]:
    """Send ``request`` as a command, wait for ``acked`` then the final answer; the final one."""
    body = command(request)
    # Beat logs its bootstrap line before the agent's first session is up.
    assert brain.wait_for(lambda: brain.in_session >= 1, timeout), "no agent is connected"
    assert brain.command(body) >= 1, "no agent is connected"
    acked, final = brain.results_of(body["id"], 2, timeout)
    assert acked["status"] == "acked", acked
    return final


def outcome(result: Mapping[str, Any]) -> ScheduleOutcome:
    """The ``ScheduleOutcome`` of a ``done`` answer."""
    assert result["status"] == "done", result
    return ScheduleOutcome.from_dict(result["result"])
