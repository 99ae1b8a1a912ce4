"""Accounts and access: logins and sessions, passwords, API keys, memberships, invitations.

Like :mod:`z4j_web.services`, these are plain async functions over the
domain's ports, called by routes and by the ``z4j`` command. Every function
that changes something records it in the audit log in the same transaction
(:func:`z4j_web.auditing.audited`), with the :class:`~z4j_web.auditing.Actor`
it is given.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Final

import anyio.to_thread
import attrs

from z4j_domain.errors import Conflict, InvalidInput, NotFound
from z4j_domain.ports import Clock, PasswordHasher, UnitOfWork, UnitOfWorkFactory
from z4j_domain.projects import Project, validate_slug
from z4j_domain.rbac import Grant, Membership, Permission, Role, at_least, parse_role
from z4j_domain.users import (
    API_KEY_PREFIX,
    ApiKey,
    Invitation,
    InvitationStatus,
    Session,
    User,
    hash_secret,
)
from z4j_infra.secrets import new_token
from z4j_web import services
from z4j_web.auditing import Actor, Change, audited
from z4j_web.errors import AuthenticationFailed, PermissionDenied, TooManyRequests

__all__ = [
    "INVITATION_TTL",
    "LOGIN_WINDOW",
    "MAX_FAILED_LOGINS_PER_EMAIL",
    "MAX_FAILED_LOGINS_PER_IP",
    "AcceptedInvitation",
    "Access",
    "NewApiKey",
    "NewInvitation",
    "NewSession",
    "Principal",
    "accept_invitation",
    "access",
    "authenticate_key",
    "change_password",
    "create_api_key",
    "create_project",
    "create_user",
    "csrf_token",
    "invite",
    "list_api_keys",
    "list_invitations",
    "list_members",
    "list_users",
    "login",
    "logout",
    "pending_invitation",
    "remove_member",
    "resolve_session",
    "revoke_api_key",
    "revoke_invitation",
    "set_member_role",
    "visible_projects",
]

_log = logging.getLogger("z4j.auth")

#: Failed logins are counted over this window...
LOGIN_WINDOW: Final = timedelta(minutes=15)
#: ... and past this many for one account, or this many from one address, refused.
MAX_FAILED_LOGINS_PER_EMAIL: Final = 5
MAX_FAILED_LOGINS_PER_IP: Final = 30
#: How long an invitation link stays valid unless the admin says otherwise.
INVITATION_TTL: Final = timedelta(days=7)
_MAX_INVITATION_TTL: Final = timedelta(days=30)
#: Every session cookie starts with this, so secret scanners and humans can spot one.
SESSION_TOKEN_PREFIX: Final = "z4js_"  # noqa: S105 - a prefix, not a secret
INVITATION_TOKEN_PREFIX: Final = "z4ji_"  # noqa: S105 - a prefix, not a secret
_MAX_TOKEN_LENGTH: Final = 256
MAX_API_KEY_NAME_LENGTH: Final = 100
# Keys are ~48 characters; anything much longer is not one of ours.
_MAX_API_KEY_LENGTH: Final = 256
#: How many characters of a key are kept in clear so a person can recognise it.
_API_KEY_DISPLAY_LENGTH: Final = len(API_KEY_PREFIX) + 6
# Recording every use of a key or session would turn every read request into
# a write; a last use is only ever shown to about the minute.
_TOUCH_INTERVAL: Final = timedelta(seconds=60)
_WRONG_LOGIN: Final = "wrong email or password"
_GONE_MEANWHILE: Final = "this invitation link was used, revoked or has expired meanwhile"


@attrs.frozen(kw_only=True)
class Principal:
    """Who a request acts as: a user, through an API key or a browser session."""

    user: User
    api_key: ApiKey | None = None
    session: Session | None = None

    @property
    def restricted(self) -> bool:
        """Whether an API key narrows what the user may do (bound to a project or capped)."""
        key = self.api_key
        return key is not None and (key.project_id is not None or key.role is not None)

    @property
    def instance_admin(self) -> bool:
        """Whether the request may act as instance admin (never through a restricted key)."""
        return self.user.is_admin and not self.restricted

    def grant(self, project: Project, role: Role | None) -> Grant | None:
        """What the request may do in ``project`` given the user's ``role`` there.

        ``None`` when the project lies outside the key's binding; a grant that
        cannot see the project (``can_see`` false) when the user has no part in it.
        """
        key = self.api_key
        if key is not None and key.project_id not in (None, project.id):
            return None
        return Grant(
            role=role, instance_admin=self.user.is_admin, cap=key.role if key is not None else None
        )

    def actor(self, source_ip: str | None) -> Actor:
        """The audit log's actor for this principal."""
        return Actor(name=self.user.email, user_id=self.user.id, source_ip=source_ip)


