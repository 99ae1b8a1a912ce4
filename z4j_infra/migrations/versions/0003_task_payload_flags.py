"""Tasks: flags for what redaction and the size limits did to a task's payload.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FLAGS = ("redacted", "truncated", "arguments_redacted", "arguments_truncated")


def upgrade() -> None:
    """Add ``tasks.redacted``, ``truncated``, ``arguments_redacted``, ``arguments_truncated``."""
    # Tasks stored before this revision were never redacted by z4j: false is the truth.
    for name in FLAGS:
        op.add_column(
            "tasks", sa.Column(name, sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    """Drop the four flags."""
    with op.batch_alter_table("tasks") as batch:
        for name in FLAGS:
            batch.drop_column(name)
