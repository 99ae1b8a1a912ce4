"""Running the real ``z4j`` command in a subprocess, against a throw-away ``Z4J_HOME``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import serving

RunZ4j = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def z4j_env(tmp_path: Path) -> dict[str, str]:
    """An environment with a fresh Z4J_HOME and none of the caller's Z4J_* settings."""
    return serving.z4j_environment(tmp_path / "home")


@pytest.fixture
def run_z4j(z4j_env: dict[str, str]) -> RunZ4j:
    """Run ``z4j ARGS...`` to completion; extra keyword arguments override the environment."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return serving.run_z4j({**z4j_env, **env}, *args)

    return run
