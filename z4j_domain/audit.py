"""The tamper-evident audit log: an HMAC chain of entries, its head, checkpoints and verifier.

Each :class:`AuditEntry` carries a sequence number (1, 2, 3, ... without
gaps), the previous entry's MAC and its own MAC, an HMAC-SHA256 over the
canonical encoding of everything else, keyed by :func:`audit_key` of the
instance secret. Changing, deleting, inserting or reordering an entry breaks
the chain at that entry. The chain's :class:`ChainHead` (last sequence number
and MAC, signed) lets a verifier notice entries cut off the end. Pruning old
entries leaves a signed :class:`Checkpoint` that verification starts from.

Everything here is pure: the storage adapter serializes appends and stores
what :func:`chain_entry` returns.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, optional_aware_utc
from z4j_domain.encoding import canonical_json, storable_json, utc_isoformat
from z4j_domain.errors import InvalidInput

__all__ = [
    "GENESIS_MAC",
    "AuditEntry",
    "AuditPage",
    "AuditQuery",
    "AuditRecord",
    "ChainBreak",
    "ChainHead",
    "ChainVerifier",
    "Checkpoint",
    "Verification",
    "audit_key",
    "chain_entry",
    "genesis_head",
    "make_checkpoint",
    "verify_chain",
]

#: The "previous MAC" of the first entry ever appended.
GENESIS_MAC: Final = "0" * 64
_ACTION: Final = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+$")
_MAX_TEXT: Final = 1000
#: Details of one entry, as canonical JSON, are at most this many bytes.
MAX_DETAILS_BYTES: Final = 16 * 1024
_VERSION: Final = 1


def audit_key(instance_secret: str) -> bytes:
    """The audit chain's HMAC key, derived from the instance secret (``Z4J_SECRET``).

    Derived rather than the secret itself, so the key serves one purpose only.
    Changing ``Z4J_SECRET`` makes the existing chain unverifiable.
    """
    return hmac.new(instance_secret.encode("utf-8"), b"z4j-audit-chain:v1", hashlib.sha256).digest()


def _mac(key: bytes, document: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(document), hashlib.sha256).hexdigest()


def _same(found: object, expected: str) -> bool:
    """Whether a stored MAC or signature equals ``expected``, in constant time.

    What was stored may have been tampered with: anything but ASCII text (which
    ``hmac.compare_digest`` refuses to compare as str) is compared as UTF-8 bytes,
    and a value that is not text at all is simply different.
    """
    if not isinstance(found, str):
        return False
    return hmac.compare_digest(
        found.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _signed(key: bytes, signature: object, document: Mapping[str, Any]) -> bool:
    """Whether ``signature`` is ``key``'s MAC of ``document`` (a tampered document that
    cannot even be encoded is not)."""
    try:
        expected = _mac(key, document)
    except (TypeError, ValueError):
        return False
    return _same(signature, expected)


def _action(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or len(value) > 100 or not _ACTION.fullmatch(value):
        raise InvalidInput(f"invalid audit action {value!r}: use dotted lower-case words")


def _text(_instance: Any, attribute: Any, value: Any) -> None:
    if value is None and attribute.name != "actor":
        return
    if (
        not isinstance(value, str)
        or len(value) > _MAX_TEXT
        or "\x00" in value
        or _unencodable(value)
    ):
        raise InvalidInput(f"invalid audit {attribute.name} {value!r}")


def _unencodable(value: str) -> bool:
    """Whether ``value`` holds a lone surrogate (a JSON escape can carry one): no UTF-8 for it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _details(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is not None and not isinstance(value, Mapping):
        raise InvalidInput(f"audit details must be a mapping, got {type(value).__name__}")
    try:
        encoded = canonical_json(storable_json(dict(value or {})))
    except UnicodeEncodeError:
        raise InvalidInput("audit details hold text that is not valid unicode") from None
    if len(encoded) > MAX_DETAILS_BYTES:
        raise InvalidInput(f"audit details are limited to {MAX_DETAILS_BYTES} bytes")
    # A decoded copy: the caller's (mutable) objects are not shared with the
    # record, and the record holds exactly what storage will read back.
    details: dict[str, Any] = json.loads(encoded)
    return details


@attrs.frozen(kw_only=True)
class AuditRecord:
    """What happened: the part of an entry its author supplies.

    ``actor`` names who did it (a user's email, ``cli:<login>``, ``system``);
    ``target`` what it was done to (``task:<id>``, ``agent:<name>``, ...);
    ``project_id`` is ``None`` for instance-wide actions (logins, new users).
    """

    action: str = attrs.field(validator=_action)
    actor: str = attrs.field(validator=_text)
    at: datetime = attrs.field(converter=aware_utc)
    actor_id: int | None = None
    target: str | None = attrs.field(default=None, validator=_text)
    project_id: int | None = None
    source_ip: str | None = attrs.field(default=None, validator=_text)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_details)

    def document(self) -> dict[str, Any]:
        """The record as the JSON document its MAC covers."""
        return {
            "action": self.action,
            "actor": self.actor,
            "actor_id": self.actor_id,
            "target": self.target,
            "project_id": self.project_id,
            "source_ip": self.source_ip,
            "at": utc_isoformat(self.at),
            "details": self.details,
        }


