"""Users, their API keys, sessions and invitations, and agents' credentials, as stored values.

Secrets never live here in clear: a key or token is stored as its SHA-256
(they are long random strings, so a fast hash is the right one), and a password
as the hash a :class:`~z4j_domain.ports.PasswordHasher` produced.
"""

from __future__ import annotations

import enum
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, non_empty, optional_aware_utc
from z4j_domain.errors import InvalidInput
from z4j_domain.rbac import Role, parse_role

__all__ = [
    "API_KEY_PREFIX",
    "Agent",
    "ApiKey",
    "Invitation",
    "InvitationStatus",
    "Session",
    "User",
    "hash_secret",
    "normalize_email",
]

#: Every API key starts with this, so secret scanners and humans can spot one.
API_KEY_PREFIX: Final = "z4j_"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def normalize_email(email: str) -> str:
    """Return the stored form of an email address, or raise :class:`InvalidInput`."""
    cleaned = email.strip().lower() if isinstance(email, str) else ""
    if not _EMAIL.match(cleaned) or len(cleaned) > 320:
        raise InvalidInput(f"invalid email address {email!r}")
    return cleaned


def hash_secret(secret: str) -> str:
    """The stored form of a high-entropy secret (API key, agent token, setup token)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _email(_instance: Any, _attribute: Any, value: str) -> None:
    if normalize_email(value) != value:
        raise InvalidInput(f"email {value!r} is not normalized")


@attrs.frozen(kw_only=True)
class User:
    """A person who can log in or own API keys."""

    id: int
    email: str = attrs.field(validator=_email)
    password_hash: str | None = None
    is_admin: bool = False
    created_at: datetime = attrs.field(converter=aware_utc)


@attrs.frozen(kw_only=True)
class ApiKey:
    """A Bearer key of a user; ``key_hash`` is :func:`hash_secret` of the key."""

    id: int
    user_id: int
    name: str = attrs.field(validator=non_empty)
    key_hash: str = attrs.field(validator=non_empty)
    #: The first characters of the key, shown in lists so a key can be recognised.
    prefix: str
    created_at: datetime = attrs.field(converter=aware_utc)
    last_used_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    revoked_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    #: The only project the key may act in (``None``: every project of its user).
    project_id: int | None = None
    #: The most the key may do (``None``: whatever its user may do).
    role: Role | None = attrs.field(default=None, converter=attrs.converters.optional(parse_role))

    @property
    def is_active(self) -> bool:
        """Whether the key may still authenticate."""
        return self.revoked_at is None


class InvitationStatus(enum.StrEnum):
    """Where an invitation stands."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


@attrs.frozen(kw_only=True)
class Invitation:
    """A single-use, expiring offer of a role in a project to an email address.

    ``token_hash`` is :func:`hash_secret` of the link's token; the token itself
    is shown once, to the admin who invites.
    """

    id: int
    project_id: int
    email: str = attrs.field(validator=_email)
    role: Role = attrs.field(converter=parse_role)
    token_hash: str = attrs.field(validator=non_empty)
    invited_by: int | None
    created_at: datetime = attrs.field(converter=aware_utc)
    expires_at: datetime = attrs.field(converter=aware_utc)
    accepted_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    accepted_by: int | None = None
    revoked_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)

    def status(self, now: datetime) -> InvitationStatus:
        """Where the invitation stands at ``now``."""
        if self.accepted_at is not None:
            return InvitationStatus.ACCEPTED
        if self.revoked_at is not None:
            return InvitationStatus.REVOKED
        if now >= self.expires_at:
            return InvitationStatus.EXPIRED
        return InvitationStatus.PENDING


@attrs.frozen(kw_only=True)
class Session:
    """A browser login: ``token_hash`` is :func:`hash_secret` of the session cookie.

    It ends at ``expires_at`` (absolute) or after ``idle`` without a request.
    """

    id: int
    user_id: int
    token_hash: str = attrs.field(validator=non_empty)
    created_at: datetime = attrs.field(converter=aware_utc)
    last_seen_at: datetime = attrs.field(converter=aware_utc)
    expires_at: datetime = attrs.field(converter=aware_utc)
    source_ip: str | None = None
    user_agent: str | None = None

    def is_live(self, now: datetime, idle: timedelta) -> bool:
        """Whether the session still authenticates at ``now``."""
        return now < self.expires_at and now - self.last_seen_at < idle


@attrs.frozen(kw_only=True)
class Agent:
    """An agent identity of a project: what a worker's ``Z4J_TOKEN`` authenticates as."""

    id: int
    project_id: int
    name: str = attrs.field(validator=non_empty)
    token_hash: str = attrs.field(validator=non_empty)
    #: Random salt from which the brain re-derives the agent's HMAC secret
    #: (:func:`~z4j_domain.protocol.derive_agent_secret`); the secret itself is never stored.
    secret_salt: str
    created_at: datetime = attrs.field(converter=aware_utc)
    last_seen_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    revoked_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)

    @property
    def is_active(self) -> bool:
        """Whether the agent's token may still connect."""
        return self.revoked_at is None
