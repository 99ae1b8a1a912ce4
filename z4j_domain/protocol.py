"""What agent and brain say to each other inside frames, and the agent's delivery buffer.

The conversation on one WebSocket (every frame signed, see :mod:`z4j_domain.frames`)::

    agent                                   brain
      | -- hello {agent, hostname, ...}  -->  |   (seq 0, session "hello": no nonce yet)
      | <-- welcome {session, limits}    ---  |   (brain's seq 0, session = nonce)
      | -- events {batch, events}        -->  |   any number, pipelined
      | <-- ack {batches}                ---  |   after the batch is committed
      | -- heartbeat {worker}            -->  |
      | -- bye {reason}                  -->  |   on shutdown

An agent keeps every batch it sent in an :class:`OutboundBuffer` until the
brain acknowledges it, and resends what is left after a reconnect; the brain's
ingest is idempotent (event ids), so a resend never duplicates anything.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

import attrs

__all__ = [
    "HELLO_SESSION",
    "Batch",
    "OutboundBuffer",
    "derive_agent_secret",
]

#: The session field of an agent's hello, sent before the brain has issued a nonce.
HELLO_SESSION: Final = "hello"


def derive_agent_secret(instance_secret: str, salt: str) -> str:
    """The HMAC secret of an agent: derived from the instance secret and the agent's salt.

    The brain stores only the salt, never the secret, and recomputes the secret
    when the agent connects. Changing ``Z4J_SECRET`` therefore invalidates every
    agent's secret: mint new agents after a rotation.
    """
    return hmac.new(
        instance_secret.encode("utf-8"), b"z4j-agent-hmac:" + salt.encode("utf-8"), hashlib.sha256
    ).hexdigest()


@attrs.frozen(kw_only=True)
class Batch:
    """A numbered batch of events as the agent sends it, each event its canonical JSON bytes."""

    number: int
    events: tuple[bytes, ...]
    size: int = attrs.field(default=0)

    def encoded_body(self) -> bytes:
        """The ``events`` frame body, ``{"batch": n, "events": [...]}``, as canonical JSON.

        Built around the events' own bytes: nothing is encoded again (see
        :func:`~z4j_domain.frames.encode_frame_body`).
        """
        return b"".join(
            (b'{"batch":', str(self.number).encode("ascii"), b',"events":[',
             b",".join(self.events), b"]}")
        )  # fmt: skip


@attrs.define
class OutboundBuffer:
    """Events waiting to be sent or acknowledged, bounded in count, oldest dropped first.

    An event is held as its canonical JSON (:func:`~z4j_domain.encoding.canonical_json`
    of its dict form), encoded once where it was built: its size is its
    length, a batch's frame body is the events' bytes joined
    (:meth:`Batch.encoded_body`), and a buffer of bytes costs the garbage
    collector nothing. ``add`` queues an event; ``take`` cuts the next batch
    (at most ``max_batch`` events and about ``max_bytes`` of JSON) and keeps
    it in flight until ``ack`` removes it. ``requeue_in_flight`` (after a
    reconnect) puts every unacknowledged batch back in front, in order. When
    the buffer is full the oldest *unsent* events are dropped first, then the
    oldest in-flight batch; ``dropped`` counts every event lost that way.
    Nothing here blocks.
    """

    capacity: int = 100_000
    max_batch: int = 1_000
    max_bytes: int = 1_000_000
    dropped: int = 0
    _pending: list[bytes] = attrs.Factory(list)
    _in_flight: OrderedDict[int, Batch] = attrs.Factory(OrderedDict)
    _next_number: int = 1

    def __len__(self) -> int:
        return len(self._pending) + sum(len(b.events) for b in self._in_flight.values())

    @property
    def pending(self) -> int:
        """Events not yet sent."""
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet acknowledged."""
        return len(self._in_flight)

    def add(self, event: bytes) -> None:
        """Queue one encoded event, dropping the oldest if the buffer is full."""
        self._pending.append(event)
        self._shed()

    def add_many(self, events: Sequence[bytes]) -> None:
        """Queue several encoded events at once."""
        self._pending.extend(events)
        self._shed()

    def _shed(self) -> None:
        excess = len(self) - self.capacity
        if excess <= 0:
            return
        from_pending = min(excess, len(self._pending))
        del self._pending[:from_pending]
        self.dropped += from_pending
        excess -= from_pending
        while excess > 0 and self._in_flight:
            _, oldest = self._in_flight.popitem(last=False)
            self.dropped += len(oldest.events)
            excess -= len(oldest.events)

    def take(self) -> Batch | None:
        """Cut the next batch to send, or ``None`` if nothing is pending."""
        if not self._pending:
            return None
        count, size = 0, 0
        for event in self._pending[: self.max_batch]:
            event_size = len(event)
            if count and size + event_size > self.max_bytes:
                break
            count += 1
            size += event_size
        events = tuple(self._pending[:count])
        del self._pending[:count]
        batch = Batch(number=self._next_number, events=events, size=size)
        self._next_number += 1
        self._in_flight[batch.number] = batch
        return batch

    def ack(self, numbers: Sequence[int]) -> int:
        """Forget acknowledged batches; returns how many events they held."""
        released = 0
        for number in numbers:
            batch = self._in_flight.pop(number, None)
            if batch is not None:
                released += len(batch.events)
        return released

    def requeue_in_flight(self) -> int:
        """Put every unacknowledged batch back in front of the pending events, in order."""
        events = [event for batch in self._in_flight.values() for event in batch.events]
        self._in_flight.clear()
        self._pending[:0] = events
        return len(events)
