"""Tasks: indexes on ``group_id`` and ``chord_id``, for gathering a canvas by all its links.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-20 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index the tasks of a group (or chord header) and the header tasks of a chord's callback."""
    op.create_index("ix_tasks_group", "tasks", ["project_id", "group_id"])
    op.create_index("ix_tasks_chord", "tasks", ["project_id", "chord_id"])


def downgrade() -> None:
    """Drop the two indexes."""
    op.drop_index("ix_tasks_chord", table_name="tasks")
    op.drop_index("ix_tasks_group", table_name="tasks")