# -- access -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Access:
    """A project as one principal may use it: the project and what the request may do."""

    project: Project
    grant: Grant

    def require(self, permission: Permission) -> None:
        """Raise :class:`PermissionDenied` unless the grant allows ``permission``."""
        if not self.grant.allows(permission):
            role = self.grant.effective_role
            why = f"your role ({role.value})" if role is not None else "you"
            if self.grant.cap is not None:
                why += f" through an API key capped at {self.grant.cap.value}"
            raise PermissionDenied(
                f"{why} may not do {permission.value} in project {self.project.slug!r}"
            )


async def access(
    uow: UnitOfWork, principal: Principal, slug: str, permission: Permission | None = None
) -> Access:
    """The principal's access to project ``slug``; a project it cannot see is :class:`NotFound`.

    Cross-project access reads exactly like a project that does not exist, so
    a key or member of one project cannot even learn which others exist.
    """
    missing = NotFound(f"no project {slug!r}")
    project = await uow.projects.get_by_slug(slug) if isinstance(slug, str) else None
    if project is None:
        raise missing
    membership = await uow.memberships.get(project.id, principal.user.id)
    grant = principal.grant(project, membership.role if membership is not None else None)
    if grant is None or not grant.can_see:
        raise missing
    result = Access(project=project, grant=grant)
    if permission is not None:
        result.require(permission)
    return result


async def visible_projects(
    uow_factory: UnitOfWorkFactory, principal: Principal
) -> list[tuple[Project, Grant]]:
    """The projects the principal can see, with what it may do in each, by slug."""
    async with uow_factory() as uow:
        projects = await uow.projects.list()
        roles = {
            m.project_id: m.role for m in await uow.memberships.list_for_user(principal.user.id)
        }
    visible = []
    for project in projects:
        grant = principal.grant(project, roles.get(project.id))
        if grant is not None and grant.can_see:
            visible.append((project, grant))
    return visible


def _require_instance_admin(principal: Principal, what: str) -> None:
    if not principal.instance_admin:
        raise PermissionDenied(f"only an instance admin (through an unrestricted key) may {what}")


async def authenticate_key(uow_factory: UnitOfWorkFactory, clock: Clock, key: str) -> Principal:
    """The principal of a Bearer API key, or raise :class:`AuthenticationFailed`."""
    rejected = AuthenticationFailed("invalid or revoked API key", credentials_given=True)
    if not key.startswith(API_KEY_PREFIX) or len(key) > _MAX_API_KEY_LENGTH:
        raise rejected
    async with uow_factory() as uow:
        api_key = await uow.api_keys.get_by_hash(hash_secret(key))
        user = await uow.users.get(api_key.user_id) if api_key is not None else None
    if api_key is None or not api_key.is_active or user is None:
        raise rejected
    now = clock.now()
    key_id = api_key.id
    if await _record_use(
        uow_factory, api_key.last_used_at, now, lambda u: u.api_keys.touch(key_id, now)
    ):
        api_key = attrs.evolve(api_key, last_used_at=now)
    return Principal(user=user, api_key=api_key)


async def _record_use(
    uow_factory: UnitOfWorkFactory,
    last: datetime | None,
    now: datetime,
    touch: Callable[[UnitOfWork], Awaitable[None]],
) -> bool:
    """Record a use of a key or session, at most once a minute; whether it was recorded.

    Recording every use would make every read request a write; a last use is
    only ever shown to about the minute.
    """
    if last is not None and now - last < _TOUCH_INTERVAL:
        return False
    await services.write_only(uow_factory, touch)
    return True


# -- logins and sessions ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NewSession:
    """A fresh login: ``token`` is the cookie's value, given out this once."""

    token: str = attrs.field(repr=False)
    session: Session
    user: User


