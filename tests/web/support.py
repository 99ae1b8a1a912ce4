"""Support for the web tests: backends and test data (an admin, a key, tasks, workers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
import sqlalchemy as sa
from quart.testing.connections import WebsocketDisconnectError

from z4j_domain.audit import ChainHead, audit_key
from z4j_domain.frames import Frame, ReplayGuard, decode_frame, encode_frame
from z4j_domain.ports import Clock, UnitOfWorkFactory
from z4j_domain.projects import DEFAULT_PROJECT_SLUG
from z4j_domain.protocol import HELLO_SESSION
from z4j_domain.serialization import event_to_dict
from z4j_domain.tasks import TaskEvent
from z4j_domain.testing import FakeClock, InMemoryStore, PlainPasswordHasher
from z4j_domain.workers import Worker
from z4j_infra.database import Database
from z4j_infra.schema import api_keys, audit_head
from z4j_web import accounts, services
from z4j_web.auditing import Actor, Change
from z4j_web.runtime import EXTENSION_KEY, Runtime

#: The secret of the ``settings`` fixture, and the audit key derived from it.
SECRET: Final = "test-secret"
AUDIT_KEY: Final = audit_key(SECRET)
#: The actor of changes the tests make behind the API's back.
TESTS: Final = Actor(name="tests")
ADMIN_EMAIL: Final = "admin@example.com"


def change(uow_factory: UnitOfWorkFactory, clock: Clock) -> Change:
    """An audited change made by :data:`TESTS`."""
    return Change(uow_factory=uow_factory, clock=clock, audit_key=AUDIT_KEY, actor=TESTS)


ADMIN_PASSWORD: Final = "correct horse battery staple"
T0: Final = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@attrs.define
class Backend:
    """Where the app under test keeps its data, and a few test-only back doors into it."""

    name: str
    uow_factory: UnitOfWorkFactory
    store: InMemoryStore | None = None
    database: Database | None = None

    async def revoke_key(self, key_id: int, at: datetime) -> None:
        """Revoke an API key (the ports have no revocation yet, so reach under them)."""
        if self.store is not None:
            key = self.store.state.api_keys[key_id]
            self.store.state.api_keys[key_id] = attrs.evolve(key, revoked_at=at)
            return
        assert self.database is not None
        async with self.database.engine.begin() as connection:
            await connection.execute(
                sa.update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=at)
            )

    async def set_audit_head(self, head: ChainHead) -> None:
        """Move the audit chain's head, as someone with database access could."""
        if self.store is not None:
            self.store.state.audit_head = head
            return
        assert self.database is not None
        async with self.database.engine.begin() as connection:
            await connection.execute(
                sa.update(audit_head).values(seq=head.seq, mac=head.mac, signature=head.signature)
            )


def bearer(key: str) -> dict[str, Any]:
    """The headers that authenticate with ``key``."""
    return {"Authorization": f"Bearer {key}"}


@attrs.frozen(kw_only=True)
class Seeded:
    """What :func:`seed` created."""

    key: str
    key_id: int
    project_id: int
    task_ids: list[str]  # newest first, the order the API lists them in


def event(task_id: str, kind: str, minute: float, **fields: Any) -> TaskEvent:
    """An event of ``task_id`` at ``minute`` minutes past :data:`T0`."""
    return TaskEvent(
        id=f"{task_id}:{kind}:{fields.get('attempt', 0)}",
        task_id=task_id,
        kind=kind,
        timestamp=T0 + timedelta(minutes=minute),
        **fields,
    )


# (task id, name, queue, worker, final kind), first seen one minute apart.
TASKS: Final = [
    ("t-00", "app.send_mail", "mail", "w1@host", "succeeded"),
    ("t-01", "app.send_mail", "mail", "w1@host", "failed"),
    ("t-02", "app.resize", "celery", "w2@host", "succeeded"),
    ("t-03", "app.resize", "celery", "w2@host", "started"),
    ("t-04", "app.report", "celery", "w1@host", "retried"),
    ("t-05", "app.report", None, None, "sent"),
    ("t-06", "app.cleanup", "celery", "w2@host", "revoked"),
]


async def seed(uow_factory: UnitOfWorkFactory, clock: FakeClock) -> Seeded:
    """Create the admin, the default project, an API key, :data:`TASKS` and two workers."""
    await services.bootstrap(
        uow_factory,
        clock,
        PlainPasswordHasher(),
        audit_key=AUDIT_KEY,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
    )
    created = await accounts.create_api_key(
        change(uow_factory, clock), email=ADMIN_EMAIL, name="tests"
    )
    events: list[TaskEvent] = []
    for minute, (task_id, name, queue, worker, final) in enumerate(TASKS):
        sent = {"name": name, "queue": queue, "args": [minute], "kwargs": {"n": minute}}
        events.append(event(task_id, "sent", minute, **sent))
        if final == "sent":
            continue
        events.append(event(task_id, "received", minute + 0.1, worker=worker))
        events.append(event(task_id, "started", minute + 0.2, worker=worker))
        if final == "started":
            continue
        extra: dict[str, Any] = {"runtime": 1.5} if final == "succeeded" else {}
        if final == "failed":
            extra = {"exception": "ValueError('boom')", "traceback": "Traceback ..."}
        events.append(event(task_id, final, minute + 0.3, worker=worker, **extra))
    async with uow_factory() as uow:
        project = await uow.projects.get_by_slug(DEFAULT_PROJECT_SLUG)
        assert project is not None
        # Deliberately out of order: the fold must not care.
        await uow.tasks.apply_events(project.id, list(reversed(events)))
        for hostname in ("w2@host", "w1@host"):
            await uow.workers.save(
                project.id,
                Worker(
                    hostname=hostname,
                    status="online",
                    first_seen_at=T0,
                    last_heartbeat_at=T0 + timedelta(minutes=10),
                    pool="prefork",
                    concurrency=4,
                    queues=["celery", "mail"],
                ),
            )
        await uow.commit()
    return Seeded(
        key=created.key,
        key_id=created.api_key.id,
        project_id=project.id,
        task_ids=[task_id for task_id, *_ in reversed(TASKS)],
    )


