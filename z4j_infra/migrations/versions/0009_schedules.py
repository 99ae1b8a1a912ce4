"""Celery Beat schedules: schedulers as their beat agents report them, their entries and fires.

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-03 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Spelled out here rather than imported from z4j_infra.schema: a migration must
# keep creating what it created on the day it was written.
def _name() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the schedulers, schedule_entries and schedule_fires tables."""
    op.create_table(
        "schedulers",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", _name(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("class_path", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("writable", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("known_tasks", sa.Text(), nullable=False),
        sa.Column("refused", sa.Text(), nullable=False),
        sa.Column("reported_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_schedulers_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "name", name="pk_schedulers"),
    )
    op.create_table(
        "schedule_entries",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("scheduler", _name(), nullable=False),
        sa.Column("name", _name(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("next_run_at", _timestamp(), nullable=True),
        sa.Column("last_run_at", _timestamp(), nullable=True),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "scheduler"],
            ["schedulers.project_id", "schedulers.name"],
            name="fk_schedule_entries_project_id_schedulers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "scheduler", "name", name="pk_schedule_entries"),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("id", _name(), nullable=False),
        sa.Column("scheduler", _name(), nullable=False),
        sa.Column("schedule", _name(), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=True),
        sa.Column("fired_at", _timestamp(), nullable=False),
        sa.Column("manual", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_schedule_fires"),
    )
    op.create_index(
        "ix_schedule_fires_schedule",
        "schedule_fires",
        ["project_id", "scheduler", "schedule", "fired_at", "id"],
    )


def downgrade() -> None:
    """Drop the three tables (every stored schedule and fire is lost)."""
    op.drop_index("ix_schedule_fires_schedule", table_name="schedule_fires")
    op.drop_table("schedule_fires")
    op.drop_table("schedule_entries")
    op.drop_table("schedulers")
