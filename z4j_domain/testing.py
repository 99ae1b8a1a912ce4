"""In-memory fakes of every port, for tests and for embedding the domain without a database.

The fakes are real implementations of the ports' contracts (the same contract
suite runs against them and the SQL adapters): transactions commit or roll
back, ids are unique, events are deduplicated, and the task fold is the
domain's own.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, Self

import attrs

from z4j_domain.audit import (
    AuditEntry,
    AuditPage,
    AuditQuery,
    ChainHead,
    Checkpoint,
    genesis_head,
)
from z4j_domain.beat import ScheduleFire, SchedulerInfo, SchedulerReport, StoredEntry
from z4j_domain.canvas import CanvasGathering
from z4j_domain.commands import Command, CommandStatus
from z4j_domain.errors import Conflict, InvalidInput, NotFound
from z4j_domain.projects import Project
from z4j_domain.queries import QueueCount, TaskCursor, TaskFilter, TaskPage, TaskQuery
from z4j_domain.rbac import Membership, Role
from z4j_domain.schedules import ScheduleEntry
from z4j_domain.stats import (
    ONE_MINUTE,
    FailureSample,
    FinishCount,
    aggregate,
    bucket_start,
    check_step,
)
from z4j_domain.tasks import Task, TaskEvent, TaskState, apply
from z4j_domain.users import Agent, ApiKey, Invitation, Session, User
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
    memberships: dict[tuple[int, int], Membership] = attrs.Factory(dict)
    invitations: dict[int, Invitation] = attrs.Factory(dict)
    sessions: dict[int, Session] = attrs.Factory(dict)
    commands: dict[str, Command] = attrs.Factory(dict)
    schedulers: dict[tuple[int, str], SchedulerInfo] = attrs.Factory(dict)
    schedule_entries: dict[tuple[int, str, str], StoredEntry] = attrs.Factory(dict)
    schedule_fires: dict[tuple[int, str], tuple[str, ScheduleFire]] = attrs.Factory(dict)
    audit_entries: dict[int, AuditEntry] = attrs.Factory(dict)
    audit_checkpoints: dict[int, Checkpoint] = attrs.Factory(dict)
    audit_head: ChainHead = attrs.Factory(genesis_head)
    #: Bumped by each commit that wrote to the audit log.
    audit_version: int = 0

    def copy(self) -> _State:
        # Stored values are frozen, so copying the containers isolates a transaction.
        return _State(**{f.name: _copied(getattr(self, f.name)) for f in attrs.fields(_State)})


def _copied(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


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

    async def get_many(self, project_id: int, task_ids: Sequence[str]) -> Sequence[Task]:
        found = (self._state.tasks.get((project_id, task_id)) for task_id in set(task_ids))
        return [task for task in found if task is not None]

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

    async def retries(self, project_id: int, task_id: str, limit: int = 100) -> Sequence[Task]:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        found = [
            task
            for (pid, _), task in self._state.tasks.items()
            if pid == project_id and task.retry_of == task_id
        ]
        found.sort(key=lambda t: (t.first_seen_at, t.id))
        return found[:limit]

    async def canvas(self, project_id: int, task_id: str, limit: int) -> Sequence[Task]:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        start = self._state.tasks.get((project_id, task_id))
        if start is None:
            return []
        gathering = CanvasGathering(start, limit)
        while (links := gathering.next_links()) is not None:
            gathering.add(
                task
                for (pid, _), task in self._state.tasks.items()
                if pid == project_id and links.matches(task)
            )
        return gathering.tasks()

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

    async def count_matching(self, project_id: int, selection: TaskFilter, limit: int) -> int:
        matching = sum(
            1
            for (pid, _), task in self._state.tasks.items()
            if pid == project_id and selection.matches(task)
        )
        return min(matching, max(limit, 0))

    def _tasks_of(self, project_id: int) -> Sequence[Task]:
        return [task for (pid, _), task in self._state.tasks.items() if pid == project_id]

    # The fake aggregates its tasks on every read: the definition that the SQL
    # repositories' incrementally kept aggregates are checked against.
    async def state_counts(self, project_id: int) -> Mapping[TaskState, int]:
        return dict(aggregate(self._tasks_of(project_id)).states)

    async def finish_counts(
        self, project_id: int, since: datetime, step: timedelta = ONE_MINUTE
    ) -> Sequence[FinishCount]:
        check_step(step)
        buckets: dict[tuple[datetime, TaskState], int] = {}
        for (minute, state), n in aggregate(self._tasks_of(project_id)).finishes.items():
            if minute >= since:
                key = (bucket_start(minute, since, step), state)
                buckets[key] = buckets.get(key, 0) + n
        return [
            FinishCount(minute=start, state=state, count=n)
            for (start, state), n in sorted(buckets.items())
            if n
        ]

    async def recent_failures(self, project_id: int, limit: int) -> Sequence[FailureSample]:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        failed = [t for t in self._tasks_of(project_id) if t.state is TaskState.FAILED]
        failed.sort(key=lambda t: (t.first_seen_at, t.id), reverse=True)
        return [
            FailureSample(
                task_id=t.id, name=t.name, exception=t.exception, finished_at=t.finished_at
            )
            for t in failed[:limit]
        ]


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

    async def list(self, ids: Collection[int] | None = None) -> Sequence[User]:
        wanted = None if ids is None else set(ids)
        users = [u for u in self._state.users.values() if wanted is None or u.id in wanted]
        return sorted(users, key=lambda u: u.email)

    async def set_password(self, user_id: int, password_hash: str) -> None:
        user = self._state.users.get(user_id)
        if user is not None:
            self._state.users[user_id] = attrs.evolve(user, password_hash=password_hash)

    async def count(self) -> int:
        return len(self._state.users)


class InMemoryApiKeyRepository(_Repository):
    """:class:`~z4j_domain.ports.ApiKeyRepository` over a dict."""

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
        if user_id not in self._state.users:
            raise Conflict(f"no user with id {user_id}")
        if project_id is not None and project_id not in self._state.projects:
            raise Conflict(f"no project with id {project_id}")
        if await self.get_by_hash(key_hash) is not None:
            raise Conflict("an API key with this hash already exists")
        key = ApiKey(
            id=self._uow.store.next_id(),
            user_id=user_id,
            name=name,
            key_hash=key_hash,
            prefix=prefix,
            created_at=created_at,
            project_id=project_id,
            role=role,
        )
        self._state.api_keys[key.id] = key
        return key

    async def get(self, key_id: int) -> ApiKey | None:
        return self._state.api_keys.get(key_id)

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        return next((k for k in self._state.api_keys.values() if k.key_hash == key_hash), None)

    async def list_for_user(self, user_id: int) -> Sequence[ApiKey]:
        return sorted(
            (k for k in self._state.api_keys.values() if k.user_id == user_id),
            key=lambda k: (k.created_at, k.id),
        )

    async def revoke(self, key_id: int, at: datetime) -> bool:
        key = self._state.api_keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self._state.api_keys[key_id] = attrs.evolve(key, revoked_at=at)
        return True

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


class InMemoryMembershipRepository(_Repository):
    """:class:`~z4j_domain.ports.MembershipRepository` over a dict."""

    async def get(self, project_id: int, user_id: int) -> Membership | None:
        return self._state.memberships.get((project_id, user_id))

    async def set(self, project_id: int, user_id: int, role: Role, at: datetime) -> Membership:
        if project_id not in self._state.projects:
            raise Conflict(f"no project with id {project_id}")
        if user_id not in self._state.users:
            raise Conflict(f"no user with id {user_id}")
        before = self._state.memberships.get((project_id, user_id))
        membership = Membership(
            project_id=project_id,
            user_id=user_id,
            role=role,
            created_at=at if before is None else before.created_at,
        )
        self._state.memberships[(project_id, user_id)] = membership
        return membership

    async def remove(self, project_id: int, user_id: int) -> bool:
        return self._state.memberships.pop((project_id, user_id), None) is not None

    async def list_for_project(self, project_id: int) -> Sequence[Membership]:
        return sorted(
            (m for (pid, _), m in self._state.memberships.items() if pid == project_id),
            key=lambda m: m.user_id,
        )

    async def list_for_user(self, user_id: int) -> Sequence[Membership]:
        return sorted(
            (m for (_, uid), m in self._state.memberships.items() if uid == user_id),
            key=lambda m: m.project_id,
        )

    async def count_role(self, project_id: int, role: Role) -> int:
        return sum(
            1
            for (pid, _), m in self._state.memberships.items()
            if pid == project_id and m.role is role
        )


class InMemoryInvitationRepository(_Repository):
    """:class:`~z4j_domain.ports.InvitationRepository` over a dict."""

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
        if project_id not in self._state.projects:
            raise Conflict(f"no project with id {project_id}")
        if invited_by is not None and invited_by not in self._state.users:
            raise Conflict(f"no user with id {invited_by}")
        if await self.get_by_token_hash(token_hash) is not None:
            raise Conflict("an invitation with this token hash already exists")
        invitation = Invitation(
            id=self._uow.store.next_id(),
            project_id=project_id,
            email=email,
            role=role,
            token_hash=token_hash,
            invited_by=invited_by,
            created_at=created_at,
            expires_at=expires_at,
        )
        self._state.invitations[invitation.id] = invitation
        return invitation

    async def get(self, invitation_id: int) -> Invitation | None:
        return self._state.invitations.get(invitation_id)

    async def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        return next(
            (i for i in self._state.invitations.values() if i.token_hash == token_hash), None
        )

    async def list(self, project_id: int) -> Sequence[Invitation]:
        return sorted(
            (i for i in self._state.invitations.values() if i.project_id == project_id),
            key=lambda i: (i.created_at, i.id),
            reverse=True,
        )

    def _open(self, invitation_id: int) -> Invitation | None:
        """The invitation if it is neither accepted nor revoked (expired ones count as open)."""
        invitation = self._state.invitations.get(invitation_id)
        if invitation is None or invitation.accepted_at or invitation.revoked_at:
            return None
        return invitation

    async def mark_accepted(self, invitation_id: int, user_id: int, at: datetime) -> bool:
        if user_id not in self._state.users:
            raise Conflict(f"no user with id {user_id}")
        invitation = self._open(invitation_id)
        if invitation is None:
            return False
        self._state.invitations[invitation_id] = attrs.evolve(
            invitation, accepted_at=at, accepted_by=user_id
        )
        return True

    async def revoke(self, invitation_id: int, at: datetime) -> bool:
        invitation = self._open(invitation_id)
        if invitation is None:
            return False
        self._state.invitations[invitation_id] = attrs.evolve(invitation, revoked_at=at)
        return True


class InMemorySessionRepository(_Repository):
    """:class:`~z4j_domain.ports.SessionRepository` over a dict."""

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
        if user_id not in self._state.users:
            raise Conflict(f"no user with id {user_id}")
        if await self.get_by_token_hash(token_hash) is not None:
            raise Conflict("a session with this token hash already exists")
        session = Session(
            id=self._uow.store.next_id(),
            user_id=user_id,
            token_hash=token_hash,
            created_at=created_at,
            last_seen_at=created_at,
            expires_at=expires_at,
            source_ip=source_ip,
            user_agent=user_agent,
        )
        self._state.sessions[session.id] = session
        return session

    async def get_by_token_hash(self, token_hash: str) -> Session | None:
        return next((s for s in self._state.sessions.values() if s.token_hash == token_hash), None)

    async def touch(self, session_id: int, at: datetime) -> None:
        session = self._state.sessions.get(session_id)
        if session is not None:
            self._state.sessions[session_id] = attrs.evolve(session, last_seen_at=at)

    async def delete(self, session_id: int) -> bool:
        return self._state.sessions.pop(session_id, None) is not None

    async def delete_for_user(self, user_id: int, *, keep: int | None = None) -> int:
        return self._delete_where(lambda s: s.user_id == user_id and s.id != keep)

    async def delete_expired(self, now: datetime, idle_before: datetime) -> int:
        return self._delete_where(lambda s: s.expires_at <= now or s.last_seen_at < idle_before)

    def _delete_where(self, condition: Callable[[Session], bool]) -> int:
        ended = [s.id for s in self._state.sessions.values() if condition(s)]
        for session_id in ended:
            del self._state.sessions[session_id]
        return len(ended)


#: What :meth:`InMemoryCommandRepository.save` stores: where the command stands.
#: What was asked (kind, parameters, key, requester, times) is fixed at creation.
_COMMAND_STATE: Final = (
    "status",
    "agent",
    "delivered_at",
    "acked_at",
    "finished_at",
    "result",
    "error",
)


def _detached(command: Command) -> Command:
    """A copy sharing no mutable JSON with ``command`` (as a database row would)."""
    return copy.deepcopy(command)


class InMemoryCommandRepository(_Repository):
    """:class:`~z4j_domain.ports.CommandRepository` over a dict."""

    async def create(self, command: Command) -> tuple[Command, bool]:
        if command.project_id not in self._state.projects:
            raise Conflict(f"no project with id {command.project_id}")
        if command.idempotency_key is not None:
            existing = next(
                (
                    c
                    for c in self._state.commands.values()
                    if c.project_id == command.project_id
                    and c.idempotency_key == command.idempotency_key
                ),
                None,
            )
            if existing is not None:
                return _detached(existing), False
        if command.id in self._state.commands:
            raise Conflict(f"a command with id {command.id!r} already exists")
        self._state.commands[command.id] = _detached(command)
        return _detached(command), True

    async def get(self, project_id: int, command_id: str) -> Command | None:
        command = self._state.commands.get(command_id)
        if command is None or command.project_id != project_id:
            return None
        return _detached(command)

    async def list(
        self,
        project_id: int,
        *,
        status: CommandStatus | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> Sequence[Command]:
        selected = sorted(
            (
                c
                for c in self._state.commands.values()
                if c.project_id == project_id
                and (status is None or c.status is status)
                and (before is None or c.created_at < before)
            ),
            key=lambda c: (c.created_at, c.id),
            reverse=True,
        )
        return [_detached(c) for c in selected[: max(limit, 0)]]

    async def pending(self, project_id: int, limit: int) -> Sequence[Command]:
        selected = sorted(
            (
                c
                for c in self._state.commands.values()
                if c.project_id == project_id and c.status is CommandStatus.PENDING
            ),
            key=lambda c: (c.created_at, c.id),
        )
        return [_detached(c) for c in selected[: max(limit, 0)]]

    async def overdue(self, now: datetime, limit: int) -> Sequence[Command]:
        selected = sorted(
            (
                c
                for c in self._state.commands.values()
                if not c.status.is_finished and c.deadline <= now
            ),
            key=lambda c: (c.deadline, c.id),
        )
        return [_detached(c) for c in selected[: max(limit, 0)]]

    async def save(self, command: Command, *, expected: CommandStatus | None = None) -> bool:
        stored = self._state.commands.get(command.id)
        if stored is None or stored.project_id != command.project_id or stored.status.is_finished:
            return False
        if expected is not None and stored.status is not expected:
            return False
        self._state.commands[command.id] = _detached(
            attrs.evolve(stored, **{name: getattr(command, name) for name in _COMMAND_STATE})
        )
        return True


class InMemoryScheduleRepository(_Repository):
    """:class:`~z4j_domain.ports.ScheduleRepository` over dicts."""

    async def replace(
        self, project_id: int, scheduler: str, report: SchedulerReport, at: datetime
    ) -> None:
        self._state.schedulers[(project_id, scheduler)] = SchedulerInfo.of(scheduler, report, at)
        entries = self._state.schedule_entries
        names = {entry.name for entry in report.entries}
        for key in [k for k in entries if k[:2] == (project_id, scheduler) and k[2] not in names]:
            del entries[key]
        for entry in report.entries:
            key = (project_id, scheduler, entry.name)
            stored = entries.get(key)
            if stored is None or stored.entry != entry:
                entries[key] = StoredEntry(scheduler=scheduler, entry=entry, updated_at=at)

    async def put(
        self,
        project_id: int,
        scheduler: str,
        entry: ScheduleEntry,
        at: datetime,
        *,
        replacing: str | None = None,
    ) -> None:
        if (project_id, scheduler) not in self._state.schedulers:
            raise NotFound(f"no scheduler {scheduler!r} in the project")
        if replacing is not None:
            self._state.schedule_entries.pop((project_id, scheduler, replacing), None)
        self._state.schedule_entries[(project_id, scheduler, entry.name)] = StoredEntry(
            scheduler=scheduler, entry=entry, updated_at=at
        )

    async def remove(self, project_id: int, scheduler: str, name: str) -> bool:
        return self._state.schedule_entries.pop((project_id, scheduler, name), None) is not None

    async def schedulers(self, project_id: int) -> Sequence[SchedulerInfo]:
        found = [info for (pid, _), info in self._state.schedulers.items() if pid == project_id]
        return sorted(found, key=lambda info: info.name)

    async def scheduler(self, project_id: int, name: str) -> SchedulerInfo | None:
        return self._state.schedulers.get((project_id, name))

    async def entries(self, project_id: int, scheduler: str | None = None) -> Sequence[StoredEntry]:
        found = [
            (key, stored)
            for key, stored in self._state.schedule_entries.items()
            if key[0] == project_id and (scheduler is None or key[1] == scheduler)
        ]
        return [stored for _, stored in sorted(found, key=lambda item: item[0])]

    async def get(self, project_id: int, scheduler: str, name: str) -> StoredEntry | None:
        return self._state.schedule_entries.get((project_id, scheduler, name))

    async def add_fires(
        self, project_id: int, scheduler: str, fires: Sequence[ScheduleFire]
    ) -> int:
        added = 0
        for fire in fires:
            key = (project_id, fire.id)
            if key not in self._state.schedule_fires:
                self._state.schedule_fires[key] = (scheduler, fire)
                added += 1
        return added

    def _fires(self, project_id: int) -> list[tuple[str, ScheduleFire]]:
        found = [
            value for (pid, _), value in self._state.schedule_fires.items() if pid == project_id
        ]
        found.sort(key=lambda item: (item[1].fired_at, item[1].id), reverse=True)
        return found

    async def fires(
        self, project_id: int, scheduler: str, name: str, limit: int
    ) -> Sequence[ScheduleFire]:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        found = [
            fire
            for owner, fire in self._fires(project_id)
            if owner == scheduler and fire.schedule == name
        ]
        return found[:limit]

    async def latest_fires(self, project_id: int) -> Mapping[tuple[str, str], ScheduleFire]:
        latest: dict[tuple[str, str], ScheduleFire] = {}
        for owner, fire in self._fires(project_id):
            latest.setdefault((owner, fire.schedule), fire)
        return latest


class InMemoryAuditLogRepository(_Repository):
    """:class:`~z4j_domain.ports.AuditLogRepository` over a dict.

    The lock is optimistic: :meth:`lock_head` (and any write) reads the newest
    committed chain, and a commit that wrote to the log fails with
    :class:`Conflict` if another unit of work wrote to it meanwhile, so
    interleaved appenders never silently drop each other's entries.
    """

    async def lock_head(self) -> ChainHead:
        self._uow.lock_audit()
        return self._state.audit_head

    async def head(self) -> ChainHead:
        return self._state.audit_head

    async def append(self, entry: AuditEntry, head: ChainHead) -> None:
        self._uow.lock_audit()
        state = self._state
        if entry.seq in state.audit_entries or any(
            e.prev_mac == entry.prev_mac for e in state.audit_entries.values()
        ):
            raise Conflict(f"the audit log already has entry {entry.seq} or its predecessor's")
        if (entry.seq - 1, entry.prev_mac) != (state.audit_head.seq, state.audit_head.mac):
            raise Conflict(
                f"audit entry {entry.seq} does not follow the head at {state.audit_head.seq}"
            )
        state.audit_entries[entry.seq] = entry
        state.audit_head = head
        self._uow.audit_written = True

    async def entries(
        self, *, after_seq: int, through_seq: int, limit: int
    ) -> Sequence[AuditEntry]:
        selected = sorted(
            seq for seq in self._state.audit_entries if after_seq < seq <= through_seq
        )
        return [self._state.audit_entries[seq] for seq in selected[:limit]]

    async def search(self, query: AuditQuery) -> AuditPage:
        newest_first = sorted(self._state.audit_entries.items(), reverse=True)
        selected = list(
            itertools.islice((e for _, e in newest_first if query.matches(e)), query.limit + 1)
        )
        return AuditPage.of(selected, query.limit)

    async def count_recent(
        self,
        action: str,
        since: datetime,
        *,
        target: str | None = None,
        source_ip: str | None = None,
    ) -> int:
        return sum(
            1
            for e in self._state.audit_entries.values()
            if e.record.action == action
            and e.record.at >= since
            and (target is None or e.record.target == target)
            and (source_ip is None or e.record.source_ip == source_ip)
        )

    async def latest_checkpoint(self) -> Checkpoint | None:
        checkpoints = self._state.audit_checkpoints
        return checkpoints[max(checkpoints)] if checkpoints else None

    async def prune(self, checkpoint: Checkpoint) -> int:
        self._uow.lock_audit()
        self._uow.audit_written = True
        entries = self._state.audit_entries
        pruned = [seq for seq in entries if seq <= checkpoint.through_seq]
        for seq in pruned:
            del entries[seq]
        # A repeated checkpoint keeps the first one: it is the one that counted the entries.
        self._state.audit_checkpoints.setdefault(checkpoint.through_seq, checkpoint)
        return len(pruned)


_AUDIT_TABLES = ("audit_entries", "audit_checkpoints", "audit_head", "audit_version")


class InMemoryUnitOfWork:
    """:class:`~z4j_domain.ports.UnitOfWork` over an :class:`InMemoryStore`.

    Works on a private copy of the store's state; :meth:`commit` publishes it.
    """

    def __init__(self, store: InMemoryStore) -> None:
        self.store = store
        self.state = store.state.copy()
        self._audit_base: int | None = None
        #: Whether this transaction appended to or pruned the audit log.
        self.audit_written = False
        self.tasks = InMemoryTaskRepository(self)
        self.events = InMemoryTaskEventRepository(self)
        self.workers = InMemoryWorkerRepository(self)
        self.projects = InMemoryProjectRepository(self)
        self.users = InMemoryUserRepository(self)
        self.api_keys = InMemoryApiKeyRepository(self)
        self.agents = InMemoryAgentRepository(self)
        self.settings = InMemorySettingRepository(self)
        self.memberships = InMemoryMembershipRepository(self)
        self.invitations = InMemoryInvitationRepository(self)
        self.sessions = InMemorySessionRepository(self)
        self.commands = InMemoryCommandRepository(self)
        self.schedules = InMemoryScheduleRepository(self)
        self.audit = InMemoryAuditLogRepository(self)

    def lock_audit(self) -> None:
        """Bring the audit log up to what is committed, once per transaction (see
        :class:`InMemoryAuditLogRepository`)."""
        if self._audit_base is not None:
            return
        committed = self.store.state
        for name in _AUDIT_TABLES:
            setattr(self.state, name, _copied(getattr(committed, name)))
        self._audit_base = committed.audit_version

    async def __aenter__(self) -> Self:
        self._reset()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        committed = self.store.state
        if self.audit_written:
            if committed.audit_version != self._audit_base:
                self._reset()
                raise Conflict("another unit of work wrote to the audit log meanwhile")
            self.state.audit_version += 1
        else:
            # Publishing this transaction's stale copy of the log would undo
            # what others appended meanwhile: only a writer of the log publishes it.
            for name in _AUDIT_TABLES:
                setattr(self.state, name, getattr(committed, name))
        self.store.state = self.state
        self._reset()

    async def rollback(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.state = self.store.state.copy()
        self._audit_base = None
        self.audit_written = False