@attrs.frozen(kw_only=True)
class AuditEntry:
    """A stored link of the chain: a record, its position, and the MACs that bind it."""

    seq: int
    record: AuditRecord
    prev_mac: str
    mac: str

    def expected_mac(self, key: bytes) -> str:
        """The MAC this entry must carry, from its content and ``prev_mac``."""
        return _mac(
            key, {"v": _VERSION, "seq": self.seq, "prev": self.prev_mac, **self.record.document()}
        )


@attrs.frozen(kw_only=True)
class ChainHead:
    """The chain's newest position: its sequence number and MAC, signed.

    The empty chain's head is :func:`genesis_head` (``seq`` 0); its signature
    may be empty, since nothing can be cut from an empty chain.
    """

    seq: int
    mac: str
    signature: str = ""

    @classmethod
    def signed(cls, key: bytes, seq: int, mac: str) -> ChainHead:
        """A head at ``seq``/``mac``, signed with ``key``."""
        return cls(seq=seq, mac=mac, signature=_head_signature(key, seq, mac))

    def is_authentic(self, key: bytes) -> bool:
        """Whether the signature is right (the genesis head needs none)."""
        if self.seq == 0 and self.mac == GENESIS_MAC:
            return True
        return _signed(key, self.signature, _head_document(self.seq, self.mac))


def _head_document(seq: int, mac: str) -> dict[str, Any]:
    return {"v": _VERSION, "head": seq, "mac": mac}


def _head_signature(key: bytes, seq: int, mac: str) -> str:
    return _mac(key, _head_document(seq, mac))


def genesis_head() -> ChainHead:
    """The head of a chain with no entries."""
    return ChainHead(seq=0, mac=GENESIS_MAC)


def chain_entry(
    key: bytes, head: ChainHead | None, record: AuditRecord
) -> tuple[AuditEntry, ChainHead]:
    """The entry that appends ``record`` after ``head`` (``None``: the empty chain),
    and the chain's new head."""
    head = head or genesis_head()
    unsigned = AuditEntry(seq=head.seq + 1, record=record, prev_mac=head.mac, mac="")
    entry = attrs.evolve(unsigned, mac=unsigned.expected_mac(key))
    return entry, ChainHead.signed(key, entry.seq, entry.mac)


@attrs.frozen(kw_only=True)
class Checkpoint:
    """What pruning left in place of entries ``1..through_seq``: the last pruned MAC, signed."""

    through_seq: int
    mac: str
    at: datetime = attrs.field(converter=aware_utc)
    pruned: int
    signature: str

    def _document(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "checkpoint": self.through_seq,
            "mac": self.mac,
            "at": utc_isoformat(self.at),
            "pruned": self.pruned,
        }

    def is_authentic(self, key: bytes) -> bool:
        """Whether the signature is right."""
        return _signed(key, self.signature, self._document())


