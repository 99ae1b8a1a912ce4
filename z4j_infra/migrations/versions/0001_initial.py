"""Initial schema: projects, users, API keys, agents, settings, tasks, task events, workers.

Revision ID: 0001
Revises:
Create Date: 2026-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported from z4j_infra.schema: a migration must
# keep creating what it created on the day it was written.
_JSON = (
    sa.JSON(none_as_null=True)
    .with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    .with_variant(sa.Text(), "sqlite")
)
_TASK_ID = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of z4j 0.1."""
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("slug", name="uq_projects_slug"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("last_used_at", _timestamp(), nullable=True),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("last_seen_at", _timestamp(), nullable=True),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_agents_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("project_id", "name", name="uq_agents_project_id_name"),
        sa.UniqueConstraint("token_hash", name="uq_agents_token_hash"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )
    op.create_table(
        "tasks",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("id", _TASK_ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("routing_key", sa.Text(), nullable=True),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column("args", _JSON, nullable=True),
        sa.Column("kwargs", _JSON, nullable=True),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("exception", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=True),
        sa.Column("eta", _timestamp(), nullable=True),
        sa.Column("expires", _timestamp(), nullable=True),
        sa.Column("sent_at", _timestamp(), nullable=True),
        sa.Column("received_at", _timestamp(), nullable=True),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("runtime", sa.Float(), nullable=True),
        sa.Column("root_id", sa.String(255), nullable=True),
        sa.Column("parent_id", sa.String(255), nullable=True),
        sa.Column("group_id", sa.String(255), nullable=True),
        sa.Column("chord_id", sa.String(255), nullable=True),
        sa.Column("first_seen_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("state_attempt", sa.Integer(), nullable=False),
        sa.Column("state_rank", sa.SmallInteger(), nullable=False),
        sa.Column("state_clock", sa.BigInteger(), nullable=False),
        sa.Column("state_timestamp", _timestamp(), nullable=False),
        sa.Column("state_event_id", sa.String(255), nullable=False),
        sa.Column("field_attempts", _JSON, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_first_seen", "tasks", ["project_id", "first_seen_at", "id"])
    op.create_index("ix_tasks_state", "tasks", ["project_id", "state", "first_seen_at", "id"])
    op.create_index("ix_tasks_name", "tasks", ["project_id", "name", "first_seen_at", "id"])
    op.create_index("ix_tasks_queue", "tasks", ["project_id", "queue", "first_seen_at", "id"])
    op.create_index("ix_tasks_worker", "tasks", ["project_id", "worker", "first_seen_at", "id"])
    op.create_index("ix_tasks_queue_state", "tasks", ["project_id", "queue", "state"])
    op.create_index("ix_tasks_root", "tasks", ["project_id", "root_id"])
    op.create_table(
        "task_events",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("task_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("timestamp", _timestamp(), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_task_events"),
    )
    op.create_index("ix_task_events_task", "task_events", ["project_id", "task_id"])
    op.create_table(
        "workers",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("first_seen_at", _timestamp(), nullable=False),
        sa.Column("last_heartbeat_at", _timestamp(), nullable=True),
        sa.Column("pool", sa.Text(), nullable=True),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("active", sa.Integer(), nullable=True),
        sa.Column("processed", sa.BigInteger(), nullable=True),
        sa.Column("loadavg", _JSON, nullable=True),
        sa.Column("queues", _JSON, nullable=True),
        sa.Column("software", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("project_id", "hostname", name="pk_workers"),
    )


def downgrade() -> None:
    """Drop every table of z4j 0.1."""
    op.drop_table("workers")
    op.drop_index("ix_task_events_task", table_name="task_events")
    op.drop_table("task_events")
    for index in (
        "ix_tasks_root",
        "ix_tasks_queue_state",
        "ix_tasks_worker",
        "ix_tasks_queue",
        "ix_tasks_name",
        "ix_tasks_state",
        "ix_tasks_first_seen",
    ):
        op.drop_index(index, table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("settings")
    op.drop_table("agents")
    op.drop_index("ix_api_keys_user_id", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("users")
    op.drop_table("projects")
