"""Projects' redaction settings: stored in the brain, cached, applied on ingest, sent to agents.

The defaults (:data:`z4j_domain.redaction.DEFAULT_POLICY`) are always on; a
project's :class:`~z4j_domain.redaction.RedactionSettings` only add to them.
They are stored in the ``settings`` table under ``project:<id>:redaction``,
cached here for :data:`REFRESH_SECONDS` (so that a change made through another
brain of a scaled-out deployment arrives within that time), and sent to the
project's agents in ``welcome`` and, on a change, in a ``configure`` command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from z4j_domain.errors import InvalidInput
from z4j_domain.ports import UnitOfWorkFactory
from z4j_domain.redaction import RedactionPolicy, RedactionSettings
from z4j_web.auditing import Change

__all__ = ["REFRESH_SECONDS", "RedactionStore", "settings_key"]

_log = logging.getLogger("z4j.redaction")

#: How long a cached project's settings are used before they are read again.
REFRESH_SECONDS: Final = 30.0


def settings_key(project_id: int) -> str:
    """The ``settings`` row of a project's redaction settings."""
    return f"project:{project_id}:redaction"


class RedactionStore:
    """Reads, caches and saves projects' redaction settings."""

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWorkFactory],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow_factory = uow_factory
        self._monotonic = monotonic
        self._cache: dict[int, tuple[float, RedactionSettings]] = {}

    async def settings(self, project_id: int) -> RedactionSettings:
        """The project's settings (cached for :data:`REFRESH_SECONDS`)."""
        cached = self._cache.get(project_id)
        if cached is not None and self._monotonic() - cached[0] < REFRESH_SECONDS:
            return cached[1]
        async with self._uow_factory()() as uow:
            stored = await uow.settings.get(settings_key(project_id))
        settings = RedactionSettings()
        if stored is not None:
            try:
                settings = RedactionSettings.from_dict(stored)
            except InvalidInput as error:
                # Written by an older or newer brain; the defaults still apply.
                _log.error(
                    "project %d: stored redaction settings are invalid (%s); using the defaults",
                    project_id,
                    error,
                )
        self._cache[project_id] = (self._monotonic(), settings)
        return settings

    async def policy(self, project_id: int) -> RedactionPolicy:
        """The project's redaction policy: the defaults plus its settings."""
        return (await self.settings(project_id)).policy()

    async def save(
        self,
        project_id: int,
        settings: RedactionSettings,
        change: Change,
    ) -> None:
        """Store the project's settings (they take effect on this brain at once); audited."""
        value = settings.to_dict()
        async with change.audited() as work:
            before = await work.uow.settings.get(settings_key(project_id))
            await work.uow.settings.set(settings_key(project_id), value)
            await work.append(
                change.actor.record(
                    "settings.redaction_changed",
                    change.clock.now(),
                    target="settings:redaction",
                    project_id=project_id,
                    before=before,
                    after=value,
                )
            )
            await work.commit()
        self._cache[project_id] = (self._monotonic(), settings)
