"""The ports: what the domain needs from the outside world, as ``typing.Protocol``s.

Every port is typed only in domain types. Adapters live in ``z4j_infra``; fakes
of every port live in :mod:`z4j_domain.testing`, and one contract suite runs
against all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from z4j_domain.audit import AuditEntry, AuditPage, AuditQuery, ChainHead, Checkpoint
from z4j_domain.beat import ScheduleFire, SchedulerInfo, SchedulerReport, StoredEntry
from z4j_domain.commands import Command, CommandStatus
from z4j_domain.projects import Project
from z4j_domain.queries import QueueCount, TaskFilter, TaskPage, TaskQuery
from z4j_domain.rbac import Membership, Role
from z4j_domain.schedules import ScheduleEntry
from z4j_domain.stats import ONE_MINUTE, FailureSample, FinishCount
from z4j_domain.tasks import Task, TaskEvent, TaskState
from z4j_domain.users import Agent, ApiKey, Invitation, Session, User
from z4j_domain.workers import Worker

__all__ = [
    "AgentRepository",
    "ApiKeyRepository",
    "AuditLogRepository",
    "Clock",
    "CommandRepository",
    "InvitationRepository",
    "MembershipRepository",
    "PasswordHasher",
    "ProjectRepository",
    "ScheduleRepository",
    "SessionRepository",
    "SettingRepository",
    "TaskEventRepository",
    "TaskRepository",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UserRepository",
    "WorkerRepository",
]


class Clock(Protocol):
    """The current time; always timezone-aware."""

    def now(self) -> datetime:
        """Return the current time in UTC."""
        ...


class PasswordHasher(Protocol):
    """Slow, salted password hashing (argon2 in production)."""

    def hash(self, password: str) -> str:
        """Return the stored form of ``password``."""
        ...

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``."""
        ...


class TaskRepository(Protocol):
    """Tasks' current state, kept as the fold of their events."""

    async def apply_events(self, project_id: int, events: Sequence[TaskEvent]) -> Sequence[Task]:
        """Record ``events`` and fold them into their tasks, as one batch.

        Events whose id is already recorded for the project are ignored
        (delivery is at least once). Returns the tasks that changed, once each,
        in their new state.
        """
        ...

    async def get(self, project_id: int, task_id: str) -> Task | None:
        """The task, or ``None``."""
        ...

    async def get_many(self, project_id: int, task_ids: Sequence[str]) -> Sequence[Task]:
        """The tasks with these ids that exist, in no particular order (one read)."""
        ...

    async def list(self, project_id: int, query: TaskQuery) -> TaskPage:
        """One page of tasks matching the query, newest first."""
        ...

    async def retries(self, project_id: int, task_id: str, limit: int = 100) -> Sequence[Task]:
        """The tasks whose ``retry_of`` is ``task_id``, oldest first, at most ``limit``.

        Oldest first is by ``(first_seen_at, id)``; ``limit`` below 1 raises
        :class:`~z4j_domain.errors.InvalidInput`.
        """
        ...

    async def canvas(self, project_id: int, task_id: str, limit: int) -> Sequence[Task]:
        """The tasks of ``task_id``'s canvas, oldest first, at most ``limit``; none for an
        unknown task.

        The canvas is the task and every task connected to it by its links
        (shared root or group, chord, named root, parent or callback), gathered
        as :class:`~z4j_domain.canvas.CanvasGathering` says: in rounds of index
        lookups, never a scan of the project; the task itself is always among
        them. Oldest first is by ``(first_seen_at, id)``; ``limit`` below 1
        raises :class:`~z4j_domain.errors.InvalidInput`.
        """
        ...

    async def queue_counts(self, project_id: int) -> Sequence[QueueCount]:
        """Task counts per (queue, state), zero counts omitted."""
        ...

    async def count_matching(self, project_id: int, selection: TaskFilter, limit: int) -> int:
        """How many tasks ``selection`` matches, counting no further than ``limit``."""
        ...

    async def count(self, project_id: int | None = None) -> int:
        """How many tasks (in one project, or in all)."""
        ...

    async def state_counts(self, project_id: int) -> Mapping[TaskState, int]:
        """How many of the project's tasks are in each state, zero counts omitted.

        Read from the aggregate kept with every write (:mod:`z4j_domain.stats`),
        not by counting the tasks.
        """
        ...

    async def finish_counts(
        self, project_id: int, since: datetime, step: timedelta = ONE_MINUTE
    ) -> Sequence[FinishCount]:
        """The project's finish counts (:mod:`z4j_domain.stats`) of the minutes from
        ``since`` on, summed per ``step``-wide bucket counted from ``since``
        (:func:`~z4j_domain.stats.bucket_start`), oldest first, zero counts
        omitted. ``step`` must be a whole number of minutes
        (:func:`~z4j_domain.stats.check_step`)."""
        ...

    async def recent_failures(self, project_id: int, limit: int) -> Sequence[FailureSample]:
        """The project's last ``limit`` failed tasks, newest first by ``(first_seen_at,
        id)``; ``limit`` below 1 raises :class:`~z4j_domain.errors.InvalidInput`."""
        ...


