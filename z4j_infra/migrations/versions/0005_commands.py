"""Commands: what operators asked agents to do, stored before it is sent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 12:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from z4j_infra.schema: a migration must
# keep creating what it created on the day it was written.
_JSON = (
    sa.JSON(none_as_null=True)
    .with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    .with_variant(sa.Text(), "sqlite")
)
_COMMAND_ID = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the commands table and its indexes."""
    op.create_table(
        "commands",
        sa.Column("id", _COMMAND_ID, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("requested_by_name", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("deadline", _timestamp(), nullable=False),
        sa.Column("agent", sa.Text(), nullable=True),
        sa.Column("delivered_at", _timestamp(), nullable=True),
        sa.Column("acked_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_commands_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
        sa.UniqueConstraint(
            "project_id", "idempotency_key", name="uq_commands_project_id_idempotency_key"
        ),
    )
    op.create_index("ix_commands_project", "commands", ["project_id", "created_at", "id"])
    op.create_index("ix_commands_status", "commands", ["project_id", "status", "created_at", "id"])
    op.create_index("ix_commands_deadline", "commands", ["status", "deadline"])


def downgrade() -> None:
    """Drop the commands table (every stored command is lost)."""
    for index in ("ix_commands_deadline", "ix_commands_status", "ix_commands_project"):
        op.drop_index(index, table_name="commands")
    op.drop_table("commands")
