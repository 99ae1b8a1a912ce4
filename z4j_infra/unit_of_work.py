"""The SQL unit of work: one connection and one transaction shared by every repository."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from z4j_infra.audit import SqlAuditLogRepository
from z4j_infra.commands import SqlCommandRepository
from z4j_infra.errors import StorageError, translate_errors
from z4j_infra.repositories import (
    SqlAgentRepository,
    SqlApiKeyRepository,
    SqlInvitationRepository,
    SqlMembershipRepository,
    SqlProjectRepository,
    SqlSessionRepository,
    SqlSettingRepository,
    SqlUserRepository,
    SqlWorkerRepository,
)
from z4j_infra.schedules import SqlScheduleRepository
from z4j_infra.schema import upsertable_insert
from z4j_infra.tasks import SqlTaskEventRepository, SqlTaskRepository

__all__ = ["SqlUnitOfWork"]


class SqlUnitOfWork:
    """:class:`~z4j_domain.ports.UnitOfWork` over one pooled connection.

    Entering checks a connection out of the pool; the transaction begins with
    the first statement. :meth:`commit` and :meth:`rollback` end it, and the
    next statement begins a new one, so a unit of work can commit several
    times. Leaving the block rolls back whatever was not committed and returns
    the connection.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        #: ``"sqlite"`` or ``"postgresql"``: the repositories pick their SQL by it.
        self.dialect: str = engine.dialect.name
        self.tasks = SqlTaskRepository(self)
        self.events = SqlTaskEventRepository(self)
        self.workers = SqlWorkerRepository(self)
        self.projects = SqlProjectRepository(self)
        self.users = SqlUserRepository(self)
        self.api_keys = SqlApiKeyRepository(self)
        self.agents = SqlAgentRepository(self)
        self.settings = SqlSettingRepository(self)
        self.memberships = SqlMembershipRepository(self)
        self.invitations = SqlInvitationRepository(self)
        self.sessions = SqlSessionRepository(self)
        self.commands = SqlCommandRepository(self)
        self.audit = SqlAuditLogRepository(self)
        self.schedules = SqlScheduleRepository(self)

    @property
    def connection(self) -> AsyncConnection:
        """The connection of this unit of work; only inside ``async with``."""
        if self._connection is None:
            raise RuntimeError("use the unit of work as `async with factory() as uow:`")
        return self._connection

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``ON CONFLICT`` on this unit of work's dialect."""
        return upsertable_insert(self.dialect, table)

    async def execute(
        self,
        statement: sa.Executable,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> sa.CursorResult[Any]:
        """Run ``statement`` in the transaction, translating driver errors."""
        with translate_errors():
            return await self.connection.execute(statement, parameters)

    async def execute_driver_sql(
        self, statement: str, parameters: Sequence[Any] | Sequence[Sequence[Any]]
    ) -> sa.CursorResult[Any]:
        """Run SQL text with positional parameters straight through the driver.

        For the ingest's bulk statements: no per-value processing by
        SQLAlchemy, and a list of tuples runs as the driver's ``executemany``.
        """
        with translate_errors():
            return await self.connection.exec_driver_sql(statement, parameters)

    async def __aenter__(self) -> Self:
        if self._connection is not None:
            raise RuntimeError("this unit of work is already in use")
        with translate_errors():
            self._connection = await self._engine.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        # Shielded: a cancelled request must still give its connection back
        # clean, or the pool would hand out one stuck in a transaction.
        with anyio.CancelScope(shield=True):
            try:
                with translate_errors():
                    try:
                        await connection.rollback()
                    finally:
                        await connection.close()
            except StorageError:
                # Never hide the exception that is leaving the block.
                if exc is None:
                    raise

    async def commit(self) -> None:
        """Make the changes durable."""
        with translate_errors():
            await self.connection.commit()

    async def rollback(self) -> None:
        """Discard the changes."""
        with translate_errors():
            await self.connection.rollback()
