"""SQL repository of commands to agents.

A command is written once by :meth:`SqlCommandRepository.create` and then
moved by :meth:`SqlCommandRepository.save`, whose single conditional
``UPDATE`` never touches a finished command: of two brains or agents reporting
on the same command, the one that comes after its outcome changes nothing
(PostgreSQL re-checks the ``WHERE`` once the first writer commits; SQLite
writers take turns).

Idempotency rests on the ``(project_id, idempotency_key)`` unique constraint,
met with ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` rather than a caught
violation (which would abort a PostgreSQL transaction). Two concurrent creates
with one key: the second insert waits for the first transaction, then inserts
nothing and reads the first's command.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from z4j_domain.commands import Command, CommandStatus
from z4j_domain.errors import Conflict
from z4j_infra.repositories import _exists, _SqlRepository
from z4j_infra.schema import commands, projects

__all__ = ["SqlCommandRepository"]

#: The statuses a command can still leave (any other is its outcome).
_UNFINISHED: Final = tuple(s.value for s in CommandStatus if not s.is_finished)
_FINISHED: Final = tuple(s.value for s in CommandStatus if s.is_finished)


def _row_to_command(row: Any) -> Command:
    return Command(
        id=row.id,
        project_id=row.project_id,
        kind=row.kind,
        params=row.params,
        status=row.status,
        idempotency_key=row.idempotency_key,
        requested_by=row.requested_by,
        requested_by_name=row.requested_by_name,
        created_at=row.created_at,
        deadline=row.deadline,
        agent=row.agent,
        delivered_at=row.delivered_at,
        acked_at=row.acked_at,
        finished_at=row.finished_at,
        result=row.result,
        error=row.error,
    )


def _state(command: Command) -> dict[str, Any]:
    """The columns :meth:`SqlCommandRepository.save` writes: where the command stands."""
    return {
        "status": command.status.value,
        "agent": command.agent,
        "delivered_at": command.delivered_at,
        "acked_at": command.acked_at,
        "finished_at": command.finished_at,
        "result": None if command.result is None else dict(command.result),
        "error": command.error,
    }


class SqlCommandRepository(_SqlRepository):
    """:class:`~z4j_domain.ports.CommandRepository` on SQLite or PostgreSQL."""

    async def create(self, command: Command) -> tuple[Command, bool]:
        """Store ``command``, or return the project's command with its idempotency key.

        Raise :class:`~z4j_domain.errors.Conflict` if there is no such project,
        or if another command has its id (and none has its key).
        """
        values = {
            "id": command.id,
            "project_id": command.project_id,
            "kind": command.kind.value,
            "params": dict(command.params),
            "idempotency_key": command.idempotency_key,
            "requested_by": command.requested_by,
            "requested_by_name": command.requested_by_name,
            "created_at": command.created_at,
            "deadline": command.deadline,
            **_state(command),
        }
        # Written before anything is read (see _insert_where), the project's
        # existence included; any conflict, the id's or the key's, inserts nothing.
        result = await self._uow.execute(
            self._insert_where(commands, values, _exists(projects, command.project_id))
            .on_conflict_do_nothing()
            .returning(commands.c.id)
        )
        if result.scalar_one_or_none() is not None:
            return command, True
        await self._missing(projects, command.project_id, "project")
        if command.idempotency_key is not None:
            existing = await self._uow.execute(
                sa.select(commands).where(
                    commands.c.project_id == command.project_id,
                    commands.c.idempotency_key == command.idempotency_key,
                )
            )
            row = existing.first()
            if row is not None:
                return _row_to_command(row), False
        raise Conflict(f"a command with id {command.id!r} already exists")

    async def get(self, project_id: int, command_id: str) -> Command | None:
        """The project's command, or ``None``."""
        result = await self._uow.execute(
            sa.select(commands).where(
                commands.c.project_id == project_id, commands.c.id == command_id
            )
        )
        row = result.first()
        return None if row is None else _row_to_command(row)

    async def list(
        self,
        project_id: int,
        *,
        status: CommandStatus | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> Sequence[Command]:
        """The project's commands, newest first (created before ``before``, with ``status``)."""
        statement = sa.select(commands).where(commands.c.project_id == project_id)
        if status is not None:
            statement = statement.where(commands.c.status == CommandStatus(status).value)
        if before is not None:
            statement = statement.where(commands.c.created_at < before)
        result = await self._uow.execute(
            statement.order_by(commands.c.created_at.desc(), commands.c.id.desc()).limit(
                max(limit, 0)
            )
        )
        return [_row_to_command(row) for row in result]

    async def pending(self, project_id: int, limit: int) -> Sequence[Command]:
        """The project's pending commands, oldest first."""
        result = await self._uow.execute(
            sa.select(commands)
            .where(
                commands.c.project_id == project_id,
                commands.c.status == CommandStatus.PENDING.value,
            )
            .order_by(commands.c.created_at, commands.c.id)
            .limit(max(limit, 0))
        )
        return [_row_to_command(row) for row in result]

    async def overdue(self, now: datetime, limit: int) -> Sequence[Command]:
        """Unfinished commands of any project whose deadline is at or before ``now``,
        earliest deadline first."""
        result = await self._uow.execute(
            sa.select(commands)
            # IN the unfinished statuses rather than NOT IN the finished ones:
            # one range of ix_commands_deadline per status.
            .where(commands.c.status.in_(_UNFINISHED), commands.c.deadline <= now)
            .order_by(commands.c.deadline, commands.c.id)
            .limit(max(limit, 0))
        )
        return [_row_to_command(row) for row in result]

    async def save(self, command: Command, *, expected: CommandStatus | None = None) -> bool:
        """Store where ``command`` stands (status, agent, its times, result, error) unless
        the stored one is finished (or, with ``expected``, has another status); whether it
        was stored.

        What was asked (kind, parameters, key, requester, creation time and
        deadline) is fixed at creation and not written again.
        """
        result = await self._uow.execute(
            sa.update(commands)
            .where(
                commands.c.id == command.id,
                commands.c.project_id == command.project_id,
                commands.c.status.not_in(_FINISHED),
                sa.true()
                if expected is None
                else commands.c.status == CommandStatus(expected).value,
            )
            .values(_state(command))
        )
        return result.rowcount == 1
