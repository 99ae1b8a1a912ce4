"""The web shell's use cases, as plain async functions over the domain's ports.

Routes and the ``z4j`` command both call these, so each rule (how first boot
works, what a setup token is, how an API key authenticates) lives once. Each
function takes the adapters it needs (a unit-of-work factory, a clock, a
password hasher) as arguments and opens its own transactions.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio.to_thread
import attrs

from z4j_domain.canvas import MAX_NODES, CanvasLayout, layout_canvas
from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import Conflict, InvalidInput, NotFound
from z4j_domain.ports import Clock, PasswordHasher, UnitOfWork, UnitOfWorkFactory
from z4j_domain.projects import DEFAULT_PROJECT_SLUG, Project
from z4j_domain.protocol import derive_agent_secret
from z4j_domain.queries import QueueCount, TaskPage, TaskQuery
from z4j_domain.reconciliation import ReconcilePolicy, is_worker_live
from z4j_domain.tasks import Task, TaskEvent
from z4j_domain.users import (
    Agent,
    User,
    hash_secret,
    normalize_email,
)
from z4j_domain.workers import Worker, WorkerStatus
from z4j_infra.secrets import new_token
from z4j_web.auditing import Actor, Change, audited
from z4j_web.errors import (
    AuthenticationFailed,
    SetupAlreadyDone,
    SetupTokenExpired,
    SetupTokenInvalid,
)

if TYPE_CHECKING:
    from z4j_infra.database import Database

_T = TypeVar("_T")

__all__ = [
    "AGENT_TOKEN_PREFIX",
    "MIN_PASSWORD_LENGTH",
    "SETUP_TOKEN_KEY",
    "SETUP_TOKEN_TTL",
    "AgentIdentity",
    "BootstrapResult",
    "Check",
    "NewAgent",
    "QueueSummary",
    "StatusCounts",
    "agent_secret",
    "authenticate_agent",
    "bootstrap",
    "check_database",
    "complete_setup",
    "get_project",
    "get_task",
    "get_task_canvas",
    "list_agents",
    "list_tasks",
    "list_workers",
    "mint_agent",
    "normalize_user_email",
    "queue_summaries",
    "revoke_agent",
    "status_counts",
    "validate_password",
    "verify_setup_token",
]

#: The settings key holding the pending setup token's hash and expiry.
SETUP_TOKEN_KEY: Final = "setup_token"  # noqa: S105 - a settings key, not a secret
#: How long a first-boot setup link stays valid.
SETUP_TOKEN_TTL: Final = timedelta(hours=1)
MIN_PASSWORD_LENGTH: Final = 12
# argon2 copes with any length, but a bound keeps one request's CPU cost bounded.
MAX_PASSWORD_LENGTH: Final = 1024
_INVALID_SETUP_LINK: Final = (
    "this setup link is invalid or was already used;"
    " the current one is in the log of the last `z4j serve`"
)


# -- first boot ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BootstrapResult:
    """What first-boot bootstrap did.

    Exactly one of the three holds: an admin was created from the
    bootstrap-admin settings (``admin``), a setup token was issued
    (``setup_token``, shown to the operator once), or users already existed
    (both ``None``).
    """

    admin: User | None = None
    setup_token: str | None = None
    expires_at: datetime | None = None

    @property
    def already_set_up(self) -> bool:
        """Whether there was nothing to do because a user already exists."""
        return self.admin is None and self.setup_token is None


def normalize_user_email(email: str) -> str:
    """The stored form of an email address, or raise :class:`InvalidInput`."""
    # normalize_email accepts control characters, and PostgreSQL cannot store NUL.
    if isinstance(email, str) and "\x00" in email:
        raise InvalidInput("invalid email address: it contains a NUL character")
    return normalize_email(email)


def validate_password(password: str) -> str:
    """Return ``password`` if it is acceptable for an account, else raise :class:`InvalidInput`."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")
    return password


async def _hash_password(hasher: PasswordHasher, password: str) -> str:
    # argon2 is deliberately slow (tens of milliseconds of CPU): keep it off the event loop.
    return await anyio.to_thread.run_sync(hasher.hash, password)


