"""A transaction PostgreSQL aborts for another's sake is a ``Transient`` error (retry it)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from z4j_domain.errors import Transient
from z4j_infra.database import Database
from z4j_infra.errors import StorageError, TransientStorageError
from z4j_infra.schema import projects

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_a_deadlock_is_a_transient_storage_error(postgres_database: Database) -> None:
    async with postgres_database.unit_of_work() as uow:
        first = await uow.projects.create(slug="a", name="A", created_at=datetime.now(UTC))
        second = await uow.projects.create(slug="b", name="B", created_at=datetime.now(UTC))
        await uow.commit()

    def lock(project_id: int) -> sa.Select[tuple[int]]:
        return sa.select(projects.c.id).where(projects.c.id == project_id).with_for_update()

    both_hold_one = asyncio.Barrier(2)

    async def take(one: int, other: int) -> None:
        async with postgres_database.unit_of_work() as uow:
            await uow.execute(lock(one))
            await both_hold_one.wait()
            await uow.execute(lock(other))

    outcomes = await asyncio.gather(
        take(first.id, second.id), take(second.id, first.id), return_exceptions=True
    )
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    # PostgreSQL aborts one of the two; the other then gets both rows.
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], TransientStorageError)
    assert isinstance(errors[0], Transient)
    assert isinstance(errors[0], StorageError)
    assert "deadlock" in str(errors[0])
