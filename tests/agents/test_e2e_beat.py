"""End to end: Celery Beat schedules changed from z4j, on each of the three schedulers.

A real ``z4j serve`` (SQLite and PostgreSQL), a real ``celery beat`` with the beat agent (Celery's
file scheduler, RedBeat, django-celery-beat's ``DatabaseScheduler``) and a
real prefork ``celery worker`` with the worker agent, all on Redis, driven
only through the brain's HTTP API: create an every-two-seconds entry and see
it fire and its task succeed; edit it; disable it and see it stop firing;
enable it; trigger it now; delete it. Entries written by django-celery-beat's
models or RedBeat's own API appear in z4j. The audit log shows every change
with the entry before and after.

Redis database 11 is the broker here (the beat agent's own tests use 12, the
worker end-to-end tests 13 and 14).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import pytest

from tests.agents.e2e import (
    ADMIN_EMAIL,
    Brain,
    Worker,
    mint_agent,
    running_brain,
    wait_until,
)
from tests.beat.beat import STARTED_LINE, Beat, migrate_django, require_redis
from tests.serving import clean_environment

pytestmark = pytest.mark.slow

REDIS: Final = "redis://127.0.0.1:6379"
BROKER: Final = f"{REDIS}/11"
QUEUE: Final = "beat-e2e"
ADD: Final = "tests.agents.celery_app.add"
ROOT: Final = Path(__file__).resolve().parents[2]
S: Final = "/api/v1/projects/default/schedules"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def brain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Brain]:
    """One brain on each backend for the three schedulers, with the broker emptied."""
    require_redis(BROKER)
    with running_brain(request, tmp_path_factory, request.param) as running:
        yield running


@pytest.fixture(scope="module")
def worker(brain: Brain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A prefork worker with its agent, consuming what beat sends on the beat broker."""
    agent = mint_agent(brain)
    running = Worker(
        tmp_path_factory.mktemp("beat-worker") / "worker.log",
        brain_url=brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        queue=QUEUE,
        broker=BROKER,
    )
    yield running
    running.stop()


def entry(name: str, *args: int, every: int = 2, **fields: Any) -> dict[str, Any]:
    """An entry sending ``add(*args)`` to the worker's queue every ``every`` seconds."""
    return {
        "name": name,
        "task": ADD,
        "schedule": {"kind": "interval", "every": every, "period": "seconds"},
        "args": list(args),
        "options": {"queue": QUEUE},
        **fields,
    }


