"""Helpers the contract suites share: a fixed time line and fresh projects and users."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Final

from z4j_domain.ports import UnitOfWorkFactory

T0: Final = datetime(2026, 1, 1, tzinfo=UTC)
_names = itertools.count(1)


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


async def new_project(factory: UnitOfWorkFactory) -> int:
    """Create (and commit) a project with a fresh slug; return its id."""
    async with factory() as uow:
        project = await uow.projects.create(slug=f"p{next(_names)}", name="Project", created_at=T0)
        await uow.commit()
    return project.id


async def new_user(factory: UnitOfWorkFactory, email: str | None = None) -> int:
    """Create (and commit) a user, with a fresh email unless given; return its id."""
    async with factory() as uow:
        user = await uow.users.create(
            email=email or f"u{next(_names)}@example.com",
            password_hash=None,
            is_admin=False,
            created_at=T0,
        )
        await uow.commit()
    return user.id
