"""Running the real ``z4j`` command in a subprocess, against a throw-away ``Z4J_HOME``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

#: How the tests start the command: the same ``main`` the ``z4j`` entry point calls.
Z4J = [sys.executable, "-m", "z4j_web.cli"]

RunZ4j = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def z4j_env(tmp_path: Path) -> dict[str, str]:
    """An environment with a fresh Z4J_HOME and none of the caller's Z4J_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("Z4J_")}
    env["Z4J_HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def run_z4j(z4j_env: dict[str, str]) -> RunZ4j:
    """Run ``z4j ARGS...`` to completion; extra keyword arguments override the environment."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*Z4J, *args],
            env={**z4j_env, **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
