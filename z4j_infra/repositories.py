"""SQL repositories of workers, projects, users and their keys, memberships, invitations,
sessions, agents and settings.

The task repositories live in :mod:`z4j_infra.tasks`, the audit log's in
:mod:`z4j_infra.audit`. Every repository works inside its
:class:`~z4j_infra.unit_of_work.SqlUnitOfWork`'s transaction.

Uniqueness is checked with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
rather than by catching a constraint violation: on PostgreSQL a violation
aborts the whole transaction, while a :class:`~z4j_domain.errors.Conflict`
must leave the unit of work usable, as the in-memory fake does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import sqlalchemy as sa

from z4j_domain.errors import Conflict
from z4j_domain.projects import Project
from z4j_domain.rbac import Membership, Role
from z4j_domain.users import Agent, ApiKey, Invitation, Session, User
from z4j_domain.workers import Worker, WorkerStatus
from z4j_infra.schema import (
    agents,
    api_keys,
    invitations,
    memberships,
    projects,
    sessions,
    settings,
    users,
    workers,
)
from z4j_infra.tasks import SqlTaskEventRepository, SqlTaskRepository

if TYPE_CHECKING:
    from z4j_infra.unit_of_work import SqlUnitOfWork

__all__ = [
    "SqlAgentRepository",
    "SqlApiKeyRepository",
    "SqlInvitationRepository",
    "SqlMembershipRepository",
    "SqlProjectRepository",
    "SqlSessionRepository",
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
        return self._uow.insert(table)

    def _insert_where(
        self, table: sa.Table, values: Mapping[str, Any], *conditions: sa.ColumnElement[bool]
    ) -> Any:
        """An INSERT of the row ``values`` that inserts nothing unless ``conditions`` hold.

        For rows that refer to others: the referred rows' existence is a
        condition of the statement rather than left to the foreign key (a
        violation would abort a PostgreSQL transaction, and a Conflict must
        leave it usable) or checked by a SELECT first (on SQLite a transaction
        that reads before it writes fails at once, "database is locked", when
        another writer committed in between; one that writes first waits its
        turn). Add ``ON CONFLICT`` and ``RETURNING``; when nothing comes
        back, :meth:`_missing` says why.
        """
        if not conditions:
            raise ValueError("_insert_where needs a condition")  # SQLite's upsert needs a WHERE
        row = sa.select(
            *(sa.literal(value, table.c[name].type).label(name) for name, value in values.items())
        ).where(*conditions)
        return self._insert(table).from_select(list(values), row)

    async def _missing(self, table: sa.Table, row_id: int | None, what: str) -> None:
        """Raise :class:`Conflict` if ``row_id`` is given and ``table`` has no row with it."""
        if row_id is None:
            return
        exists = await self._uow.execute(sa.select(table.c.id).where(table.c.id == row_id))
        if exists.first() is None:
            raise Conflict(f"no {what} with id {row_id}")


def _exists(table: sa.Table, row_id: int | None) -> sa.ColumnElement[bool]:
    """SQL: ``row_id`` is ``None`` or ``table`` has a row with that id."""
    if row_id is None:
        return sa.true()
    return sa.exists().where(table.c.id == row_id)


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

    async def list(self, ids: Collection[int] | None = None) -> Sequence[User]:
        """All users, or those of ``ids`` (unknown ids are skipped), by email."""
        statement = sa.select(users)
        if ids is not None:
            statement = statement.where(users.c.id.in_(list(ids)))
        result = await self._uow.execute(statement)
        # Sorted in Python: code-point order whatever the database's collation.
        return sorted((_row_to_user(row) for row in result), key=lambda u: u.email)

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Replace the user's password hash (no-op for an unknown user)."""
        await self._uow.execute(
            sa.update(users).where(users.c.id == user_id).values(password_hash=password_hash)
        )

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
        project_id=row.project_id,
        role=row.role,
    )


class SqlApiKeyRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.ApiKeyRepository` on SQLite or PostgreSQL."""

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
        key = ApiKey(
            id=0,
            user_id=user_id,
            name=name,
            key_hash=key_hash,
            prefix=prefix,
            created_at=created_at,
            project_id=project_id,
            role=role,
        )
        result = await self._uow.execute(
            self._insert_where(
                api_keys,
                {
                    "user_id": key.user_id,
                    "name": key.name,
                    "key_hash": key.key_hash,
                    "prefix": key.prefix,
                    "created_at": key.created_at,
                    "project_id": key.project_id,
                    "role": None if key.role is None else key.role.value,
                },
                _exists(users, user_id),
                _exists(projects, project_id),
            )
            .on_conflict_do_nothing(index_elements=["key_hash"])
            .returning(api_keys.c.id)
        )
        key_id = result.scalar_one_or_none()
        if key_id is None:
            await self._missing(users, user_id, "user")
            await self._missing(projects, project_id, "project")
            # Keys are 256-bit random strings: a repeated hash is a caller's bug.
            raise Conflict("an API key with this hash already exists")
        return attrs.evolve(key, id=key_id)

    async def get(self, key_id: int) -> ApiKey | None:
        """The key with this id (revoked or not), or ``None``."""
        result = await self._uow.execute(sa.select(api_keys).where(api_keys.c.id == key_id))
        row = result.first()
        return None if row is None else _row_to_api_key(row)

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash (revoked or not), or ``None``."""
        result = await self._uow.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash))
        row = result.first()
        return None if row is None else _row_to_api_key(row)

    async def list_for_user(self, user_id: int) -> Sequence[ApiKey]:
        """The user's keys, revoked ones included, oldest first."""
        result = await self._uow.execute(
            sa.select(api_keys)
            .where(api_keys.c.user_id == user_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        return [_row_to_api_key(row) for row in result]

    async def revoke(self, key_id: int, at: datetime) -> bool:
        """Revoke the key at ``at``; whether it was active until now."""
        result = await self._uow.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return result.rowcount == 1

    async def touch(self, key_id: int, at: datetime) -> None:
        """Record that the key was used at ``at``."""
        await self._uow.execute(
            sa.update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at)
        )


def _row_to_membership(row: Any) -> Membership:
    return Membership(
        project_id=row.project_id, user_id=row.user_id, role=row.role, created_at=row.created_at
    )


class SqlMembershipRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.MembershipRepository` on SQLite or PostgreSQL."""

    async def get(self, project_id: int, user_id: int) -> Membership | None:
        """The user's membership of the project, or ``None``."""
        result = await self._uow.execute(
            sa.select(memberships).where(
                memberships.c.project_id == project_id, memberships.c.user_id == user_id
            )
        )
        row = result.first()
        return None if row is None else _row_to_membership(row)

    async def set(self, project_id: int, user_id: int, role: Role, at: datetime) -> Membership:
        """Give the user ``role`` in the project, keeping the first grant's ``created_at``;
        raise :class:`~z4j_domain.errors.Conflict` if the project or user does not exist."""
        membership = Membership(project_id=project_id, user_id=user_id, role=role, created_at=at)
        statement = self._insert_where(
            memberships,
            {
                "project_id": project_id,
                "user_id": user_id,
                "role": membership.role.value,
                "created_at": membership.created_at,
            },
            _exists(projects, project_id),
            _exists(users, user_id),
        )
        result = await self._uow.execute(
            statement.on_conflict_do_update(
                index_elements=["project_id", "user_id"],
                set_={"role": statement.excluded.role},
            ).returning(*memberships.c)
        )
        row = result.first()
        if row is None:
            # Nothing inserted or updated: the project or the user is missing.
            await self._missing(projects, project_id, "project")
            await self._missing(users, user_id, "user")
            raise Conflict(f"no project with id {project_id} or no user with id {user_id}")
        return _row_to_membership(row)

    async def remove(self, project_id: int, user_id: int) -> bool:
        """End the membership; whether there was one."""
        result = await self._uow.execute(
            sa.delete(memberships).where(
                memberships.c.project_id == project_id, memberships.c.user_id == user_id
            )
        )
        return result.rowcount == 1

    async def list_for_project(self, project_id: int) -> Sequence[Membership]:
        """The project's memberships, by user id."""
        result = await self._uow.execute(
            sa.select(memberships)
            .where(memberships.c.project_id == project_id)
            .order_by(memberships.c.user_id)
        )
        return [_row_to_membership(row) for row in result]

    async def list_for_user(self, user_id: int) -> Sequence[Membership]:
        """The user's memberships, by project id."""
        result = await self._uow.execute(
            sa.select(memberships)
            .where(memberships.c.user_id == user_id)
            .order_by(memberships.c.project_id)
        )
        return [_row_to_membership(row) for row in result]

    async def count_role(self, project_id: int, role: Role) -> int:
        """How many members of the project have ``role``."""
        statement = (
            sa.select(sa.func.count())
            .select_from(memberships)
            .where(memberships.c.project_id == project_id, memberships.c.role == role.value)
        )
        return int((await self._uow.execute(statement)).scalar_one())


