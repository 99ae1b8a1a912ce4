"""The agent's outbound buffer: bounded, ordered, and every event accounted for."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from z4j_domain.encoding import canonical_json
from z4j_domain.protocol import OutboundBuffer, derive_agent_secret

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 30)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("ack_oldest"), st.just(0)),
        st.tuples(st.just("reconnect"), st.just(0)),
    ),
    max_size=60,
)


@given(
    ops=operations,
    capacity=st.integers(1, 50),
    max_batch=st.integers(1, 10),
    max_bytes=st.integers(10, 200),
)
def test_every_event_is_delivered_in_order_or_counted_as_dropped(
    ops: list[tuple[str, int]], capacity: int, max_batch: int, max_bytes: int
) -> None:
    """Added = acked + dropped + buffered; delivery keeps order; never over capacity."""
    buffer = OutboundBuffer(capacity=capacity, max_batch=max_batch, max_bytes=max_bytes)
    added = acked = 0
    sent: dict[int, list[int]] = {}
    delivered: list[int] = []
    for op, n in ops:
        if op == "add":
            buffer.add_many([canonical_json({"n": added + i}) for i in range(n)])
            added += n
        elif op == "take":
            batch = buffer.take()
            if batch is not None:
                assert 1 <= len(batch.events) <= max_batch
                if len(batch.events) > 1:
                    assert sum(len(e) for e in batch.events) <= max_bytes
                sent[batch.number] = [json.loads(e)["n"] for e in batch.events]
        elif op == "ack_oldest" and sent:
            number = min(sent)
            released = buffer.ack([number])
            if released:
                acked += released
                delivered.extend(sent[number])
            del sent[number]
        elif op == "reconnect":
            buffer.requeue_in_flight()
            sent.clear()
        assert len(buffer) <= capacity
        assert added == acked + buffer.dropped + len(buffer)
    assert delivered == sorted(delivered)
    assert len(set(delivered)) == len(delivered)


def test_acknowledging_an_unknown_batch_changes_nothing() -> None:
    """A stale or duplicated ack is harmless."""
    buffer = OutboundBuffer()
    buffer.add(b'{"n":1}')
    batch = buffer.take()
    assert batch is not None
    assert buffer.ack([batch.number + 7]) == 0
    assert buffer.ack([batch.number]) == 1
    assert buffer.ack([batch.number]) == 0
    assert len(buffer) == 0


def test_agent_secrets_differ_per_salt_and_instance_secret() -> None:
    """The derived secret is stable for one (secret, salt) and differs otherwise."""
    a = derive_agent_secret("instance", "salt-1")
    assert a == derive_agent_secret("instance", "salt-1")
    assert a != derive_agent_secret("instance", "salt-2")
    assert a != derive_agent_secret("other", "salt-1")
    assert len(a) == 64
