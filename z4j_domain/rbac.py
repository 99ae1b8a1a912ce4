"""Roles, permissions and the matrix that decides every action in a project.

A user's role in a project comes from a :class:`Membership`; a global instance
admin acts as an admin of every project. An API key may be capped at a role,
and then it may do only what both its user's role and the cap allow.
Everything not granted is denied: an unknown role or permission (say, one a
newer release added) is never allowed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import attrs

from z4j_domain._validators import aware_utc
from z4j_domain.errors import InvalidInput

__all__ = [
    "PERMISSIONS",
    "Grant",
    "Membership",
    "Permission",
    "Role",
    "at_least",
    "is_allowed",
    "parse_role",
    "permissions_of",
]


class Role(enum.StrEnum):
    """A role in one project.

    ``viewer < operator < admin``; ``auditor`` reads what a viewer reads plus
    the audit log, and changes nothing. Roles are ordered by their permission
    sets (:func:`at_least`), so ``auditor`` and ``operator`` are incomparable.
    """

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Permission(enum.StrEnum):
    """Something a request may do in a project."""

    #: Tasks, their timelines, workers, queues, schedules, agents, settings.
    READ_TASKS = "tasks.read"
    RETRY = "tasks.retry"
    CANCEL = "tasks.cancel"
    BULK_ACTIONS = "tasks.bulk"
    PURGE = "tasks.purge"
    MANAGE_SCHEDULES = "schedules.manage"
    MANAGE_AGENTS = "agents.manage"
    MANAGE_MEMBERS = "members.manage"
    READ_AUDIT = "audit.read"
    CHANGE_SETTINGS = "settings.change"


_VIEWER: Final = frozenset({Permission.READ_TASKS})
_OPERATOR: Final = _VIEWER | {
    Permission.RETRY,
    Permission.CANCEL,
    Permission.BULK_ACTIONS,
    Permission.MANAGE_SCHEDULES,
}

#: The permission matrix: what each role may do. Deny by default: absent is refused.
PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = {
    Role.VIEWER: _VIEWER,
    Role.AUDITOR: _VIEWER | {Permission.READ_AUDIT},
    Role.OPERATOR: _OPERATOR,
    Role.ADMIN: frozenset(Permission),
}


def _role(value: object) -> Role | None:
    return Role._value2member_map_.get(value) if isinstance(value, str) else None  # type: ignore[return-value]


def _permission(value: object) -> Permission | None:
    if isinstance(value, str):
        return Permission._value2member_map_.get(value)  # type: ignore[return-value]
    return None


def parse_role(value: object) -> Role:
    """The :class:`Role` named ``value``, or raise :class:`InvalidInput` naming the valid ones."""
    role = _role(value)
    if role is None:
        names = ", ".join(role.value for role in Role)
        raise InvalidInput(f"unknown role {value!r}; expected one of: {names}")
    return role


def permissions_of(role: object) -> frozenset[Permission]:
    """What ``role`` may do; nothing for anything that is not a known role."""
    known = _role(role)
    return frozenset() if known is None else PERMISSIONS.get(known, frozenset())


def is_allowed(role: object, permission: object) -> bool:
    """Whether ``role`` may do ``permission``; ``False`` for an unknown role or permission."""
    wanted = _permission(permission)
    return wanted is not None and wanted in permissions_of(role)


def at_least(role: Role, other: Role) -> bool:
    """Whether ``role`` may do everything ``other`` may (the roles' partial order)."""
    return PERMISSIONS[other] <= PERMISSIONS[role]


@attrs.frozen(kw_only=True)
class Membership:
    """A user's role in a project."""

    project_id: int
    user_id: int
    role: Role = attrs.field(converter=parse_role)
    created_at: datetime = attrs.field(converter=aware_utc)


@attrs.frozen(kw_only=True)
class Grant:
    """What one request may do in one project: its user's standing, and its key's cap.

    ``role`` is the user's membership role (``None``: not a member);
    ``instance_admin`` makes the user an admin of every project; ``cap`` is the
    role an API key is capped at (``None``: uncapped, or a browser session).
    """

    role: Role | None = None
    instance_admin: bool = False
    cap: Role | None = None

    @property
    def effective_role(self) -> Role | None:
        """The user's role in the project before any cap (``None``: no access).

        A value that is not a known role counts as none: deny by default, so
        it does not even make the project visible.
        """
        return Role.ADMIN if self.instance_admin else _role(self.role)

    @property
    def can_see(self) -> bool:
        """Whether the project exists for this request at all (else it reads as not found)."""
        return self.effective_role is not None

    @property
    def permissions(self) -> frozenset[Permission]:
        """Everything this request may do in the project."""
        granted = permissions_of(self.effective_role)
        return granted if self.cap is None else granted & permissions_of(self.cap)

    def allows(self, permission: object) -> bool:
        """Whether the request may do ``permission``; unknown permissions are refused."""
        wanted = _permission(permission)
        return wanted is not None and wanted in self.permissions
