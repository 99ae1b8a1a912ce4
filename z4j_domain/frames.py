"""The agent wire protocol: versioned JSON frames, HMAC-signed, replay- and skew-checked.

A frame on the wire is one JSON object::

    {"v": 1, "type": "events", "session": "...", "seq": 7,
     "ts": "2026-03-01T12:00:00.000000+00:00", "body": {...}, "sig": "<hex>"}

``sig`` is HMAC-SHA256, keyed by the agent's secret, over the canonical
encoding (:func:`~z4j_domain.encoding.canonical_json`) of every other field.
A frame is sent as exactly those signed bytes with ``,"sig":"<hex>"`` put
before the closing brace, so a receiver authenticates the bytes as they came,
before parsing anything (:func:`decode_frame`), and a sender that already
holds its body encoded (an agent's event batch, see
:meth:`~z4j_domain.protocol.Batch.encoded_body`) signs and sends it without
encoding it again (:func:`encode_frame_body`). A frame laid out any other
way (keys in another order, other spacing) is still accepted when the
canonical encoding of its fields matches the signature.
``session`` is the nonce the brain hands out in its ``welcome`` frame, so a
frame captured on one connection is worthless on another; ``seq`` grows by at
least one per frame and direction within a session, so a frame replayed on the
same connection is refused; ``ts`` must be within :data:`MAX_SKEW` of the
receiver's clock. Both directions are signed: the agent verifies the brain's
commands the same way the brain verifies the agent's events.

Everything here is pure: the caller passes the clock's ``now`` and the secret.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, non_empty, non_negative
from z4j_domain.encoding import canonical_json, utc_isoformat
from z4j_domain.errors import Z4jError

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_SKEW",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Frame",
    "FrameRejected",
    "FrameType",
    "Rejection",
    "ReplayGuard",
    "decode_frame",
    "encode_frame",
    "encode_frame_body",
    "sign",
    "verify",
]

#: The protocol version this code speaks; a ``hello`` states the sender's.
PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
#: How far a frame's timestamp may be from the receiver's clock (the guide's "five minutes").
MAX_SKEW: Final = timedelta(minutes=5)
#: Largest frame either side accepts, in bytes of JSON text.
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024


class FrameType(enum.StrEnum):
    """What a frame carries."""

    #: agent -> brain, first frame: protocol version, agent and worker identity.
    HELLO = "hello"
    #: brain -> agent, answer to hello: the session nonce and the brain's limits.
    WELCOME = "welcome"
    #: agent -> brain: a batch of task events.
    EVENTS = "events"
    #: brain -> agent: these event batches are committed.
    ACK = "ack"
    #: agent -> brain: worker liveness and statistics.
    HEARTBEAT = "heartbeat"
    #: brain -> agent: do something (retry, cancel, ...).
    COMMAND = "command"
    #: agent -> brain: a command's progress or outcome.
    COMMAND_RESULT = "command_result"
    #: agent -> brain: a beat scheduler's whole schedule (a SchedulerReport).
    SCHEDULES = "schedules"
    #: agent -> brain: beat sent entries' tasks (:class:`~z4j_domain.beat.ScheduleFire`).
    SCHEDULE_FIRES = "schedule_fires"
    #: either way: closing on purpose (worker shutdown, brain shutdown).
    BYE = "bye"


class Rejection(enum.StrEnum):
    """Why a frame was refused; also the counter label and the close reason."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SESSION = "wrong_session"
    REPLAY = "replay"
    SKEW = "skew"


