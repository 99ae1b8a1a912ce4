"""Tasks: the task a z4j retry re-published (``retry_of``), and its index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-13 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``tasks.retry_of`` and the index that finds a task's retries."""
    # Nullable and without a default: no task stored before this revision was
    # re-published by z4j, so NULL is the truth for every existing row.
    op.add_column("tasks", sa.Column("retry_of", sa.String(255), nullable=True))
    op.create_index("ix_tasks_retry_of", "tasks", ["project_id", "retry_of"])


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_tasks_retry_of", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("retry_of")
