"""Properties of the audit chain: a valid chain verifies, any one tampering breaks it where it was.

"Breaks at position p" means: verification is not ok, ``broken.position == p``
(the index in the entries handed to the verifier), and ``verified == p``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.strategies import (
    audit_actions,
    audit_chains,
    audit_details,
    audit_keys,
    audit_records,
    audit_texts,
    aware_datetimes,
    build_audit_chain,
    two_audit_keys,
)
from z4j_domain.audit import (
    GENESIS_MAC,
    MAX_AUDIT_PAGE,
    MAX_DETAILS_BYTES,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    ChainHead,
    ChainVerifier,
    Checkpoint,
    Verification,
    audit_key,
    chain_entry,
    genesis_head,
    make_checkpoint,
    verify_chain,
)
from z4j_domain.encoding import canonical_json
from z4j_domain.errors import InvalidInput

KEY = audit_key("a test secret")
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
Chain = tuple[list[AuditEntry], ChainHead]

#: MAC-like strings a tamperer might write: hex of the right length, or any text at all.
MACS = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.text(max_size=70),
)

#: New values for each field of a record (all valid, so the record can be rebuilt).
RECORD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "action": audit_actions,
    "actor": audit_texts,
    "at": aware_datetimes,
    "actor_id": st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)),
    "target": st.one_of(st.none(), audit_texts),
    "project_id": st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
    "source_ip": st.one_of(st.none(), audit_texts),
    "details": audit_details,
}

#: New values for each field of an entry other than its record.
ENTRY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.integers(min_value=-2, max_value=2**40),
    "prev_mac": MACS,
    "mac": MACS,
}


def _content(entry: AuditEntry) -> tuple[Any, ...]:
    """Everything an entry's verification depends on, as comparable bytes and values."""
    return (entry.seq, entry.prev_mac, entry.mac, canonical_json(entry.record.document()))


def _changed(data: st.DataObject, entry: AuditEntry) -> AuditEntry:
    """``entry`` with one field (of the entry or of its record) set to a different value."""
    name = data.draw(st.sampled_from(sorted([*RECORD_FIELDS, *ENTRY_FIELDS])), label="field")
    if name in RECORD_FIELDS:
        value = data.draw(RECORD_FIELDS[name], label=name)
        changed = attrs.evolve(entry, record=attrs.evolve(entry.record, **{name: value}))
    else:
        changed = attrs.evolve(entry, **{name: data.draw(ENTRY_FIELDS[name], label=name)})
    # Equal content (say, the same instant at another offset) is no change at all.
    assume(_content(changed) != _content(entry))
    return changed


def _head_after(entries: list[AuditEntry], i: int) -> ChainHead:
    """The (unsigned) head of the chain's first ``i`` entries: where entry ``i + 1`` goes."""
    return ChainHead(seq=i, mac=entries[i - 1].mac if i else GENESIS_MAC)


def assert_broken_at(result: Verification, position: int) -> None:
    assert not result.ok, "the tampering went unnoticed"
    assert result.broken is not None
    assert result.broken.position == position, result.broken
    assert result.verified == position
    assert result.broken.reason


def assert_verifies(result: Verification, count: int) -> None:
    assert result.ok, result.broken
    assert result.broken is None
    assert result.verified == count


# --- Valid chains ----------------------------------------------------------------


@given(data=st.data(), key=audit_keys)
def test_any_valid_chain_verifies(data: st.DataObject, key: bytes) -> None:
    """A chain built by chain_entry verifies against its head, every entry counted."""
    entries, head = data.draw(audit_chains(key, max_size=8))
    result = verify_chain(key, entries, head=head)
    assert_verifies(result, len(entries))
    assert result.first_seq == (1 if entries else None)
    assert result.last_seq == (len(entries) or None)
    assert result.checkpoint is None
    assert head.seq == len(entries)
    assert head.mac == (entries[-1].mac if entries else GENESIS_MAC)
    assert head.is_authentic(key)
    assert [entry.seq for entry in entries] == list(range(1, len(entries) + 1))
    assert verify_chain(key, entries).ok


