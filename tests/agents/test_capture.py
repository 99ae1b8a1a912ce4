"""Celery's signals become z4j task events: the right kinds, fields and canvas ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery, chord, group

from z4j_agent_celery.capture import Capture, RawEvent, chord_id_of, materialize
from z4j_agent_celery.payload import TRUNCATED
from z4j_domain.serialization import event_from_dict
from z4j_domain.tasks import EventKind


def events_of(raws: list[RawEvent], limit: int = 16_384) -> list[dict[str, Any]]:
    return [materialize(raw, max_payload_bytes=limit) for raw in raws]


@pytest.fixture
def raws() -> list[RawEvent]:
    return []


@pytest.fixture
def capture(raws: list[RawEvent]) -> Iterator[Capture]:
    capture = Capture(raws.append, hostname="celery@test")
    capture.connect()
    try:
        yield capture
    finally:
        capture.disconnect()


@pytest.fixture
def app() -> Celery:
    app = Celery(
        "capture-tests", broker="memory://", backend="cache+memory://", set_as_current=False
    )
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    return app


def test_materialize_builds_a_valid_domain_event() -> None:
    raw: RawEvent = (
        "received",
        "t1",
        1_767_225_600.5,
        {
            "name": "app.add",
            "worker": "celery@host",
            "retries": 2,
            "queue": "default",
            "routing_key": "default",
            "root_id": "r",
            "parent_id": "p",
            "group_id": "g",
            "chord": {"task": "app.total", "options": {"task_id": "c"}},
            "args": (1, object),
            "kwargs": {"when": datetime(2026, 1, 1, tzinfo=UTC)},
            "eta": datetime(2026, 1, 1, 0, 0, 5),  # naive: taken as UTC
            "expires": "2026-01-02T00:00:00+01:00",
        },
    )
    first, second = events_of([raw, raw])
    assert first["id"] != second["id"]
    uuid.UUID(first["id"])
    event = event_from_dict(first)
    assert event.kind is EventKind.RECEIVED
    assert event.timestamp == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert (event.attempt, event.retries) == (2, 2)
    assert (event.root_id, event.parent_id, event.group_id, event.chord_id) == ("r", "p", "g", "c")
    assert event.args == [1, "<class 'object'>"]
    assert event.kwargs == {"when": "2026-01-01T00:00:00+00:00"}
    assert event.eta == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert event.expires == datetime(2026, 1, 1, 23, 0, tzinfo=UTC)


def test_oversized_payloads_keep_their_types() -> None:
    raw: RawEvent = (
        "sent",
        "t",
        time.time(),
        {"args": ["x" * 5000] * 10, "kwargs": {"k": list(range(10_000))}, "result": "y" * 9000},
    )
    (event,) = events_of([raw], limit=1000)
    assert isinstance(event["args"], list)
    assert event["args"][0].startswith(TRUNCATED)
    assert isinstance(event["kwargs"], dict)
    assert TRUNCATED in str(event["kwargs"])
    assert TRUNCATED in event["result"]
    event_from_dict(event)


def test_chord_id_of() -> None:
    assert chord_id_of({"options": {"task_id": "abc"}}) == "abc"
    assert chord_id_of({"options": {}}) is None
    assert chord_id_of(None) is None
    assert chord_id_of("nope") is None


def test_a_task_that_succeeds(app: Celery, capture: Capture, raws: list[RawEvent]) -> None:
    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply((2, 3), task_id="tid-1")
    assert result.get() == 5
    events = events_of(raws)
    assert [e["kind"] for e in events] == ["started", "succeeded"]
    succeeded = events[1]
    assert succeeded["task_id"] == "tid-1"
    assert succeeded["name"] == "t.add"
    assert succeeded["result"] == 5
    assert succeeded["runtime"] >= 0
    assert succeeded["attempt"] == 0


def test_a_task_that_fails_carries_the_traceback(
    app: Celery, capture: Capture, raws: list[RawEvent]
) -> None:
    @app.task(name="t.fail")
    def fail() -> None:
        raise KeyError("missing")

    fail.apply(task_id="tid-2")
    failed = events_of(raws)[-1]
    assert failed["kind"] == "failed"
    assert failed["exception"] == "KeyError('missing')"
    assert "Traceback (most recent call last)" in failed["traceback"]
    assert 'raise KeyError("missing")' in failed["traceback"]


def test_a_retry_is_reported_with_its_attempt(
    app: Celery, capture: Capture, raws: list[RawEvent]
) -> None:
    @app.task(name="t.flaky", bind=True, max_retries=1)
    def flaky(self: Any) -> None:
        raise self.retry(exc=RuntimeError("again"), countdown=0)

    flaky.apply(task_id="tid-3")
    kinds = [(e["kind"], e["attempt"]) for e in events_of(raws)]
    assert ("retried", 0) in kinds
    retried = next(e for e in events_of(raws) if e["kind"] == "retried")
    assert retried["exception"] == "RuntimeError('again')"


def test_a_published_task_is_sent_with_args_and_canvas_ids(
    capture: Capture, raws: list[RawEvent]
) -> None:
    app = Celery(
        "publish-tests", broker="memory://", backend="cache+memory://", set_as_current=False
    )

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.total")
    def total(values: list[int]) -> int:
        return sum(values)

    add.apply_async((1, 2), {}, task_id="tid-4", queue="q1", countdown=60)
    sent = events_of(raws)[-1]
    assert sent["kind"] == "sent"
    assert (sent["task_id"], sent["name"], sent["queue"]) == ("tid-4", "t.add", "q1")
    assert sent["args"] == [1, 2]
    assert sent["kwargs"] == {}
    assert sent["eta"] > datetime.now(UTC).isoformat()
    assert sent["root_id"] == "tid-4"

    raws.clear()
    header = [add.s(1, 1).set(task_id="h1"), add.s(2, 2).set(task_id="h2")]
    chord(header, total.s().set(task_id="body"))()
    published = {e["task_id"]: e for e in events_of(raws)}
    assert set(published) == {"h1", "h2"}  # the body is sent when the header is done
    assert published["h1"]["chord_id"] == published["h2"]["chord_id"] == "body"
    assert published["h1"]["group_id"] == published["h2"]["group_id"]

    raws.clear()
    group(add.s(1, 1).set(task_id="g1"), add.s(2, 2).set(task_id="g2"))()
    members = {e["task_id"]: e for e in events_of(raws)}
    assert members["g1"]["group_id"] == members["g2"]["group_id"]
    assert "chord_id" not in members["g1"]


def test_the_main_process_signals(capture: Capture, raws: list[RawEvent]) -> None:
    """received, revoked, rejected and unknown come with worker objects; fake them here."""
    request = SimpleNamespace(
        id="tid-5",
        name="t.add",
        hostname="celery@w1",
        request_dict={"retries": 1, "group": "g1"},
        delivery_info={"routing_key": "default"},
        root_id="r1",
        parent_id="p1",
        chord=None,
        args=[1],
        kwargs={"a": 1},
        eta=None,
        expires=None,
    )
    capture.on_received(request=request)
    context = SimpleNamespace(id="tid-5", retries=1, hostname="celery@w1", delivery_info=None)
    capture.on_revoked(
        sender=SimpleNamespace(name="t.add"), request=context, terminated=True, signum=15
    )
    message = SimpleNamespace(headers={"id": "tid-6", "task": "t.x"}, delivery_info={})
    capture.on_rejected(message=message, exc=ValueError("bad"))
    capture.on_unknown(message=message, exc=KeyError("t.x"), name="t.x", id="tid-7")
    capture.on_rejected(message=SimpleNamespace(headers={}, delivery_info={}), exc=None)
    received, revoked, rejected, unknown = events_of(raws)
    assert received["kind"] == "received"
    assert (received["attempt"], received["group_id"], received["queue"]) == (1, "g1", "default")
    assert (received["args"], received["kwargs"]) == ([1], {"a": 1})
    assert revoked["kind"] == "revoked"
    assert revoked["exception"] == "revoked: terminated (signal 15)"
    assert (rejected["kind"], rejected["task_id"]) == ("rejected", "tid-6")
    assert rejected["exception"] == "ValueError('bad')"
    assert (unknown["kind"], unknown["task_id"]) == ("rejected", "tid-7")


def test_the_signal_handlers_cost_microseconds(app: Celery) -> None:
    """The task-side work is an attribute read and an append: well under 50 us a signal."""
    sink: list[RawEvent] = []
    capture = Capture(sink.append, hostname="h")
    request = SimpleNamespace(
        id="t",
        retries=0,
        hostname="h",
        delivery_info={"routing_key": "q"},
        root_id="t",
        parent_id=None,
        group=None,
        chord=None,
    )
    task = SimpleNamespace(name="t.add", request=request)
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        capture.on_prerun(sender=task, task_id="t", task=task)
        capture.on_success(sender=task, result=3)
        capture.on_postrun(task_id="t")
    per_signal = (time.perf_counter() - start) / (rounds * 3)
    assert len(sink) == rounds * 2
    assert per_signal < 50e-6, f"{per_signal * 1e6:.1f} us per signal"
