"""The composition root: :func:`create_app` wires settings and adapters into a Quart app."""

from __future__ import annotations

from typing import Final

from quart import Quart, Response, request

from z4j_domain.errors import InvalidInput
from z4j_domain.ports import Clock, PasswordHasher, UnitOfWorkFactory
from z4j_infra.clock import SystemClock
from z4j_infra.database import Database
from z4j_infra.passwords import Argon2PasswordHasher
from z4j_infra.settings import Settings
from z4j_web import (
    account,
    actions,
    api,
    dashboard,
    gateway,
    health,
    live,
    members,
    metrics,
    onboarding,
    overview,
    pages_account,
    pages_admin,
    pages_ops,
    pages_schedules,
    schedules,
)
from z4j_web.commands import Dispatcher
from z4j_web.errors import register_error_handlers
from z4j_web.ingest import DEFAULT_CAPACITY, IngestWriter, writers_for
from z4j_web.live import LiveUpdates
from z4j_web.metrics import Metrics
from z4j_web.reconciler import Reconciler
from z4j_web.redaction import RedactionStore
from z4j_web.runtime import EXTENSION_KEY, Runtime, uow_factory_of

__all__ = ["MAX_REQUEST_BYTES", "create_app"]

#: The largest request body accepted. The API takes small JSON documents and the
#: setup form a few fields; agents' event batches will arrive over WebSocket.
MAX_REQUEST_BYTES: Final = 1024 * 1024

# Pages are self-contained (inline CSS, no script, no third-party origin), so the
# policy can forbid everything else; it also keeps the setup page out of frames.
# Scripts only from this server (the dashboard's static/app.js); fetch and the live
# WebSocket only to it.
_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(
    settings: Settings,
    *,
    uow_factory: UnitOfWorkFactory | None = None,
    clock: Clock | None = None,
    password_hasher: PasswordHasher | None = None,
    database: Database | None = None,
    ingest_capacity: int = DEFAULT_CAPACITY,
) -> Quart:
    """Build the z4j app.

    With neither ``uow_factory`` nor ``database``, the app connects to
    ``settings.database_url`` when serving starts and disposes of the pool when
    it stops. A given ``database`` (already connected, and left open) or
    ``uow_factory`` (e.g. an in-memory store in tests) is used as it is.
    ``ingest_capacity`` bounds the agent gateway's write queue, in event batches.
    """
    app = Quart(__name__.rpartition(".")[0])
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        MAX_FORM_MEMORY_SIZE=64 * 1024,
        MAX_FORM_PARTS=50,
        SECRET_KEY=settings.secret,
    )
    # Keep documented field order (task fields, etc.) instead of sorting keys.
    app.json.sort_keys = False  # type: ignore[attr-defined]

    if uow_factory is None and database is not None:
        uow_factory = uow_factory_of(database)
    runtime = Runtime(
        settings=settings,
        clock=clock if clock is not None else SystemClock(),
        password_hasher=password_hasher if password_hasher is not None else Argon2PasswordHasher(),
        uow_factory=uow_factory,
        database=database,
    )
    runtime.metrics = Metrics()
    runtime.live = LiveUpdates(on_drop=runtime.metrics.live_dropped.inc)
    runtime.ingest = IngestWriter(
        lambda: runtime.uow,
        metrics=runtime.metrics,
        live=runtime.live,
        capacity=ingest_capacity,
    )
    runtime.reconciler = Reconciler(runtime)
    runtime.commands = Dispatcher(runtime)
    runtime.redaction = RedactionStore(lambda: runtime.uow)
    app.extensions[EXTENSION_KEY] = runtime

    @app.before_serving
    async def connect() -> None:
        if runtime.uow_factory is None:
            db = await Database.connect(settings.database_url)
            runtime.database, runtime.uow_factory = db, uow_factory_of(db)
            runtime.owns_database = True
        runtime.shutting_down.clear()
        dialect = runtime.database.dialect if runtime.database is not None else None
        runtime.ingest.start(writers=writers_for(dialect))
        runtime.reconciler.start()
        runtime.commands.start()

    @app.after_serving
    async def disconnect() -> None:
        runtime.shutting_down.set()
        await runtime.reconciler.stop()
        await runtime.commands.stop()
        # Commit what agents already handed over before the database goes away.
        await runtime.ingest.stop()
        if runtime.owns_database and runtime.database is not None:
            db, runtime.database, runtime.uow_factory = runtime.database, None, None
            runtime.owns_database = False
            await db.dispose()

    @app.before_request
    async def refuse_nul_characters() -> None:
        # No name, id, slug or filter legitimately contains NUL, and PostgreSQL
        # cannot store or even compare one: refuse it at the door as bad input.
        if "\x00" in request.path:
            raise InvalidInput("the path contains a NUL character")
        for name, value in request.args.items(multi=True):
            if "\x00" in name or "\x00" in value:
                raise InvalidInput(f"parameter {name!r} contains a NUL character")

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", _CONTENT_SECURITY_POLICY)
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    app.register_blueprint(health.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(actions.blueprint)
    app.register_blueprint(schedules.blueprint)
    app.register_blueprint(account.blueprint)
    app.register_blueprint(members.blueprint)
    app.register_blueprint(onboarding.blueprint)
    app.register_blueprint(dashboard.blueprint)
    app.register_blueprint(pages_admin.blueprint)
    app.register_blueprint(pages_ops.blueprint)
    app.register_blueprint(overview.blueprint)
    app.register_blueprint(pages_account.blueprint)
    app.register_blueprint(pages_schedules.blueprint)
    app.register_blueprint(gateway.blueprint)
    app.register_blueprint(live.blueprint)
    app.register_blueprint(metrics.blueprint)
    register_error_handlers(app)
    return app
