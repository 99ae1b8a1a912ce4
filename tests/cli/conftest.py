"""Running the ``z4j`` command against a throw-away ``Z4J_HOME``: in a subprocess, or in-process.

``run_z4j`` runs the real command in a subprocess. ``z4j_in_process`` runs the
same click command in this process, with the same environment: for the calls a
test makes to set something up or to look at it, where the process boundary is
not what is tested (every command keeps tests that run it as a subprocess).

``migrated_sqlite`` and ``migrated_postgres`` give a database as ``z4j migrate``
leaves it, copied from a template migrated once per session (``z4j migrate``
itself is tested in test_commands.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from tests import serving
from tests.conftest import _drop_database, _migrate, _run, _sql_url, fresh_postgres_database
from z4j_web.cli import main

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


#: Commands that set up logging for the whole process: run them as subprocesses only.
_NOT_IN_PROCESS = ("serve", "migrate")


@pytest.fixture
def z4j_in_process(z4j_env: dict[str, str]) -> RunZ4j:
    """Like ``run_z4j``, but in this process through click's test runner; ``stdin=`` gives the
    command's standard input. The environment is ``z4j_env`` as it is at the call (plus extra
    keyword arguments), with none of this process's other Z4J_* settings. An exception the
    command does not turn into an exit status fails the test."""

    def run(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        assert not args or args[0] not in _NOT_IN_PROCESS, f"run {args[0]!r} with run_z4j"
        wanted = {key: value for key, value in {**z4j_env, **env}.items() if key[:4] == "Z4J_"}
        overrides: dict[str, str | None] = {
            key: None for key in os.environ if key.startswith("Z4J_")
        }
        overrides.update(wanted)
        result = CliRunner().invoke(
            main, list(args), input=stdin, env=overrides, prog_name="z4j", catch_exceptions=False
        )
        return subprocess.CompletedProcess(
            [*serving.Z4J, *args], result.exit_code, result.stdout, result.stderr
        )

    return run


@pytest.fixture
def migrated_sqlite(z4j_env: dict[str, str], _sqlite_template: Path) -> str:
    """The command's default database (z4j.db in Z4J_HOME), migrated; its URL."""
    home = Path(z4j_env["Z4J_HOME"])
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / "z4j.db"
    shutil.copyfile(_sqlite_template, path)
    wal = _sqlite_template.with_name(_sqlite_template.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, path.with_name(path.name + "-wal"))
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def _postgres_template(postgres_admin_url: str) -> Iterator[str]:
    """The name of a migrated PostgreSQL database that nothing connects to: a template."""
    with fresh_postgres_database(postgres_admin_url) as url:
        _run(_migrate(url))
        name = make_url(url).database
        assert name is not None
        yield name


async def _create_from_template(admin_url: str, name: str, template: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await connection.close()


@contextmanager
def migrated_postgres(admin_url: str, template: str) -> Iterator[str]:
    """URL of a new database ``z4j_test_<hex>`` copied from ``template``, dropped on exit."""
    name = f"z4j_test_{secrets.token_hex(6)}"
    _run(_create_from_template(admin_url, name, template))
    try:
        yield _sql_url(admin_url, name)
    finally:
        _run(_drop_database(admin_url, name))