class FrameRejected(Z4jError):
    """A frame failed decoding or verification; ``reason`` says which check."""

    def __init__(self, reason: Rejection, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _body(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("a frame body must be a JSON object")
    return value


@attrs.frozen(kw_only=True)
class Frame:
    """One protocol message, before signing or after verification."""

    type: FrameType = attrs.field(converter=FrameType)
    session: str = attrs.field(validator=non_empty)
    seq: int = attrs.field(validator=non_negative)
    ts: datetime = attrs.field(converter=aware_utc)
    body: Mapping[str, Any] = attrs.field(factory=dict, converter=_body)
    v: int = PROTOCOL_VERSION

    def signed_fields(self) -> dict[str, Any]:
        """The fields the signature covers, as JSON types."""
        return {
            "v": self.v,
            "type": self.type.value,
            "session": self.session,
            "seq": self.seq,
            "ts": utc_isoformat(self.ts),
            "body": self.body,
        }


def sign(frame: Frame, secret: bytes) -> str:
    """The hex HMAC-SHA256 of the frame's canonical encoding under ``secret``."""
    return hmac.new(secret, canonical_json(frame.signed_fields()), hashlib.sha256).hexdigest()


def encode_frame(frame: Frame, secret: bytes) -> str:
    """The frame as signed JSON text, ready to send."""
    return encode_frame_body(
        type=frame.type,
        session=frame.session,
        seq=frame.seq,
        ts=frame.ts,
        body=canonical_json(frame.body),
        secret=secret,
        v=frame.v,
    ).decode("utf-8")


def encode_frame_body(
    *,
    type: FrameType,
    session: str,
    seq: int,
    ts: datetime,
    body: bytes,
    secret: bytes,
    v: int = PROTOCOL_VERSION,
) -> bytes:
    """A signed frame around a body that is already canonical JSON (``canonical_json`` bytes).

    The canonical encoding of the frame's fields is put together around the
    body's bytes, so a body encoded beforehand (an agent's event batch) is
    neither decoded nor encoded again; the signature goes before the closing
    brace.
    """
    # Canonical key order: "body" < "seq" < "session" < "ts" < "type" < "v".
    rest = canonical_json(
        {
            "seq": seq,
            "session": session,
            "ts": utc_isoformat(aware_utc(ts)),
            "type": FrameType(type).value,
            "v": v,
        }
    )
    signed = b"".join((b'{"body":', body, b",", rest[1:]))
    signature = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return b"".join((signed[:-1], b',"sig":"', signature.encode("ascii"), b'"}'))


_FIELDS: Final = frozenset({"v", "type", "session", "seq", "ts", "body", "sig"})
#: ``,"sig":"`` + 64 hex digits + ``"}``: how a frame laid out by :func:`encode_frame_body` ends.
_SIG_TAIL: Final = len(b',"sig":"') + 64 + len(b'"}')


def _signed_as_sent(data: bytes, secret: bytes) -> bool:
    """Whether ``data`` is signed bytes with their signature appended (the fast check)."""
    if len(data) <= _SIG_TAIL or not data.endswith(b'"}'):
        return False
    tail = data[-_SIG_TAIL:]
    if not tail.startswith(b',"sig":"'):
        return False
    expected = hmac.new(secret, data[:-_SIG_TAIL] + b"}", hashlib.sha256).hexdigest()
    return hmac.compare_digest(tail[8:-2], expected.encode("ascii"))


def decode_frame(text: str | bytes, secret: bytes) -> Frame:
    """Parse and authenticate one frame; raise :class:`FrameRejected` on any problem.

    Checks size, JSON shape, protocol version, signature and field types, in that order. It
    does not check the session, sequence or clock: that is :func:`verify`'s job,
    with the connection's state.
    """
    if len(text) > MAX_FRAME_BYTES:
        raise FrameRejected(Rejection.TOO_LARGE, f"{len(text)} bytes > {MAX_FRAME_BYTES}")
    try:
        raw = text.encode("utf-8") if isinstance(text, str) else text
    except UnicodeEncodeError:  # lone surrogates: no agent sent that
        raw = b""
    # The bytes as sent, authenticated before parsing; else the canonical check below.
    authenticated = _signed_as_sent(raw, secret)
    try:
        data = json.loads(raw or text)
    except (ValueError, UnicodeDecodeError) as error:
        raise FrameRejected(Rejection.MALFORMED, f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise FrameRejected(Rejection.MALFORMED, "a frame must be a JSON object")
    if set(data) != _FIELDS:
        missing = sorted(_FIELDS - set(data))
        extra = sorted(set(data) - _FIELDS)
        raise FrameRejected(Rejection.MALFORMED, f"fields missing {missing}, unexpected {extra}")
    version = data["v"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise FrameRejected(
            Rejection.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this side speaks "
            f"{sorted(SUPPORTED_VERSIONS)}",
        )
    signature = data.pop("sig")
    if not authenticated:
        # Authenticate the fields exactly as received, before building anything from them.
        expected = hmac.new(secret, canonical_json(data), hashlib.sha256).hexdigest()
        if not isinstance(signature, str) or not hmac.compare_digest(
            signature.encode("utf-8", "replace"), expected.encode("ascii")
        ):
            raise FrameRejected(
                Rejection.BAD_SIGNATURE, "signature does not match the agent's secret"
            )
    try:
        if type(data["seq"]) is not int:
            raise TypeError("seq must be an integer")
        if not isinstance(data["ts"], str):
            raise TypeError("ts must be an ISO 8601 string")
        return Frame(
            v=version,
            type=data["type"],
            session=data["session"],
            seq=data["seq"],
            ts=datetime.fromisoformat(data["ts"]),
            body=data["body"],
        )
    except (TypeError, ValueError) as error:
        raise FrameRejected(Rejection.MALFORMED, str(error)) from None


@attrs.define
class ReplayGuard:
    """Per-connection, per-direction state: the session and the last sequence accepted."""

    session: str
    last_seq: int = -1

    def check(self, frame: Frame, now: datetime, *, max_skew: timedelta = MAX_SKEW) -> None:
        """Accept ``frame`` (and remember its sequence) or raise :class:`FrameRejected`."""
        if not hmac.compare_digest(frame.session.encode(), self.session.encode()):
            raise FrameRejected(Rejection.WRONG_SESSION, "frame belongs to another session")
        if frame.seq <= self.last_seq:
            raise FrameRejected(
                Rejection.REPLAY, f"sequence {frame.seq} after {self.last_seq} was already used"
            )
        skew = abs(aware_utc(now) - frame.ts)
        if skew > max_skew:
            raise FrameRejected(
                Rejection.SKEW,
                f"timestamp {utc_isoformat(frame.ts)} is {skew.total_seconds():.0f}s from this "
                f"side's clock (limit {max_skew.total_seconds():.0f}s); run NTP on both hosts",
            )
        self.last_seq = frame.seq


def verify(text: str | bytes, secret: bytes, guard: ReplayGuard, now: datetime) -> Frame:
    """Decode, authenticate and replay/skew-check one received frame."""
    frame = decode_frame(text, secret)
    guard.check(frame, now)
    return frame