async def _ensure_default_project(uow: UnitOfWork, now: datetime) -> Project:
    project = await uow.projects.get_by_slug(DEFAULT_PROJECT_SLUG)
    if project is None:
        project = await uow.projects.create(
            slug=DEFAULT_PROJECT_SLUG, name="Default", created_at=now
        )
    return project


async def bootstrap(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    hasher: PasswordHasher,
    *,
    audit_key: bytes,
    admin_email: str | None = None,
    admin_password: str | None = None,
    token_ttl: timedelta = SETUP_TOKEN_TTL,
) -> BootstrapResult:
    """Make sure a fresh instance can be set up; call once per boot.

    When no user exists: with ``admin_email`` and ``admin_password`` create that
    admin and the default project; otherwise issue a single-use setup token
    (replacing any earlier one), store only its hash and expiry, and return the
    token so the caller can show the setup link.
    """
    async with uow_factory() as uow:
        if await uow.users.count():
            return BootstrapResult()

    if admin_email or admin_password:
        if not (admin_email and admin_password):
            raise InvalidInput(
                "set both the bootstrap admin email and password, or neither"
                " (to get a setup link instead)"
            )
        email = normalize_user_email(admin_email)
        password_hash = await _hash_password(hasher, validate_password(admin_password))
        try:
            async with audited(uow_factory, audit_key) as work:
                uow = work.uow
                if await uow.users.count():
                    return BootstrapResult()
                now = clock.now()
                admin = await uow.users.create(
                    email=email, password_hash=password_hash, is_admin=True, created_at=now
                )
                await _ensure_default_project(uow, now)
                await uow.settings.delete(SETUP_TOKEN_KEY)
                await work.append(
                    Actor(name="system:bootstrap").record(
                        "user.created", now, target=f"user:{email}", admin=True
                    )
                )
                await work.commit()
        except Conflict:
            # Another brain process booting at the same moment created it first.
            return BootstrapResult()
        return BootstrapResult(admin=admin)

    token = new_token()
    expires_at = clock.now() + token_ttl
    async with uow_factory() as uow:
        await uow.settings.set(
            SETUP_TOKEN_KEY,
            {"hash": hash_secret(token), "expires_at": utc_isoformat(expires_at)},
        )
        await uow.commit()
    return BootstrapResult(setup_token=token, expires_at=expires_at)


async def _check_setup_token(uow: UnitOfWork, clock: Clock, token: str) -> None:
    if await uow.users.count():
        raise SetupAlreadyDone("setup is already complete: the first admin exists")
    stored: Any = await uow.settings.get(SETUP_TOKEN_KEY)
    if not isinstance(token, str) or not token or not isinstance(stored, dict):
        raise SetupTokenInvalid(_INVALID_SETUP_LINK)
    if not hmac.compare_digest(str(stored.get("hash", "")), hash_secret(token)):
        raise SetupTokenInvalid(_INVALID_SETUP_LINK)
    try:
        expires_at = datetime.fromisoformat(str(stored["expires_at"]))
    except (KeyError, ValueError):
        raise SetupTokenInvalid(_INVALID_SETUP_LINK) from None
    if clock.now() >= expires_at:
        raise SetupTokenExpired("this setup link has expired; restart `z4j serve` to get a new one")


async def verify_setup_token(uow_factory: UnitOfWorkFactory, clock: Clock, token: str) -> None:
    """Raise unless ``token`` is the pending, unexpired setup token."""
    async with uow_factory() as uow:
        await _check_setup_token(uow, clock, token)


async def complete_setup(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    hasher: PasswordHasher,
    *,
    token: str,
    email: str,
    password: str,
    audit_key: bytes,
    source_ip: str | None = None,
) -> User:
    """Create the first admin (and the default project) with the setup token, using it up.

    The token is deleted in the same transaction that creates the user, and
    that deletion must find the token: of two concurrent uses, the database
    lets only one delete it, so the other fails with :class:`SetupTokenInvalid`.
    """
    await verify_setup_token(uow_factory, clock, token)
    normalized = normalize_user_email(email)
    password_hash = await _hash_password(hasher, validate_password(password))
    # The transaction starts by taking the audit chain's lock, a write: on
    # SQLite it waits for another writer instead of failing, so of two
    # concurrent uses the loser sees the winner's admin and is told so.
    return await _create_first_admin(
        uow_factory, clock, token, normalized, password_hash, audit_key, source_ip
    )