class TaskEventRepository(Protocol):
    """The append-only timeline of task events."""

    async def timeline(self, project_id: int, task_id: str) -> Sequence[TaskEvent]:
        """A task's events in their fold order (attempt, rank, clock, timestamp, id)."""
        ...


class WorkerRepository(Protocol):
    """Workers as agents last reported them."""

    async def save(self, project_id: int, worker: Worker) -> None:
        """Insert or replace the worker with this hostname."""
        ...

    async def get(self, project_id: int, hostname: str) -> Worker | None:
        """The worker, or ``None``."""
        ...

    async def list(self, project_id: int) -> Sequence[Worker]:
        """All workers of the project, by hostname."""
        ...

    async def count(self, project_id: int | None = None) -> int:
        """How many workers (in one project, or in all)."""
        ...


class ProjectRepository(Protocol):
    """Projects."""

    async def create(self, *, slug: str, name: str, created_at: datetime) -> Project:
        """Store a new project; raise :class:`~z4j_domain.errors.Conflict` if the slug is taken."""
        ...

    async def get(self, project_id: int) -> Project | None:
        """The project with this id, or ``None``."""
        ...

    async def get_by_slug(self, slug: str) -> Project | None:
        """The project, or ``None``."""
        ...

    async def list(self) -> Sequence[Project]:
        """All projects, by slug."""
        ...

    async def count(self) -> int:
        """How many projects."""
        ...


class UserRepository(Protocol):
    """Users."""

    async def create(
        self, *, email: str, password_hash: str | None, is_admin: bool, created_at: datetime
    ) -> User:
        """Store a new user; raise :class:`~z4j_domain.errors.Conflict` if the email is taken."""
        ...

    async def get(self, user_id: int) -> User | None:
        """The user, or ``None``."""
        ...

    async def get_by_email(self, email: str) -> User | None:
        """The user with this (normalized) email, or ``None``."""
        ...

    async def list(self, ids: Collection[int] | None = None) -> Sequence[User]:
        """All users, or those of ``ids`` (unknown ids are skipped), by email."""
        ...

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Replace the user's password hash (no-op for an unknown user)."""
        ...

    async def count(self) -> int:
        """How many users."""
        ...


class ApiKeyRepository(Protocol):
    """Users' API keys, stored as hashes."""

    async def create(
        self,
        *,
        user_id: int,
        name: str,
        key_hash: str,
        prefix: str,
        created_at: datetime,
        project_id: int | None = None,
        role: Role | None = None,
    ) -> ApiKey:
        """Store a new key; raise :class:`~z4j_domain.errors.Conflict` if there is no such
        user or (when given) project."""
        ...

    async def get(self, key_id: int) -> ApiKey | None:
        """The key with this id (revoked or not), or ``None``."""
        ...

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked or not), or ``None``."""
        ...

    async def list_for_user(self, user_id: int) -> Sequence[ApiKey]:
        """The user's keys, revoked ones included, oldest first."""
        ...

    async def revoke(self, key_id: int, at: datetime) -> bool:
        """Revoke the key at ``at``; whether it was active until now."""
        ...

    async def touch(self, key_id: int, at: datetime) -> None:
        """Record that the key was used at ``at``."""
        ...


