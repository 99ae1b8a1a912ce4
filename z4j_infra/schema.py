"""The database schema as SQLAlchemy Core tables (the migrations create exactly this).

Conventions:

* every timestamp is a :class:`Timestamp`: stored in UTC, returned aware;
* JSON is ``JSONB`` on PostgreSQL and ``TEXT`` on SQLite (see
  :class:`JSONText`), and Python ``None`` is SQL ``NULL``;
* Celery's ids (task, event, canvas links) are ``String(255)``; names, queues,
  hostnames and texts are ``Text``.

High-volume tables (``tasks``, ``task_events``, ``workers``,
``schedule_fires``) carry ``project_id`` without a foreign key: a per-row
constraint check on the ingest path costs throughput, and projects are never
deleted behind their data's back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

__all__ = [
    "JSONText",
    "JSONType",
    "Timestamp",
    "agents",
    "api_keys",
    "audit_checkpoints",
    "audit_entries",
    "audit_head",
    "commands",
    "invitations",
    "memberships",
    "metadata",
    "projects",
    "schedule_entries",
    "schedule_fires",
    "schedulers",
    "sessions",
    "settings",
    "task_events",
    "task_finish_counts",
    "task_state_counts",
    "tasks",
    "upsertable_insert",
    "users",
    "workers",
]

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Timestamp(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, naive UTC text on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; SQLite gets it naive, because it keeps no offset."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: give it a tz")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored time as an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(sa.types.TypeDecorator[Any]):
    """A JSON document stored as ``TEXT``: what :data:`JSONType` is on SQLite.

    SQLite gives a column declared ``JSON`` numeric affinity, which stores the
    document ``1.0`` as the integer 1 and rounds integers beyond 64 bits;
    ``TEXT`` keeps every document exactly as encoded.
    """

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        """Encode the document (``None`` is SQL ``NULL``)."""
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        """Decode the document."""
        return None if value is None else json.loads(value)


#: JSON documents: JSONB on PostgreSQL (compact, indexable), TEXT on SQLite;
#: Python ``None`` is SQL ``NULL``.
JSONType: Final = (
    sa.JSON(none_as_null=True)
    .with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    .with_variant(JSONText(), "sqlite")
)

# The task id orders the task list (newest first by (first_seen_at, id)); the C
# collation makes that order the code-point order the domain's cursor uses,
# whatever the cluster's locale is, and lets LIKE 'prefix%' use the index.
_TaskId: Final = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")


def _id() -> Any:
    return sa.String(255)


def _ordered_name() -> Any:
    """A name a list is sorted by: in code-point order, as the domain sorts (see ``_TaskId``)."""
    return sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


projects: Final = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("slug", sa.String(63), nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

users: Final = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

api_keys: Final = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_used_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    # Added by migration 0004: the one project a key may act in, and its role cap.
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("role", sa.String(16), nullable=True),
)

agents: Final = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_seen_at", Timestamp, nullable=True),
    sa.Column("revoked_at", Timestamp, nullable=True),
    # Added by migration 0002; the empty default only lets SQLite add a NOT NULL
    # column (no agent could be minted before 0002), every insert sets a salt.
    sa.Column("secret_salt", sa.String(64), nullable=False, server_default=sa.text("''")),
    sa.UniqueConstraint("project_id", "name"),
)

memberships: Final = sa.Table(
    "memberships",
    metadata,
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    ),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
)

invitations: Final = sa.Table(
    "invitations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column(
        "invited_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("accepted_at", Timestamp, nullable=True),
    sa.Column(
        "accepted_by", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Column("revoked_at", Timestamp, nullable=True),
    sa.Index("ix_invitations_project", "project_id", "created_at"),
)

sessions: Final = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("last_seen_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
    sa.Column("source_ip", sa.Text, nullable=True),
    sa.Column("user_agent", sa.Text, nullable=True),
)

# Commands to agents. ``requested_by`` carries no foreign key: a user may be
# deleted, the record of what they asked for stays. Ids are the brain's uuid
# hex; the C collation makes them tie-break in code-point order, as the fake does.
commands: Final = sa.Table(
    "commands",
    metadata,
    sa.Column(
        "id",
        sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql"),
        primary_key=True,
    ),
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("requested_by", sa.Integer, nullable=True),
    sa.Column("requested_by_name", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("deadline", Timestamp, nullable=False),
    sa.Column("agent", sa.Text, nullable=True),
    sa.Column("delivered_at", Timestamp, nullable=True),
    sa.Column("acked_at", Timestamp, nullable=True),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("result", JSONType, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # NULL keys never collide (both databases treat NULLs as distinct here).
    sa.UniqueConstraint("project_id", "idempotency_key"),
    sa.Index("ix_commands_project", "project_id", "created_at", "id"),
    sa.Index("ix_commands_status", "project_id", "status", "created_at", "id"),
    # The sweep of overdue commands: one range per unfinished status.
    sa.Index("ix_commands_deadline", "status", "deadline"),
)

# The audit log. ``actor_id`` and ``project_id`` carry no foreign key: deleting
# a user or project must not delete (or fail on) the history of what they did.
# ``details`` is the canonical JSON text the entry's MAC covers, kept as TEXT
# (not JSONB, which reorders keys and re-renders numbers) so it reads back as
# exactly the document that was signed. Actions are compared in code-point
# order (the C collation), so an action prefix is an index range.
audit_entries: Final = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column(
        "action",
        sa.String(100).with_variant(sa.String(100, collation="C"), "postgresql"),
        nullable=False,
    ),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("actor_id", sa.Integer, nullable=True),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("project_id", sa.Integer, nullable=True),
    sa.Column("source_ip", sa.Text, nullable=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    # Unique: two entries after the same one would be a fork of the chain.
    sa.Column("prev_mac", sa.String(64), nullable=False, unique=True),
    sa.Column("mac", sa.String(64), nullable=False),
    sa.Index("ix_audit_entries_project", "project_id", "seq"),
    sa.Index("ix_audit_entries_action", "action", "at"),
    sa.Index("ix_audit_entries_target", "target", "seq"),
)

# The chain's head: exactly one row (id 1), which migration 0004 inserts.
# Appenders lock it, which serializes appends across every brain process.
audit_head: Final = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(64), nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

audit_checkpoints: Final = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("through_seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("mac", sa.String(64), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("pruned", sa.BigInteger, nullable=False),
    sa.Column("signature", sa.String(64), nullable=False),
)

settings: Final = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", JSONType, nullable=False),
)

tasks: Final = sa.Table(
    "tasks",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("id", _TaskId, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("queue", sa.Text),
    sa.Column("routing_key", sa.Text),
    sa.Column("worker", sa.Text),
    sa.Column("args", JSONType),
    sa.Column("kwargs", JSONType),
    sa.Column("result", JSONType),
    sa.Column("exception", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("retries", sa.Integer),
    sa.Column("eta", Timestamp),
    sa.Column("expires", Timestamp),
    sa.Column("sent_at", Timestamp),
    sa.Column("received_at", Timestamp),
    sa.Column("started_at", Timestamp),
    sa.Column("finished_at", Timestamp),
    sa.Column("runtime", sa.Float),
    sa.Column("root_id", _id()),
    sa.Column("parent_id", _id()),
    sa.Column("group_id", _id()),
    sa.Column("chord_id", _id()),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    # The fold's bookkeeping (Task.state_key and Task.field_attempts): what lets
    # new events be folded into a stored row without re-reading the history.
    sa.Column("state_attempt", sa.Integer, nullable=False),
    sa.Column("state_rank", sa.SmallInteger, nullable=False),
    sa.Column("state_clock", sa.BigInteger, nullable=False),
    sa.Column("state_timestamp", Timestamp, nullable=False),
    sa.Column("state_event_id", _id(), nullable=False),
    sa.Column("field_attempts", JSONType, nullable=True),
    # Bumped by every write; the bulk upsert only overwrites the version it
    # read, so two brains that both created the same task never lose an update.
    sa.Column("version", sa.Integer, nullable=False),
    # Added by migration 0003: what redaction and the size limits did to the
    # task's payload (Task.redacted and friends; a retry reads the argument flags).
    sa.Column("redacted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("arguments_redacted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("arguments_truncated", sa.Boolean, nullable=False, server_default=sa.false()),
    # Added by migration 0006: the task z4j re-published as this one (Task.retry_of).
    sa.Column("retry_of", _id()),
    sa.Index("ix_tasks_first_seen", "project_id", "first_seen_at", "id"),
    sa.Index("ix_tasks_state", "project_id", "state", "first_seen_at", "id"),
    sa.Index("ix_tasks_name", "project_id", "name", "first_seen_at", "id"),
    sa.Index("ix_tasks_queue", "project_id", "queue", "first_seen_at", "id"),
    sa.Index("ix_tasks_worker", "project_id", "worker", "first_seen_at", "id"),
    sa.Index("ix_tasks_queue_state", "project_id", "queue", "state"),
    sa.Index("ix_tasks_root", "project_id", "root_id"),
    sa.Index("ix_tasks_retry_of", "project_id", "retry_of"),
    # Added by migration 0007: a canvas is gathered by all its links, not only its root.
    sa.Index("ix_tasks_group", "project_id", "group_id"),
    sa.Index("ix_tasks_chord", "project_id", "chord_id"),
)

task_events: Final = sa.Table(
    "task_events",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("id", _id(), primary_key=True),
    sa.Column("task_id", _id(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("timestamp", Timestamp, nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Index("ix_task_events_task", "project_id", "task_id"),
)

# Added by migration 0008: aggregates of ``tasks`` (z4j_domain.stats), kept
# current by every write of tasks in the same transaction, so the overview
# reads a few rows whatever the number of tasks. Rows may hold 0.
task_state_counts: Final = sa.Table(
    "task_state_counts",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

task_finish_counts: Final = sa.Table(
    "task_finish_counts",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("minute", Timestamp, primary_key=True),
    sa.Column("state", sa.String(16), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

workers: Final = sa.Table(
    "workers",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("hostname", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column("last_heartbeat_at", Timestamp),
    sa.Column("pool", sa.Text),
    sa.Column("concurrency", sa.Integer),
    sa.Column("active", sa.Integer),
    sa.Column("processed", sa.BigInteger),
    sa.Column("loadavg", JSONType),
    sa.Column("queues", JSONType),
    sa.Column("software", sa.Text),
)

# Added by migration 0009: Celery Beat schedulers as their beat agents last
# reported them (z4j_domain.beat), each named by its agent. The header's lists
# and each entry are JSON text (z4j_infra.jsontext), always read whole: TEXT
# keeps the document exactly as encoded, where JSONB would re-render numbers.
# An entry's task, flag and times are copied out of the document for queries.
schedulers: Final = sa.Table(
    "schedulers",
    metadata,
    sa.Column(
        "project_id",
        sa.Integer,
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", _ordered_name(), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("class_path", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("writable", sa.Boolean, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("known_tasks", sa.Text, nullable=False),
    sa.Column("refused", sa.Text, nullable=False),
    sa.Column("reported_at", Timestamp, nullable=False),
)

# The primary key is also the listing's index (by scheduler, then entry name).
schedule_entries: Final = sa.Table(
    "schedule_entries",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("scheduler", _ordered_name(), primary_key=True),
    sa.Column("name", _ordered_name(), primary_key=True),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("entry", sa.Text, nullable=False),
    sa.Column("next_run_at", Timestamp),
    sa.Column("last_run_at", Timestamp),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.ForeignKeyConstraint(
        ["project_id", "scheduler"],
        ["schedulers.project_id", "schedulers.name"],
        ondelete="CASCADE",
    ),
)

# Fires outlive their entry (a removed entry's history stays), so they refer
# to it by name only, and, like the other high-volume tables, carry
# ``project_id`` without a foreign key. Ids are the agents' (uuids); the C
# collation makes them tie-break in code-point order, as the fake does. The
# index serves an entry's fires newest first by a backward scan.
schedule_fires: Final = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("project_id", sa.Integer, primary_key=True),
    sa.Column("id", _ordered_name(), primary_key=True),
    sa.Column("scheduler", _ordered_name(), nullable=False),
    sa.Column("schedule", _ordered_name(), nullable=False),
    sa.Column("task_id", _id(), nullable=True),
    sa.Column("fired_at", Timestamp, nullable=False),
    sa.Column("manual", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_schedule_fires_schedule", "project_id", "scheduler", "schedule", "fired_at", "id"),
)


def upsertable_insert(dialect: str, table: sa.Table) -> Any:
    """An INSERT into ``table`` that supports ``ON CONFLICT`` on ``dialect``."""
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)
