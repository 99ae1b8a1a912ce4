"""The connection to the database: engine set-up per dialect and a health check."""

from __future__ import annotations

from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from z4j_infra import jsontext
from z4j_infra.errors import ConfigError, StorageError, translate_errors
from z4j_infra.settings import normalize_database_url
from z4j_infra.unit_of_work import SqlUnitOfWork

__all__ = ["Database"]

#: How long a SQLite writer waits for another one before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
#: How long connecting to PostgreSQL may take before it counts as unreachable, in seconds.
POSTGRES_CONNECT_TIMEOUT: Final = 10

# WAL lets readers run while one writer writes; NORMAL sync is durable across
# application crashes (only an OS crash can lose the last commits) and is what
# WAL is designed for; SQLite leaves foreign keys off unless asked.
_SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)


def _lower(value: str | None) -> str | None:
    # Python's lower(), so SQLite's case-insensitive search matches the domain's
    # reference semantics beyond ASCII (SQLite's own lower() is ASCII-only).
    return value.lower() if isinstance(value, str) else value


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which would not
        # BEGIN before SELECT or DDL) and emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()
        dbapi_connection.create_function("z4j_lower", 1, _lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


@attrs.define
class Database:
    """One database (SQLite or PostgreSQL) and its connection pool.

    ``db.unit_of_work`` is a :class:`~z4j_domain.ports.UnitOfWorkFactory`.
    """

    engine: AsyncEngine

    @classmethod
    async def connect(cls, url: str, *, echo: bool = False) -> Database:
        """Set up the engine for ``url`` (any spelling :func:`normalize_database_url` accepts).

        Nothing is connected yet; call :meth:`ping` to check the database is there.
        """
        normalized = normalize_database_url(url)
        try:
            parsed = sa.engine.make_url(normalized)
        except sa.exc.ArgumentError as error:
            raise ConfigError(f"invalid database URL: {error}") from None
        options: dict[str, Any] = {"echo": echo}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database in ("", ":memory:"):
                # One shared connection, or every checkout would see its own empty database.
                options["poolclass"] = sa.pool.StaticPool
            else:
                options.update(pool_size=5, max_overflow=10)
        else:
            options.update(
                pool_size=10,
                max_overflow=10,
                # A brain outlives PostgreSQL restarts and failovers: test each
                # connection at checkout, and retire old ones before the server
                # or a proxy kills them.
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args={
                    "timeout": POSTGRES_CONNECT_TIMEOUT,
                    # asyncpg keeps prepared statements per connection, and
                    # PostgreSQL may then settle on one generic plan. A generic
                    # plan made while a table was small (every fresh install)
                    # was measured to stay and scan a whole project per ingest
                    # batch once the table had grown. z4j's statements are
                    # large batches and dashboard queries, so planning each
                    # execution with its real parameters costs little.
                    "server_settings": {"plan_cache_mode": "force_custom_plan"},
                },
            )
        # Used by asyncpg's jsonb codec for every JSON column read or written.
        options.update(json_serializer=jsontext.dumps, json_deserializer=jsontext.loads)
        engine = create_async_engine(parsed, **options)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        return cls(engine=engine)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def unit_of_work(self) -> SqlUnitOfWork:
        """A fresh unit of work (use it as ``async with``)."""
        return SqlUnitOfWork(self.engine)

    async def ping(self) -> None:
        """Check that the database answers; raise :class:`StorageError` naming it otherwise."""
        try:
            with translate_errors():
                async with self.engine.connect() as connection:
                    await connection.execute(sa.text("SELECT 1"))
        except StorageError as error:
            raise StorageError(
                f"cannot reach the database at {self.safe_url}: {error}"
            ) from error.__cause__

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"