class MembershipRepository(Protocol):
    """Who has which role in which project."""

    async def get(self, project_id: int, user_id: int) -> Membership | None:
        """The user's membership of the project, or ``None``."""
        ...

    async def set(self, project_id: int, user_id: int, role: Role, at: datetime) -> Membership:
        """Give the user ``role`` in the project (adding the membership, or changing its role;
        ``created_at`` stays that of the first grant). Raise
        :class:`~z4j_domain.errors.Conflict` if the project or user does not exist."""
        ...

    async def remove(self, project_id: int, user_id: int) -> bool:
        """End the membership; whether there was one."""
        ...

    async def list_for_project(self, project_id: int) -> Sequence[Membership]:
        """The project's memberships, by user id."""
        ...

    async def list_for_user(self, user_id: int) -> Sequence[Membership]:
        """The user's memberships, by project id."""
        ...

    async def count_role(self, project_id: int, role: Role) -> int:
        """How many members of the project have ``role``."""
        ...


class InvitationRepository(Protocol):
    """Invitations to projects; each link's token is stored as its hash."""

    async def create(
        self,
        *,
        project_id: int,
        email: str,
        role: Role,
        token_hash: str,
        invited_by: int | None,
        created_at: datetime,
        expires_at: datetime,
    ) -> Invitation:
        """Store a new invitation; raise :class:`~z4j_domain.errors.Conflict` if there is no
        such project."""
        ...

    async def get(self, invitation_id: int) -> Invitation | None:
        """The invitation, or ``None``."""
        ...

    async def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        """The invitation whose token has this hash, or ``None``."""
        ...

    async def list(self, project_id: int) -> Sequence[Invitation]:
        """The project's invitations, newest first."""
        ...

    async def mark_accepted(self, invitation_id: int, user_id: int, at: datetime) -> bool:
        """Mark it accepted by ``user_id`` if it is neither accepted nor revoked yet.

        Returns whether this call did it: of two concurrent acceptances, exactly
        one gets ``True`` (the single-use guarantee).
        """
        ...

    async def revoke(self, invitation_id: int, at: datetime) -> bool:
        """Revoke it if it is neither accepted nor revoked yet; whether this call did it."""
        ...


class SessionRepository(Protocol):
    """Browser sessions; each cookie's token is stored as its hash."""

    async def create(
        self,
        *,
        user_id: int,
        token_hash: str,
        created_at: datetime,
        expires_at: datetime,
        source_ip: str | None = None,
        user_agent: str | None = None,
    ) -> Session:
        """Store a new session (``last_seen_at`` is ``created_at``)."""
        ...

    async def get_by_token_hash(self, token_hash: str) -> Session | None:
        """The session whose token has this hash, or ``None``."""
        ...

    async def touch(self, session_id: int, at: datetime) -> None:
        """Record a request of the session at ``at``."""
        ...

    async def delete(self, session_id: int) -> bool:
        """End the session; whether it existed."""
        ...

    async def delete_for_user(self, user_id: int, *, keep: int | None = None) -> int:
        """End the user's sessions except ``keep``; how many ended."""
        ...

    async def delete_expired(self, now: datetime, idle_before: datetime) -> int:
        """Delete sessions past ``expires_at`` or last seen before ``idle_before``; how many."""
        ...