async def _create_first_admin(
    uow_factory: UnitOfWorkFactory,
    clock: Clock,
    token: str,
    email: str,
    password_hash: str,
    audit_key: bytes,
    source_ip: str | None,
) -> User:
    async with audited(uow_factory, audit_key) as work:
        uow = work.uow
        await _check_setup_token(uow, clock, token)
        if not await uow.settings.delete(SETUP_TOKEN_KEY):
            raise SetupTokenInvalid(_INVALID_SETUP_LINK)
        now = clock.now()
        try:
            admin = await uow.users.create(
                email=email, password_hash=password_hash, is_admin=True, created_at=now
            )
        except Conflict:
            raise SetupAlreadyDone("setup is already complete: the first admin exists") from None
        await _ensure_default_project(uow, now)
        actor = Actor(name=email, user_id=admin.id, source_ip=source_ip)
        await work.append(actor.record("user.created", now, target=f"user:{email}", admin=True))
        await work.commit()
    return admin


async def write_only(
    uow_factory: UnitOfWorkFactory, write: Callable[[UnitOfWork], Awaitable[_T]]
) -> _T:
    """Run ``write`` in a transaction of its own that writes before it reads anything.

    On SQLite a transaction that has read and then writes fails at once
    ("database is locked") if another connection, such as the ingest writer,
    committed in between; one that starts by writing waits for the lock.
    """
    async with uow_factory() as uow:
        result = await write(uow)
        await uow.commit()
    return result


# -- agents -------------------------------------------------------------------------

#: Every agent token starts with this, so secret scanners and humans can spot one.
AGENT_TOKEN_PREFIX: Final = "z4ja_"  # noqa: S105 - a prefix, not a secret
# Agent names appear in log lines, metrics and shell snippets: keep them plain.
_AGENT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_MAX_AGENT_TOKEN_LENGTH: Final = 256


@attrs.frozen(kw_only=True)
class NewAgent:
    """A freshly minted agent; ``token`` and ``hmac_secret`` are shown this once only."""

    agent: Agent
    project: Project
    token: str = attrs.field(repr=False)
    hmac_secret: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class AgentIdentity:
    """Who an agent connection authenticated as."""

    agent: Agent
    project: Project
    #: The HMAC key of both directions: the agent's derived secret, UTF-8 encoded.
    secret: bytes = attrs.field(repr=False)


def agent_secret(instance_secret: str, agent: Agent) -> str:
    """The agent's ``Z4J_HMAC_SECRET``, re-derived from the instance secret and its salt."""
    return derive_agent_secret(instance_secret, agent.secret_salt)


