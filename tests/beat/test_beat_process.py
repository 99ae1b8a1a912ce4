"""A real ``celery beat`` with the agent, on each scheduler, against the fake brain.

``celery -A tests.beat.beat_app beat`` runs in a subprocess (the app activates
the agent with the worker agent's one line), with Celery's file scheduler,
RedBeat or django-celery-beat (an SQLite database migrated for the test).
Each test checks the bootstrap line, the first report, a create command that
the running beat applies and then fires (the message is read from the
broker), the reports of its runs, and the bye when beat stops. Needs Redis
(database 12).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.fake_brain import SECRET, TOKEN, FakeBrain
from z4j_domain.beat import ScheduleRequest, SchedulerKind
from z4j_domain.schedules import EntryOptions, IntervalSchedule, ScheduleEntry

from .beat import (
    STARTED_LINE,
    Beat,
    drain,
    fires,
    migrate_django,
    outcome,
    reports,
    require_redis,
    run,
    wait_report,
)
from .contract import definition

pytestmark = pytest.mark.slow

QUEUE = "z4j-beat-e2e"
CLASSES = {
    "file": (SchedulerKind.FILE, "celery.beat:PersistentScheduler"),
    "redbeat": (SchedulerKind.REDBEAT, "redbeat.schedulers:RedBeatScheduler"),
    "django": (SchedulerKind.DJANGO, "django_celery_beat.schedulers:DatabaseScheduler"),
}


@pytest.fixture
def fake_brain() -> Iterator[FakeBrain]:
    with FakeBrain(heartbeat_interval=1.0) as brain:
        yield brain


def start_beat(scheduler: str, workdir: Path, brain: FakeBrain) -> Beat:
    environment = {"Z4J_BEAT_STATIC": "1"}
    if scheduler == "django":
        environment.update(migrate_django(workdir / "beat.sqlite3"))
    return Beat(
        workdir,
        scheduler=scheduler,
        brain_url=brain.url,
        token=TOKEN,
        secret=SECRET,
        environment=environment,
    )


def every_second(name: str = "e2e-every-second") -> ScheduleEntry:
    return ScheduleEntry(
        name=name,
        task="tests.beat.beat_app.ping",
        schedule=IntervalSchedule(every=1, period="seconds"),
        args=[1, "two"],
        kwargs={"three": 3},
        options=EntryOptions(queue=QUEUE),
    )


@pytest.mark.parametrize("scheduler", ["file", "redbeat", "django"])
def test_a_running_beat_reports_applies_a_create_and_fires_it(
    scheduler: str, tmp_path: Path, fake_brain: FakeBrain
) -> None:
    """Bootstrap line, report, a create applied by the running beat, its fires, bye."""
    require_redis()
    beat = start_beat(scheduler, tmp_path, fake_brain)
    try:
        assert beat.output().count(STARTED_LINE) == 1, beat.output()
        first = wait_report(fake_brain, lambda report: True)
        kind, class_path = CLASSES[scheduler]
        assert (first.kind, first.class_path, first.writable) == (kind, class_path, True)
        assert "static-nightly" in [entry.name for entry in first.entries]
        assert {"tests.beat.beat_app.add", "tests.beat.beat_app.ping"} <= first.known_tasks
        (hello,) = fake_brain.hellos
        assert (hello["kind"], hello["capabilities"], hello["agent"]) == (
            "celerybeat",
            ["schedule"],
            "beat-1",
        )
        assert fake_brain.wait_for(lambda: bool(fake_brain.heartbeats))
        assert fake_brain.heartbeats[0] == {"worker": None, "tasks": None}

        entry = every_second()
        result = outcome(
            run(fake_brain, ScheduleRequest(op="create", name=entry.name, entry=entry))
        )
        assert definition(result.entry) == definition(entry)

        assert fake_brain.wait_for(
            lambda: any(fire.schedule == entry.name for fire in fires(fake_brain)), 30
        ), beat.output()
        fire = next(fire for fire in fires(fake_brain) if fire.schedule == entry.name)
        assert (fire.manual, fire.error) == (False, None)
        message = next(m for m in drain(QUEUE, count=1) if m.headers["id"] == fire.task_id)
        assert message.headers["task"] == "tests.beat.beat_app.ping"
        assert list(message.decode()[:2]) == [[1, "two"], {"three": 3}]

        ran = wait_report(
            fake_brain,
            lambda report: any(
                item.name == entry.name and item.total_run_count >= 1 for item in report.entries
            ),
            timeout=30,
        )
        listed = next(item for item in ran.entries if item.name == entry.name)
        assert listed.last_run_at is not None
    finally:
        status = beat.stop()
    assert status == 0, beat.output()
    assert fake_brain.wait_for(lambda: len(fake_brain.byes) == 1)
    assert fake_brain.byes[0]["worker"] is None
    assert "Traceback" not in beat.output(), beat.output()


def test_the_file_schedulers_z4j_entries_survive_a_beat_restart(
    tmp_path: Path, fake_brain: FakeBrain
) -> None:
    """An entry created in z4j is back after beat restarts (Celery's merge alone drops it)."""
    require_redis()
    beat = start_beat("file", tmp_path, fake_brain)
    try:
        entry = ScheduleEntry(
            name="kept",
            task="tests.beat.beat_app.add",
            schedule=IntervalSchedule(every=1, period="hours"),
            description="created in z4j",
        )
        outcome(run(fake_brain, ScheduleRequest(op="create", name="kept", entry=entry)))
        outcome(run(fake_brain, ScheduleRequest(op="disable", name="static-nightly")))
    finally:
        assert beat.stop() == 0, beat.output()
    (tmp_path / "beat.log").rename(tmp_path / "first-beat.log")
    before = len(reports(fake_brain))
    again = start_beat("file", tmp_path, fake_brain)
    try:
        assert fake_brain.wait_for(lambda: len(reports(fake_brain)) > before, 20)
        report = reports(fake_brain)[before]
        shown = {item.name: item for item in report.entries}
        assert definition(shown["kept"]) == definition(entry)
        assert not shown["static-nightly"].enabled
    finally:
        assert again.stop() == 0, again.output()