@given(data=st.data(), key=audit_keys)
def test_appending_continues_from_any_head(data: st.DataObject, key: bytes) -> None:
    """Building a chain in two goes from the first part's head equals building it at once."""
    records = data.draw(st.lists(audit_records, max_size=6))
    cut = data.draw(st.integers(min_value=0, max_value=len(records)))
    first, middle = build_audit_chain(key, records[:cut])
    second, head = build_audit_chain(key, records[cut:], middle)
    assert (first + second, head) == build_audit_chain(key, records)


# --- Single changes ---------------------------------------------------------------


@given(data=st.data(), key=audit_keys)
def test_changing_any_field_of_any_entry_breaks_the_chain_at_that_entry(
    data: st.DataObject, key: bytes
) -> None:
    """Any record field, seq, prev_mac or mac of entry i changed: broken at i, head or no head."""
    entries, head = data.draw(audit_chains(key, min_size=1))
    i = data.draw(st.integers(min_value=0, max_value=len(entries) - 1), label="i")
    tampered = [*entries[:i], _changed(data, entries[i]), *entries[i + 1 :]]
    result = verify_chain(key, tampered, head=head)
    assert_broken_at(result, i)
    assert result.broken is not None
    assert result.broken.seq == i + 1
    assert_broken_at(verify_chain(key, tampered), i)


@given(data=st.data(), key=audit_keys)
def test_deleting_any_entry_breaks_the_chain_where_it_was(data: st.DataObject, key: bytes) -> None:
    """Entry i deleted: broken at i, the entry now there having the wrong seq; for the last
    entry, the head check fires at len(remaining), which is i too. Without the head, only
    deleting the last entry goes unnoticed."""
    entries, head = data.draw(audit_chains(key, min_size=1))
    i = data.draw(st.integers(min_value=0, max_value=len(entries) - 1), label="i")
    remaining = entries[:i] + entries[i + 1 :]
    assert_broken_at(verify_chain(key, remaining, head=head), i)
    without_head = verify_chain(key, remaining)
    if i < len(remaining):
        assert_broken_at(without_head, i)
    else:
        assert_verifies(without_head, i)


@st.composite
def _forged_entries(
    draw: st.DrawFn, other_key: bytes, entries: list[AuditEntry], i: int
) -> AuditEntry:
    """An entry to insert at position i: made without the chain's key, replayed, or made up."""
    how = draw(st.sampled_from(["other key", "replayed", "foreign chain", "made up"]))
    if how == "other key":
        # Right seq and prev_mac, MAC from a key guessed wrong.
        return chain_entry(other_key, _head_after(entries, i), draw(audit_records))[0]
    if how == "replayed":
        # A copy of another entry of the same chain (a copy of entry i itself is
        # no insertion at i: see the duplicate test).
        j = draw(st.sampled_from([j for j in range(len(entries)) if j != i] or [0]))
        assume(j != i)
        return entries[j]
    if how == "foreign chain":
        foreign, _ = draw(audit_chains(other_key, min_size=1))
        return draw(st.sampled_from(foreign))
    return AuditEntry(
        seq=draw(st.one_of(st.just(i + 1), st.integers(min_value=-1, max_value=20))),
        record=draw(audit_records),
        prev_mac=draw(st.one_of(st.just(_head_after(entries, i).mac), MACS)),
        mac=draw(MACS),
    )


@given(data=st.data(), keys=two_audit_keys)
def test_inserting_a_forged_entry_breaks_the_chain_at_the_insertion(
    data: st.DataObject, keys: tuple[bytes, bytes]
) -> None:
    """A forged, replayed or foreign entry inserted at position i (0..len): broken at i."""
    key, other_key = keys
    entries, head = data.draw(audit_chains(key, min_size=1))
    i = data.draw(st.integers(min_value=0, max_value=len(entries)), label="i")
    forged = data.draw(_forged_entries(other_key, entries, i), label="forged")
    tampered = [*entries[:i], forged, *entries[i:]]
    assert_broken_at(verify_chain(key, tampered, head=head), i)
    assert_broken_at(verify_chain(key, tampered), i)


@given(data=st.data(), key=audit_keys)
def test_a_duplicated_entry_breaks_the_chain_right_after_the_original(
    data: st.DataObject, key: bytes
) -> None:
    """Entry i stored twice: the first copy is the genuine entry, the second breaks at i + 1."""
    entries, head = data.draw(audit_chains(key, min_size=1))
    i = data.draw(st.integers(min_value=0, max_value=len(entries) - 1), label="i")
    tampered = [*entries[: i + 1], entries[i], *entries[i + 1 :]]
    assert_broken_at(verify_chain(key, tampered, head=head), i + 1)