class FakeAgent:
    """Builds the frames an agent sends, signed with its secret (a test double of the agent).

    ``seq`` and ``session`` follow the protocol unless a test overrides them per frame.
    """

    def __init__(self, hmac_secret: str, clock: Clock, project: str = "default") -> None:
        self.secret = hmac_secret.encode("utf-8")
        self.clock = clock
        self.project = project
        self.session = HELLO_SESSION
        self.seq = 0
        self.brain_guard = ReplayGuard(session=HELLO_SESSION)

    def frame(
        self,
        type_: str,
        body: dict[str, Any],
        *,
        seq: int | None = None,
        session: str | None = None,
        ts: datetime | None = None,
    ) -> str:
        """A signed frame; by default the next sequence number of the current session."""
        if seq is None:
            seq = self.seq
            self.seq += 1
        return encode_frame(
            Frame(
                type=type_,
                session=session or self.session,
                seq=seq,
                ts=ts or self.clock.now(),
                body=body,
            ),
            self.secret,
        )

    def hello(self, **overrides: Any) -> str:
        """The first frame: protocol 1, this project, a worker's identity."""
        body = {
            "protocol": 1,
            "agent": "workers",
            "project": self.project,
            "hostname": "celery@w1",
            "pid": 4242,
            "agent_version": "0.1.0",
            "kind": "celery-worker",
            **overrides,
        }
        return self.frame("hello", body)

    def welcome(self, text: str | bytes) -> dict[str, Any]:
        """Verify the brain's welcome and enter its session; return the welcome's body."""
        frame = decode_frame(text, self.secret)
        assert frame.type == "welcome"
        assert frame.seq == 0
        self.session = frame.session
        self.seq = 1
        self.brain_guard = ReplayGuard(session=frame.session)
        self.brain_guard.check(frame, self.clock.now())
        return dict(frame.body)

    def read(self, text: str | bytes) -> Frame:
        """Verify one brain frame of the session, as a real agent would."""
        frame = decode_frame(text, self.secret)
        self.brain_guard.check(frame, self.clock.now())
        return frame

    def events(self, batch: int, events: list[Any], **kw: Any) -> str:
        """An ``events`` frame."""
        items = [event_to_dict(e) if isinstance(e, TaskEvent) else e for e in events]
        return self.frame("events", {"batch": batch, "events": items}, **kw)

    def heartbeat(
        self, hostname: str = "celery@w1", *, tasks: Any = "absent", **worker: Any
    ) -> str:
        """A ``heartbeat`` frame for ``hostname``, listing ``tasks`` when given."""
        report = {
            "hostname": hostname,
            "status": "online",
            "pool": "prefork",
            "concurrency": 4,
            "active": 1,
            "processed": 10,
            "loadavg": [0.5, 0.25, 0.1],
            "queues": ["celery"],
            "software": "celery 5.4",
            **worker,
        }
        body: dict[str, Any] = {"worker": report}
        if tasks != "absent":
            body["tasks"] = tasks
        return self.frame("heartbeat", body)

    def answer(self, command_id: str, answers: list[dict[str, Any]]) -> str:
        """A probe's ``command_result`` frame."""
        return self.frame(
            "command_result", {"id": command_id, "command": "probe", "answers": answers}
        )

    def bye(self, hostname: str | None = "celery@w1") -> str:
        """A ``bye`` frame."""
        return self.frame("bye", {"reason": "worker shutdown", "worker": hostname})


def runtime_of(test_app: Any) -> Runtime:
    """The running app's runtime."""
    runtime: Runtime = test_app.app.extensions[EXTENSION_KEY]
    return runtime


@asynccontextmanager
async def connected(client: Any, token: str, agent: FakeAgent) -> AsyncIterator[Any]:
    """An agent socket past hello/welcome."""
    async with client.websocket("/ws/agent", headers=bearer(token)) as ws:
        await ws.send(agent.hello())
        welcome = agent.welcome(await ws.receive())
        assert welcome["session"] == agent.session
        yield ws


async def closed_with(ws: Any) -> int:
    """Wait for the brain to close the socket; return the close code."""
    try:
        while True:
            await ws.receive()
    except WebsocketDisconnectError as error:
        code: int = error.args[0]
        return code
