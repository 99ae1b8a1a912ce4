"""Adapters: SQL storage (SQLite, PostgreSQL), migrations, settings, and host services.

Importing this package does nothing but import: engines are created by
:meth:`Database.connect` and settings are read by :func:`load_settings`, both
from the shell's composition root.
"""

from z4j_infra.audit import SqlAuditLogRepository
from z4j_infra.clock import SystemClock
from z4j_infra.commands import SqlCommandRepository
from z4j_infra.database import Database
from z4j_infra.errors import ConfigError, StorageError
from z4j_infra.migrations import downgrade, migrate, revisions
from z4j_infra.passwords import Argon2PasswordHasher
from z4j_infra.repositories import (
    SqlAgentRepository,
    SqlApiKeyRepository,
    SqlInvitationRepository,
    SqlMembershipRepository,
    SqlProjectRepository,
    SqlSessionRepository,
    SqlSettingRepository,
    SqlTaskEventRepository,
    SqlTaskRepository,
    SqlUserRepository,
    SqlWorkerRepository,
)
from z4j_infra.schedules import SqlScheduleRepository
from z4j_infra.secrets import new_token
from z4j_infra.settings import Settings, load_settings, normalize_database_url
from z4j_infra.unit_of_work import SqlUnitOfWork

__all__ = [
    "Argon2PasswordHasher",
    "ConfigError",
    "Database",
    "Settings",
    "SqlAgentRepository",
    "SqlApiKeyRepository",
    "SqlAuditLogRepository",
    "SqlCommandRepository",
    "SqlInvitationRepository",
    "SqlMembershipRepository",
    "SqlProjectRepository",
    "SqlScheduleRepository",
    "SqlSessionRepository",
    "SqlSettingRepository",
    "SqlTaskEventRepository",
    "SqlTaskRepository",
    "SqlUnitOfWork",
    "SqlUserRepository",
    "SqlWorkerRepository",
    "StorageError",
    "SystemClock",
    "downgrade",
    "load_settings",
    "migrate",
    "new_token",
    "normalize_database_url",
    "revisions",
]
