"""Activation of the beat agent: nothing at import, beat_init only, the promised log lines."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, signals
from celery.beat import Service

from tests.agents.fake_brain import SECRET, TOKEN, FakeBrain
from z4j_agent_celerybeat import bootstrap

from .beat import BROKER, STARTED_LINE, wait_report


@pytest.fixture
def transport_log() -> Iterator[None]:
    """Leave the worker agent's logger (``z4j.celery``) as it was: the bootstrap configures it."""
    parent = logging.getLogger("z4j.celery")
    saved = (list(parent.handlers), parent.level, parent.propagate)
    yield
    parent.handlers[:] = saved[0]
    parent.setLevel(saved[1])
    parent.propagate = saved[2]


def service(tmp_path: Path, app: Celery | None = None) -> Service:
    app = app or Celery("z4j-beat-bootstrap", broker=BROKER, set_as_current=False)
    app.conf.timezone = "UTC"
    built = Service(app, schedule_filename=str(tmp_path / "celerybeat-schedule"))
    built.scheduler  # noqa: B018 - built before beat_init, as Service.start does
    return built


def test_import_connects_nothing_and_install_only_beat_init() -> None:
    """Importing the package connects no signal; install connects beat_init and nothing else."""
    script = textwrap.dedent(
        """
        from celery import Celery, signals
        names = [n for n in dir(signals) if isinstance(getattr(signals, n), signals.Signal)]
        def counts():
            return {n: len(getattr(signals, n).receivers) for n in names}
        before = counts()
        import z4j_agent_celerybeat
        assert counts() == before, "import connected a signal"
        z4j_agent_celerybeat.install(Celery("x"))
        changed = {n for n, c in counts().items() if c != before[n]}
        assert changed == {"beat_init"}, changed
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.usefixtures("clean_beat_bootstrap", "transport_log")
def test_a_missing_variable_is_one_warning_and_beat_runs_alone(
    tmp_path: Path, beat_log: io.StringIO
) -> None:
    """Without Z4J_HMAC_SECRET the agent does not start, says so once, and touches nothing."""
    beat = service(tmp_path)
    tick = beat.scheduler.tick
    assert bootstrap.start(beat, {"Z4J_BRAIN_URL": "http://x", "Z4J_TOKEN": "t"}) is None
    assert beat_log.getvalue().splitlines() == [
        "WARNING:z4j.celerybeat.beat_bootstrap:z4j beat agent not started: Z4J_HMAC_SECRET is"
        " not set; beat runs normally without the agent"
    ]
    assert beat.scheduler.tick == tick
    beat.scheduler.close()


@pytest.mark.usefixtures("clean_beat_bootstrap", "transport_log")
def test_a_bad_poll_interval_is_named(tmp_path: Path, beat_log: io.StringIO) -> None:
    """Z4J_BEAT_POLL_INTERVAL must be a number of seconds: the warning names it."""
    environ = {
        "Z4J_BRAIN_URL": "http://x",
        "Z4J_TOKEN": "t",
        "Z4J_HMAC_SECRET": "s",
        "Z4J_BEAT_POLL_INTERVAL": "soon",
    }
    beat = service(tmp_path)
    assert bootstrap.start(beat, environ) is None
    assert "Z4J_BEAT_POLL_INTERVAL must be a number of seconds" in beat_log.getvalue()
    beat.scheduler.close()


@pytest.mark.usefixtures("clean_beat_bootstrap", "transport_log", "redis_db")
def test_beat_init_starts_the_agent_for_the_installed_app_only(
    tmp_path: Path, beat_log: io.StringIO, brain: FakeBrain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The beat_init signal of the installed app prints the line and reports the schedule."""
    monkeypatch.setenv("Z4J_BRAIN_URL", brain.url)
    monkeypatch.setenv("Z4J_TOKEN", TOKEN)
    monkeypatch.setenv("Z4J_HMAC_SECRET", SECRET)
    monkeypatch.setenv("Z4J_AGENT_NAME", "beat-signal")
    mine = Celery("mine", broker=BROKER, set_as_current=False)
    other = Celery("other", broker=BROKER, set_as_current=False)
    bootstrap.install(mine)
    (tmp_path / "other").mkdir()
    other_beat = service(tmp_path / "other", other)
    signals.beat_init.send(sender=other_beat)
    assert beat_log.getvalue() == ""
    beat = service(tmp_path, mine)
    signals.beat_init.send(sender=beat)
    lines = beat_log.getvalue().splitlines()
    assert lines[0] == STARTED_LINE
    assert lines[1] == (
        "INFO:z4j.celerybeat.beat_bootstrap:z4j beat agent reports Celery's file scheduler"
        " (celery.beat:PersistentScheduler, writable)"
    )
    runtime = bootstrap.current_runtime()
    assert runtime is not None
    assert bootstrap.start(beat) is runtime  # once per process
    report = wait_report(brain, lambda report: True)
    assert report.entries[0].name == "celery.backend_cleanup"
    assert brain.hellos[0]["agent"] == "beat-signal"
    bootstrap._stop("test over")
    assert brain.wait_for(lambda: len(brain.byes) == 1)
    beat.scheduler.close()
    other_beat.scheduler.close()


@pytest.mark.usefixtures("clean_beat_bootstrap", "transport_log")
def test_an_agent_that_fails_to_start_never_stops_beat(
    tmp_path: Path, beat_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while starting is logged; the signal's sender (beat) carries on."""
    monkeypatch.setenv("Z4J_BRAIN_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("Z4J_TOKEN", TOKEN)
    monkeypatch.setenv("Z4J_HMAC_SECRET", SECRET)
    bootstrap.install()

    class Broken:
        app = None

        @property
        def scheduler(self) -> object:
            raise RuntimeError("no scheduler here")

    signals.beat_init.send(sender=Broken())
    assert (
        "ERROR:z4j.celerybeat.beat_bootstrap:z4j beat agent failed to start; beat runs without"
        " it" in beat_log.getvalue()
    )
    assert "RuntimeError: no scheduler here" in beat_log.getvalue()
