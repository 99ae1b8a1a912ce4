"""In-memory fakes of every port, for tests and for embedding the domain without a database.

The fakes are real implementations of the ports' contracts (the same contract
suite runs against them and the SQL adapters): transactions commit or roll
back, ids are unique, events are deduplicated, and the task fold is the
domain's own.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import attrs

from z4j_domain.errors import Conflict
from z4j_domain.projects import Project
from z4j_domain.queries import QueueCount, TaskCursor, TaskPage, TaskQuery
from z4j_domain.tasks import Task, TaskEvent, apply
from z4j_domain.users import Agent, ApiKey, User
from z4j_domain.workers import Worker

__all__ = [
    "FakeClock",
    "InMemoryStore",
    "InMemoryUnitOfWork",
    "PlainPasswordHasher",
]


@attrs.define
class FakeClock:
    """A clock that stands still until told to move."""

    current: datetime = attrs.field(factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def now(self) -> datetime:
        """The clock's current time."""
        return self.current

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` and return the new time."""
        self.current += timedelta(seconds=seconds)
        return self.current


class PlainPasswordHasher:
    """A *non-secure* password hasher for tests: reversible, instant."""

    def hash(self, password: str) -> str:
        """Return a marked copy of the password."""
        return "plain$" + password

    def verify(self, password_hash: str, password: str) -> bool:
        """Compare with the marked copy."""
        return password_hash == "plain$" + password


@attrs.define
class _State:
    tasks: dict[tuple[int, str], Task] = attrs.Factory(dict)
    events: dict[tuple[int, str], TaskEvent] = attrs.Factory(dict)
    workers: dict[tuple[int, str], Worker] = attrs.Factory(dict)
    projects: dict[int, Project] = attrs.Factory(dict)
    users: dict[int, User] = attrs.Factory(dict)
    api_keys: dict[int, ApiKey] = attrs.Factory(dict)
    agents: dict[int, Agent] = attrs.Factory(dict)
    settings: dict[str, Any] = attrs.Factory(dict)

    def copy(self) -> _State:
        # Stored values are frozen, so copying the containers isolates a transaction.
        return _State(**{f.name: dict(getattr(self, f.name)) for f in attrs.fields(_State)})


@attrs.define
class InMemoryStore:
    """The shared "database" behind :class:`InMemoryUnitOfWork`; call it to get a unit of work."""

    state: _State = attrs.Factory(_State)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        """A fresh id, unique across every table of this store."""
        return next(self._ids)

    def __call__(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)


class _Repository:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    @property
    def _state(self) -> _State:
        return self._uow.state


class InMemoryTaskRepository(_Repository):
    """:class:`~z4j_domain.ports.TaskRepository` over a dict."""

    async def apply_events(self, project_id: int, events: Sequence[TaskEvent]) -> Sequence[Task]:
        changed: dict[str, Task] = {}
        for event in events:
            key = (project_id, event.id)
            if key in self._state.events:
                continue
            self._state.events[key] = event
            task_key = (project_id, event.task_id)
            before = self._state.tasks.get(task_key)
            after = apply(before, event)
            if after != before:
                self._state.tasks[task_key] = after
                changed[event.task_id] = after
        return list(changed.values())

    async def get(self, project_id: int, task_id: str) -> Task | None:
        return self._state.tasks.get((project_id, task_id))

    async def list(self, project_id: int, query: TaskQuery) -> TaskPage:
        selected = [
            task
            for (pid, _), task in self._state.tasks.items()
            if pid == project_id
            and query.filter.matches(task)
            and (query.cursor is None or query.cursor.is_after(task))
        ]
        selected.sort(key=lambda t: (t.first_seen_at, t.id), reverse=True)
        items = selected[: query.limit]
        more = len(selected) > query.limit
        return TaskPage(items=items, next_cursor=TaskCursor.after(items[-1]) if more else None)

    async def queue_counts(self, project_id: int) -> Sequence[QueueCount]:
        counts: dict[tuple[str | None, Any], int] = {}
        for (pid, _), task in self._state.tasks.items():
            if pid == project_id:
                key = (task.queue, task.state)
                counts[key] = counts.get(key, 0) + 1
        return [
            QueueCount(queue=queue, state=state, count=n)
            for (queue, state), n in sorted(
                counts.items(), key=lambda item: (item[0][0] or "", item[0][1].value)
            )
        ]

    async def count(self, project_id: int | None = None) -> int:
        return sum(1 for pid, _ in self._state.tasks if project_id in (None, pid))


class InMemoryTaskEventRepository(_Repository):
    """:class:`~z4j_domain.ports.TaskEventRepository` over a dict."""

    async def timeline(self, project_id: int, task_id: str) -> Sequence[TaskEvent]:
        events = [
            e
            for (pid, _), e in self._state.events.items()
            if pid == project_id and e.task_id == task_id
        ]
        return sorted(events, key=lambda e: e.key)


class InMemoryWorkerRepository(_Repository):
    """:class:`~z4j_domain.ports.WorkerRepository` over a dict."""

    async def save(self, project_id: int, worker: Worker) -> None:
        self._state.workers[(project_id, worker.hostname)] = worker

    async def get(self, project_id: int, hostname: str) -> Worker | None:
        return self._state.workers.get((project_id, hostname))

    async def list(self, project_id: int) -> Sequence[Worker]:
        return sorted(
            (w for (pid, _), w in self._state.workers.items() if pid == project_id),
            key=lambda w: w.hostname,
        )

    async def count(self, project_id: int | None = None) -> int:
        return sum(1 for pid, _ in self._state.workers if project_id in (None, pid))


class InMemoryProjectRepository(_Repository):
    """:class:`~z4j_domain.ports.ProjectRepository` over a dict."""

    async def create(self, *, slug: str, name: str, created_at: datetime) -> Project:
        if await self.get_by_slug(slug) is not None:
            raise Conflict(f"a project with slug {slug!r} already exists")
        project = Project(id=self._uow.store.next_id(), slug=slug, name=name, created_at=created_at)
        self._state.projects[project.id] = project
        return project

    async def get(self, project_id: int) -> Project | None:
        return self._state.projects.get(project_id)

    async def get_by_slug(self, slug: str) -> Project | None:
        return next((p for p in self._state.projects.values() if p.slug == slug), None)

    async def list(self) -> Sequence[Project]:
        return sorted(self._state.projects.values(), key=lambda p: p.slug)

    async def count(self) -> int:
        return len(self._state.projects)


class InMemoryUserRepository(_Repository):
    """:class:`~z4j_domain.ports.UserRepository` over a dict."""

    async def create(
        self, *, email: str, password_hash: str | None, is_admin: bool, created_at: datetime
    ) -> User:
        if await self.get_by_email(email) is not None:
            raise Conflict(f"a user with email {email!r} already exists")
        user = User(
            id=self._uow.store.next_id(),
            email=email,
            password_hash=password_hash,
            is_admin=is_admin,
            created_at=created_at,
        )
        self._state.users[user.id] = user
        return user

    async def get(self, user_id: int) -> User | None:
        return self._state.users.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        return next((u for u in self._state.users.values() if u.email == email), None)

    async def count(self) -> int:
        return len(self._state.users)


class InMemoryApiKeyRepository(_Repository):
    """:class:`~z4j_domain.ports.ApiKeyRepository` over a dict."""

    async def create(
        self, *, user_id: int, name: str, key_hash: str, prefix: str, created_at: datetime
    ) -> ApiKey:
        if user_id not in self._state.users:
            raise Conflict(f"no user with id {user_id}")
        key = ApiKey(
            id=self._uow.store.next_id(),
            user_id=user_id,
            name=name,
            key_hash=key_hash,
            prefix=prefix,
            created_at=created_at,
        )
        self._state.api_keys[key.id] = key
        return key

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        return next((k for k in self._state.api_keys.values() if k.key_hash == key_hash), None)

    async def touch(self, key_id: int, at: datetime) -> None:
        key = self._state.api_keys.get(key_id)
        if key is not None:
            self._state.api_keys[key_id] = attrs.evolve(key, last_used_at=at)


class InMemoryAgentRepository(_Repository):
    """:class:`~z4j_domain.ports.AgentRepository` over a dict."""

    async def create(
        self,
        *,
        project_id: int,
        name: str,
        token_hash: str,
        secret_salt: str,
        created_at: datetime,
    ) -> Agent:
        if project_id not in self._state.projects:
            raise Conflict(f"no project with id {project_id}")
        if await self.get_by_name(project_id, name) is not None:
            raise Conflict(f"the project already has an agent named {name!r}")
        if await self.get_by_token_hash(token_hash) is not None:
            raise Conflict("an agent with this token hash already exists")
        agent = Agent(
            id=self._uow.store.next_id(),
            project_id=project_id,
            name=name,
            token_hash=token_hash,
            secret_salt=secret_salt,
            created_at=created_at,
        )
        self._state.agents[agent.id] = agent
        return agent

    async def get_by_token_hash(self, token_hash: str) -> Agent | None:
        return next((a for a in self._state.agents.values() if a.token_hash == token_hash), None)

    async def get_by_name(self, project_id: int, name: str) -> Agent | None:
        return next(
            (
                a
                for a in self._state.agents.values()
                if a.project_id == project_id and a.name == name
            ),
            None,
        )

    async def list(self, project_id: int) -> Sequence[Agent]:
        return sorted(
            (a for a in self._state.agents.values() if a.project_id == project_id),
            key=lambda a: a.name,
        )

    async def revoke(self, agent_id: int, at: datetime) -> None:
        agent = self._state.agents.get(agent_id)
        if agent is not None and agent.revoked_at is None:
            self._state.agents[agent_id] = attrs.evolve(agent, revoked_at=at)

    async def touch(self, agent_id: int, at: datetime) -> None:
        agent = self._state.agents.get(agent_id)
        if agent is not None:
            self._state.agents[agent_id] = attrs.evolve(agent, last_seen_at=at)

    async def count(self, project_id: int | None = None) -> int:
        return sum(
            1
            for a in self._state.agents.values()
            if a.revoked_at is None and project_id in (None, a.project_id)
        )


class InMemorySettingRepository(_Repository):
    """:class:`~z4j_domain.ports.SettingRepository` over a dict."""

    async def get(self, key: str) -> Any:
        return copy.deepcopy(self._state.settings.get(key))

    async def set(self, key: str, value: Any) -> None:
        self._state.settings[key] = copy.deepcopy(value)

    async def delete(self, key: str) -> bool:
        return self._state.settings.pop(key, None) is not None


class InMemoryUnitOfWork:
    """:class:`~z4j_domain.ports.UnitOfWork` over an :class:`InMemoryStore`.

    Works on a private copy of the store's state; :meth:`commit` publishes it.
    """

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store
        self.state = store.state.copy()
        self.tasks = InMemoryTaskRepository(self)
        self.events = InMemoryTaskEventRepository(self)
        self.workers = InMemoryWorkerRepository(self)
        self.projects = InMemoryProjectRepository(self)
        self.users = InMemoryUserRepository(self)
        self.api_keys = InMemoryApiKeyRepository(self)
        self.agents = InMemoryAgentRepository(self)
        self.settings = InMemorySettingRepository(self)

    async def __aenter__(self) -> Self:
        self.state = self.store.state.copy()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        self.store.state = self.state
        self.state = self.store.state.copy()

    async def rollback(self) -> None:
        self.state = self.store.state.copy()