def make_checkpoint(key: bytes, last_pruned: AuditEntry, at: datetime, pruned: int) -> Checkpoint:
    """The signed checkpoint that replaces every entry up to ``last_pruned``."""
    unsigned = Checkpoint(
        through_seq=last_pruned.seq, mac=last_pruned.mac, at=at, pruned=pruned, signature=""
    )
    return attrs.evolve(unsigned, signature=_mac(key, unsigned._document()))


@attrs.frozen(kw_only=True)
class ChainBreak:
    """Where and why verification failed.

    ``position`` is the index (from 0) in the entries as read, in sequence
    order, of the first entry that does not fit; it equals the number of
    entries read when the chain ends before its head. ``seq`` is the sequence
    number that should have been there.
    """

    position: int
    seq: int
    reason: str


@attrs.frozen(kw_only=True)
class Verification:
    """The outcome of verifying a chain."""

    verified: int
    first_seq: int | None
    last_seq: int | None
    checkpoint: Checkpoint | None
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        """Whether every entry, the checkpoint and the head are as they were written."""
        return self.broken is None


class ChainVerifier:
    """Verifies a chain fed one entry at a time, in sequence order (for paging through it).

    Start from ``checkpoint`` (the newest one, when old entries were pruned),
    :meth:`feed` entries, then :meth:`finish` with the chain's head.
    """

    def __init__(self, key: bytes, checkpoint: Checkpoint | None = None) -> None:
        self._key = key
        self._checkpoint = checkpoint
        self._position = 0
        self._first: int | None = None
        self._broken: ChainBreak | None = None
        if checkpoint is None:
            self._seq, self._mac = 1, GENESIS_MAC
        else:
            self._seq, self._mac = checkpoint.through_seq + 1, checkpoint.mac
            if not checkpoint.is_authentic(key):
                self._broken = ChainBreak(
                    position=0,
                    seq=self._seq,
                    reason=f"the checkpoint through entry {checkpoint.through_seq}"
                    " is not signed with this instance's key (forged or changed)",
                )

    @property
    def broken(self) -> ChainBreak | None:
        """The first break found so far."""
        return self._broken

    def feed(self, entry: AuditEntry) -> ChainBreak | None:
        """Check the next entry; returns the first break once there is one."""
        if self._broken is not None:
            return self._broken
        reason = self._check(entry)
        if reason is not None:
            self._broken = ChainBreak(position=self._position, seq=self._seq, reason=reason)
            return self._broken
        if self._first is None:
            self._first = entry.seq
        self._position += 1
        self._seq += 1
        self._mac = entry.mac
        return None

    def _check(self, entry: AuditEntry) -> str | None:
        seq = self._seq
        if entry.seq > seq:
            missing = (
                f"entry {seq}" if entry.seq == seq + 1 else f"entries {seq} to {entry.seq - 1}"
            )
            return f"{missing} missing: the next entry found is {entry.seq} (deleted or pruned)"
        if entry.seq < seq:
            return f"entry {seq} expected, found {entry.seq} again or out of order (inserted?)"
        if not _same(entry.prev_mac, self._mac):
            return f"entry {seq} does not follow entry {seq - 1} (reordered, inserted or replaced)"
        if not _same(entry.mac, entry.expected_mac(self._key)):
            return f"entry {seq} was changed after it was written (its MAC does not match)"
        return None

    def finish(self, head: ChainHead | None) -> Verification:
        """The verdict, once every entry up to ``head`` was fed (``None``: no head to check)."""
        broken = self._broken
        if broken is None and head is not None:
            last = self._seq - 1
            if not head.is_authentic(self._key):
                broken = ChainBreak(
                    position=self._position,
                    seq=head.seq,
                    reason="the chain head is not signed with this instance's key",
                )
            elif head.seq != last or not _same(head.mac, self._mac):
                missing = (
                    f"entry {head.seq} is"
                    if head.seq == last + 1
                    else f"entries {last + 1} to {head.seq} are"
                )
                gone = (
                    f"{missing} missing from the end (the log was truncated)"
                    if head.seq > last
                    else f"the log goes on to entry {last}, past its head at {head.seq}"
                )
                broken = ChainBreak(position=self._position, seq=last + 1, reason=gone)
        return Verification(
            verified=self._position,
            first_seq=self._first,
            last_seq=None if self._first is None else self._seq - 1,
            checkpoint=self._checkpoint,
            broken=broken,
        )