class AuditLogRepository(Protocol):
    """The audit chain's storage: entries by sequence number, one head, checkpoints.

    Appending is two calls in one unit of work: :meth:`lock_head` (which holds
    every other appender, in any process, until the transaction ends) and
    :meth:`append`. The storage also refuses a second entry with the same
    sequence number or the same previous MAC, so even a writer that skipped
    the lock cannot fork the chain.
    """

    async def lock_head(self) -> ChainHead:
        """Take the chain's append lock for this transaction and return its head."""
        ...

    async def head(self) -> ChainHead:
        """The chain's head as committed, without locking."""
        ...

    async def append(self, entry: AuditEntry, head: ChainHead) -> None:
        """Store ``entry`` and move the head to ``head``; only after :meth:`lock_head`.

        Raise :class:`~z4j_domain.errors.Conflict` if an entry with its sequence
        number or previous MAC exists.
        """
        ...

    async def entries(
        self, *, after_seq: int, through_seq: int, limit: int
    ) -> Sequence[AuditEntry]:
        """Up to ``limit`` entries with ``after_seq < seq <= through_seq``, by sequence number."""
        ...

    async def search(self, query: AuditQuery) -> AuditPage:
        """One page of entries matching ``query``, newest first."""
        ...

    async def count_recent(
        self,
        action: str,
        since: datetime,
        *,
        target: str | None = None,
        source_ip: str | None = None,
    ) -> int:
        """How many ``action`` entries since ``since`` (with that target / source IP)."""
        ...

    async def latest_checkpoint(self) -> Checkpoint | None:
        """The newest pruning checkpoint, or ``None``."""
        ...

    async def prune(self, checkpoint: Checkpoint) -> int:
        """Delete entries up to ``checkpoint.through_seq`` and store the checkpoint, after
        :meth:`lock_head`; how many entries were deleted."""
        ...


class AgentRepository(Protocol):
    """Agent identities: a name per project, a token stored as its hash, a secret's salt."""

    async def create(
        self,
        *,
        project_id: int,
        name: str,
        token_hash: str,
        secret_salt: str,
        created_at: datetime,
    ) -> Agent:
        """Store a new agent; raise :class:`~z4j_domain.errors.Conflict` if the project
        already has an agent of that name (revoked ones included) or there is no such project."""
        ...

    async def get_by_token_hash(self, token_hash: str) -> Agent | None:
        """The agent whose token has this hash (revoked or not), or ``None``."""
        ...

    async def get_by_name(self, project_id: int, name: str) -> Agent | None:
        """The project's agent of this name (revoked or not), or ``None``."""
        ...

    async def list(self, project_id: int) -> Sequence[Agent]:
        """The project's agents, revoked ones included, by name."""
        ...

    async def revoke(self, agent_id: int, at: datetime) -> None:
        """Revoke the agent at ``at`` (no-op if it is already revoked or does not exist)."""
        ...

    async def touch(self, agent_id: int, at: datetime) -> None:
        """Record that the agent was seen at ``at``."""
        ...

    async def count(self, project_id: int | None = None) -> int:
        """How many agents that are not revoked (in one project, or in all)."""
        ...


class SettingRepository(Protocol):
    """Instance-wide settings: small JSON values by key."""

    async def get(self, key: str) -> Any:
        """The value, or ``None``."""
        ...

    async def set(self, key: str, value: Any) -> None:
        """Insert or replace the value."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the value; whether there was one."""
        ...