def _row_to_invitation(row: Any) -> Invitation:
    return Invitation(
        id=row.id,
        project_id=row.project_id,
        email=row.email,
        role=row.role,
        token_hash=row.token_hash,
        invited_by=row.invited_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_at=row.accepted_at,
        accepted_by=row.accepted_by,
        revoked_at=row.revoked_at,
    )


class SqlInvitationRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.InvitationRepository` on SQLite or PostgreSQL."""

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
        such project (or inviting user)."""
        invitation = Invitation(
            id=0,
            project_id=project_id,
            email=email,
            role=role,
            token_hash=token_hash,
            invited_by=invited_by,
            created_at=created_at,
            expires_at=expires_at,
        )
        result = await self._uow.execute(
            self._insert_where(
                invitations,
                {
                    "project_id": invitation.project_id,
                    "email": invitation.email,
                    "role": invitation.role.value,
                    "token_hash": invitation.token_hash,
                    "invited_by": invitation.invited_by,
                    "created_at": invitation.created_at,
                    "expires_at": invitation.expires_at,
                },
                _exists(projects, project_id),
                _exists(users, invited_by),
            )
            .on_conflict_do_nothing(index_elements=["token_hash"])
            .returning(invitations.c.id)
        )
        invitation_id = result.scalar_one_or_none()
        if invitation_id is None:
            await self._missing(projects, project_id, "project")
            await self._missing(users, invited_by, "user")
            raise Conflict("an invitation with this token hash already exists")
        return attrs.evolve(invitation, id=invitation_id)

    async def get(self, invitation_id: int) -> Invitation | None:
        """The invitation, or ``None``."""
        result = await self._uow.execute(
            sa.select(invitations).where(invitations.c.id == invitation_id)
        )
        row = result.first()
        return None if row is None else _row_to_invitation(row)

    async def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        """The invitation whose token has this hash, or ``None``."""
        result = await self._uow.execute(
            sa.select(invitations).where(invitations.c.token_hash == token_hash)
        )
        row = result.first()
        return None if row is None else _row_to_invitation(row)

    async def list(self, project_id: int) -> Sequence[Invitation]:
        """The project's invitations, newest first."""
        result = await self._uow.execute(
            sa.select(invitations)
            .where(invitations.c.project_id == project_id)
            .order_by(invitations.c.created_at.desc(), invitations.c.id.desc())
        )
        return [_row_to_invitation(row) for row in result]

    def _close(self, invitation_id: int) -> sa.Update:
        # One conditional UPDATE: of two concurrent callers, the second finds
        # the row changed (PostgreSQL re-checks the WHERE after the first's
        # commit; SQLite writers take turns) and updates nothing.
        return sa.update(invitations).where(
            invitations.c.id == invitation_id,
            invitations.c.accepted_at.is_(None),
            invitations.c.revoked_at.is_(None),
        )

    async def mark_accepted(self, invitation_id: int, user_id: int, at: datetime) -> bool:
        """Mark it accepted by ``user_id`` if it is neither accepted nor revoked yet;
        whether this call did it."""
        result = await self._uow.execute(
            self._close(invitation_id)
            .where(_exists(users, user_id))
            .values(accepted_at=at, accepted_by=user_id)
        )
        if result.rowcount == 1:
            return True
        await self._missing(users, user_id, "user")
        return False

    async def revoke(self, invitation_id: int, at: datetime) -> bool:
        """Revoke it if it is neither accepted nor revoked yet; whether this call did it."""
        result = await self._uow.execute(self._close(invitation_id).values(revoked_at=at))
        return result.rowcount == 1


def _row_to_session(row: Any) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        token_hash=row.token_hash,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
        source_ip=row.source_ip,
        user_agent=row.user_agent,
    )


class SqlSessionRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.SessionRepository` on SQLite or PostgreSQL."""

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
        """Store a new session (``last_seen_at`` is ``created_at``); raise
        :class:`~z4j_domain.errors.Conflict` if there is no such user."""
        session = Session(
            id=0,
            user_id=user_id,
            token_hash=token_hash,
            created_at=created_at,
            last_seen_at=created_at,
            expires_at=expires_at,
            source_ip=source_ip,
            user_agent=user_agent,
        )
        result = await self._uow.execute(
            self._insert_where(
                sessions,
                {
                    "user_id": session.user_id,
                    "token_hash": session.token_hash,
                    "created_at": session.created_at,
                    "last_seen_at": session.last_seen_at,
                    "expires_at": session.expires_at,
                    "source_ip": session.source_ip,
                    "user_agent": session.user_agent,
                },
                _exists(users, user_id),
            )
            .on_conflict_do_nothing(index_elements=["token_hash"])
            .returning(sessions.c.id)
        )
        session_id = result.scalar_one_or_none()
        if session_id is None:
            await self._missing(users, user_id, "user")
            raise Conflict("a session with this token hash already exists")
        return attrs.evolve(session, id=session_id)

    async def get_by_token_hash(self, token_hash: str) -> Session | None:
        """The session whose token has this hash, or ``None``."""
        result = await self._uow.execute(
            sa.select(sessions).where(sessions.c.token_hash == token_hash)
        )
        row = result.first()
        return None if row is None else _row_to_session(row)

    async def touch(self, session_id: int, at: datetime) -> None:
        """Record a request of the session at ``at``."""
        await self._uow.execute(
            sa.update(sessions).where(sessions.c.id == session_id).values(last_seen_at=at)
        )

    async def delete(self, session_id: int) -> bool:
        """End the session; whether it existed."""
        result = await self._uow.execute(sa.delete(sessions).where(sessions.c.id == session_id))
        return result.rowcount == 1

    async def delete_for_user(self, user_id: int, *, keep: int | None = None) -> int:
        """End the user's sessions except ``keep``; how many ended."""
        statement = sa.delete(sessions).where(sessions.c.user_id == user_id)
        if keep is not None:
            statement = statement.where(sessions.c.id != keep)
        return int((await self._uow.execute(statement)).rowcount)

    async def delete_expired(self, now: datetime, idle_before: datetime) -> int:
        """Delete sessions past ``expires_at`` or last seen before ``idle_before``; how many."""
        result = await self._uow.execute(
            sa.delete(sessions).where(
                sa.or_(sessions.c.expires_at <= now, sessions.c.last_seen_at < idle_before)
            )
        )
        return int(result.rowcount)


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
