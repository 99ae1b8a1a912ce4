"""Running the brain: migrate, bootstrap first boot, then serve with hypercorn until a signal."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Final

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from z4j_domain.audit import audit_key
from z4j_domain.errors import InvalidInput
from z4j_domain.ports import Clock, PasswordHasher
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.errors import ConfigError
from z4j_infra.migrations import migrate, revisions
from z4j_infra.passwords import Argon2PasswordHasher
from z4j_infra.settings import Settings
from z4j_web import services
from z4j_web.app import create_app
from z4j_web.runtime import EXTENSION_KEY, Runtime, uow_factory_of
from z4j_web.version import version

__all__ = ["base_url", "prepare", "run", "setup_url"]

_log = logging.getLogger("z4j.serve")
_setup_log = logging.getLogger("z4j.setup")

_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::", "[::]"})
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _host_literal(host: str) -> str:
    try:
        is_v6 = ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return host
    return f"[{host.strip('[]')}]" if is_v6 else host


def base_url(host: str, port: int) -> str:
    """The URL a person on this machine opens to reach a server bound to ``host:port``."""
    # A wildcard bind is reachable on loopback, and "http://0.0.0.0/" is not a URL
    # every browser opens.
    shown = "127.0.0.1" if host in _WILDCARD_HOSTS else _host_literal(host)
    return f"http://{shown}:{port}"


def setup_url(host: str, port: int, token: str) -> str:
    """The first-boot link that opens the setup page with ``token``."""
    return f"{base_url(host, port)}/setup?token={token}"


async def prepare(
    settings: Settings, *, clock: Clock, password_hasher: PasswordHasher
) -> services.BootstrapResult:
    """Migrate the database to head and run first-boot bootstrap, logging what happened."""
    database = await Database.connect(settings.database_url)
    try:
        before, head = await revisions(database)
        if before != head:
            await migrate(database)
            _log.info("migrated the database from %s to %s", before or "empty", head)
        try:
            result = await services.bootstrap(
                uow_factory_of(database),
                clock,
                password_hasher,
                audit_key=audit_key(settings.secret),
                admin_email=settings.bootstrap_admin_email,
                admin_password=settings.bootstrap_admin_password,
            )
        except InvalidInput as error:
            raise ConfigError(f"Z4J_BOOTSTRAP_ADMIN_EMAIL / _PASSWORD: {error}") from None
    finally:
        await database.dispose()
    if result.admin is not None:
        _setup_log.info(
            "created the first admin %s (from Z4J_BOOTSTRAP_ADMIN_EMAIL) and the default project",
            result.admin.email,
        )
    elif result.setup_token is not None and result.expires_at is not None:
        _setup_log.info(
            "first boot, no admin yet: open %s to create the first admin"
            " (the link works once and expires %s)",
            setup_url(settings.host, settings.port, result.setup_token),
            result.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
        )
    return result


def _hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{_host_literal(settings.host)}:{settings.port}"]
    # Hand hypercorn our logger: given "-" it would install its own handler and
    # every line would print twice once logging is configured.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    config.graceful_timeout = 10
    return config


async def run(
    settings: Settings,
    *,
    clock: Clock | None = None,
    password_hasher: PasswordHasher | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Prepare the database, then serve until SIGINT/SIGTERM (or ``shutdown_trigger``) and drain."""
    clock = clock if clock is not None else SystemClock()
    password_hasher = password_hasher if password_hasher is not None else Argon2PasswordHasher()
    await prepare(settings, clock=clock, password_hasher=password_hasher)
    app = create_app(settings, clock=clock, password_hasher=password_hasher)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if shutdown_trigger is None:
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, _request_stop, stop, signum)
            installed.append(signum)
        shutdown_trigger = stop.wait
    runtime: Runtime = app.extensions[EXTENSION_KEY]
    stop_requested = shutdown_trigger

    async def begin_shutdown() -> None:
        await stop_requested()
        # Hypercorn now waits for open connections; tell agent sockets to close.
        runtime.shutting_down.set()

    # Everything imported and built so far lives as long as the process: move it
    # out of the collector's sight, so that a full collection (every few dozen
    # requests) walks only what requests allocate. On a 2-core machine that
    # cut the slowest requests from ~280 to ~140 ms (BENCHMARKS.md, pages.py).
    gc.collect()
    gc.freeze()
    _log.info("z4j %s starting on %s", version(), base_url(settings.host, settings.port))
    try:
        await hypercorn_serve(app, _hypercorn_config(settings), shutdown_trigger=begin_shutdown)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    _log.info("z4j stopped")


def _request_stop(stop: asyncio.Event, signum: signal.Signals) -> None:
    if not stop.is_set():
        _log.info("received %s: finishing requests in flight, then stopping", signum.name)
    stop.set()