@given(data=st.data(), key=audit_keys)
def test_swapping_two_neighbours_breaks_the_chain_at_the_first(
    data: st.DataObject, key: bytes
) -> None:
    """Entries i and i + 1 swapped: broken at i."""
    entries, head = data.draw(audit_chains(key, min_size=2))
    i = data.draw(st.integers(min_value=0, max_value=len(entries) - 2), label="i")
    tampered = [*entries[:i], entries[i + 1], entries[i], *entries[i + 2 :]]
    assert_broken_at(verify_chain(key, tampered, head=head), i)
    assert_broken_at(verify_chain(key, tampered), i)


@given(data=st.data(), key=audit_keys)
def test_any_reordering_breaks_the_chain_at_the_first_moved_entry(
    data: st.DataObject, key: bytes
) -> None:
    """Any permutation other than the identity: broken at the first position that changed."""
    entries, head = data.draw(audit_chains(key, min_size=2))
    shuffled = data.draw(st.permutations(entries))
    assume(shuffled != entries)
    first_moved = next(p for p, (a, b) in enumerate(zip(shuffled, entries, strict=True)) if a != b)
    assert_broken_at(verify_chain(key, shuffled, head=head), first_moved)


@given(data=st.data(), key=audit_keys)
def test_truncating_the_tail_is_caught_by_the_head(data: st.DataObject, key: bytes) -> None:
    """The last k >= 1 entries dropped: broken at len(remaining) against the head; without
    the head the shorter chain is a valid chain, which is why the head exists."""
    entries, head = data.draw(audit_chains(key, min_size=1))
    k = data.draw(st.integers(min_value=1, max_value=len(entries)), label="k")
    remaining = entries[: len(entries) - k]
    result = verify_chain(key, remaining, head=head)
    assert_broken_at(result, len(remaining))
    assert result.broken is not None
    assert result.broken.seq == len(remaining) + 1
    assert "truncated" in result.broken.reason
    assert_verifies(verify_chain(key, remaining), len(remaining))


@given(data=st.data(), key=audit_keys)
def test_truncating_the_front_without_a_checkpoint_breaks_at_the_start(
    data: st.DataObject, key: bytes
) -> None:
    """The first k >= 1 entries dropped, no checkpoint: broken at position 0."""
    entries, head = data.draw(audit_chains(key, min_size=1))
    k = data.draw(st.integers(min_value=1, max_value=len(entries)), label="k")
    assert_broken_at(verify_chain(key, entries[k:], head=head), 0)
    if k < len(entries):
        assert_broken_at(verify_chain(key, entries[k:]), 0)


@given(data=st.data(), keys=two_audit_keys)
def test_a_different_key_never_verifies_a_non_empty_chain(
    data: st.DataObject, keys: tuple[bytes, bytes]
) -> None:
    """Verified with another key (say, Z4J_SECRET changed), a chain breaks at its first entry."""
    key, other_key = keys
    entries, head = data.draw(audit_chains(key, min_size=1))
    assert_broken_at(verify_chain(other_key, entries), 0)
    assert_broken_at(verify_chain(other_key, entries, head=head), 0)


# --- Checkpoints ---------------------------------------------------------------------


@given(data=st.data(), key=audit_keys, at=aware_datetimes)
def test_a_prune_with_a_signed_checkpoint_verifies(
    data: st.DataObject, key: bytes, at: datetime
) -> None:
    """Entries 1..k replaced by their checkpoint: the rest verifies from it, even when k is all."""
    entries, head = data.draw(audit_chains(key, min_size=1))
    k = data.draw(st.integers(min_value=1, max_value=len(entries)), label="k")
    checkpoint = make_checkpoint(key, entries[k - 1], at, pruned=k)
    assert checkpoint.is_authentic(key)
    result = verify_chain(key, entries[k:], checkpoint=checkpoint, head=head)
    assert_verifies(result, len(entries) - k)
    assert result.checkpoint == checkpoint
    assert result.first_seq == (k + 1 if k < len(entries) else None)
    assert result.last_seq == (len(entries) if k < len(entries) else None)


