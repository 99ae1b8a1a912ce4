"""SQL repositories of workers, projects, users, API keys, agents and settings.

The task repositories live in :mod:`z4j_infra.tasks`. Every repository works
inside its :class:`~z4j_infra.unit_of_work.SqlUnitOfWork`'s transaction.

Uniqueness is checked with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
rather than by catching a constraint violation: on PostgreSQL a violation
aborts the whole transaction, while a :class:`~z4j_domain.errors.Conflict`
must leave the unit of work usable, as the in-memory fake does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from z4j_domain.errors import Conflict
from z4j_domain.projects import Project
from z4j_domain.users import Agent, ApiKey, User
from z4j_domain.workers import Worker, WorkerStatus
from z4j_infra.schema import agents, api_keys, projects, settings, users, workers
from z4j_infra.tasks import SqlTaskEventRepository, SqlTaskRepository

if TYPE_CHECKING:
    from z4j_infra.unit_of_work import SqlUnitOfWork

__all__ = [
    "SqlAgentRepository",
    "SqlApiKeyRepository",
    "SqlProjectRepository",
    "SqlSettingRepository",
    "SqlTaskEventRepository",
    "SqlTaskRepository",
    "SqlUserRepository",
    "SqlWorkerRepository",
]


class _SqlRepository:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``ON CONFLICT`` on this unit of work's dialect."""
        module: Any = postgresql if self._uow.dialect == "postgresql" else sqlite
        return module.insert(table)


def _row_to_worker(row: Any) -> Worker:
    return Worker(
        hostname=row.hostname,
        status=WorkerStatus(row.status),
        first_seen_at=row.first_seen_at,
        last_heartbeat_at=row.last_heartbeat_at,
        pool=row.pool,
        concurrency=row.concurrency,
        active=row.active,
        processed=row.processed,
        loadavg=row.loadavg,
        queues=row.queues,
        software=row.software,
    )


class SqlWorkerRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.WorkerRepository` on SQLite or PostgreSQL."""

    async def save(self, project_id: int, worker: Worker) -> None:
        """Insert or replace the worker with this hostname."""
        values = {
            "project_id": project_id,
            "hostname": worker.hostname,
            "status": worker.status.value,
            "first_seen_at": worker.first_seen_at,
            "last_heartbeat_at": worker.last_heartbeat_at,
            "pool": worker.pool,
            "concurrency": worker.concurrency,
            "active": worker.active,
            "processed": worker.processed,
            "loadavg": list(worker.loadavg),
            "queues": list(worker.queues),
            "software": worker.software,
        }
        statement = self._insert(workers).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["project_id", "hostname"],
            set_={
                name: statement.excluded[name]
                for name in values
                if name not in ("project_id", "hostname")
            },
        )
        await self._uow.execute(statement)

    async def get(self, project_id: int, hostname: str) -> Worker | None:
        """The worker, or ``None``."""
        result = await self._uow.execute(
            sa.select(workers).where(
                workers.c.project_id == project_id, workers.c.hostname == hostname
            )
        )
        row = result.first()
        return None if row is None else _row_to_worker(row)

    async def list(self, project_id: int) -> Sequence[Worker]:
        """All workers of the project, by hostname."""
        result = await self._uow.execute(
            sa.select(workers).where(workers.c.project_id == project_id)
        )
        # Sorted in Python: code-point order whatever the database's collation.
        return sorted((_row_to_worker(row) for row in result), key=lambda w: w.hostname)

    async def count(self, project_id: int | None = None) -> int:
        """How many workers (in one project, or in all)."""
        statement = sa.select(sa.func.count()).select_from(workers)
        if project_id is not None:
            statement = statement.where(workers.c.project_id == project_id)
        return int((await self._uow.execute(statement)).scalar_one())


def _row_to_project(row: Any) -> Project:
    return Project(id=row.id, slug=row.slug, name=row.name, created_at=row.created_at)


class SqlProjectRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.ProjectRepository` on SQLite or PostgreSQL."""

    async def create(self, *, slug: str, name: str, created_at: datetime) -> Project:
        """Store a new project; raise :class:`~z4j_domain.errors.Conflict` if the slug is taken."""
        # Validate before writing: the domain value refuses a bad slug or name.
        project = Project(id=0, slug=slug, name=name, created_at=created_at)
        result = await self._uow.execute(
            self._insert(projects)
            .values(slug=project.slug, name=project.name, created_at=project.created_at)
            .on_conflict_do_nothing(index_elements=["slug"])
            .returning(projects.c.id)
        )
        project_id = result.scalar_one_or_none()
        if project_id is None:
            raise Conflict(f"a project with slug {slug!r} already exists")
        return attrs.evolve(project, id=project_id)

    async def get(self, project_id: int) -> Project | None:
        """The project with this id, or ``None``."""
        result = await self._uow.execute(sa.select(projects).where(projects.c.id == project_id))
        row = result.first()
        return None if row is None else _row_to_project(row)

    async def get_by_slug(self, slug: str) -> Project | None:
        """The project, or ``None``."""
        result = await self._uow.execute(sa.select(projects).where(projects.c.slug == slug))
        row = result.first()
        return None if row is None else _row_to_project(row)

    async def list(self) -> Sequence[Project]:
        """All projects, by slug."""
        result = await self._uow.execute(sa.select(projects))
        return sorted((_row_to_project(row) for row in result), key=lambda p: p.slug)

    async def count(self) -> int:
        """How many projects."""
        statement = sa.select(sa.func.count()).select_from(projects)
        return int((await self._uow.execute(statement)).scalar_one())


def _row_to_user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        password_hash=row.password_hash,
        is_admin=row.is_admin,
        created_at=row.created_at,
    )


class SqlUserRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.UserRepository` on SQLite or PostgreSQL."""

    async def create(
        self, *, email: str, password_hash: str | None, is_admin: bool, created_at: datetime
    ) -> User:
        """Store a new user; raise :class:`~z4j_domain.errors.Conflict` if the email is taken."""
        user = User(
            id=0,
            email=email,
            password_hash=password_hash,
            is_admin=is_admin,
            created_at=created_at,
        )
        result = await self._uow.execute(
            self._insert(users)
            .values(
                email=user.email,
                password_hash=user.password_hash,
                is_admin=user.is_admin,
                created_at=user.created_at,
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(users.c.id)
        )
        user_id = result.scalar_one_or_none()
        if user_id is None:
            raise Conflict(f"a user with email {email!r} already exists")
        return attrs.evolve(user, id=user_id)

    async def get(self, user_id: int) -> User | None:
        """The user, or ``None``."""
        result = await self._uow.execute(sa.select(users).where(users.c.id == user_id))
        row = result.first()
        return None if row is None else _row_to_user(row)

    async def get_by_email(self, email: str) -> User | None:
        """The user with this (normalized) email, or ``None``."""
        result = await self._uow.execute(sa.select(users).where(users.c.email == email))
        row = result.first()
        return None if row is None else _row_to_user(row)

    async def count(self) -> int:
        """How many users."""
        statement = sa.select(sa.func.count()).select_from(users)
        return int((await self._uow.execute(statement)).scalar_one())


def _row_to_api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        key_hash=row.key_hash,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlApiKeyRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.ApiKeyRepository` on SQLite or PostgreSQL."""

    async def create(
        self, *, user_id: int, name: str, key_hash: str, prefix: str, created_at: datetime
    ) -> ApiKey:
        """Store a new key; raise :class:`~z4j_domain.errors.Conflict` if there is no such user."""
        key = ApiKey(
            id=0,
            user_id=user_id,
            name=name,
            key_hash=key_hash,
            prefix=prefix,
            created_at=created_at,
        )
        exists = await self._uow.execute(sa.select(users.c.id).where(users.c.id == user_id))
        if exists.first() is None:
            raise Conflict(f"no user with id {user_id}")
        result = await self._uow.execute(
            self._insert(api_keys)
            .values(
                user_id=key.user_id,
                name=key.name,
                key_hash=key.key_hash,
                prefix=key.prefix,
                created_at=key.created_at,
            )
            .on_conflict_do_nothing(index_elements=["key_hash"])
            .returning(api_keys.c.id)
        )
        key_id = result.scalar_one_or_none()
        if key_id is None:
            # Keys are 256-bit random strings: a repeated hash is a caller's bug.
            raise Conflict("an API key with this hash already exists")
        return attrs.evolve(key, id=key_id)

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked or not), or ``None``."""
        result = await self._uow.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash))
        row = result.first()
        return None if row is None else _row_to_api_key(row)

    async def touch(self, key_id: int, at: datetime) -> None:
        """Record that the key was used at ``at``."""
        await self._uow.execute(
            sa.update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at)
        )


def _row_to_agent(row: Any) -> Agent:
    return Agent(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        token_hash=row.token_hash,
        secret_salt=row.secret_salt,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        revoked_at=row.revoked_at,
    )


class SqlAgentRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.AgentRepository` on SQLite or PostgreSQL."""

    async def create(
        self,
        *,
        project_id: int,
        name: str,
        token_hash: str,
        secret_salt: str,
        created_at: datetime,
    ) -> Agent:
        """Store a new agent; raise :class:`~z4j_domain.errors.Conflict` on a taken name."""
        agent = Agent(
            id=0,
            project_id=project_id,
            name=name,
            token_hash=token_hash,
            secret_salt=secret_salt,
            created_at=created_at,
        )
        # Checked first rather than left to the foreign key: a violation would
        # abort a PostgreSQL transaction, and a Conflict must leave it usable.
        exists = await self._uow.execute(
            sa.select(projects.c.id).where(projects.c.id == project_id)
        )
        if exists.first() is None:
            raise Conflict(f"no project with id {project_id}")
        result = await self._uow.execute(
            self._insert(agents)
            .values(
                project_id=agent.project_id,
                name=agent.name,
                token_hash=agent.token_hash,
                secret_salt=agent.secret_salt,
                created_at=agent.created_at,
            )
            # Any conflict: the (project, name) pair or, by a caller's bug, the token hash.
            .on_conflict_do_nothing()
            .returning(agents.c.id)
        )
        agent_id = result.scalar_one_or_none()
        if agent_id is None:
            raise Conflict(f"the project already has an agent named {name!r}")
        return attrs.evolve(agent, id=agent_id)

    async def get_by_token_hash(self, token_hash: str) -> Agent | None:
        """The agent whose token has this hash (revoked or not), or ``None``."""
        result = await self._uow.execute(sa.select(agents).where(agents.c.token_hash == token_hash))
        row = result.first()
        return None if row is None else _row_to_agent(row)

    async def get_by_name(self, project_id: int, name: str) -> Agent | None:
        """The project's agent of this name (revoked or not), or ``None``."""
        result = await self._uow.execute(
            sa.select(agents).where(agents.c.project_id == project_id, agents.c.name == name)
        )
        row = result.first()
        return None if row is None else _row_to_agent(row)

    async def list(self, project_id: int) -> Sequence[Agent]:
        """The project's agents, revoked ones included, by name."""
        result = await self._uow.execute(sa.select(agents).where(agents.c.project_id == project_id))
        return sorted((_row_to_agent(row) for row in result), key=lambda a: a.name)

    async def revoke(self, agent_id: int, at: datetime) -> None:
        """Revoke the agent at ``at`` (no-op if already revoked or absent)."""
        await self._uow.execute(
            sa.update(agents)
            .where(agents.c.id == agent_id, agents.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )

    async def touch(self, agent_id: int, at: datetime) -> None:
        """Record that the agent was seen at ``at``."""
        await self._uow.execute(
            sa.update(agents).where(agents.c.id == agent_id).values(last_seen_at=at)
        )

    async def count(self, project_id: int | None = None) -> int:
        """How many agents that are not revoked (in one project, or in all)."""
        statement = (
            sa.select(sa.func.count()).select_from(agents).where(agents.c.revoked_at.is_(None))
        )
        if project_id is not None:
            statement = statement.where(agents.c.project_id == project_id)
        return int((await self._uow.execute(statement)).scalar_one())


class SqlSettingRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.SettingRepository` on SQLite or PostgreSQL."""

    async def get(self, key: str) -> Any:
        """The value, or ``None``."""
        result = await self._uow.execute(sa.select(settings.c.value).where(settings.c.key == key))
        return result.scalar_one_or_none()

    async def set(self, key: str, value: Any) -> None:
        """Insert or replace the value; ``None`` removes it."""
        if value is None:
            # A stored None is indistinguishable from no value for every
            # reader, and the contract's delete() reports it as absent.
            await self.delete(key)
            return
        statement = self._insert(settings).values(key=key, value=value)
        statement = statement.on_conflict_do_update(
            index_elements=["key"], set_={"value": statement.excluded.value}
        )
        await self._uow.execute(statement)

    async def delete(self, key: str) -> bool:
        """Remove the value; whether there was one."""
        result = await self._uow.execute(sa.delete(settings).where(settings.c.key == key))
        return bool(result.rowcount)
