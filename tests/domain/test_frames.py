"""Frame signing and verification: tampering, replay and clock skew are refused."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.strategies import BASE_TIME, json_values
from z4j_domain.encoding import canonical_json
from z4j_domain.frames import (
    MAX_FRAME_BYTES,
    Frame,
    FrameRejected,
    FrameType,
    Rejection,
    ReplayGuard,
    decode_frame,
    encode_frame,
    encode_frame_body,
    sign,
    verify,
)
from z4j_domain.protocol import Batch
from z4j_domain.testing import FakeClock

SECRET = b"agent-secret-0123456789"

frames = st.builds(
    Frame,
    type=st.sampled_from(FrameType),
    session=st.text(min_size=1, max_size=20),
    seq=st.integers(min_value=0, max_value=2**40),
    ts=st.integers(-240, 240).map(lambda s: BASE_TIME + timedelta(seconds=s)),
    body=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


def _guard(frame: Frame) -> ReplayGuard:
    return ReplayGuard(session=frame.session)


@given(frame=frames)
def test_a_signed_frame_verifies_to_itself(frame: Frame) -> None:
    """encode -> verify gives back the same frame."""
    assert verify(encode_frame(frame, SECRET), SECRET, _guard(frame), BASE_TIME) == frame


def _signed_canonical(frame: Frame) -> bytes:
    """The expected wire bytes, built from the whole frame's canonical encoding and ``sign``."""
    signed = canonical_json(frame.signed_fields())
    return signed[:-1] + b',"sig":"' + sign(frame, SECRET).encode("ascii") + b'"}'


@given(frame=frames)
def test_a_frame_is_sent_as_its_signed_canonical_bytes(frame: Frame) -> None:
    """The wire text is the canonical encoding with the signature put before the last brace."""
    text = encode_frame(frame, SECRET)
    assert text.encode("utf-8") == _signed_canonical(frame)


@given(frame=frames)
def test_a_body_encoded_beforehand_gives_the_same_frame(frame: Frame) -> None:
    """Put together around ``canonical_json(body)``, the frame is the whole frame's canonical
    encoding, byte for byte, and verifies to the frame."""
    encoded = encode_frame_body(
        type=frame.type,
        session=frame.session,
        seq=frame.seq,
        ts=frame.ts,
        body=canonical_json(frame.body),
        secret=SECRET,
    )
    assert encoded == _signed_canonical(frame)
    assert verify(encoded, SECRET, _guard(frame), BASE_TIME) == frame


@given(
    number=st.integers(0, 2**40),
    events=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=5),
)
def test_a_batch_body_is_the_canonical_encoding_of_its_events(
    number: int, events: list[dict[str, Any]]
) -> None:
    """Joining the events' own bytes gives what encoding the body whole gives."""
    batch = Batch(number=number, events=tuple(canonical_json(e) for e in events))
    assert batch.encoded_body() == canonical_json({"batch": number, "events": events})


@given(frame=frames, indent=st.sampled_from([None, 1]), sort=st.booleans())
def test_a_frame_laid_out_otherwise_still_verifies(
    frame: Frame, indent: int | None, sort: bool
) -> None:
    """Key order and spacing are not signed: the canonical check accepts any layout."""
    wire = json.loads(encode_frame(frame, SECRET))
    text = json.dumps(dict(reversed(wire.items())), indent=indent, sort_keys=sort)
    assert decode_frame(text, SECRET) == frame


@given(frame=frames, data=st.data())
def test_a_signature_moved_onto_other_bytes_is_rejected(frame: Frame, data: st.DataObject) -> None:
    """The fast check on the bytes as sent authenticates those bytes, nothing else."""
    text = encode_frame(frame, SECRET)
    other = data.draw(frames)
    assume(other != frame)
    signature = json.loads(text)["sig"]
    forged = encode_frame(other, b"another secret")[:-66] + signature + '"}'
    with pytest.raises(FrameRejected) as caught:
        decode_frame(forged, SECRET)
    assert caught.value.reason is Rejection.BAD_SIGNATURE


@given(
    frame=frames,
    field=st.sampled_from(["v", "type", "session", "seq", "ts", "body"]),
    replacement=st.one_of(
        json_values, st.sampled_from(["events", "ack", "2026-03-01T12:00:01+00:00"])
    ),
)
def test_any_change_to_a_signed_field_is_rejected(
    frame: Frame, field: str, replacement: Any
) -> None:
    """Replacing any covered field's value, keeping the signature, never verifies."""
    wire = json.loads(encode_frame(frame, SECRET))
    assume(json.dumps(wire[field], sort_keys=True) != json.dumps(replacement, sort_keys=True))
    wire[field] = replacement
    with pytest.raises(FrameRejected):
        decode_frame(json.dumps(wire), SECRET)


