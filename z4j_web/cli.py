"""The ``z4j`` command: serve, check, status, migrate, API keys, agents, passwords, audit.

Every command reads its settings through :func:`z4j_infra.settings.load_settings`
(so ``Z4J_HOME``, ``Z4J_DATABASE_URL``, ... apply everywhere). Failures end
with a one-line message on stderr, never a traceback: exit status 2 for a
configuration problem, 1 for anything else.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn, ParamSpec, TypeVar

import click

from z4j_domain.audit import Verification, audit_key
from z4j_domain.errors import Z4jError
from z4j_domain.rbac import Role
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.errors import ConfigError
from z4j_infra.migrations import migrate as migrate_database
from z4j_infra.migrations import revisions
from z4j_infra.settings import Settings, load_settings
from z4j_web import accounts, auditing, services
from z4j_web.auditing import Actor, Change
from z4j_web.runtime import uow_factory_of
from z4j_web.version import version

__all__ = ["main"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
EXIT_INTERRUPTED: Final = 130
# A check or command against a database that never answers should fail, not hang.
_DATABASE_TIMEOUT: Final = 30.0


class CommandFailed(Exception):
    """Ends a command with a one-line message and an exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"z4j: error: {message}", err=True)
    sys.exit(exit_code)


def _handled(command: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into a one-line message and an exit status."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            _fail(str(error), EXIT_CONFIG)
        except CommandFailed as error:
            _fail(str(error), error.exit_code)
        except Z4jError as error:
            _fail(str(error), EXIT_FAILURE)
        except TimeoutError:
            _fail(f"the database did not answer within {_DATABASE_TIMEOUT:.0f} s", EXIT_FAILURE)
        except KeyboardInterrupt:
            # Ctrl-C before serving took over the signals (e.g. during a migration).
            _fail("interrupted", EXIT_INTERRUPTED)

    return wrapper


def _run(coroutine: Coroutine[Any, Any, R]) -> R:
    return asyncio.run(coroutine)


def _change(database: Database, settings: Settings) -> Change:
    """An audited change by this command; its actor is ``cli:<login name>``."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a bare container)
        login = f"uid{os.getuid()}"
    return Change(
        uow_factory=uow_factory_of(database),
        clock=SystemClock(),
        audit_key=audit_key(settings.secret),
        actor=Actor(name=f"cli:{login}"),
    )


def _configure_logging() -> None:
    # The default format ("INFO:z4j.setup:...") is the one the docs show; stderr
    # keeps stdout free for output that scripts read.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True)
    # Alembic narrates its context set-up at INFO on every run; z4j says itself
    # what a migration did.
    logging.getLogger("alembic").setLevel(logging.WARNING)


@asynccontextmanager
async def _database(settings: Settings, *, require_head: bool = True) -> AsyncIterator[Database]:
    async with asyncio.timeout(_DATABASE_TIMEOUT):
        database = await Database.connect(settings.database_url)
    try:
        if require_head:
            async with asyncio.timeout(_DATABASE_TIMEOUT):
                current, head = await revisions(database)
            if current != head:
                state = "not migrated" if current is None else f"at revision {current}, not {head}"
                raise CommandFailed(f"the database is {state}; run `z4j migrate` first")
        yield database
    finally:
        await database.dispose()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version(), "--version", "-V", prog_name="z4j", message="%(prog)s %(version)s")
def main() -> None:
    """z4j: a control plane for Celery with persistent, searchable task history.

    Configure with environment variables: Z4J_HOME (state directory, ~/.z4j),
    Z4J_DATABASE_URL (sqlite:///... or postgresql://...), Z4J_HOST, Z4J_PORT,
    Z4J_SECRET, Z4J_BOOTSTRAP_ADMIN_EMAIL and Z4J_BOOTSTRAP_ADMIN_PASSWORD.
    """


@main.command()
@click.option("--host", help="Address to listen on (default: Z4J_HOST or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port to listen on (default: Z4J_PORT or 7700)."
)
@_handled
def serve(host: str | None, port: int | None) -> None:
    """Migrate the database, then serve the dashboard and API until SIGINT/SIGTERM.

    On first boot (no user yet) a single-use setup link is logged to stderr;
    open it to create the first admin.
    """
    from z4j_web import server  # hypercorn is only needed here

    _configure_logging()
    settings = load_settings()
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if overrides:
        import attrs

        settings = attrs.evolve(settings, **overrides)
    _run(server.run(settings))


@main.command()
@_handled
def check() -> None:
    """Check the configuration, database connectivity and schema revision."""
    failed = _run(_check())
    if failed:
        raise CommandFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}")


async def _check() -> list[str]:
    try:
        settings = load_settings()
        database = await Database.connect(settings.database_url)
    except ConfigError as error:
        click.echo(f"FAIL  config: {error}")
        raise CommandFailed(str(error), EXIT_CONFIG) from None
    click.echo(f"ok    config: Z4J_HOME={settings.home}, database {database.safe_url}")
    try:
        async with asyncio.timeout(_DATABASE_TIMEOUT):
            checks = await services.check_database(database)
    except TimeoutError:
        checks = [
            services.Check(
                name="database",
                ok=False,
                detail=f"no answer within {_DATABASE_TIMEOUT:.0f} s from {database.safe_url}",
            )
        ]
    finally:
        await database.dispose()
    for item in checks:
        click.echo(f"{'ok  ' if item.ok else 'FAIL'}  {item.name}: {item.detail}")
    return [item.name for item in checks if not item.ok]


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handled
def status(as_json: bool) -> None:
    """Show the version and how many users, projects, agents, tasks and workers exist."""
    settings = load_settings()
    dialect, counts = _run(_status(settings))
    fields = {
        "users": counts.users,
        "projects": counts.projects,
        "agents": counts.agents,
        "tasks": counts.tasks,
        "workers": counts.workers,
    }
    if as_json:
        click.echo(json.dumps({"version": version(), "database": dialect, **fields}))
        return
    click.echo(f"z4j {version()}")
    click.echo(f"{'database':<10}{dialect}")
    for name, value in fields.items():
        click.echo(f"{name:<10}{value}")


async def _status(settings: Settings) -> tuple[str, services.StatusCounts]:
    async with _database(settings) as database, asyncio.timeout(_DATABASE_TIMEOUT):
        return database.dialect, await services.status_counts(uow_factory_of(database))


@main.command()
@_handled
def migrate() -> None:
    """Upgrade the database schema to the current head (safe to run repeatedly)."""
    _configure_logging()
    settings = load_settings()
    before, after = _run(_migrate(settings))
    if before == after:
        click.echo(f"the database is already at head ({after})")
    else:
        click.echo(f"migrated the database from {before or 'empty'} to {after}")


async def _migrate(settings: Settings) -> tuple[str | None, str | None]:
    async with _database(settings, require_head=False) as database:
        before, _ = await revisions(database)
        await migrate_database(database)
        after, _ = await revisions(database)
    return before, after


@main.group("api-key")
def api_key() -> None:
    """Manage API keys (Bearer keys for scripts and the REST API)."""


@api_key.command("create")
@click.option("--email", required=True, help="The user the key acts as.")
@click.option("--name", default="cli", show_default=True, help="What the key is for.")
@click.option("--project", default=None, help="Bind the key to this project (slug).")
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    default=None,
    help="Cap the key at this role (it never does more than its user may, either).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ...} as JSON.')
@_handled
def api_key_create(
    email: str, name: str, project: str | None, role: str | None, as_json: bool
) -> None:
    """Create an API key for a user and print it (it is shown only this once)."""
    settings = load_settings()
    created = _run(_create_api_key(settings, email=email, name=name, project=project, role=role))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "key": created.key,
                    "id": created.api_key.id,
                    "name": created.api_key.name,
                    "email": created.user.email,
                }
            )
        )
        return
    # The key alone on stdout, so that KEY=$(z4j api-key create ...) works.
    click.echo(created.key)
    click.echo(
        f"API key {created.api_key.name!r} for {created.user.email}: store it now,"
        " it is not shown again. Send it as 'Authorization: Bearer <key>'.",
        err=True,
    )


async def _create_api_key(
    settings: Settings, *, email: str, name: str, project: str | None, role: str | None
) -> accounts.NewApiKey:
    async with _database(settings) as database:
        return await accounts.create_api_key(
            _change(database, settings),
            email=email,
            name=name,
            project=project,
            role=role,
        )


@main.group()
def agent() -> None:
    """Manage agents (the credentials a Celery worker's z4j agent connects with)."""


@agent.command("create")
@click.option("--project", "project", default="default", show_default=True, help="Project slug.")
@click.option("--name", required=True, help="Agent name, unique in the project (e.g. 'workers').")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handled
def agent_create(project: str, name: str, as_json: bool) -> None:
    """Mint an agent and print its token and HMAC secret (shown only this once)."""
    from z4j_web.server import base_url

    settings = load_settings()
    created = _run(_mint_agent(settings, project=project, name=name))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "token": created.token,
                    "hmac_secret": created.hmac_secret,
                    "agent": created.agent.name,
                    "project": created.project.slug,
                }
            )
        )
        return
    click.echo(
        f"# agent {created.agent.name!r} of project {created.project.slug!r}: set these in the"
        " worker's environment; the token and secret are not shown again."
    )
    click.echo(f"export Z4J_BRAIN_URL={base_url(settings.host, settings.port)}")
    click.echo(f"export Z4J_TOKEN={created.token}")
    click.echo(f"export Z4J_HMAC_SECRET={created.hmac_secret}")
    click.echo(f"export Z4J_PROJECT_ID={created.project.slug}")