@given(data=st.data(), key=audit_keys, at=aware_datetimes)
def test_tampering_after_a_prune_breaks_at_the_entry(
    data: st.DataObject, key: bytes, at: datetime
) -> None:
    """Positions count from the first entry after the checkpoint."""
    entries, head = data.draw(audit_chains(key, min_size=2))
    k = data.draw(st.integers(min_value=1, max_value=len(entries) - 1), label="k")
    rest = entries[k:]
    i = data.draw(st.integers(min_value=0, max_value=len(rest) - 1), label="i")
    tampered = [*rest[:i], _changed(data, rest[i]), *rest[i + 1 :]]
    checkpoint = make_checkpoint(key, entries[k - 1], at, pruned=k)
    result = verify_chain(key, tampered, checkpoint=checkpoint, head=head)
    assert_broken_at(result, i)
    assert result.broken is not None
    assert result.broken.seq == k + i + 1


CHECKPOINT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "through_seq": st.integers(min_value=-1, max_value=2**40),
    "mac": MACS,
    "at": aware_datetimes,
    "pruned": st.integers(min_value=-1, max_value=2**40),
    "signature": MACS,
}


@given(data=st.data(), keys=two_audit_keys, at=aware_datetimes)
def test_a_forged_or_changed_checkpoint_breaks_at_the_start(
    data: st.DataObject, keys: tuple[bytes, bytes], at: datetime
) -> None:
    """A checkpoint signed with another key, or with any field changed: broken at position 0."""
    key, other_key = keys
    entries, head = data.draw(audit_chains(key, min_size=1))
    k = data.draw(st.integers(min_value=1, max_value=len(entries)), label="k")
    genuine = make_checkpoint(key, entries[k - 1], at, pruned=k)
    if data.draw(st.booleans(), label="other key"):
        forged = make_checkpoint(other_key, entries[k - 1], at, pruned=k)
    else:
        name = data.draw(st.sampled_from(sorted(CHECKPOINT_FIELDS)), label="field")
        forged = attrs.evolve(genuine, **{name: data.draw(CHECKPOINT_FIELDS[name], label=name)})
        assume(forged != genuine)
    assert not forged.is_authentic(key)
    result = verify_chain(key, entries[k:], checkpoint=forged, head=head)
    assert_broken_at(result, 0)
    assert_broken_at(verify_chain(key, entries[k:], checkpoint=forged), 0)
    assert not make_checkpoint(key, entries[k - 1], at, pruned=k).is_authentic(other_key)


@given(data=st.data(), key=audit_keys, at=aware_datetimes)
def test_a_checkpoint_of_another_range_breaks_at_the_start(
    data: st.DataObject, key: bytes, at: datetime
) -> None:
    """Entries 1..k pruned but verified from a genuine checkpoint through j != k: broken at 0
    (older: entries j+1..k are missing; newer: the entries after it are not the next ones)."""
    entries, head = data.draw(audit_chains(key, min_size=2))
    k = data.draw(st.integers(min_value=1, max_value=len(entries)), label="k")
    j = data.draw(
        st.integers(min_value=1, max_value=len(entries)).filter(lambda j: j != k), label="j"
    )
    checkpoint = make_checkpoint(key, entries[j - 1], at, pruned=j)
    assert_broken_at(verify_chain(key, entries[k:], checkpoint=checkpoint, head=head), 0)


def test_a_checkpoint_is_normalised_to_utc_and_rejects_naive_times() -> None:
    """The checkpoint's time is one instant whatever its offset; a naive one is refused."""
    entries, _ = build_audit_chain(KEY, [AuditRecord(action="a.b", actor="x", at=AT)])
    local = AT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert make_checkpoint(KEY, entries[0], local, 1) == make_checkpoint(KEY, entries[0], AT, 1)
    with pytest.raises(ValueError, match="naive"):
        make_checkpoint(KEY, entries[0], datetime(2026, 1, 1), 1)


# --- The head -----------------------------------------------------------------------