def verify_chain(
    key: bytes,
    entries: Iterable[AuditEntry],
    *,
    checkpoint: Checkpoint | None = None,
    head: ChainHead | None = None,
) -> Verification:
    """Verify ``entries`` (in sequence order) from ``checkpoint`` up to ``head``."""
    verifier = ChainVerifier(key, checkpoint)
    for entry in entries:
        if verifier.feed(entry) is not None:
            break
    return verifier.finish(head)


_QUERY_FIELDS: Final = frozenset({"action", "actor", "target", "since", "until", "limit", "before"})
MAX_AUDIT_PAGE: Final = 500


def _since(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return optional_aware_utc(value)
    try:
        return aware_utc(datetime.fromisoformat(str(value)))
    except (TypeError, ValueError):
        raise InvalidInput(
            f"invalid time {value!r}: use ISO 8601 with an offset, e.g. 2026-01-01T00:00:00+00:00"
        ) from None


@attrs.frozen(kw_only=True)
class AuditQuery:
    """A filter and page over the audit log, newest entry first.

    ``action`` matches the action or, ending in ``.``, any action with that
    prefix (``"auth."``); ``actor`` and ``target`` match exactly; ``before``
    is the cursor: only entries with a smaller sequence number.
    """

    project_id: int | None = None
    action: str | None = None
    actor: str | None = None
    target: str | None = None
    since: datetime | None = attrs.field(default=None, converter=_since)
    until: datetime | None = attrs.field(default=None, converter=_since)
    before: int | None = None
    limit: int = 100

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_AUDIT_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_AUDIT_PAGE}")
        if self.before is not None and self.before < 1:
            raise InvalidInput("before must be a positive entry number")

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, project_id: int | None) -> AuditQuery:
        """Build a query from string parameters (a query string); refuse unknown ones."""
        unknown = sorted(set(params) - _QUERY_FIELDS)
        if unknown:
            expected = ", ".join(sorted(_QUERY_FIELDS))
            raise InvalidInput(f"unknown parameter {unknown[0]!r}; expected one of: {expected}")
        numbers: dict[str, int] = {}
        for name in ("limit", "before"):
            if name in params:
                try:
                    numbers[name] = int(params[name])
                except ValueError:
                    raise InvalidInput(f"{name} must be an integer, got {params[name]!r}") from None
        return cls(
            project_id=project_id,
            action=params.get("action") or None,
            actor=params.get("actor") or None,
            target=params.get("target") or None,
            since=params.get("since") or None,
            until=params.get("until") or None,
            **numbers,
        )

    def matches(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` passes the filter (ignoring the page limit)."""
        record = entry.record
        if self.project_id is not None and record.project_id != self.project_id:
            return False
        if self.action is not None:
            if self.action.endswith("."):
                if not record.action.startswith(self.action):
                    return False
            elif record.action != self.action:
                return False
        return (
            (self.actor is None or record.actor == self.actor)
            and (self.target is None or record.target == self.target)
            and (self.since is None or record.at >= self.since)
            and (self.until is None or record.at < self.until)
            and (self.before is None or entry.seq < self.before)
        )


@attrs.frozen(kw_only=True)
class AuditPage:
    """One page of the audit log, newest first; ``next_before`` continues it (``None``: done)."""

    items: list[AuditEntry]
    next_before: int | None

    @classmethod
    def of(cls, selected: list[AuditEntry], limit: int) -> AuditPage:
        """The page of ``selected`` (newest first, up to ``limit + 1`` read to know if more)."""
        items = selected[:limit]
        more = len(selected) > limit
        return cls(items=items, next_before=items[-1].seq if more else None)