class CommandRepository(Protocol):
    """Commands to agents, stored before they are sent."""

    async def create(self, command: Command) -> tuple[Command, bool]:
        """Store ``command``, or return the project's command with the same idempotency key.

        Returns the stored command and whether this call created it. Raise
        :class:`~z4j_domain.errors.Conflict` if a command with its id exists.
        """
        ...

    async def get(self, project_id: int, command_id: str) -> Command | None:
        """The project's command, or ``None``."""
        ...

    async def list(
        self,
        project_id: int,
        *,
        status: CommandStatus | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> Sequence[Command]:
        """The project's commands, newest first (created before ``before``, with ``status``)."""
        ...

    async def pending(self, project_id: int, limit: int) -> Sequence[Command]:
        """The project's pending commands, oldest first: what a connecting agent should run."""
        ...

    async def overdue(self, now: datetime, limit: int) -> Sequence[Command]:
        """Unfinished commands of any project whose deadline is at or before ``now``."""
        ...

    async def save(self, command: Command, *, expected: CommandStatus | None = None) -> bool:
        """Store ``command``'s new state, unless the stored one is already finished.

        With ``expected``, only if the stored status is that one (compare and
        set: of several brains, one claims a pending command). Returns whether
        it was stored: a finished command never changes again, whichever brain
        or agent reports late.
        """
        ...


class ScheduleRepository(Protocol):
    """Celery Beat schedulers and their entries, as their beat agents last reported them.

    A scheduler is named by its agent (:class:`~z4j_domain.beat.SchedulerInfo`);
    entries are unique by ``(project, scheduler, entry name)``. Fires are kept
    per entry, newest first, each stored once by its id.
    """

    async def replace(
        self, project_id: int, scheduler: str, report: SchedulerReport, at: datetime
    ) -> None:
        """Make the scheduler exactly ``report``: its header, and its entries (others removed)."""
        ...

    async def put(
        self,
        project_id: int,
        scheduler: str,
        entry: ScheduleEntry,
        at: datetime,
        *,
        replacing: str | None = None,
    ) -> None:
        """Store one entry of a known scheduler (replacing the one of its name).

        ``replacing`` names an entry removed in the same step (a rename). Raise
        :class:`~z4j_domain.errors.NotFound` if the scheduler is unknown.
        """
        ...

    async def remove(self, project_id: int, scheduler: str, name: str) -> bool:
        """Remove one entry (its fires stay); whether there was one."""
        ...

    async def schedulers(self, project_id: int) -> Sequence[SchedulerInfo]:
        """The project's schedulers, by name."""
        ...

    async def scheduler(self, project_id: int, name: str) -> SchedulerInfo | None:
        """One scheduler, or ``None``."""
        ...

    async def entries(self, project_id: int, scheduler: str | None = None) -> Sequence[StoredEntry]:
        """The project's entries (of one scheduler, if named), by scheduler then entry name."""
        ...

    async def get(self, project_id: int, scheduler: str, name: str) -> StoredEntry | None:
        """One entry, or ``None``."""
        ...

    async def add_fires(
        self, project_id: int, scheduler: str, fires: Sequence[ScheduleFire]
    ) -> int:
        """Store fires not stored yet (by id); how many were new."""
        ...

    async def fires(
        self, project_id: int, scheduler: str, name: str, limit: int
    ) -> Sequence[ScheduleFire]:
        """An entry's most recent fires, newest first (``limit`` at least 1)."""
        ...

    async def latest_fires(self, project_id: int) -> Mapping[tuple[str, str], ScheduleFire]:
        """The most recent fire of every entry that has one, by ``(scheduler, name)``."""
        ...


class UnitOfWork(Protocol):
    """One transaction over every repository.

    Use as ``async with factory() as uow: ...; await uow.commit()``. Leaving the
    block without committing rolls back.
    """

    @property
    def tasks(self) -> TaskRepository:
        """Tasks' current state."""
        ...

    @property
    def events(self) -> TaskEventRepository:
        """The task event timeline."""
        ...

    @property
    def workers(self) -> WorkerRepository:
        """Workers."""
        ...

    @property
    def projects(self) -> ProjectRepository:
        """Projects."""
        ...

    @property
    def users(self) -> UserRepository:
        """Users."""
        ...

    @property
    def api_keys(self) -> ApiKeyRepository:
        """API keys."""
        ...

    @property
    def agents(self) -> AgentRepository:
        """Agent identities."""
        ...

    @property
    def settings(self) -> SettingRepository:
        """Instance settings."""
        ...

    @property
    def memberships(self) -> MembershipRepository:
        """Project memberships."""
        ...

    @property
    def invitations(self) -> InvitationRepository:
        """Invitations."""
        ...

    @property
    def sessions(self) -> SessionRepository:
        """Browser sessions."""
        ...

    @property
    def schedules(self) -> ScheduleRepository:
        """Celery Beat schedulers and entries."""
        ...

    @property
    def audit(self) -> AuditLogRepository:
        """The audit log."""
        ...

    @property
    def commands(self) -> CommandRepository:
        """Commands to agents."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None:
        """Make the transaction's changes durable."""
        ...

    async def rollback(self) -> None:
        """Discard the transaction's changes."""
        ...


class UnitOfWorkFactory(Protocol):
    """Makes a fresh :class:`UnitOfWork`."""

    def __call__(self) -> UnitOfWork: ...