@given(data=st.data(), keys=two_audit_keys)
def test_a_head_signed_with_another_key_fails(
    data: st.DataObject, keys: tuple[bytes, bytes]
) -> None:
    """The right position, signed with another key: broken at the end of the entries."""
    key, other_key = keys
    entries, head = data.draw(audit_chains(key, min_size=1))
    forged = ChainHead.signed(other_key, head.seq, head.mac)
    assert not forged.is_authentic(key)
    result = verify_chain(key, entries, head=forged)
    assert_broken_at(result, len(entries))
    assert result.broken is not None
    assert result.broken.seq == head.seq


@given(data=st.data(), keys=two_audit_keys)
def test_a_head_moved_back_with_a_forged_signature_fails(
    data: st.DataObject, keys: tuple[bytes, bytes]
) -> None:
    """The head rewound to an earlier entry's (seq, mac), re-signed without the key: the chain
    cut back to it fails at its end, and so does the whole chain."""
    key, other_key = keys
    entries, _ = data.draw(audit_chains(key, min_size=2))
    j = data.draw(st.integers(min_value=1, max_value=len(entries) - 1), label="j")
    seq, mac = entries[j - 1].seq, entries[j - 1].mac
    signature = data.draw(
        st.one_of(st.just(ChainHead.signed(other_key, seq, mac).signature), st.just(""), MACS)
    )
    forged = ChainHead(seq=seq, mac=mac, signature=signature)
    assume(not forged.is_authentic(key))  # a guessed MAC is never right, but say it
    assert_broken_at(verify_chain(key, entries[:j], head=forged), j)
    assert not verify_chain(key, entries, head=forged).ok


@given(data=st.data(), key=audit_keys)
def test_a_head_behind_the_entries_fails(data: st.DataObject, key: bytes) -> None:
    """An authentic but older head (say, a restored one) with more entries after it fails."""
    entries, _ = data.draw(audit_chains(key, min_size=1))
    j = data.draw(st.integers(min_value=0, max_value=len(entries) - 1), label="j")
    stale = ChainHead.signed(key, j, entries[j - 1].mac if j else GENESIS_MAC)
    result = verify_chain(key, entries, head=stale)
    assert not result.ok
    assert result.broken is not None
    assert "past its head" in result.broken.reason


def test_the_genesis_head_verifies_the_empty_chain() -> None:
    """No entries and the genesis head (which needs no signature) is a valid, empty log."""
    assert genesis_head().is_authentic(KEY)
    assert_verifies(verify_chain(KEY, [], head=genesis_head()), 0)
    assert_verifies(verify_chain(KEY, [], head=None), 0)


# --- The incremental verifier ---------------------------------------------------------


@st.composite
def _maybe_tampered(draw: st.DrawFn, key: bytes) -> Chain:
    """A chain of ``key`` and its head, perhaps with one change, deletion, insertion or swap."""
    entries, head = draw(audit_chains(key))
    return _tamper(draw, entries), head


def _tamper(draw: st.DrawFn, entries: list[AuditEntry]) -> list[AuditEntry]:
    how = draw(st.sampled_from(["none", "change", "delete", "insert", "swap", "truncate"]))
    if not entries or how == "none":
        return entries
    i = draw(st.integers(min_value=0, max_value=len(entries) - 1))
    if how == "change":
        field = draw(st.sampled_from(sorted(ENTRY_FIELDS)))
        changed = attrs.evolve(entries[i], **{field: draw(ENTRY_FIELDS[field])})
        return [*entries[:i], changed, *entries[i + 1 :]]
    if how == "delete":
        return entries[:i] + entries[i + 1 :]
    if how == "insert":
        return [*entries[:i], draw(st.sampled_from(entries)), *entries[i:]]
    if how == "swap" and i + 1 < len(entries):
        return [*entries[:i], entries[i + 1], entries[i], *entries[i + 2 :]]
    return entries[:i]


