"""Schema migrations (alembic), run from inside the application's event loop.

Alembic is the schema's source of truth. It is configured here in code, with
the scripts located through this package, so migrations work from an installed
wheel without an ``alembic.ini``. The connection is handed to ``env.py``
through ``Config.attributes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from z4j_infra.database import Database
from z4j_infra.errors import translate_errors

__all__ = ["alembic_config", "downgrade", "migrate", "revisions"]

_SCRIPT_LOCATION: Final = Path(__file__).resolve().parent

# Any constant works; it only has to be the same in every brain process.
_MIGRATION_LOCK_ID: Final = 0x7A346A_4D494752  # "z4j" "MIGR"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An alembic configuration for z4j's scripts, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _serialize(connection: sa.Connection) -> None:
    # Several brains may start at once against one PostgreSQL database: let one
    # migrate while the others wait, then find nothing left to do. The lock is
    # released when the transaction ends.
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_ID)))


def _upgrade(connection: sa.Connection, revision: str) -> None:
    _serialize(connection)
    command.upgrade(alembic_config(connection), revision)


def _downgrade(connection: sa.Connection, revision: str) -> None:
    _serialize(connection)
    command.downgrade(alembic_config(connection), revision)


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade the database's schema to ``revision`` (the newest by default), in one transaction."""
    with translate_errors():
        async with db.engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)


async def downgrade(db: Database, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``"base"`` removes every table)."""
    with translate_errors():
        async with db.engine.begin() as connection:
            await connection.run_sync(_downgrade, revision)


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def revisions(db: Database) -> tuple[str | None, str]:
    """The database's current revision (``None`` when unmigrated) and the newest one."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migration scripts found")
    with translate_errors():
        async with db.engine.connect() as connection:
            current: Any = await connection.run_sync(_current)
    return current, head
