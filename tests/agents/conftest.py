"""Fixtures for the Celery agent's tests: a fake brain and the agent's log lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from z4j_agent_celery.bootstrap import configure_logging

from .fake_brain import FakeBrain


@pytest.fixture
def brain() -> Iterator[FakeBrain]:
    """A fake brain on a free port (token ``good-token``, secret ``hmac-secret``)."""
    with FakeBrain() as fake:
        yield fake


@pytest.fixture
def agent_log() -> Iterator[io.StringIO]:
    """Everything the agent logs (logger ``z4j.celery``), in Python's default format."""
    parent = logging.getLogger("z4j.celery")
    saved = (list(parent.handlers), parent.level, parent.propagate)
    parent.handlers.clear()
    stream = io.StringIO()
    configure_logging(stream)
    parent.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        parent.handlers[:] = saved[0]
        parent.setLevel(saved[1])
        parent.propagate = saved[2]