@given(data=st.data(), key=audit_keys, at=aware_datetimes)
def test_the_incremental_verifier_equals_verify_chain(
    data: st.DataObject, key: bytes, at: datetime
) -> None:
    """ChainVerifier fed entry by entry gives verify_chain's verdict; feed reports the first break
    from the entry that caused it on, unchanged."""
    entries, real_head = data.draw(_maybe_tampered(key))
    head = data.draw(
        st.one_of(st.none(), st.just(real_head), audit_chains(key).map(lambda chain: chain[1]))
    )
    checkpoint: Checkpoint | None = None
    if entries and data.draw(st.booleans(), label="pruned"):
        checkpoint = make_checkpoint(key, entries[0], at, pruned=1)
        entries = entries[1:]
    verifier = ChainVerifier(key, checkpoint)
    first_break = None
    for entry in entries:
        reported = verifier.feed(entry)
        if first_break is None:
            first_break = reported
        else:
            assert reported is first_break
        assert verifier.broken is first_break
    assert verifier.finish(head) == verify_chain(key, entries, checkpoint=checkpoint, head=head)


# --- Records ----------------------------------------------------------------------------


_ACTION_SHAPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")

BAD_ACTIONS: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            "",
            "login",
            "Auth.login",
            "auth.Login",
            "auth..login",
            "auth.",
            ".auth",
            "auth.login.",
            "auth.login\n",
            "\nauth.login",
            "auth.lo gin",
            "auth .login",
            "1auth.login",
            "auth.1login",
            "auth-x.login",
            "äuth.login",
            "auth.login\x00",
            "a." + "b" * 99,
        ]
    ),
    st.text(max_size=12).filter(lambda text: _ACTION_SHAPE.fullmatch(text) is None),
    st.none(),
    st.integers(),
    st.just(b"auth.login"),
)


def _record(**fields: Any) -> AuditRecord:
    return AuditRecord(**{"action": "auth.login", "actor": "alice", "at": AT, **fields})


@given(action=audit_actions)
def test_dotted_lower_case_actions_are_accepted(action: str) -> None:
    """Any two or more dotted lower-case words (up to 100 characters) is an action."""
    assert _record(action=action).action == action
    assert _record(action="a." + "b" * 98).action == "a." + "b" * 98


@given(action=BAD_ACTIONS)
def test_anything_else_as_action_is_invalid_input(action: Any) -> None:
    """No dot, capitals, spaces, empty words, a trailing newline, too long, not text: refused."""
    with pytest.raises(InvalidInput, match="audit action"):
        _record(action=action)


TEXT_FIELDS = st.sampled_from(["actor", "target", "source_ip"])


@given(field=TEXT_FIELDS, before=audit_texts, after=audit_texts)
def test_text_with_nul_is_invalid_input(field: str, before: str, after: str) -> None:
    """A NUL anywhere in actor, target or source IP is refused (no database text holds it)."""
    with pytest.raises(InvalidInput, match=field):
        _record(**{field: f"{before}\x00{after}"})


@given(field=TEXT_FIELDS, text=st.text(min_size=1, max_size=5))
def test_text_with_a_lone_surrogate_is_invalid_input(field: str, text: str) -> None:
    """Text that UTF-8 cannot encode (a lone surrogate, as a JSON escape can carry) is refused,
    rather than failing later when the entry's MAC is computed."""
    with pytest.raises(InvalidInput, match=field):
        _record(**{field: text[:2] + "\ud83d" + text[2:]})
    with pytest.raises(InvalidInput, match="details"):
        _record(details={"note": text + "\udc00"})
    with pytest.raises(InvalidInput, match="details"):
        _record(details={"\ud800" + text: 1})


def test_text_length_and_type_are_checked() -> None:
    """Text fields hold up to 1000 characters of str; actor is required, the others optional."""
    for field in ("actor", "target", "source_ip"):
        assert getattr(_record(**{field: "é" * 1000}), field) == "é" * 1000
        for bad in ("x" * 1001, 7, b"alice"):
            with pytest.raises(InvalidInput, match=field):
                _record(**{field: bad})
    with pytest.raises(InvalidInput, match="actor"):
        _record(actor=None)
    assert _record(target=None, source_ip=None).target is None


def test_details_are_limited_in_bytes_of_canonical_json() -> None:
    """Details of exactly MAX_DETAILS_BYTES bytes are accepted, one byte more is refused;
    multi-byte characters count as their UTF-8 bytes."""
    overhead = len(canonical_json({"x": ""}))
    fitting = {"x": "a" * (MAX_DETAILS_BYTES - overhead)}
    assert _record(details=fitting).details == fitting
    with pytest.raises(InvalidInput, match="details"):
        _record(details={"x": "a" * (MAX_DETAILS_BYTES - overhead + 1)})
    euros = (MAX_DETAILS_BYTES - overhead) // 3
    assert _record(details={"x": "€" * euros}).details == {"x": "€" * euros}
    with pytest.raises(InvalidInput, match="details"):
        _record(details={"x": "€" * (euros + 1)})