async def _mint_agent(settings: Settings, *, project: str, name: str) -> services.NewAgent:
    async with _database(settings) as database:
        return await services.mint_agent(
            _change(database, settings),
            settings.secret,
            project_slug=project,
            name=name,
        )


@agent.command("list")
@click.option("--project", "project", default="default", show_default=True, help="Project slug.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@_handled
def agent_list(project: str, as_json: bool) -> None:
    """List the project's agents, revoked ones included."""
    from z4j_web.api import agent_to_dict

    settings = load_settings()
    agents = _run(_list_agents(settings, project))
    rows = [agent_to_dict(a) for a in agents]
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no agents in project {project!r}; create one with `z4j agent create`")
        return
    click.echo(f"{'NAME':<24}{'STATUS':<10}{'CREATED':<27}LAST SEEN")
    for row in rows:
        status = "active" if row["active"] else "revoked"
        click.echo(
            f"{row['name']:<24}{status:<10}{row['created_at']:<27}{row['last_seen_at'] or '-'}"
        )


async def _list_agents(settings: Settings, project: str) -> Any:
    async with _database(settings) as database:
        uow_factory = uow_factory_of(database)
        async with uow_factory() as uow:
            found = await services.get_project(uow, project)
        return await services.list_agents(uow_factory, found)


@agent.command("revoke")
@click.option("--project", "project", default="default", show_default=True, help="Project slug.")
@click.option("--name", required=True, help="The agent to revoke.")
@_handled
def agent_revoke(project: str, name: str) -> None:
    """Revoke an agent: its token can no longer connect."""
    settings = load_settings()
    revoked = _run(_revoke_agent(settings, project, name))
    click.echo(f"revoked agent {revoked.name!r} of project {project!r}")


async def _revoke_agent(settings: Settings, project: str, name: str) -> Any:
    async with _database(settings) as database:
        return await services.revoke_agent(
            _change(database, settings),
            settings.secret,
            project_slug=project,
            name=name,
        )


@main.command("changepassword")
@click.option("--email", required=True, help="The user whose password to set.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the new password from the first line of stdin instead of prompting.",
)
@_handled
def changepassword(email: str, password_stdin: bool) -> None:
    """Set a user's password (recovery: needs no old password); their sessions end."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(
            f"New password for {email}", hide_input=True, confirmation_prompt=True
        )
    settings = load_settings()
    _run(_change_password(settings, email, password))
    click.echo(f"changed the password of {email}; their browser sessions have ended")


async def _change_password(settings: Settings, email: str, password: str) -> None:
    from z4j_infra.passwords import Argon2PasswordHasher

    async with _database(settings) as database:
        await accounts.change_password(
            _change(database, settings),
            Argon2PasswordHasher(),
            email=email,
            new_password=password,
            current_password=None,
        )


@main.group()
def audit() -> None:
    """Verify and prune the tamper-evident audit log."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_handled
def audit_verify(as_json: bool) -> None:
    """Recompute the audit chain; exit 1 naming the first bad entry if it was tampered with."""
    settings = load_settings()
    result = _run(_verify_audit(settings))
    broken = result.broken
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "verified": result.verified,
                    "first_seq": result.first_seq,
                    "last_seq": result.last_seq,
                    "checkpoint": result.checkpoint.through_seq if result.checkpoint else None,
                    "bad_entry": broken.seq if broken else None,
                    "reason": broken.reason if broken else None,
                }
            )
        )
    elif broken is None:
        through = result.checkpoint.through_seq if result.checkpoint else 0
        pruned = "entry 1" if through == 1 else f"entries 1 to {through}"
        since = f" after the checkpoint of {pruned}" if through else ""
        span = f" (entries {result.first_seq} to {result.last_seq})" if result.verified else ""
        noun = "entry" if result.verified == 1 else "entries"
        click.echo(f"OK: {result.verified} audit {noun} verified{span}{since}")
    else:
        click.echo(f"FAIL: audit entry {broken.seq}: {broken.reason}")
    if broken is not None:
        raise CommandFailed(f"the audit log does not verify at entry {broken.seq}")


async def _verify_audit(settings: Settings) -> Verification:
    async with _database(settings) as database:
        return await auditing.verify(uow_factory_of(database), audit_key(settings.secret))


@audit.command("prune")
@click.option(
    "--older-than-days",
    type=click.IntRange(1),
    required=True,
    help="Delete entries older than this many days (a signed checkpoint takes their place).",
)
@_handled
def audit_prune(older_than_days: int) -> None:
    """Delete old audit entries, leaving a signed checkpoint so the chain still verifies."""
    from datetime import timedelta

    settings = load_settings()
    result = _run(_prune_audit(settings, timedelta(days=older_than_days)))
    if result.pruned:
        noun = "entry" if result.pruned == 1 else "entries"
        click.echo(
            f"pruned {result.pruned} audit {noun} (through entry {result.through_seq});"
            " a signed checkpoint replaces them"
        )
    else:
        days = "day" if older_than_days == 1 else "days"
        click.echo(f"no audit entries older than {older_than_days} {days}")


async def _prune_audit(settings: Settings, older_than: Any) -> auditing.PruneResult:
    async with _database(settings) as database:
        return await auditing.prune(_change(database, settings), older_than=older_than)


if __name__ == "__main__":
    main(prog_name="z4j")