@given(frame=frames, data=st.data())
def test_flipping_any_character_is_rejected_or_changes_nothing(
    frame: Frame, data: st.DataObject
) -> None:
    """A corrupted frame is refused unless it still means exactly the signed content."""
    text = encode_frame(frame, SECRET)
    at = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.characters(codec="utf-8"))
    assume(char != text[at])
    corrupted = text[:at] + char + text[at + 1 :]
    try:
        decoded = decode_frame(corrupted, SECRET)
    except FrameRejected:
        return
    assert decoded == frame


@given(frame=frames)
def test_a_frame_signed_with_another_secret_is_rejected(frame: Frame) -> None:
    """Only the agent's own secret produces a valid signature."""
    with pytest.raises(FrameRejected) as caught:
        decode_frame(encode_frame(frame, b"someone-else"), SECRET)
    assert caught.value.reason is Rejection.BAD_SIGNATURE


@given(frame=frames, earlier=st.integers(min_value=0, max_value=2**40))
def test_replays_and_old_sequences_are_rejected(frame: Frame, earlier: int) -> None:
    """The same frame twice, or any sequence not above the last, is a replay."""
    guard = _guard(frame)
    text = encode_frame(frame, SECRET)
    verify(text, SECRET, guard, BASE_TIME)
    with pytest.raises(FrameRejected) as caught:
        verify(text, SECRET, guard, BASE_TIME)
    assert caught.value.reason is Rejection.REPLAY
    older = Frame(type=frame.type, session=frame.session, seq=min(earlier, frame.seq), ts=frame.ts)
    with pytest.raises(FrameRejected) as caught:
        verify(encode_frame(older, SECRET), SECRET, guard, BASE_TIME)
    assert caught.value.reason is Rejection.REPLAY


@given(frame=frames, other=st.text(min_size=1, max_size=20))
def test_a_frame_from_another_session_is_rejected(frame: Frame, other: str) -> None:
    """A frame captured on one connection is refused on another."""
    assume(other != frame.session)
    with pytest.raises(FrameRejected) as caught:
        verify(encode_frame(frame, SECRET), SECRET, ReplayGuard(session=other), BASE_TIME)
    assert caught.value.reason is Rejection.WRONG_SESSION


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(minutes=4), True),
        (timedelta(minutes=-4), True),
        (timedelta(minutes=5), True),
        (timedelta(minutes=5, seconds=1), False),
        (timedelta(minutes=-5, seconds=-1), False),
    ],
)
def test_the_skew_window_is_five_minutes(offset: timedelta, accepted: bool) -> None:
    """A frame 5 minutes + 1 s away from the receiver's clock is refused; 4 minutes is fine."""
    clock = FakeClock(BASE_TIME)
    frame = Frame(type=FrameType.EVENTS, session="s", seq=1, ts=clock.now() - offset)
    text = encode_frame(frame, SECRET)
    if accepted:
        assert verify(text, SECRET, ReplayGuard(session="s"), clock.now()) == frame
    else:
        with pytest.raises(FrameRejected) as caught:
            verify(text, SECRET, ReplayGuard(session="s"), clock.now())
        assert caught.value.reason is Rejection.SKEW
        assert "NTP" in caught.value.detail


def test_a_skewed_frame_does_not_consume_its_sequence() -> None:
    """A refused frame leaves the guard as it was: the agent can resend after fixing its clock."""
    guard = ReplayGuard(session="s")
    late = Frame(type=FrameType.EVENTS, session="s", seq=3, ts=BASE_TIME - timedelta(hours=1))
    with pytest.raises(FrameRejected):
        verify(encode_frame(late, SECRET), SECRET, guard, BASE_TIME)
    fixed = Frame(type=FrameType.EVENTS, session="s", seq=3, ts=BASE_TIME)
    assert verify(encode_frame(fixed, SECRET), SECRET, guard, BASE_TIME) == fixed


def test_an_unsupported_version_is_refused_with_a_clear_reason() -> None:
    """A hello from a future protocol says which versions this side speaks."""
    frame = Frame(type=FrameType.HELLO, session="s", seq=0, ts=BASE_TIME, v=99)
    with pytest.raises(FrameRejected) as caught:
        decode_frame(encode_frame(frame, SECRET), SECRET)
    assert caught.value.reason is Rejection.UNSUPPORTED_VERSION
    assert "99" in caught.value.detail
    assert "[1]" in caught.value.detail


@given(garbage=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_garbage_is_rejected_never_crashes(garbage: str | bytes) -> None:
    """Whatever arrives on the socket, the only failure is FrameRejected."""
    with pytest.raises(FrameRejected):
        decode_frame(garbage, SECRET)


def test_oversized_frames_are_rejected_before_parsing() -> None:
    """A frame over the size limit is refused without being decoded."""
    with pytest.raises(FrameRejected) as caught:
        decode_frame("x" * (MAX_FRAME_BYTES + 1), SECRET)
    assert caught.value.reason is Rejection.TOO_LARGE
