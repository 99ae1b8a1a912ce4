"""Alembic's environment for z4j: migrate on the connection handed over in ``Config.attributes``."""

from __future__ import annotations

from alembic import context

from z4j_infra.schema import metadata

config = context.config


def _run_offline() -> None:
    # `alembic upgrade --sql` for DBAs who apply the SQL themselves.
    url = config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "z4j's migrations run through z4j_infra.migrations.migrate(), "
            "which provides the connection"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
