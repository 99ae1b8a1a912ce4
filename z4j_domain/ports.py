"""The ports: what the domain needs from the outside world, as ``typing.Protocol``s.

Every port is typed only in domain types. Adapters live in ``z4j_infra``; fakes
of every port live in :mod:`z4j_domain.testing`, and one contract suite runs
against all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from z4j_domain.projects import Project
from z4j_domain.queries import QueueCount, TaskPage, TaskQuery
from z4j_domain.tasks import Task, TaskEvent
from z4j_domain.users import Agent, ApiKey, User
from z4j_domain.workers import Worker

__all__ = [
    "AgentRepository",
    "ApiKeyRepository",
    "Clock",
    "PasswordHasher",
    "ProjectRepository",
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

    async def list(self, project_id: int, query: TaskQuery) -> TaskPage:
        """One page of tasks matching the query, newest first."""
        ...

    async def queue_counts(self, project_id: int) -> Sequence[QueueCount]:
        """Task counts per (queue, state), zero counts omitted."""
        ...

    async def count(self, project_id: int | None = None) -> int:
        """How many tasks (in one project, or in all)."""
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

    async def count(self) -> int:
        """How many users."""
        ...


class ApiKeyRepository(Protocol):
    """Users' API keys, stored as hashes."""

    async def create(
        self, *, user_id: int, name: str, key_hash: str, prefix: str, created_at: datetime
    ) -> ApiKey:
        """Store a new key."""
        ...

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked or not), or ``None``."""
        ...

    async def touch(self, key_id: int, at: datetime) -> None:
        """Record that the key was used at ``at``."""
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
