"""What a running app holds: settings and the adapters the composition root wired in."""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Final

import attrs
from quart import current_app

from z4j_domain.audit import audit_key
from z4j_domain.ports import Clock, PasswordHasher, UnitOfWorkFactory

if TYPE_CHECKING:
    from z4j_infra.database import Database
    from z4j_infra.settings import Settings
    from z4j_web.commands import Dispatcher
    from z4j_web.ingest import IngestWriter
    from z4j_web.live import LiveUpdates
    from z4j_web.metrics import Metrics
    from z4j_web.reconciler import Reconciler
    from z4j_web.redaction import RedactionStore

__all__ = ["EXTENSION_KEY", "Runtime", "current_runtime", "uow_factory_of"]

#: Where the runtime lives in ``app.extensions``.
EXTENSION_KEY: Final = "z4j"


@attrs.define
class Runtime:
    """The app's long-lived services; the database ones are set when serving starts."""

    settings: Settings
    clock: Clock
    password_hasher: PasswordHasher
    uow_factory: UnitOfWorkFactory | None = None
    #: The database behind ``uow_factory`` when there is one (readiness checks use it).
    database: Database | None = None
    #: Whether the app connected ``database`` itself, and so must dispose of it.
    owns_database: bool = False
    #: Set when the server starts shutting down: agent sockets close with 1012.
    shutting_down: asyncio.Event = attrs.Factory(asyncio.Event)
    # Set by the composition root right after construction (they need the runtime).
    metrics: Metrics = attrs.field(init=False)
    live: LiveUpdates = attrs.field(init=False)
    ingest: IngestWriter = attrs.field(init=False)
    reconciler: Reconciler = attrs.field(init=False)
    commands: Dispatcher = attrs.field(init=False)
    redaction: RedactionStore = attrs.field(init=False)

    @property
    def audit_key(self) -> bytes:
        """The audit chain's HMAC key, derived from the instance secret."""
        return audit_key(self.settings.secret)

    @property
    def csrf_key(self) -> bytes:
        """The key that derives each session's CSRF token from its cookie."""
        return hmac.new(self.settings.secret.encode("utf-8"), b"z4j-csrf:v1", "sha256").digest()

    @property
    def uow(self) -> UnitOfWorkFactory:
        """The unit-of-work factory; fails loudly if used before serving started."""
        if self.uow_factory is None:
            raise RuntimeError("the database is not connected: the app is not serving")
        return self.uow_factory


def current_runtime() -> Runtime:
    """The runtime of the app handling the current request."""
    runtime: Runtime = current_app.extensions[EXTENSION_KEY]
    return runtime


def uow_factory_of(database: Database) -> UnitOfWorkFactory:
    """``database.unit_of_work`` typed as the domain's port."""
    return database.unit_of_work