def change(brain: Brain, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A schedule change through the API, waited for; it must succeed."""
    status, command = brain.call(method, f"{S}{path}?wait=25", body)
    assert status in (200, 202), (status, command)
    if command["status"] not in ("succeeded", "failed", "timed_out"):
        command = brain.wait_command(command["id"])
    assert command["status"] == "succeeded", command
    return command


def fires(brain: Brain, scheduler: str, name: str) -> list[dict[str, Any]]:
    """The entry's fires as the brain lists them, newest first."""
    page = brain.api("GET", f"{S}/{scheduler}/{name}")
    listed: list[dict[str, Any]] = page["fires"]
    return listed


def next_fire(
    brain: Brain, scheduler: str, name: str, after: int, timeout: float = 30
) -> dict[str, Any]:
    """The first fire (by schedule, not by hand) beyond the first ``after``, once reported."""
    found: list[dict[str, Any]] = []

    def fired() -> bool:
        scheduled = [f for f in fires(brain, scheduler, name) if not f["manual"]]
        found[:] = scheduled
        return len(scheduled) > after

    assert wait_until(fired, timeout, every=0.2), found
    return found[-(after + 1)]


def listed_names(brain: Brain, scheduler: str) -> set[str]:
    return {item["name"] for item in brain.api("GET", S)["items"] if item["scheduler"] == scheduler}


def scheduled_count(brain: Brain, scheduler: str, name: str) -> int:
    return len([f for f in fires(brain, scheduler, name) if not f["manual"]])


def orm_entry(environment: dict[str, str]) -> None:
    """Create a django-celery-beat entry with its models, as an app's code or Django admin does."""
    script = (
        "import django; django.setup()\n"
        "from django_celery_beat.models import IntervalSchedule, PeriodicTask\n"
        "every, _ = IntervalSchedule.objects.get_or_create(every=3, period='seconds')\n"
        f"PeriodicTask.objects.create(name='made-in-django', task={ADD!r}, interval=every,"
        f" args='[20, 22]', queue={QUEUE!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_environment(**environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def redbeat_entry() -> None:
    """Create a RedBeat entry with RedBeat's own API, as an app's code does."""
    from celery import Celery
    from celery.schedules import schedule
    from redbeat import RedBeatSchedulerEntry

    app = Celery("z4j-e2e-redbeat", broker=BROKER)
    # The beat app's settings (tests/beat/beat_app.py): the same Redis and key prefix.
    app.conf.update(redbeat_redis_url=BROKER, redbeat_key_prefix="z4j-beat-tests:")
    RedBeatSchedulerEntry(
        "made-by-redbeat",
        ADD,
        schedule(timedelta(seconds=3)),
        args=[20, 22],
        options={"queue": QUEUE},
        app=app,
    ).save()


@pytest.mark.parametrize("kind", ["file", "redbeat", "django"])
def test_every_schedule_change_from_z4j_reaches_beat_and_its_tasks_run(
    kind: str, brain: Brain, worker: Worker, tmp_path: Path
) -> None:
    name = f"beat-{kind}"
    agent = brain.z4j("agent", "create", "--project", "default", "--name", name)
    environment: dict[str, str] = {}
    if kind == "django":
        environment = migrate_django(tmp_path / "django.sqlite3")
    beat = Beat(
        tmp_path,
        scheduler=kind,
        brain_url=brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        agent_name=name,
        broker=BROKER,
        environment=environment,
    )
    try:
        assert wait_until(
            lambda: any(s["name"] == name for s in brain.api("GET", S)["schedulers"]), 30
        ), beat.output()
        scheduler = next(s for s in brain.api("GET", S)["schedulers"] if s["name"] == name)
        assert scheduler["kind"] == kind
        assert scheduler["writable"] is True
        assert scheduler["connected"] is True

        # Created in z4j: beat fires it and the worker runs its task.
        created = change(brain, "POST", "", {"scheduler": name, "entry": entry("adder", 2, 3)})
        assert created["result"]["entry"]["args"] == [2, 3]
        fire = next_fire(brain, name, "adder", 0)
        task = brain.wait_task(fire["task_id"], "succeeded", timeout=30)
        assert (task["name"], task["result"]) == (ADD, 5)

        # Edited: the next fires carry the new arguments.
        change(brain, "PUT", f"/{name}/adder", {"entry": entry("adder", 5, 5)})

        def edited() -> bool:
            # A fire already under way when the change landed still adds 2 and 3.
            for fire in fires(brain, name, "adder")[:3]:
                task = brain.task(fire["task_id"]) if fire["task_id"] else None
                if task is not None and task["state"] == "succeeded" and task["result"] == 10:
                    return True
            return False

        assert wait_until(edited, 30, every=0.3), fires(brain, name, "adder")[:3]

        # Disabled: it stops firing (one fire may already be on its way when the change lands).
        disabled = change(brain, "POST", f"/{name}/adder/disable")
        assert disabled["result"]["entry"]["enabled"] is False
        time.sleep(3)
        quiet = scheduled_count(brain, name, "adder")
        time.sleep(6)
        assert scheduled_count(brain, name, "adder") == quiet
        listed = next(i for i in brain.api("GET", S)["items"] if i["name"] == "adder")
        assert listed["enabled"] is False

        # Enabled again: it fires again.
        change(brain, "POST", f"/{name}/adder/enable")
        next_fire(brain, name, "adder", quiet)

        # Triggered now: its task runs with the entry's arguments, and the fire is manual.
        triggered = change(brain, "POST", f"/{name}/adder/trigger")
        task_id = triggered["result"]["task_id"]
        assert brain.wait_task(task_id, "succeeded", timeout=30)["result"] == 10
        assert wait_until(
            lambda: any(
                f["manual"] and f["task_id"] == task_id for f in fires(brain, name, "adder")
            ),
            20,
        )

        # Deleted: gone from the scheduler and from z4j, and it fires no more.
        change(brain, "DELETE", f"/{name}/adder")
        assert wait_until(lambda: "adder" not in listed_names(brain, name), 10)
        assert brain.call("GET", f"{S}/{name}/adder")[0] == 404

        # Entries written outside z4j, with the scheduler's own means, appear in z4j.
        if kind == "django":
            orm_entry(environment)
            assert wait_until(lambda: "made-in-django" in listed_names(brain, name), 30)
        elif kind == "redbeat":
            redbeat_entry()
            assert wait_until(lambda: "made-by-redbeat" in listed_names(brain, name), 30)
        if kind in ("django", "redbeat"):
            outside = "made-in-django" if kind == "django" else "made-by-redbeat"
            fire = next_fire(brain, name, outside, 0)
            assert brain.wait_task(fire["task_id"], "succeeded", timeout=30)["result"] == 42

        # The agent reports the whole schedule every poll (1 s here): the deleted entry
        # stays gone, so beat no longer holds it.
        time.sleep(3)
        assert "adder" not in listed_names(brain, name)
        beat_log = beat.output()
        assert "Traceback" not in beat_log, beat_log
    finally:
        beat.stop()

    # The audit log: every change, by the admin, with the entry before and after.
    audit = brain.api("GET", "/api/v1/projects/default/audit?action=schedule.&limit=100")
    done = [
        e
        for e in reversed(audit["items"])
        if e["target"] == f"schedule:{name}/adder" and e["action"].endswith(".succeeded")
    ]
    assert [e["action"] for e in done] == [
        "schedule.create.succeeded",
        "schedule.update.succeeded",
        "schedule.disable.succeeded",
        "schedule.enable.succeeded",
        "schedule.trigger.succeeded",
        "schedule.delete.succeeded",
    ]
    assert {e["actor"] for e in done} == {ADMIN_EMAIL}
    details = [e["details"] for e in done]
    assert details[0]["before"] is None
    assert details[0]["after"]["args"] == [2, 3]
    assert (details[1]["before"]["args"], details[1]["after"]["args"]) == ([2, 3], [5, 5])
    assert (details[2]["before"]["enabled"], details[2]["after"]["enabled"]) == (True, False)
    assert (details[3]["before"]["enabled"], details[3]["after"]["enabled"]) == (False, True)
    assert details[5]["before"]["name"] == "adder"
    assert details[5]["after"] is None


def test_a_beat_embedded_in_a_worker_shares_its_agent_and_takes_schedule_changes(
    brain: Brain, tmp_path: Path
) -> None:
    """``celery worker -B``: the worker's one set of variables serves both agents; the
    scheduler takes the agent's name, and its changes reach the embedded beat only."""
    agent = brain.z4j("agent", "create", "--project", "default", "--name", "embedded")
    queue = "beat-embedded"
    worker = Worker(
        tmp_path / "worker.log",
        brain_url=brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        queue=queue,
        broker=BROKER,
        agent_name="embedded",
        arguments=["-B", "-s", str(tmp_path / "celerybeat-schedule")],
    )
    try:
        assert wait_until(
            lambda: any(s["name"] == "embedded" for s in brain.api("GET", S)["schedulers"]), 30
        ), worker.output()
        assert STARTED_LINE in worker.output()
        added = entry("embedded-adder", 4, 4, options={"queue": queue})
        change(brain, "POST", "", {"scheduler": "embedded", "entry": added})
        fire = next_fire(brain, "embedded", "embedded-adder", 0)
        assert brain.wait_task(fire["task_id"], "succeeded", timeout=30)["result"] == 8
        triggered = change(brain, "POST", "/embedded/embedded-adder/trigger")
        assert brain.wait_task(triggered["result"]["task_id"], "succeeded")["result"] == 8
    finally:
        worker.stop()
    assert "Traceback" not in worker.output(), worker.output()