@given(details=audit_details)
def test_details_are_stored_as_storable_json(details: dict[str, Any]) -> None:
    """Details come out as a plain dict the canonical encoding accepts, and go into the MAC."""
    record = _record(details=details)
    assert isinstance(record.details, dict)
    canonical_json(record.details)
    assert _record(details=None).details == {}
    assert _record(details={"x": "a\x00b"}).details == {"x": "a\ufffdb"}


def test_a_record_needs_an_aware_time_and_keeps_it_in_utc() -> None:
    """A naive datetime is refused; an aware one is converted to UTC."""
    with pytest.raises(ValueError, match="naive"):
        _record(at=datetime(2026, 3, 1, 12, 0))
    with pytest.raises(TypeError):
        _record(at="2026-03-01T12:00:00+00:00")
    local = AT.astimezone(timezone(timedelta(hours=-3)))
    assert _record(at=local).at.tzinfo is UTC
    assert _record(at=local) == _record(at=AT)


# --- Queries -----------------------------------------------------------------------------


QUERY_FIELDS = ("action", "actor", "target", "since", "until", "limit", "before")


@given(
    known=st.dictionaries(st.sampled_from(["action", "actor"]), st.text(max_size=5), max_size=2),
    unknown=st.dictionaries(
        st.text(max_size=10).filter(lambda name: name not in QUERY_FIELDS),
        st.text(max_size=5),
        min_size=1,
        max_size=3,
    ),
)
def test_an_unknown_parameter_is_refused_by_name(
    known: dict[str, str], unknown: dict[str, str]
) -> None:
    """A parameter the query does not know is InvalidInput naming it (and the known ones)."""
    with pytest.raises(InvalidInput, match="unknown parameter") as raised:
        AuditQuery.from_params({**known, **unknown}, project_id=None)
    assert repr(min(unknown)) in str(raised.value)
    assert all(name in str(raised.value) for name in QUERY_FIELDS)


def _not_an_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


NOT_INTEGERS = st.one_of(
    st.sampled_from(["", "x", "1.5", "1e3", "0x10", "ten", "5 5"]),
    st.text(max_size=8).filter(_not_an_int),
)


@given(
    limit=st.one_of(
        NOT_INTEGERS.filter(bool),
        st.integers(max_value=0).map(str),
        st.integers(min_value=MAX_AUDIT_PAGE + 1).map(str),
    )
)
def test_a_bad_limit_is_refused(limit: str) -> None:
    """limit must be an integer from 1 to MAX_AUDIT_PAGE."""
    with pytest.raises(InvalidInput, match="limit"):
        AuditQuery.from_params({"limit": limit}, project_id=None)


@given(before=st.one_of(NOT_INTEGERS.filter(bool), st.integers(max_value=0).map(str)))
def test_a_bad_cursor_is_refused(before: str) -> None:
    """before must be a positive integer (an entry's sequence number)."""
    with pytest.raises(InvalidInput, match="before"):
        AuditQuery.from_params({"before": before}, project_id=None)


@given(
    name=st.sampled_from(["since", "until"]),
    value=st.one_of(
        st.sampled_from(["yesterday", "2026-13-01T00:00:00+00:00", "2026-01-01T25:00+00:00", "1"]),
        st.datetimes().map(datetime.isoformat),  # naive: no offset
        st.text(max_size=12).filter(lambda text: text.strip() and not text[:1].isdigit()),
    ),
)
def test_a_bad_or_naive_time_is_refused(name: str, value: str) -> None:
    """since and until must be ISO 8601 with an offset."""
    with pytest.raises(InvalidInput, match="ISO 8601"):
        AuditQuery.from_params({name: value}, project_id=None)


