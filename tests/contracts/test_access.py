"""The access and audit contract: users, API keys, memberships, invitations, sessions and
the audit chain behave the same on every backend (in-memory fake, SQLite, PostgreSQL).

Each test takes ``uow_factory`` and so runs once per backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import attrs
import pytest

from z4j_domain.audit import (
    GENESIS_MAC,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    ChainHead,
    audit_key,
    chain_entry,
    genesis_head,
    make_checkpoint,
    verify_chain,
)
from z4j_domain.errors import Conflict
from z4j_domain.ports import UnitOfWorkFactory
from z4j_domain.rbac import Membership, Role
from z4j_domain.users import Invitation

from .support import T0, at, new_project, new_user

pytestmark = pytest.mark.anyio

KEY = audit_key("contract-test-secret")


# -- users and API keys ---------------------------------------------------------------


async def test_users_list_by_email_and_set_password(uow_factory: UnitOfWorkFactory) -> None:
    """Users are listed by email; set_password replaces the hash, and ignores unknown users."""
    second = await new_user(uow_factory, "zed@example.com")
    first = await new_user(uow_factory, "amy@example.com")
    async with uow_factory() as uow:
        assert [u.email for u in await uow.users.list()] == [
            "amy@example.com",
            "zed@example.com",
        ]
        assert [u.id for u in await uow.users.list([second, first + second + 1000])] == [second]
        assert await uow.users.list([]) == []
        await uow.users.set_password(first, "hash-2")
        await uow.users.set_password(first + second + 1000, "nobody")
        await uow.commit()
    async with uow_factory() as uow:
        user = await uow.users.get(first)
        assert user is not None
        assert user.password_hash == "hash-2"
        other = await uow.users.get(second)
        assert other is not None
        assert other.password_hash is None
        assert await uow.users.count() == 2


async def test_api_keys_scoped_capped_listed_and_revoked(uow_factory: UnitOfWorkFactory) -> None:
    """A key keeps its project and role cap; keys list oldest first; revoking works once."""
    user_id = await new_user(uow_factory)
    project_id = await new_project(uow_factory)
    async with uow_factory() as uow:
        scoped = await uow.api_keys.create(
            user_id=user_id,
            name="ci",
            key_hash="h-scoped",
            prefix="z4j_abc",
            created_at=at(2),
            project_id=project_id,
            role=Role.OPERATOR,
        )
        plain = await uow.api_keys.create(
            user_id=user_id, name="laptop", key_hash="h-plain", prefix="z4j_def", created_at=at(1)
        )
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.api_keys.get(scoped.id) == scoped
        assert await uow.api_keys.get_by_hash("h-scoped") == scoped
        assert scoped.project_id == project_id
        assert scoped.role is Role.OPERATOR
        assert (plain.project_id, plain.role) == (None, None)
        assert await uow.api_keys.get(scoped.id + plain.id + 1000) is None
        assert await uow.api_keys.list_for_user(user_id) == [plain, scoped]
        assert await uow.api_keys.list_for_user(user_id + 1000) == []
        assert await uow.api_keys.revoke(plain.id, at(5)) is True
        assert await uow.api_keys.revoke(plain.id, at(6)) is False
        assert await uow.api_keys.revoke(plain.id + scoped.id + 1000, at(6)) is False
        await uow.commit()
    async with uow_factory() as uow:
        keys = await uow.api_keys.list_for_user(user_id)
        assert [k.id for k in keys] == [plain.id, scoped.id]
        assert keys[0].revoked_at == at(5)
        assert not keys[0].is_active
        assert keys[1].is_active


async def test_api_key_conflicts_leave_the_unit_usable(uow_factory: UnitOfWorkFactory) -> None:
    """Unknown user, unknown project and a repeated hash conflict; the transaction goes on."""
    user_id = await new_user(uow_factory)
    project_id = await new_project(uow_factory)
    common: dict[str, Any] = {"name": "k", "prefix": "z4j_x", "created_at": T0}
    async with uow_factory() as uow:
        await uow.api_keys.create(user_id=user_id, key_hash="h1", **common)
        with pytest.raises(Conflict):
            await uow.api_keys.create(user_id=user_id + 1000, key_hash="h2", **common)
        with pytest.raises(Conflict):
            await uow.api_keys.create(
                user_id=user_id, key_hash="h3", project_id=project_id + 1000, **common
            )
        with pytest.raises(Conflict):
            await uow.api_keys.create(user_id=user_id, key_hash="h1", **common)
        await uow.api_keys.create(user_id=user_id, key_hash="h4", project_id=project_id, **common)
        await uow.commit()
    async with uow_factory() as uow:
        assert [k.key_hash for k in await uow.api_keys.list_for_user(user_id)] == ["h1", "h4"]


# -- memberships ----------------------------------------------------------------------


async def test_memberships(uow_factory: UnitOfWorkFactory) -> None:
    """set adds or changes a role (keeping the first grant's time); lists, counts, remove."""
    alice, bob = await new_user(uow_factory), await new_user(uow_factory)
    first, second = await new_project(uow_factory), await new_project(uow_factory)
    async with uow_factory() as uow:
        granted = await uow.memberships.set(first, bob, Role.VIEWER, at(1))
        assert granted == Membership(
            project_id=first, user_id=bob, role=Role.VIEWER, created_at=at(1)
        )
        await uow.memberships.set(first, alice, Role.ADMIN, at(2))
        await uow.memberships.set(second, bob, Role.AUDITOR, at(3))
        await uow.commit()
    async with uow_factory() as uow:
        changed = await uow.memberships.set(first, bob, Role.ADMIN, at(9))
        assert changed == Membership(
            project_id=first, user_id=bob, role=Role.ADMIN, created_at=at(1)
        )
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.memberships.get(first, bob) == changed
        assert await uow.memberships.get(second, alice) is None
        assert [m.user_id for m in await uow.memberships.list_for_project(first)] == [alice, bob]
        assert [m.project_id for m in await uow.memberships.list_for_user(bob)] == [first, second]
        assert await uow.memberships.list_for_user(bob + alice + 1000) == []
        assert await uow.memberships.count_role(first, Role.ADMIN) == 2
        assert await uow.memberships.count_role(first, Role.VIEWER) == 0
        assert await uow.memberships.count_role(second, Role.AUDITOR) == 1
        assert await uow.memberships.remove(first, bob) is True
        assert await uow.memberships.remove(first, bob) is False
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.memberships.get(first, bob) is None
        assert await uow.memberships.count_role(first, Role.ADMIN) == 1


async def test_membership_of_unknown_project_or_user_conflicts(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """set refuses a missing project or user with Conflict; the transaction stays usable."""
    user_id = await new_user(uow_factory)
    project_id = await new_project(uow_factory)
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.memberships.set(project_id + user_id + 1000, user_id, Role.VIEWER, T0)
        with pytest.raises(Conflict):
            await uow.memberships.set(project_id, project_id + user_id + 1000, Role.VIEWER, T0)
        await uow.memberships.set(project_id, user_id, Role.OPERATOR, T0)
        await uow.commit()
    async with uow_factory() as uow:
        membership = await uow.memberships.get(project_id, user_id)
        assert membership is not None
        assert membership.role is Role.OPERATOR


# -- invitations ----------------------------------------------------------------------


async def _invite(
    factory: UnitOfWorkFactory,
    project_id: int,
    token_hash: str,
    *,
    created: float = 0,
    invited_by: int | None = None,
) -> Invitation:
    async with factory() as uow:
        invitation = await uow.invitations.create(
            project_id=project_id,
            email="new@example.com",
            role=Role.OPERATOR,
            token_hash=token_hash,
            invited_by=invited_by,
            created_at=at(created),
            expires_at=at(created + 3600),
        )
        await uow.commit()
    return invitation


async def test_invitations_are_stored_found_and_listed(uow_factory: UnitOfWorkFactory) -> None:
    """An invitation reads back as created; a project's list is newest first."""
    admin = await new_user(uow_factory)
    project_id, other = await new_project(uow_factory), await new_project(uow_factory)
    older = await _invite(uow_factory, project_id, "t-old", created=1, invited_by=admin)
    newer = await _invite(uow_factory, project_id, "t-new", created=2)
    await _invite(uow_factory, other, "t-other")
    async with uow_factory() as uow:
        assert older.invited_by == admin
        assert older.role is Role.OPERATOR
        assert (older.accepted_at, older.accepted_by, older.revoked_at) == (None, None, None)
        assert await uow.invitations.get(older.id) == older
        assert await uow.invitations.get_by_token_hash("t-new") == newer
        assert await uow.invitations.get_by_token_hash("t-none") is None
        assert await uow.invitations.get(older.id + newer.id + 1000) is None
        assert await uow.invitations.list(project_id) == [newer, older]


async def test_invitation_conflicts_leave_the_unit_usable(uow_factory: UnitOfWorkFactory) -> None:
    """No such project (or inviting user), or a repeated token hash: Conflict, and go on."""
    project_id = await new_project(uow_factory)
    await _invite(uow_factory, project_id, "t-1")
    common: dict[str, Any] = {
        "email": "x@example.com",
        "role": Role.VIEWER,
        "created_at": T0,
        "expires_at": at(60),
    }
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.invitations.create(
                project_id=project_id + 1000, token_hash="t-2", invited_by=None, **common
            )
        with pytest.raises(Conflict):
            await uow.invitations.create(
                project_id=project_id, token_hash="t-3", invited_by=project_id + 1000, **common
            )
        with pytest.raises(Conflict):
            await uow.invitations.create(
                project_id=project_id, token_hash="t-1", invited_by=None, **common
            )
        await uow.invitations.create(
            project_id=project_id, token_hash="t-4", invited_by=None, **common
        )
        await uow.commit()
    async with uow_factory() as uow:
        assert [i.token_hash for i in await uow.invitations.list(project_id)] == ["t-4", "t-1"]


async def test_an_invitation_is_accepted_once(uow_factory: UnitOfWorkFactory) -> None:
    """The first acceptance wins; a second one (even by another user) changes nothing."""
    project_id = await new_project(uow_factory)
    first, second = await new_user(uow_factory), await new_user(uow_factory)
    invitation = await _invite(uow_factory, project_id, "t")
    async with uow_factory() as uow:
        assert await uow.invitations.mark_accepted(invitation.id, first, at(5)) is True
        assert await uow.invitations.mark_accepted(invitation.id, second, at(6)) is False
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.invitations.mark_accepted(invitation.id, second, at(7)) is False
        assert await uow.invitations.revoke(invitation.id, at(7)) is False
        stored = await uow.invitations.get(invitation.id)
        assert stored == attrs.evolve(invitation, accepted_at=at(5), accepted_by=first)
        assert await uow.invitations.mark_accepted(invitation.id + 1000, first, at(7)) is False


async def test_a_revoked_invitation_cannot_be_accepted(uow_factory: UnitOfWorkFactory) -> None:
    """Revoking works once, and an invitation revoked cannot be accepted any more."""
    project_id = await new_project(uow_factory)
    user_id = await new_user(uow_factory)
    invitation = await _invite(uow_factory, project_id, "t")
    async with uow_factory() as uow:
        assert await uow.invitations.revoke(invitation.id, at(5)) is True
        assert await uow.invitations.revoke(invitation.id, at(6)) is False
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.invitations.mark_accepted(invitation.id, user_id, at(7)) is False
        assert await uow.invitations.get(invitation.id) == attrs.evolve(
            invitation, revoked_at=at(5)
        )
        assert await uow.invitations.revoke(invitation.id + 1000, at(7)) is False


async def test_accepting_as_an_unknown_user_conflicts(uow_factory: UnitOfWorkFactory) -> None:
    """mark_accepted by a user that does not exist: Conflict, and the invitation stays open."""
    project_id = await new_project(uow_factory)
    user_id = await new_user(uow_factory)
    invitation = await _invite(uow_factory, project_id, "t")
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.invitations.mark_accepted(invitation.id, user_id + 1000, at(1))
        assert await uow.invitations.mark_accepted(invitation.id, user_id, at(2)) is True
        await uow.commit()


async def test_concurrent_acceptances_one_wins(isolating_uow_factory: UnitOfWorkFactory) -> None:
    """Two transactions accepting the same invitation at once: exactly one gets True."""
    uow_factory = isolating_uow_factory
    project_id = await new_project(uow_factory)
    users = [await new_user(uow_factory), await new_user(uow_factory)]
    invitation = await _invite(uow_factory, project_id, "t")
    outcomes: dict[int, bool] = {}

    async def accept(user_id: int) -> None:
        async with uow_factory() as uow:
            outcomes[user_id] = await uow.invitations.mark_accepted(invitation.id, user_id, at(1))
            await anyio.sleep(0.05)  # hold the transaction open while the other one tries
            await uow.commit()

    async with anyio.create_task_group() as group:
        for user_id in users:
            group.start_soon(accept, user_id)
    assert sorted(outcomes.values()) == [False, True]
    winner = next(user_id for user_id, won in outcomes.items() if won)
    async with uow_factory() as uow:
        stored = await uow.invitations.get(invitation.id)
        assert stored is not None
        assert stored.accepted_by == winner


# -- sessions -------------------------------------------------------------------------


async def test_sessions_are_created_found_touched_and_deleted(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A session starts seen at its creation; touch moves last_seen_at; delete works once."""
    user_id = await new_user(uow_factory)
    async with uow_factory() as uow:
        session = await uow.sessions.create(
            user_id=user_id,
            token_hash="s-1",
            created_at=at(1),
            expires_at=at(100),
            source_ip="192.0.2.7",
            user_agent="Mozilla/5.0 (ünïcode)",
        )
        bare = await uow.sessions.create(
            user_id=user_id, token_hash="s-2", created_at=at(1), expires_at=at(100)
        )
        await uow.commit()
    assert session.last_seen_at == at(1)
    assert (bare.source_ip, bare.user_agent) == (None, None)
    async with uow_factory() as uow:
        assert await uow.sessions.get_by_token_hash("s-1") == session
        assert await uow.sessions.get_by_token_hash("s-none") is None
        await uow.sessions.touch(session.id, at(50))
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.get_by_token_hash("s-1") == attrs.evolve(
            session, last_seen_at=at(50)
        )
        assert await uow.sessions.delete(bare.id) is True
        assert await uow.sessions.delete(bare.id) is False
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.get_by_token_hash("s-2") is None


async def test_session_conflicts_leave_the_unit_usable(uow_factory: UnitOfWorkFactory) -> None:
    """No such user or a repeated token hash: Conflict, and the transaction goes on."""
    user_id = await new_user(uow_factory)
    common: dict[str, Any] = {"created_at": T0, "expires_at": at(60)}
    async with uow_factory() as uow:
        await uow.sessions.create(user_id=user_id, token_hash="s-1", **common)
        with pytest.raises(Conflict):
            await uow.sessions.create(user_id=user_id + 1000, token_hash="s-2", **common)
        with pytest.raises(Conflict):
            await uow.sessions.create(user_id=user_id, token_hash="s-1", **common)
        await uow.sessions.create(user_id=user_id, token_hash="s-3", **common)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.get_by_token_hash("s-3") is not None


async def test_delete_for_user_keeps_one_and_spares_others(uow_factory: UnitOfWorkFactory) -> None:
    """delete_for_user ends the user's sessions but ``keep``, and nobody else's."""
    user_id, other = await new_user(uow_factory), await new_user(uow_factory)
    common: dict[str, Any] = {"created_at": T0, "expires_at": at(60)}
    async with uow_factory() as uow:
        kept = await uow.sessions.create(user_id=user_id, token_hash="a", **common)
        await uow.sessions.create(user_id=user_id, token_hash="b", **common)
        await uow.sessions.create(user_id=user_id, token_hash="c", **common)
        await uow.sessions.create(user_id=other, token_hash="d", **common)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.delete_for_user(user_id, keep=kept.id) == 2
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.get_by_token_hash("a") == kept
        assert await uow.sessions.get_by_token_hash("b") is None
        assert await uow.sessions.get_by_token_hash("d") is not None
        assert await uow.sessions.delete_for_user(user_id) == 1
        assert await uow.sessions.delete_for_user(user_id) == 0
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.get_by_token_hash("a") is None
        assert await uow.sessions.get_by_token_hash("d") is not None


async def test_delete_expired(uow_factory: UnitOfWorkFactory) -> None:
    """Sessions at or past expires_at, or last seen before idle_before, are deleted."""
    user_id = await new_user(uow_factory)
    now = at(1000)
    async with uow_factory() as uow:
        for token, expires, seen in [
            ("live", 2000, 900),
            ("expired", 999, 990),
            ("expires-now", 1000, 990),
            ("idle", 2000, 799),
            ("idle-boundary", 2000, 800),
        ]:
            session = await uow.sessions.create(
                user_id=user_id, token_hash=token, created_at=at(0), expires_at=at(expires)
            )
            await uow.sessions.touch(session.id, at(seen))
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.sessions.delete_expired(now, idle_before=at(800)) == 3
        await uow.commit()
    async with uow_factory() as uow:
        left = [
            token
            for token in ("live", "expired", "expires-now", "idle", "idle-boundary")
            if await uow.sessions.get_by_token_hash(token) is not None
        ]
        assert left == ["live", "idle-boundary"]


# -- the audit chain ------------------------------------------------------------------


def record(n: int, **changes: Any) -> AuditRecord:
    """A plausible record number ``n`` (a second apart), with ``changes``."""
    values: dict[str, Any] = {
        "action": "tasks.retry",
        "actor": "amy@example.com",
        "at": at(n),
        "actor_id": 7,
        "target": f"task:{n}",
        "project_id": 1,
        "source_ip": "192.0.2.1",
        "details": {"n": n},
    }
    values.update(changes)
    return AuditRecord(**values)


async def append_records(factory: UnitOfWorkFactory, records: Sequence[AuditRecord]) -> ChainHead:
    """Append each record in a transaction of its own, as the service does; the last head."""
    head = genesis_head()
    for item in records:
        async with factory() as uow:
            entry, head = chain_entry(KEY, await uow.audit.lock_head(), item)
            await uow.audit.append(entry, head)
            await uow.commit()
    return head


async def all_entries(factory: UnitOfWorkFactory) -> list[AuditEntry]:
    """Every stored entry, by sequence number."""
    async with factory() as uow:
        return list(await uow.audit.entries(after_seq=0, through_seq=2**62, limit=100_000))


async def test_the_empty_log(uow_factory: UnitOfWorkFactory) -> None:
    """An empty log: genesis head, no entries, no checkpoint, and it verifies."""
    async with uow_factory() as uow:
        assert await uow.audit.head() == genesis_head()
        assert await uow.audit.lock_head() == genesis_head()
        assert await uow.audit.latest_checkpoint() is None
        assert await uow.audit.entries(after_seq=0, through_seq=10, limit=10) == []
        page = await uow.audit.search(AuditQuery())
        assert (page.items, page.next_before) == ([], None)
        assert await uow.audit.count_recent("tasks.retry", T0) == 0
        assert verify_chain(KEY, [], head=await uow.audit.head()).ok


async def test_appended_entries_read_back_and_verify(uow_factory: UnitOfWorkFactory) -> None:
    """Entries appended one transaction each read back as written; the chain verifies."""
    records = [record(n) for n in range(1, 8)]
    last = await append_records(uow_factory, records)
    entries = await all_entries(uow_factory)
    assert [e.seq for e in entries] == list(range(1, 8))
    assert [e.record for e in entries] == records
    assert entries[0].prev_mac == GENESIS_MAC
    async with uow_factory() as uow:
        head = await uow.audit.head()
        assert head == last
        assert await uow.audit.lock_head() == last
    assert head.is_authentic(KEY)
    verification = verify_chain(KEY, entries, head=head)
    assert verification.ok, verification.broken
    assert (verification.verified, verification.first_seq, verification.last_seq) == (7, 1, 7)


async def test_several_appends_in_one_transaction(uow_factory: UnitOfWorkFactory) -> None:
    """A transaction may append several entries; they commit (or roll back) together."""
    async with uow_factory() as uow:
        head = await uow.audit.lock_head()
        for n in (1, 2, 3):
            entry, head = chain_entry(KEY, head, record(n))
            await uow.audit.append(entry, head)
        assert await uow.audit.lock_head() == head
    assert await all_entries(uow_factory) == []
    async with uow_factory() as uow:
        assert await uow.audit.head() == genesis_head()
        head = await uow.audit.lock_head()
        for n in (1, 2, 3):
            entry, head = chain_entry(KEY, head, record(n))
            await uow.audit.append(entry, head)
        await uow.commit()
    entries = await all_entries(uow_factory)
    assert verify_chain(KEY, entries, head=head).ok
    assert len(entries) == 3


async def test_details_round_trip_so_macs_still_verify(uow_factory: UnitOfWorkFactory) -> None:
    """Unicode, nesting, big integers and floats in details come back exactly."""
    details = {
        "名前": "héllo ✓ 🎉",
        "nested": {"list": [1, 2.5, None, True, "x", {"deep": [[]]}], "empty": {}},
        "big": 2**70,
        "float": 1.0,
        "small": 1e-7,
        "zeta": "last",
        "alpha": "first",
        "quote": 'a "quoted" \\ back\nslash',
    }
    unusual = record(1, details=details, actor="Zoë <zoe@example.com>", target=None)
    head = await append_records(uow_factory, [unusual, record(2, project_id=None, actor_id=None)])
    entries = await all_entries(uow_factory)
    assert entries[0].record == unusual
    assert entries[0].record.details == details
    assert entries[1].record.project_id is None
    assert verify_chain(KEY, entries, head=head).ok


async def test_a_duplicate_append_conflicts_and_the_unit_stays_usable(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """An entry reusing a sequence number or previous MAC is refused; the transaction goes on."""
    await append_records(uow_factory, [record(1), record(2)])
    async with uow_factory() as uow:
        # Built on the genesis head again: seq 1 and prev_mac GENESIS_MAC both exist.
        fork, fork_head = chain_entry(KEY, genesis_head(), record(99))
        head = await uow.audit.lock_head()
        with pytest.raises(Conflict):
            await uow.audit.append(fork, fork_head)
        # A fresh sequence number after a MAC that already has a successor.
        entries = await all_entries(uow_factory)
        forged = AuditEntry(seq=3, record=record(98), prev_mac=entries[0].mac, mac="")
        forged = attrs.evolve(forged, mac=forged.expected_mac(KEY))
        with pytest.raises(Conflict):
            await uow.audit.append(forged, ChainHead.signed(KEY, 3, forged.mac))
        assert await uow.audit.lock_head() == head
        entry, head = chain_entry(KEY, head, record(3))
        await uow.audit.append(entry, head)
        await uow.commit()
    entries = await all_entries(uow_factory)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert verify_chain(KEY, entries, head=head).ok


async def test_an_append_on_a_stale_head_conflicts(uow_factory: UnitOfWorkFactory) -> None:
    """A writer that read the head without the lock cannot append once the chain moved on.

    The head is read in a transaction of its own: on SQLite a transaction that
    has read cannot write at all once another one committed ("database is
    locked"), which is why writers take lock_head before reading anything.
    """
    await append_records(uow_factory, [record(1)])
    async with uow_factory() as uow:
        stale = await uow.audit.head()
    await append_records(uow_factory, [record(2)])
    async with uow_factory() as uow:
        entry, head = chain_entry(KEY, stale, record(3))
        with pytest.raises(Conflict):
            await uow.audit.append(entry, head)
        entry, head = chain_entry(KEY, await uow.audit.lock_head(), record(3))
        await uow.audit.append(entry, head)
        await uow.commit()
    entries = await all_entries(uow_factory)
    assert [e.record.details["n"] for e in entries] == [1, 2, 3]
    assert verify_chain(KEY, entries, head=head).ok


async def test_a_unit_of_work_locks_afresh_after_it_commits(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """The lock ends with its transaction: the next lock_head sees what others appended."""
    async with uow_factory() as uow:
        entry, head = chain_entry(KEY, await uow.audit.lock_head(), record(1))
        await uow.audit.append(entry, head)
        await uow.commit()
        others = await append_records(uow_factory, [record(2)])
        assert await uow.audit.lock_head() == others
        entry, head = chain_entry(KEY, others, record(3))
        await uow.audit.append(entry, head)
        await uow.rollback()
        assert await uow.audit.lock_head() == others
    entries = await all_entries(uow_factory)
    assert [e.seq for e in entries] == [1, 2]
    assert verify_chain(KEY, entries, head=others).ok


async def test_prune_leaves_a_checkpoint_to_verify_from(uow_factory: UnitOfWorkFactory) -> None:
    """Pruning deletes entries up to the checkpoint, which verification then starts from."""
    await append_records(uow_factory, [record(n) for n in range(1, 11)])
    entries = await all_entries(uow_factory)
    checkpoint = make_checkpoint(KEY, entries[3], at(100), pruned=4)
    async with uow_factory() as uow:
        await uow.audit.lock_head()
        assert await uow.audit.prune(checkpoint) == 4
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.audit.latest_checkpoint() == checkpoint
        rest = list(await uow.audit.entries(after_seq=0, through_seq=100, limit=100))
        head = await uow.audit.head()
    assert rest == entries[4:]
    assert verify_chain(KEY, rest, checkpoint=checkpoint, head=head).ok
    # Without the checkpoint the missing start is a break.
    assert not verify_chain(KEY, rest, head=head).ok
    # Appending goes on after a prune; a later prune becomes the latest checkpoint.
    head = await append_records(uow_factory, [record(11)])
    later = make_checkpoint(KEY, entries[6], at(200), pruned=3)
    async with uow_factory() as uow:
        await uow.audit.lock_head()
        assert await uow.audit.prune(later) == 3
        assert await uow.audit.prune(later) == 0
        await uow.commit()
    rest = await all_entries(uow_factory)
    async with uow_factory() as uow:
        assert await uow.audit.latest_checkpoint() == later
    assert [e.seq for e in rest] == [8, 9, 10, 11]
    assert verify_chain(KEY, rest, checkpoint=later, head=head).ok


async def test_entries_pages_by_sequence_number(uow_factory: UnitOfWorkFactory) -> None:
    """entries() returns after_seq < seq <= through_seq, in order, at most limit."""
    await append_records(uow_factory, [record(n) for n in range(1, 8)])
    async with uow_factory() as uow:
        page = await uow.audit.entries(after_seq=2, through_seq=6, limit=3)
        assert [e.seq for e in page] == [3, 4, 5]
        page = await uow.audit.entries(after_seq=5, through_seq=6, limit=3)
        assert [e.seq for e in page] == [6]
        assert await uow.audit.entries(after_seq=7, through_seq=100, limit=3) == []


def _catalogue() -> list[AuditRecord]:
    """Records varied in every field a search filters on."""
    actions = [
        "auth.login",
        "auth.login_failed",
        "authyx.login",
        "auth_x.login",
        "tasks.retry",
        "tasks.cancel",
        "members.role_changed",
    ]
    records = []
    for n in range(1, 36):
        records.append(
            record(
                n,
                action=actions[n % len(actions)],
                actor=["amy@example.com", "bob@example.com", "cli:root"][n % 3],
                target=[None, "task:a", "task:b", "user:amy@example.com"][n % 4],
                project_id=[None, 1, 2][n % 3 if n % 5 else 0],
                source_ip=["192.0.2.1", "198.51.100.9"][n % 2],
                # Not in sequence order: a search by time must not assume it.
                at=at((n * 7) % 30),
            )
        )
    return records


_QUERIES = [
    AuditQuery(),
    AuditQuery(project_id=1),
    AuditQuery(project_id=2, limit=2),
    AuditQuery(action="auth.login"),
    AuditQuery(action="auth."),
    AuditQuery(action="auth_x."),
    AuditQuery(action="AUTH."),
    AuditQuery(action="tasks."),
    AuditQuery(action="members.role_changed", project_id=1),
    AuditQuery(actor="cli:root"),
    AuditQuery(target="task:a", limit=3),
    AuditQuery(since=at(10), until=at(20)),
    AuditQuery(since=at(29)),
    AuditQuery(until=at(1)),
    AuditQuery(before=10),
    AuditQuery(before=1),
    AuditQuery(action="tasks.", actor="amy@example.com", before=30, limit=1),
]


async def test_search_matches_the_reference_and_pages(uow_factory: UnitOfWorkFactory) -> None:
    """Walking a search's pages gives the entries ``AuditQuery.matches``, newest first, once."""
    await append_records(uow_factory, _catalogue())
    entries = await all_entries(uow_factory)
    async with uow_factory() as uow:
        for query in _QUERIES:
            found: list[AuditEntry] = []
            current: AuditQuery | None = query
            while current is not None:
                page = await uow.audit.search(current)
                assert len(page.items) <= query.limit
                found.extend(page.items)
                if page.next_before is not None:
                    assert len(page.items) == query.limit
                    assert page.next_before == page.items[-1].seq
                    current = attrs.evolve(current, before=page.next_before)
                else:
                    current = None
                assert len(found) <= len(entries)
            assert found == [e for e in reversed(entries) if query.matches(e)], query


async def test_search_page_boundaries(uow_factory: UnitOfWorkFactory) -> None:
    """A page that holds exactly the rest has no next_before; one short of it has one."""
    await append_records(uow_factory, [record(n) for n in range(1, 5)])
    async with uow_factory() as uow:
        page = await uow.audit.search(AuditQuery(limit=4))
        assert ([e.seq for e in page.items], page.next_before) == ([4, 3, 2, 1], None)
        page = await uow.audit.search(AuditQuery(limit=3))
        assert ([e.seq for e in page.items], page.next_before) == ([4, 3, 2], 2)
        page = await uow.audit.search(AuditQuery(limit=3, before=2))
        assert ([e.seq for e in page.items], page.next_before) == ([1], None)


async def test_count_recent(uow_factory: UnitOfWorkFactory) -> None:
    """count_recent counts one action since a time, optionally by target and source IP."""
    failed = "auth.login_failed"
    await append_records(
        uow_factory,
        [
            record(1, action=failed, target="user:a", source_ip="192.0.2.1"),
            record(2, action=failed, target="user:a", source_ip="192.0.2.2"),
            record(3, action=failed, target="user:b", source_ip="192.0.2.1"),
            record(4, action="auth.login", target="user:a", source_ip="192.0.2.1"),
            record(5, action=failed, target="user:a", source_ip="192.0.2.1"),
        ],
    )
    async with uow_factory() as uow:
        assert await uow.audit.count_recent(failed, at(0)) == 4
        assert await uow.audit.count_recent(failed, at(2)) == 3
        assert await uow.audit.count_recent(failed, at(0), target="user:a") == 3
        assert await uow.audit.count_recent(failed, at(0), source_ip="192.0.2.1") == 3
        assert (
            await uow.audit.count_recent(failed, at(2), target="user:a", source_ip="192.0.2.1") == 1
        )
        assert await uow.audit.count_recent("auth.", at(0)) == 0
        assert await uow.audit.count_recent(failed, at(6)) == 0
