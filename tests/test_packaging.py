"""Packaging: worker-side installs never pull the server stack into a worker's venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER_STACK = {"sqlalchemy", "asyncpg", "aiosqlite", "alembic", "quart", "hypercorn"}


def _resolve(target: Path) -> set[str]:
    """Names of every distribution pip would install for ``target`` into an empty venv."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            "-",
            str(target),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not resolve {target.name}: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    return {item["metadata"]["name"].lower() for item in report["install"]}


@pytest.mark.parametrize(
    ("agent", "brings"),
    [
        ("z4j-celery", set()),
        # The beat agent reuses the worker agent's transport; the schedulers it writes
        # to (django-celery-beat, RedBeat) are the application's own, never pulled in.
        ("z4j-celerybeat", {"z4j-celery"}),
    ],
)
def test_agents_do_not_pull_the_server_stack(agent: str, brings: set[str]) -> None:
    """Installing an agent resolves the domain and Celery, and none of the server's libraries."""
    installed = _resolve(ROOT / "packaging" / agent)
    assert {agent, "z4j-domain", "celery", *brings} <= installed
    assert installed.isdisjoint(SERVER_STACK), installed & SERVER_STACK
    assert installed.isdisjoint({"django", "django-celery-beat", "celery-redbeat"})


def test_the_server_distribution_brings_the_z4j_command_and_its_stack() -> None:
    """`pip install .` at the root resolves the server with the domain and its stack."""
    installed = _resolve(ROOT)
    assert {"z4j", "z4j-domain"} <= installed
    assert installed >= SERVER_STACK
    assert "celery" not in installed