def _agent_name(name: str) -> str:
    cleaned = name.strip() if isinstance(name, str) else ""
    if not _AGENT_NAME.match(cleaned):
        raise InvalidInput(
            f"invalid agent name {name!r}: use 1 to 63 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return cleaned


async def mint_agent(
    change: Change,
    instance_secret: str,
    *,
    project_slug: str,
    name: str,
) -> NewAgent:
    """Create an agent of the project; only the token's hash and a random salt are stored.

    Raises :class:`NotFound` for an unknown project and :class:`Conflict` when
    the project already has an agent of that name (revoked ones included).
    """
    name = _agent_name(name)
    token = new_token(prefix=AGENT_TOKEN_PREFIX)
    salt = new_token()
    now = change.clock.now()
    async with change.audited() as work:
        project = await get_project(work.uow, project_slug)
        agent = await work.uow.agents.create(
            project_id=project.id,
            name=name,
            token_hash=hash_secret(token),
            secret_salt=salt,
            created_at=now,
        )
        await work.append(
            change.actor.record("agent.minted", now, target=f"agent:{name}", project_id=project.id)
        )
        await work.commit()
    return NewAgent(
        agent=agent,
        project=project,
        token=token,
        hmac_secret=derive_agent_secret(instance_secret, salt),
    )


async def list_agents(uow_factory: UnitOfWorkFactory, project: Project) -> Sequence[Agent]:
    """The project's agents (revoked ones included), by name."""
    async with uow_factory() as uow:
        return await uow.agents.list(project.id)


async def revoke_agent(
    change: Change,
    instance_secret: str,
    *,
    project_slug: str,
    name: str,
) -> Agent:
    """Revoke the project's agent ``name`` (idempotent); its token stops connecting at once."""
    async with change.audited() as work:
        project = await get_project(work.uow, project_slug)
        agent = (
            await work.uow.agents.get_by_name(project.id, name) if isinstance(name, str) else None
        )
        if agent is None:
            raise NotFound(f"no agent {name!r} in project {project_slug!r}")
        if agent.revoked_at is None:
            now = change.clock.now()
            await work.uow.agents.revoke(agent.id, now)
            await work.append(
                change.actor.record(
                    "agent.revoked", now, target=f"agent:{name}", project_id=project.id
                )
            )
            await work.commit()
            agent = attrs.evolve(agent, revoked_at=now)
    return agent


async def authenticate_agent(
    uow_factory: UnitOfWorkFactory, clock: Clock, instance_secret: str, token: str
) -> AgentIdentity:
    """Return the active agent whose token this is, or raise :class:`AuthenticationFailed`."""
    rejected = AuthenticationFailed("unknown or revoked token", credentials_given=True)
    if not token or len(token) > _MAX_AGENT_TOKEN_LENGTH:
        raise rejected
    async with uow_factory() as uow:
        agent = await uow.agents.get_by_token_hash(hash_secret(token))
        if agent is None or not agent.is_active:
            raise rejected
        project = await uow.projects.get(agent.project_id)
        if project is None:
            raise rejected
    now = clock.now()
    await write_only(uow_factory, lambda uow: uow.agents.touch(agent.id, now))
    secret = agent_secret(instance_secret, agent).encode("utf-8")
    return AgentIdentity(
        agent=attrs.evolve(agent, last_seen_at=now), project=project, secret=secret
    )


# -- reading ------------------------------------------------------------------------


async def get_project(uow: UnitOfWork, slug: str) -> Project:
    """The project with ``slug``, or raise :class:`NotFound`."""
    project = await uow.projects.get_by_slug(slug)
    if project is None:
        raise NotFound(f"no project {slug!r}")
    return project


async def list_tasks(
    uow_factory: UnitOfWorkFactory, project: Project, query: TaskQuery
) -> TaskPage:
    """One page of the project's tasks matching ``query``."""
    async with uow_factory() as uow:
        return await uow.tasks.list(project.id, query)


async def get_task(
    uow_factory: UnitOfWorkFactory, project: Project, task_id: str
) -> tuple[Task, Sequence[TaskEvent], Sequence[Task]]:
    """A task, its events in timeline order and the tasks that retried it, or :class:`NotFound`."""
    async with uow_factory() as uow:
        task = await uow.tasks.get(project.id, task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r} in project {project.slug!r}")
        events = await uow.events.timeline(project.id, task_id)
        return task, events, await uow.tasks.retries(project.id, task_id)


async def get_task_canvas(
    uow_factory: UnitOfWorkFactory, project: Project, task_id: str, *, max_nodes: int = MAX_NODES
) -> tuple[str, CanvasLayout]:
    """The task's root id and the layout of its whole canvas, or :class:`NotFound`.

    The canvas is the task and every task connected to it by Celery's links
    (see :class:`~z4j_domain.canvas.CanvasGathering`): a chord applied from
    outside a task has a root per header task, and is still one canvas. At
    most ``max_nodes`` nodes are laid out, the oldest first, and the layout
    says when it was cut. The root id is the task's own (``root_id``, or the
    task itself when it names none).
    """
    async with uow_factory() as uow:
        # One more than fits, so that the layout can tell a canvas that was cut.
        tasks = await uow.tasks.canvas(project.id, task_id, max_nodes + 1)
    task = next((found for found in tasks if found.id == task_id), None)
    if task is None:
        raise NotFound(f"no task {task_id!r} in project {project.slug!r}")
    # Up to a few hundred milliseconds of CPU for the largest (or most tangled)
    # canvases: off the event loop.
    layout = await anyio.to_thread.run_sync(
        functools.partial(layout_canvas, tasks, max_nodes=max_nodes)
    )
    return task.root_id or task.id, layout


async def list_workers(
    uow_factory: UnitOfWorkFactory,
    project: Project,
    *,
    now: datetime | None = None,
    policy: ReconcilePolicy | None = None,
    listening_since: datetime | None = None,
) -> Sequence[Worker]:
    """The project's workers, by hostname.

    With ``now`` and ``policy``, a worker stored as online that has been silent
    past its heartbeat window is shown offline, as the reconciler sees it (its
    next pass stores that).
    """
    async with uow_factory() as uow:
        workers = await uow.workers.list(project.id)
    if now is None or policy is None:
        return workers
    return [
        worker
        if worker.status is WorkerStatus.OFFLINE
        or is_worker_live(worker, now, policy, listening_since=listening_since)
        else attrs.evolve(worker, status=WorkerStatus.OFFLINE)
        for worker in workers
    ]


@attrs.frozen(kw_only=True)
class QueueSummary:
    """Task counts of one queue, per state (``queue`` is ``None`` when unknown)."""

    queue: str | None
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Tasks of the queue in any state."""
        return sum(self.counts.values())


def summarize_queues(counts: Sequence[QueueCount]) -> list[QueueSummary]:
    """Group per-(queue, state) counts by queue, queues by name with the unknown one last."""
    by_queue: dict[str | None, dict[str, int]] = {}
    for row in counts:
        states = by_queue.setdefault(row.queue, {})
        states[row.state.value] = states.get(row.state.value, 0) + row.count
    order = sorted(by_queue, key=lambda q: (q is None, q or ""))
    return [QueueSummary(queue=q, counts=dict(sorted(by_queue[q].items()))) for q in order]


async def queue_summaries(uow_factory: UnitOfWorkFactory, project: Project) -> list[QueueSummary]:
    """Task counts per queue and state for the project."""
    async with uow_factory() as uow:
        return summarize_queues(await uow.tasks.queue_counts(project.id))


@attrs.frozen(kw_only=True)
class StatusCounts:
    """How much the instance holds, for ``z4j status``."""

    users: int
    projects: int
    agents: int
    tasks: int
    workers: int


async def status_counts(uow_factory: UnitOfWorkFactory) -> StatusCounts:
    """Count users, projects, agents, tasks and workers across the instance."""
    async with uow_factory() as uow:
        return StatusCounts(
            users=await uow.users.count(),
            projects=await uow.projects.count(),
            agents=await uow.agents.count(),
            tasks=await uow.tasks.count(),
            workers=await uow.workers.count(),
        )


# -- health -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Check:
    """The outcome of one operational check (``z4j check``, ``/api/v1/ready``)."""

    name: str
    ok: bool
    detail: str


async def check_database(database: Database) -> list[Check]:
    """Check that the database answers and its schema is at the migrations' head.

    Never raises: every failure becomes a failed :class:`Check` whose detail
    says what to do about it.
    """
    from z4j_infra.migrations import revisions

    try:
        await database.ping()
    except Exception as error:  # a check reports any failure; it must not crash the caller
        return [Check(name="database", ok=False, detail=str(error) or type(error).__name__)]
    checks = [Check(name="database", ok=True, detail=f"connected ({database.dialect})")]
    try:
        current, head = await revisions(database)
    except Exception as error:  # same: report, do not raise
        checks.append(
            Check(name="migrations", ok=False, detail=f"cannot read the schema revision: {error}")
        )
        return checks
    if current == head:
        checks.append(Check(name="migrations", ok=True, detail=f"at head ({head})"))
    else:
        where = "empty (never migrated)" if current is None else f"at revision {current}"
        checks.append(
            Check(
                name="migrations",
                ok=False,
                detail=f"the database schema is {where} but this z4j needs {head};"
                " run `z4j migrate`",
            )
        )
    return checks
