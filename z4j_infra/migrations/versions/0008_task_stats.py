"""Task statistics: counts per state and finishes per minute, kept with every task write.

The tables are aggregates of ``tasks`` (see ``z4j_domain.stats``); this
revision fills them from the tasks stored so far, in the database, in one
statement each.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported: a migration must not change when the code does.
_TERMINAL = ("succeeded", "failed", "retried", "revoked", "rejected", "lost")


def upgrade() -> None:
    """Create both tables and fill them from the stored tasks."""
    op.create_table(
        "task_state_counts",
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "state", name="pk_task_state_counts"),
    )
    op.create_table(
        "task_finish_counts",
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "minute", "state", name="pk_task_finish_counts"),
    )
    op.execute(
        "INSERT INTO task_state_counts (project_id, state, count) "
        "SELECT project_id, state, count(*) FROM tasks GROUP BY project_id, state"
    )
    if op.get_bind().dialect.name == "postgresql":
        # Truncated in UTC, whatever the session's time zone.
        minute = "date_trunc('minute', finished_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:
        # SQLite keeps naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
        # (No colon in the literal: op.execute would read ":00" as a parameter.)
        minute = "substr(finished_at, 1, 17) || '00.000000'"
    terminal = ", ".join(f"'{state}'" for state in _TERMINAL)
    # Built from this module's constants only.
    backfill = (
        "INSERT INTO task_finish_counts (project_id, minute, state, count) "  # noqa: S608
        f"SELECT project_id, {minute}, state, count(*) FROM tasks "
        f"WHERE finished_at IS NOT NULL AND state IN ({terminal}) "
        f"GROUP BY project_id, {minute}, state"
    )
    op.execute(backfill)


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("task_finish_counts")
    op.drop_table("task_state_counts")