def csrf_token(key: bytes, session_token: str) -> str:
    """The CSRF token of a session: derived from its cookie, so nothing more is stored."""
    return hmac.new(key, b"z4j-csrf:" + session_token.encode("utf-8"), hashlib.sha256).hexdigest()


# A hash of a random password per hasher, made once: what an unknown email is checked against.
_dummy_hashes: weakref.WeakKeyDictionary[PasswordHasher, str] = weakref.WeakKeyDictionary()


async def _verify_password(hasher: PasswordHasher, user: User | None, password: str) -> bool:
    # An unknown email costs the same argon2 verification as a known one, so
    # response times do not reveal which emails have accounts.
    stored = user.password_hash if user is not None else None
    if stored is None:
        stored = _dummy_hashes.get(hasher)
        if stored is None:
            stored = await anyio.to_thread.run_sync(hasher.hash, new_token())
            _dummy_hashes[hasher] = stored
    ok = await anyio.to_thread.run_sync(hasher.verify, stored, password)
    return ok and user is not None and user.password_hash is not None


async def _throttle(
    uow_factory: UnitOfWorkFactory, now: datetime, email: str, ip: str | None
) -> None:
    since = now - LOGIN_WINDOW
    async with uow_factory() as uow:
        by_email = await uow.audit.count_recent("auth.login_failed", since, target=f"user:{email}")
        by_ip = await uow.audit.count_recent("auth.login_failed", since, source_ip=ip) if ip else 0
    if by_email >= MAX_FAILED_LOGINS_PER_EMAIL or by_ip >= MAX_FAILED_LOGINS_PER_IP:
        who = f"for {email}" if by_email >= MAX_FAILED_LOGINS_PER_EMAIL else f"from {ip}"
        _log.warning("login refused %s: too many failed attempts in %s", who, LOGIN_WINDOW)
        minutes = int(LOGIN_WINDOW.total_seconds() // 60)
        raise TooManyRequests(
            f"too many failed logins {who}; try again in up to {minutes} minutes",
            retry_after=int(LOGIN_WINDOW.total_seconds()),
        )


async def login(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    hasher: PasswordHasher,
    audit_key: bytes,
    *,
    email: str,
    password: str,
    source_ip: str | None,
    user_agent: str | None,
    lifetime: timedelta,
    idle: timedelta,
) -> NewSession:
    """Check the password and open a session; failures are audited and rate limited.

    More than :data:`MAX_FAILED_LOGINS_PER_EMAIL` failures for one account (or
    :data:`MAX_FAILED_LOGINS_PER_IP` from one address) within
    :data:`LOGIN_WINDOW` make further attempts fail with
    :class:`TooManyRequests` without checking the password. The count comes
    from the audit log, so it holds across every brain process.
    """
    if not isinstance(email, str) or not isinstance(password, str):
        raise InvalidInput('send a JSON object {"email": "...", "password": "..."}')
    try:
        normalized = services.normalize_user_email(email)
    except InvalidInput:
        raise AuthenticationFailed(_WRONG_LOGIN) from None
    now = clock.now()
    await _throttle(uow_factory, now, normalized, source_ip)
    async with uow_factory() as uow:
        user = await uow.users.get_by_email(normalized)
    ok = len(password) <= services.MAX_PASSWORD_LENGTH and await _verify_password(
        hasher, user, password
    )
    actor = Actor(name=normalized, user_id=user.id if user else None, source_ip=source_ip)
    target = f"user:{normalized}"
    if not ok or user is None:
        async with audited(uow_factory, audit_key) as work:
            await work.append(
                actor.record("auth.login_failed", now, target=target, known_user=user is not None)
            )
            await work.commit()
        _log.warning("failed login for %s from %s", normalized, source_ip or "unknown address")
        raise AuthenticationFailed(_WRONG_LOGIN)
    token = new_token(prefix=SESSION_TOKEN_PREFIX)
    async with audited(uow_factory, audit_key) as work:
        # Housekeeping where sessions are made: ended ones are never used again.
        await work.uow.sessions.delete_expired(now, now - idle)
        session = await work.uow.sessions.create(
            user_id=user.id,
            token_hash=hash_secret(token),
            created_at=now,
            expires_at=now + lifetime,
            source_ip=source_ip,
            user_agent=(user_agent or "")[:300] or None,
        )
        await work.append(actor.record("auth.login", now, target=target, session=session.id))
        await work.commit()
    _log.info("login: %s from %s", normalized, source_ip or "unknown address")
    return NewSession(token=token, session=session, user=user)


async def resolve_session(
    uow_factory: UnitOfWorkFactory, clock: Clock, token: str, idle: timedelta
) -> Principal:
    """The principal of a session cookie, or raise :class:`AuthenticationFailed`."""
    rejected = AuthenticationFailed("your session has ended; log in again", credentials_given=True)
    if not token.startswith(SESSION_TOKEN_PREFIX) or len(token) > _MAX_TOKEN_LENGTH:
        raise rejected
    now = clock.now()
    async with uow_factory() as uow:
        session = await uow.sessions.get_by_token_hash(hash_secret(token))
        user = await uow.users.get(session.user_id) if session is not None else None
    if session is None or user is None:
        raise rejected
    if not session.is_live(now, idle):
        await services.write_only(uow_factory, functools.partial(_forget, session_id=session.id))
        raise rejected
    session_id = session.id
    if await _record_use(
        uow_factory, session.last_seen_at, now, lambda u: u.sessions.touch(session_id, now)
    ):
        session = attrs.evolve(session, last_seen_at=now)
    return Principal(user=user, session=session)


async def _forget(uow: UnitOfWork, *, session_id: int) -> None:
    await uow.sessions.delete(session_id)


async def logout(change: Change, session: Session) -> None:
    """End ``session``."""
    async with change.audited() as work:
        if await work.uow.sessions.delete(session.id):
            await work.append(
                change.actor.record(
                    "auth.logout", change.clock.now(), target=f"user:{change.actor.name}"
                )
            )
        await work.commit()


async def change_password(
    change: Change,
    hasher: PasswordHasher,
    *,
    email: str,
    new_password: str,
    current_password: str | None,
    keep_session: int | None = None,
) -> User:
    """Set a user's password and end their other sessions.

    ``current_password`` must match, except for recovery from the command line
    (``None``), which needs access to the server instead.
    """
    normalized = services.normalize_user_email(email)
    services.validate_password(new_password)
    async with change.uow_factory() as uow:
        user = await uow.users.get_by_email(normalized)
    if user is None:
        raise NotFound(f"no user with email {normalized!r}")
    if current_password is not None and not await _verify_password(hasher, user, current_password):
        raise PermissionDenied("the current password is wrong")
    password_hash = await anyio.to_thread.run_sync(hasher.hash, new_password)
    now = change.clock.now()
    async with change.audited() as work:
        await work.uow.users.set_password(user.id, password_hash)
        ended = await work.uow.sessions.delete_for_user(user.id, keep=keep_session)
        await work.append(
            change.actor.record(
                "auth.password_changed",
                now,
                target=f"user:{normalized}",
                recovery=current_password is None,
                sessions_ended=ended,
            )
        )
        await work.commit()
    _log.info("password changed for %s by %s", normalized, change.actor.name)
    return attrs.evolve(user, password_hash=password_hash)


# -- API keys -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NewApiKey:
    """A freshly minted API key; ``key`` is the only time the secret is available."""

    key: str = attrs.field(repr=False)
    api_key: ApiKey
    user: User


def _validate_key_name(name: str) -> str:
    """Return the cleaned name of a new API key, or raise :class:`InvalidInput`."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise InvalidInput("an API key needs a name (what it is for, e.g. 'ci')")
    if len(name) > MAX_API_KEY_NAME_LENGTH:
        raise InvalidInput(f"an API key's name is at most {MAX_API_KEY_NAME_LENGTH} characters")
    if not name.isprintable():
        raise InvalidInput("an API key's name must be printable text (no control characters)")
    return name


async def create_api_key(
    change: Change,
    *,
    email: str,
    name: str,
    project: str | None = None,
    role: str | None = None,
    creator: ApiKey | None = None,
) -> NewApiKey:
    """Mint an API key for the user with ``email``, optionally bound to a project and capped.

    A key created through another key (``creator``) can be no broader than it:
    bound to the same project and capped at most at the same role.
    """
    normalized = services.normalize_user_email(email)
    name = _validate_key_name(name)
    cap = parse_role(role) if role is not None else None
    limit = creator.role if creator is not None else None
    if limit is not None and (cap is None or not at_least(limit, cap)):
        raise PermissionDenied(
            f"a key capped at {limit.value} can only create keys capped at"
            f' {limit.value} or below (send "role")'
        )
    key = new_token(prefix=API_KEY_PREFIX)
    now = change.clock.now()
    async with change.audited() as work:
        user = await work.uow.users.get_by_email(normalized)
        if user is None:
            raise NotFound(f"no user with email {normalized!r}")
        project_id: int | None = None
        if project is not None:
            bound = await access(work.uow, Principal(user=user, api_key=creator), project)
            project_id = bound.project.id
        elif creator is not None and creator.project_id is not None:
            project_id = creator.project_id
        api_key = await work.uow.api_keys.create(
            user_id=user.id,
            name=name,
            key_hash=hash_secret(key),
            prefix=key[:_API_KEY_DISPLAY_LENGTH],
            created_at=now,
            project_id=project_id,
            role=cap,
        )
        await work.append(
            change.actor.record(
                "api_key.created",
                now,
                target=f"api_key:{api_key.id}",
                project_id=project_id,
                name=name,
                owner=normalized,
                role=cap.value if cap else None,
            )
        )
        await work.commit()
    return NewApiKey(key=key, api_key=api_key, user=user)


async def list_api_keys(uow_factory: UnitOfWorkFactory, user: User) -> Sequence[ApiKey]:
    """The user's keys, revoked ones included."""
    async with uow_factory() as uow:
        return await uow.api_keys.list_for_user(user.id)


async def revoke_api_key(
    change: Change,
    *,
    user: User,
    key_id: int,
) -> ApiKey:
    """Revoke one of ``user``'s keys (idempotent); another user's key is :class:`NotFound`."""
    now = change.clock.now()
    async with change.audited() as work:
        key = await work.uow.api_keys.get(key_id)
        if key is None or key.user_id != user.id:
            raise NotFound(f"you have no API key {key_id}")
        if await work.uow.api_keys.revoke(key.id, now):
            key = attrs.evolve(key, revoked_at=now)
            await work.append(
                change.actor.record(
                    "api_key.revoked",
                    now,
                    target=f"api_key:{key.id}",
                    project_id=key.project_id,
                    name=key.name,
                )
            )
            await work.commit()
    return key


# -- projects and users ----------------------------------------------------------------------


async def create_project(
    change: Change,
    principal: Principal | None,
    *,
    slug: str,
    name: str,
) -> Project:
    """Create a project (instance admins only; ``principal`` ``None`` is the command line)."""
    if principal is not None:
        _require_instance_admin(principal, "create projects")
    validate_slug(slug)
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 200 or not name.isprintable():
        raise InvalidInput("a project needs a name of 1 to 200 printable characters")
    now = change.clock.now()
    async with change.audited() as work:
        project = await work.uow.projects.create(slug=slug, name=name, created_at=now)
        await work.append(
            change.actor.record(
                "project.created", now, target=f"project:{slug}", project_id=project.id
            )
        )
        await work.commit()
    return project


async def create_user(
    change: Change,
    hasher: PasswordHasher,
    principal: Principal | None,
    *,
    email: str,
    password: str,
    is_admin: bool = False,
) -> User:
    """Create a user with a password (instance admins only; ``None`` is the command line)."""
    if principal is not None:
        _require_instance_admin(principal, "create users")
    normalized = services.normalize_user_email(email)
    password_hash = await anyio.to_thread.run_sync(
        hasher.hash, services.validate_password(password)
    )
    now = change.clock.now()
    async with change.audited() as work:
        user = await work.uow.users.create(
            email=normalized, password_hash=password_hash, is_admin=bool(is_admin), created_at=now
        )
        await work.append(
            change.actor.record(
                "user.created", now, target=f"user:{normalized}", admin=bool(is_admin)
            )
        )
        await work.commit()
    return user


async def list_users(uow_factory: UnitOfWorkFactory, principal: Principal) -> Sequence[User]:
    """Every user (instance admins only)."""
    _require_instance_admin(principal, "list users")
    async with uow_factory() as uow:
        return await uow.users.list()


# -- members -------------------------------------------------------------------------------


async def list_members(
    uow_factory: UnitOfWorkFactory, project: Project
) -> list[tuple[Membership, User]]:
    """The project's members with their users, by email."""
    async with uow_factory() as uow:
        memberships = {m.user_id: m for m in await uow.memberships.list_for_project(project.id)}
        users = await uow.users.list(memberships.keys())
    return [(memberships[user.id], user) for user in users]


async def _guard_last_admin(uow: UnitOfWork, project: Project, current: Membership) -> None:
    if current.role is Role.ADMIN and await uow.memberships.count_role(project.id, Role.ADMIN) <= 1:
        raise Conflict(
            f"this is the last admin of project {project.slug!r}; make someone else admin first"
        )


async def set_member_role(
    change: Change,
    project: Project,
    *,
    email: str,
    role: str,
) -> tuple[Membership, User]:
    """Give an existing user ``role`` in the project (adding them, or changing their role)."""
    normalized = services.normalize_user_email(email)
    new_role = parse_role(role)
    now = change.clock.now()
    async with change.audited() as work:
        user = await work.uow.users.get_by_email(normalized)
        if user is None:
            raise NotFound(f"no user with email {normalized!r}; invite them instead")
        current = await work.uow.memberships.get(project.id, user.id)
        if current is not None and current.role is new_role:
            return current, user
        if current is not None and new_role is not Role.ADMIN:
            await _guard_last_admin(work.uow, project, current)
        membership = await work.uow.memberships.set(project.id, user.id, new_role, now)
        await work.append(
            change.actor.record(
                "member.role_changed",
                now,
                target=f"user:{normalized}",
                project_id=project.id,
                before=current.role.value if current is not None else None,
                after=new_role.value,
            )
        )
        await work.commit()
    return membership, user


async def remove_member(
    change: Change,
    project: Project,
    *,
    email: str,
) -> None:
    """Remove a user from the project (their sessions and keys stay, but see nothing there)."""
    normalized = services.normalize_user_email(email)
    now = change.clock.now()
    async with change.audited() as work:
        user = await work.uow.users.get_by_email(normalized)
        current = await work.uow.memberships.get(project.id, user.id) if user else None
        if user is None or current is None:
            raise NotFound(f"{normalized} is not a member of project {project.slug!r}")
        await _guard_last_admin(work.uow, project, current)
        await work.uow.memberships.remove(project.id, user.id)
        await work.append(
            change.actor.record(
                "member.removed",
                now,
                target=f"user:{normalized}",
                project_id=project.id,
                role=current.role.value,
            )
        )
        await work.commit()


# -- invitations -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NewInvitation:
    """A fresh invitation; ``token`` (the link's secret) is shown this once."""

    invitation: Invitation
    token: str = attrs.field(repr=False)


async def invite(
    change: Change,
    project: Project,
    *,
    email: str,
    role: str,
    ttl: timedelta = INVITATION_TTL,
) -> NewInvitation:
    """Invite ``email`` to the project with ``role``; only the link token's hash is stored."""
    normalized = services.normalize_user_email(email)
    granted = parse_role(role)
    if not timedelta(minutes=5) <= ttl <= _MAX_INVITATION_TTL:
        raise InvalidInput("an invitation expires after 5 minutes to 30 days")
    token = new_token(prefix=INVITATION_TOKEN_PREFIX)
    now = change.clock.now()
    async with change.audited() as work:
        invitation = await work.uow.invitations.create(
            project_id=project.id,
            email=normalized,
            role=granted,
            token_hash=hash_secret(token),
            invited_by=change.actor.user_id,
            created_at=now,
            expires_at=now + ttl,
        )
        await work.append(
            change.actor.record(
                "invitation.created",
                now,
                target=f"invitation:{invitation.id}",
                project_id=project.id,
                email=normalized,
                role=granted.value,
                expires_at=invitation.expires_at.isoformat(),
            )
        )
        await work.commit()
    return NewInvitation(invitation=invitation, token=token)


async def list_invitations(
    uow_factory: UnitOfWorkFactory, project: Project
) -> Sequence[Invitation]:
    """The project's invitations, newest first."""
    async with uow_factory() as uow:
        return await uow.invitations.list(project.id)


async def revoke_invitation(
    change: Change,
    project: Project,
    invitation_id: int,
) -> Invitation:
    """Revoke a pending invitation of the project; its link stops working at once."""
    now = change.clock.now()
    async with change.audited() as work:
        invitation = await work.uow.invitations.get(invitation_id)
        if invitation is None or invitation.project_id != project.id:
            raise NotFound(f"no invitation {invitation_id} in project {project.slug!r}")
        status = invitation.status(now)
        if status is InvitationStatus.REVOKED:
            return invitation
        if status is InvitationStatus.ACCEPTED:
            raise Conflict("this invitation was already accepted; remove the member instead")
        await work.uow.invitations.revoke(invitation.id, now)
        await work.append(
            change.actor.record(
                "invitation.revoked",
                now,
                target=f"invitation:{invitation.id}",
                project_id=project.id,
                email=invitation.email,
            )
        )
        await work.commit()
    return attrs.evolve(invitation, revoked_at=now)


@attrs.frozen(kw_only=True)
class AcceptedInvitation:
    """What accepting an invitation did."""

    user: User
    project: Project
    membership: Membership
    created_user: bool


async def pending_invitation(
    uow_factory: UnitOfWorkFactory, clock: Clock, token: str
) -> tuple[Invitation, Project, bool]:
    """The pending invitation of ``token``, its project, and whether its email has an account.

    Raise :class:`NotFound` for an unknown, used, revoked or expired link, saying which.
    """
    async with uow_factory() as uow:
        invitation = await _invitation_of(uow, token)
        status = invitation.status(clock.now())
        if status is not InvitationStatus.PENDING:
            raise NotFound(f"this invitation link is {status.value}; ask for a new one")
        project = await uow.projects.get(invitation.project_id)
        existing = await uow.users.get_by_email(invitation.email)
    if project is None:
        raise NotFound("this invitation's project no longer exists")
    return invitation, project, existing is not None


async def _invitation_of(uow: UnitOfWork, token: str) -> Invitation:
    invalid = NotFound("this invitation link is invalid")
    if not isinstance(token, str) or not token.startswith(INVITATION_TOKEN_PREFIX):
        raise invalid
    if len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    invitation = await uow.invitations.get_by_token_hash(hash_secret(token))
    if invitation is None:
        raise invalid
    return invitation


async def accept_invitation(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    hasher: PasswordHasher,
    audit_key: bytes,
    *,
    token: str,
    password: str | None,
    source_ip: str | None,
) -> AcceptedInvitation:
    """Use an invitation link: create the user (with ``password``) or add the membership.

    The link is single-use: marking it accepted is conditional, so of two
    concurrent uses one wins and the other finds it accepted.
    """
    invitation, _, exists = await pending_invitation(uow_factory, clock, token)
    password_hash = None
    if not exists:
        if password is None:
            raise InvalidInput(f"{invitation.email} has no account yet: choose a password")
        password_hash = await anyio.to_thread.run_sync(
            hasher.hash, services.validate_password(password)
        )
    now = clock.now()
    async with audited(uow_factory, audit_key) as work:
        invitation = await _invitation_of(work.uow, token)
        project = await work.uow.projects.get(invitation.project_id)
        if project is None or invitation.status(now) is not InvitationStatus.PENDING:
            raise NotFound(_GONE_MEANWHILE)
        user = await work.uow.users.get_by_email(invitation.email)
        created = user is None
        if user is None:
            if password_hash is None:
                raise NotFound(_GONE_MEANWHILE)
            user = await work.uow.users.create(
                email=invitation.email, password_hash=password_hash, is_admin=False, created_at=now
            )
        if not await work.uow.invitations.mark_accepted(invitation.id, user.id, now):
            raise NotFound(_GONE_MEANWHILE)
        membership = await work.uow.memberships.set(project.id, user.id, invitation.role, now)
        actor = Actor(name=user.email, user_id=user.id, source_ip=source_ip)
        await work.append(
            actor.record(
                "invitation.accepted",
                now,
                target=f"invitation:{invitation.id}",
                project_id=project.id,
                role=invitation.role.value,
                created_user=created,
            )
        )
        await work.commit()
    _log.info(
        "%s accepted an invitation to %s as %s", user.email, project.slug, invitation.role.value
    )
    return AcceptedInvitation(
        user=user, project=project, membership=membership, created_user=created
    )