@given(
    limit=st.integers(min_value=1, max_value=MAX_AUDIT_PAGE),
    before=st.integers(min_value=1, max_value=10**9),
    since=aware_datetimes,
    until=aware_datetimes,
    project_id=st.one_of(st.none(), st.integers(min_value=1, max_value=9)),
)
def test_good_parameters_are_parsed(
    limit: int, before: int, since: datetime, until: datetime, project_id: int | None
) -> None:
    """Numbers and times parse (times to UTC, same instant); empty strings mean "not given"."""
    query = AuditQuery.from_params(
        {
            "limit": str(limit),
            "before": str(before),
            "since": since.isoformat(),
            "until": until.isoformat(),
            "action": "auth.",
            "actor": "",
            "target": "",
        },
        project_id=project_id,
    )
    assert (query.limit, query.before, query.project_id) == (limit, before, project_id)
    assert query.since == since
    assert query.until == until
    assert query.since is not None
    assert query.since.tzinfo is UTC
    assert (query.action, query.actor, query.target) == ("auth.", None, None)
    assert AuditQuery.from_params({}, project_id=None) == AuditQuery()


@given(key=audit_keys, record=audit_records, seq=st.integers(min_value=1, max_value=1000))
def test_matches_honours_each_filter(key: bytes, record: AuditRecord, seq: int) -> None:
    """Action: exact, or a prefix ending in "."; since inclusive, until exclusive; before is
    strictly smaller; actor, target and project exact."""
    head = ChainHead(seq=seq - 1, mac=GENESIS_MAC)
    entry, _ = chain_entry(key, head, record)
    assert entry.seq == seq
    tick = timedelta(microseconds=1)

    def matches(**fields: Any) -> bool:
        return AuditQuery(**fields).matches(entry)

    assert matches()
    first_word = record.action.split(".")[0]
    assert matches(action=record.action)
    assert matches(action=first_word + ".")
    assert matches(action=record.action.rsplit(".", 1)[0] + ".")
    assert not matches(action=first_word)
    assert not matches(action=record.action + ".")
    assert not matches(action=record.action + "x")
    assert not matches(action="zz" + first_word + ".")
    assert matches(since=record.at)
    assert not matches(since=record.at + tick)
    assert matches(until=record.at + tick)
    assert not matches(until=record.at)
    assert matches(since=record.at, until=record.at + tick)
    assert matches(before=seq + 1)
    assert not matches(before=seq)
    assert matches(actor=record.actor)
    assert not matches(actor=record.actor + "x")
    if record.target is not None:
        assert matches(target=record.target)
    assert not matches(target=(record.target or "") + "x")
    assert matches(project_id=record.project_id)
    assert not matches(project_id=(record.project_id or 0) + 1)


@given(
    records=st.lists(audit_records, min_size=1, max_size=8),
    prefix=st.sampled_from(["auth.", "tasks.", "members."]),
)
def test_an_action_prefix_selects_exactly_the_actions_that_start_with_it(
    records: list[AuditRecord], prefix: str
) -> None:
    """ "auth." selects auth.login and auth.logout, never "authx.y" or "auth" alone."""
    entries, _ = build_audit_chain(KEY, records)
    query = AuditQuery(action=prefix)
    selected = [entry for entry in entries if query.matches(entry)]
    assert selected == [entry for entry in entries if entry.record.action.startswith(prefix)]


GARBAGE = ["é" * 64, "\ud800", "", None, 5, b"0" * 64, "0" * 65]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_in_a_stored_mac_is_a_break_never_an_error(garbage: Any) -> None:
    """Non-ASCII text, lone surrogates, wrong types in a MAC or signature: reported, not raised."""
    entries, head = build_audit_chain(KEY, [_record(), _record(action="auth.logout")])
    for field in ("prev_mac", "mac"):
        tampered = [entries[0], attrs.evolve(entries[1], **{field: garbage})]
        assert_broken_at(verify_chain(KEY, tampered, head=head), 1)
    for forged_head in (attrs.evolve(head, signature=garbage), attrs.evolve(head, mac=garbage)):
        assert_broken_at(verify_chain(KEY, entries, head=forged_head), 2)
    checkpoint = make_checkpoint(KEY, entries[0], AT, pruned=1)
    for name in ("mac", "signature"):
        forged = attrs.evolve(checkpoint, **{name: garbage})
        assert not forged.is_authentic(KEY)
        assert_broken_at(verify_chain(KEY, entries[1:], checkpoint=forged, head=head), 0)
