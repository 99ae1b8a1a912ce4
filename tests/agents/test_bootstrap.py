"""Activation: one line, nothing at import, the worker-only signal, the promised log lines."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from celery import Celery, signals

from z4j_agent_celery import bootstrap

from .fake_brain import SECRET, TOKEN, FakeBrain

STARTED_LINE = "INFO:z4j.celery.worker_bootstrap:z4j worker bootstrap: agent runtime started"


@pytest.fixture
def clean_bootstrap() -> Iterator[None]:
    from z4j_agent_celerybeat import bootstrap as beat_bootstrap

    yield
    bootstrap._stop("test over")
    bootstrap._apps.clear()
    signals.worker_init.disconnect(bootstrap._on_worker_init, dispatch_uid="z4j-agent-bootstrap")
    # install() activated the beat agent too (z4j-celerybeat is installed here).
    beat_bootstrap._apps.clear()
    signals.beat_init.disconnect(beat_bootstrap._on_beat_init, dispatch_uid="z4j-beat-bootstrap")


class FakeWorker(SimpleNamespace):
    """What the agent reads of a WorkController; hashable, as a signal sender must be."""

    __hash__ = object.__hash__


def fake_worker(app: object = None) -> FakeWorker:
    return FakeWorker(hostname="celery@test", app=app, pool_cls="prefork", concurrency=2)


@pytest.mark.parametrize(
    ("beat_agent", "connected"),
    [("installed", {"worker_init", "beat_init"}), ("absent", {"worker_init"})],
)
def test_import_connects_nothing_and_install_only_the_worker_and_beat_signals(
    beat_agent: str, connected: set[str]
) -> None:
    """Importing connects nothing; install connects worker_init, and beat_init when
    z4j-celerybeat is installed (its agent starts under ``celery beat`` only)."""
    script = textwrap.dedent(
        f"""
        import sys
        if {beat_agent!r} == "absent":
            sys.modules["z4j_agent_celerybeat"] = None  # as if z4j-celerybeat were not installed
        from celery import Celery, signals
        names = [n for n in dir(signals) if isinstance(getattr(signals, n), signals.Signal)]
        def counts():
            return {{n: len(getattr(signals, n).receivers) for n in names}}
        before = counts()
        import z4j_agent_celery
        assert counts() == before, "import connected a signal"
        z4j_agent_celery.install(Celery("x"))
        changed = {{n for n, c in counts().items() if c != before[n]}}
        assert sorted(changed) == {sorted(connected)!r}, changed
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.usefixtures("clean_bootstrap")
def test_a_missing_variable_is_one_warning_and_no_agent(agent_log: io.StringIO) -> None:
    runtime = bootstrap.start(fake_worker(), {"Z4J_BRAIN_URL": "http://x", "Z4J_TOKEN": "t"})
    assert runtime is None
    assert agent_log.getvalue().splitlines() == [
        "WARNING:z4j.celery.worker_bootstrap:z4j agent not started: Z4J_HMAC_SECRET is not set;"
        " the worker runs normally without the agent"
    ]


@pytest.mark.usefixtures("clean_bootstrap")
def test_start_prints_the_bootstrap_line_and_connects(
    agent_log: io.StringIO, brain: FakeBrain
) -> None:
    environ = {"Z4J_BRAIN_URL": brain.url, "Z4J_TOKEN": TOKEN, "Z4J_HMAC_SECRET": SECRET}
    runtime = bootstrap.start(fake_worker(), environ)
    assert runtime is not None
    assert bootstrap.start(fake_worker(), environ) is runtime  # once per process
    assert agent_log.getvalue().splitlines()[0] == STARTED_LINE
    assert brain.wait_for(lambda: len(brain.heartbeats) >= 1)
    worker = brain.heartbeats[0]["worker"]
    assert (worker["hostname"], worker["pool"], worker["concurrency"]) == (
        "celery@test",
        "prefork",
        2,
    )
    assert set(worker) == {
        "hostname",
        "pool",
        "concurrency",
        "active",
        "processed",
        "loadavg",
        "queues",
        "software",
    }
    bootstrap._on_shutting_down(sig="SIGTERM", how="Warm")
    bootstrap._on_shutdown()
    assert brain.wait_for(lambda: len(brain.byes) == 1)
    assert brain.byes[0]["reason"] == "warm shutdown (SIGTERM)"


@pytest.mark.usefixtures("clean_bootstrap")
def test_the_worker_signal_starts_the_agent_only_for_the_installed_app(
    agent_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("Z4J_BRAIN_URL", "Z4J_TOKEN", "Z4J_HMAC_SECRET"):
        monkeypatch.delenv(name, raising=False)
    mine, other = Celery("mine", set_as_current=False), Celery("other", set_as_current=False)
    bootstrap.install(mine)
    signals.worker_init.send(sender=fake_worker(other))
    assert agent_log.getvalue() == ""
    signals.worker_init.send(sender=fake_worker(mine))
    assert "Z4J_BRAIN_URL is not set" in agent_log.getvalue()


def test_configure_logging_leaves_an_applications_handler_alone() -> None:
    import logging

    parent = logging.getLogger("z4j.celery")
    saved = list(parent.handlers), parent.propagate, parent.level
    handler = logging.NullHandler()
    parent.handlers[:] = [handler]
    try:
        bootstrap.configure_logging()
        assert parent.handlers == [handler]
    finally:
        parent.handlers[:] = saved[0]
        parent.propagate = saved[1]
        parent.setLevel(saved[2])
