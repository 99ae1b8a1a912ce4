"""Agents: the salt from which the brain derives each agent's HMAC secret.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``agents.secret_salt``."""
    # SQLite cannot add a NOT NULL column without a default. No release could
    # mint an agent before this revision, so no row ever holds the empty salt.
    op.add_column(
        "agents",
        sa.Column("secret_salt", sa.String(64), nullable=False, server_default=sa.text("''")),
    )


def downgrade() -> None:
    """Drop ``agents.secret_salt``."""
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("secret_salt")
