"""Fixtures for the beat agent's tests: a fake brain, Redis database 12, Django, the agent's log.

Django is configured once for the test process (never through
``DJANGO_SETTINGS_MODULE``, which subprocesses would inherit), from
:mod:`tests.beat.django_settings` with an SQLite file in a temporary
directory, and ``migrate`` is run on it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.fake_brain import FakeBrain
from z4j_agent_celerybeat import bootstrap

from .beat import require_redis


@pytest.fixture
def brain() -> Iterator[FakeBrain]:
    """A fake brain on a free port (token ``good-token``, secret ``hmac-secret``)."""
    with FakeBrain() as fake:
        yield fake


@pytest.fixture
def redis_db() -> None:
    """Redis database 12 (the broker, RedBeat's store), emptied; a skip when Redis is away."""
    require_redis()


@pytest.fixture
def beat_log() -> Iterator[io.StringIO]:
    """Everything the beat agent logs (``z4j.celerybeat``), in Python's default format."""
    parent = logging.getLogger("z4j.celerybeat")
    saved = (list(parent.handlers), parent.level, parent.propagate)
    parent.handlers.clear()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    parent.addHandler(handler)
    parent.setLevel(logging.DEBUG)
    parent.propagate = False
    try:
        yield stream
    finally:
        parent.handlers[:] = saved[0]
        parent.setLevel(saved[1])
        parent.propagate = saved[2]


@pytest.fixture(scope="session")
def django_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Django set up in this process on a migrated SQLite file; its path."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    from tests.beat import django_settings

    database = tmp_path_factory.mktemp("django") / "beat.sqlite3"
    if not settings.configured:
        values = {
            name: getattr(django_settings, name) for name in dir(django_settings) if name.isupper()
        }
        values["DATABASES"] = {
            "default": {**django_settings.DATABASES["default"], "NAME": str(database)}
        }
        settings.configure(**values)
        django.setup()
    call_command("migrate", verbosity=0)
    return database


@pytest.fixture
def django_db(django_database: Path) -> Iterator[None]:
    """django-celery-beat's tables, empty before and after the test."""

    def empty() -> None:
        from django_celery_beat import models

        for model in (
            models.PeriodicTask,
            models.CrontabSchedule,
            models.IntervalSchedule,
            models.SolarSchedule,
            models.ClockedSchedule,
            models.PeriodicTasks,
        ):
            model.objects.all().delete()

    empty()
    yield
    empty()


@pytest.fixture
def clean_beat_bootstrap() -> Iterator[None]:
    """Undo what the beat agent's bootstrap did in this process."""
    from celery import signals

    yield
    bootstrap._stop("test over")
    bootstrap._apps.clear()
    signals.beat_init.disconnect(bootstrap._on_beat_init, dispatch_uid="z4j-beat-bootstrap")
