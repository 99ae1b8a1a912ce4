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
from celery.worker.request import Request
from hypothesis import given
from hypothesis import strategies as st
from kombu import Message
from kombu.utils.json import dumps

from z4j_agent_celery.capture import (
    MAX_EXCEPTION_CHARS,
    MAX_TRACEBACK_CHARS,
    Capture,
    RawEvent,
    attempt_of,
    chord_id_of,
    materialize,
    redact_event_dict,
)
from z4j_agent_celery.payload import TRUNCATED
from z4j_domain.redaction import (
    DEFAULT_POLICY,
    REDACTED,
    RedactionPolicy,
    RedactionSettings,
    redact_event,
)
from z4j_domain.serialization import event_from_dict, event_to_dict
from z4j_domain.tasks import RETRY_OF_HEADER, EventKind

FLAGS = ("redacted", "truncated", "arguments_redacted", "arguments_truncated")


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
    assert (event.attempt, event.retries) == (4, 2)  # 2 * retries: not a redelivery
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
    @app.task(name="t.add", shared=False)
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
    @app.task(name="t.fail", shared=False)
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
    @app.task(name="t.flaky", bind=True, max_retries=1, shared=False)
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

    @app.task(name="t.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.total", shared=False)
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
    assert (received["attempt"], received["group_id"], received["queue"]) == (2, "g1", "default")
    assert (received["args"], received["kwargs"]) == ([1], {"a": 1})
    assert revoked["kind"] == "revoked"
    assert revoked["exception"] == "revoked: terminated (signal 15)"
    assert (rejected["kind"], rejected["task_id"]) == ("rejected", "tid-6")
    assert rejected["exception"] == "ValueError('bad')"
    assert (unknown["kind"], unknown["task_id"]) == ("rejected", "tid-7")


def test_the_signal_handlers_serialize_nothing_on_the_tasks_thread(app: Celery) -> None:
    """The task-side work is attribute reads and an append: the task's own objects are handed
    on untouched (no repr, no JSON, no copy), to be built into events off the task's thread."""

    class Watched:
        touched = 0

        def __repr__(self) -> str:
            Watched.touched += 1
            return "watched"

        def __iter__(self) -> Any:
            Watched.touched += 1
            return iter(())

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
    result = Watched()
    capture.on_prerun(sender=task, task_id="t", task=task)
    capture.on_success(sender=task, result=result)
    capture.on_postrun(task_id="t")
    assert [kind for kind, *_ in sink] == ["started", "succeeded"]
    assert sink[1][3]["result"] is result
    assert Watched.touched == 0
    (built,) = events_of([sink[1]])
    assert built["result"] == "watched"  # built later, by materialize
    assert Watched.touched == 1


# -- delivery attempts ------------------------------------------------------------------


def test_the_attempt_rule() -> None:
    """2 * retries, plus one for a redelivery: a redelivered run outranks the run it replaces."""
    assert [attempt_of(r, False) for r in range(3)] == [0, 2, 4]
    assert [attempt_of(r, True) for r in range(3)] == [1, 3, 5]
    for fields, attempt in (
        ({"retries": 0}, 0),
        ({"retries": 0, "redelivered": True}, 1),
        ({"retries": 3}, 6),
        ({"retries": 3, "redelivered": True}, 7),
        ({"retries": 3, "redelivered": "yes"}, 6),  # only a real True counts
        ({"retries": -1}, 0),
        ({}, 0),
    ):
        (event,) = events_of([("started", "t", time.time(), fields)])
        assert event["attempt"] == attempt, fields
        assert event.get("retries", 0) == max(0, fields.get("retries", 0))


def message_for(
    app: Celery,
    name: str,
    task_id: str,
    *,
    retries: int = 0,
    redelivered: bool,
    headers: dict[str, Any] | None = None,
    **call: Any,
) -> Message:
    """A real task message as a worker receives it, with the broker's ``redelivered`` mark.

    ``headers`` are custom ones, merged in as ``apply_async(headers=...)`` merges them.
    """
    sent = app.amqp.as_task_v2(task_id, name, retries=retries, **call)
    return Message(
        body=dumps(sent.body),
        headers={**sent.headers, **(headers or {})},
        properties=sent.properties,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info={"routing_key": "q", "redelivered": redelivered},
    )


@pytest.mark.parametrize(("redelivered", "attempt"), [(False, 4), (True, 5)])
def test_a_redelivered_message_is_a_new_attempt(
    app: Celery, capture: Capture, raws: list[RawEvent], redelivered: bool, attempt: int
) -> None:
    """received (the consumer's Request) and the run (the task's context) both see it."""

    @app.task(name="t.add-redelivered", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    message = message_for(
        app, "t.add-redelivered", "tid-r", retries=2, redelivered=redelivered, args=(1, 2)
    )
    request = Request(message, app=app, hostname="celery@w1", task=add)
    capture.on_received(request=request)
    assert request.execute() == 3
    events = events_of(raws)
    assert [e["kind"] for e in events] == ["received", "started", "succeeded"]
    assert {(e["attempt"], e["retries"]) for e in events} == {(attempt, 2)}


def test_sent_events_are_never_redeliveries(capture: Capture, raws: list[RawEvent]) -> None:
    app = Celery("sent-tests", broker="memory://", set_as_current=False)

    @app.task(name="t.add-sent", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    add.apply_async((1, 2), task_id="tid-s", retries=3)
    (sent,) = events_of(raws)
    assert (sent["kind"], sent["attempt"], sent["retries"]) == ("sent", 6, 3)


# -- retries by z4j (the z4j_retry_of header) -------------------------------------------


def test_a_task_republished_by_z4j_says_so_in_every_event(
    capture: Capture, raws: list[RawEvent]
) -> None:
    """The header travels through a real broker: sent, received and the run all carry it."""
    app = Celery("retry-of-tests", broker="memory://", set_as_current=False)

    @app.task(name="t.add-retry-of", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    # The memory transport is one per process: a queue of its own keeps other tests' messages out.
    queue_name = f"retry-of-{uuid.uuid4().hex}"
    add.apply_async(
        (1, 2), task_id="tid-new", queue=queue_name, headers={RETRY_OF_HEADER: "tid-orig"}
    )
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(queue_name, no_ack=True)
        message = queue.get(timeout=1)
        queue.close()
    request = Request(message, app=app, hostname="celery@w1", task=add)
    capture.on_received(request=request)
    assert request.execute() == 3
    events = events_of(raws)
    assert [e["kind"] for e in events] == ["sent", "received", "started", "succeeded"]
    assert {(e["task_id"], e["retry_of"]) for e in events} == {("tid-new", "tid-orig")}
    assert event_from_dict(events[0]).retry_of == "tid-orig"


def test_a_failing_retry_and_an_eager_one_carry_retry_of(
    app: Celery, capture: Capture, raws: list[RawEvent]
) -> None:
    """The failure handler reads the task's context; eager runs keep the header in ``headers``."""

    @app.task(name="t.fail-retry-of", shared=False)
    def fail() -> None:
        raise KeyError("missing")

    message = message_for(
        app, "t.fail-retry-of", "tid-f", redelivered=False, headers={RETRY_OF_HEADER: "tid-o"}
    )
    Request(message, app=app, hostname="celery@w1", task=fail).execute()
    fail.apply(task_id="tid-e", headers={RETRY_OF_HEADER: "tid-o"})
    events = events_of(raws)
    assert [(e["kind"], e["task_id"]) for e in events] == [
        ("started", "tid-f"),
        ("failed", "tid-f"),
        ("started", "tid-e"),
        ("failed", "tid-e"),
    ]
    assert {e["retry_of"] for e in events} == {"tid-o"}


def test_tasks_not_retried_by_z4j_have_no_retry_of(
    app: Celery, capture: Capture, raws: list[RawEvent]
) -> None:
    @app.task(name="t.plain", shared=False)
    def plain() -> int:
        return 1

    plain.apply(task_id="tid-plain")
    message = message_for(app, "t.plain", "tid-plain-2", redelivered=False)
    request = Request(message, app=app, hostname="celery@w1", task=plain)
    capture.on_received(request=request)
    request.execute()
    events = events_of(raws)
    assert len(events) == 5
    assert not any("retry_of" in e for e in events)


def test_a_rejected_message_keeps_retry_of(capture: Capture, raws: list[RawEvent]) -> None:
    headers = {"id": "tid-x", "task": "t.gone", RETRY_OF_HEADER: "tid-o"}
    capture.on_unknown(
        message=SimpleNamespace(headers=headers, delivery_info={}), exc=KeyError("t.gone")
    )
    (rejected,) = events_of(raws)
    assert (rejected["kind"], rejected["retry_of"]) == ("rejected", "tid-o")


@pytest.mark.parametrize("value", ["", "x" * 256, 42, ["tid-o"], None])
def test_a_retry_of_that_cannot_be_an_id_is_dropped_not_the_event(value: object) -> None:
    (event,) = events_of([("sent", "t", time.time(), {"name": "t.add", "retry_of": value})])
    assert "retry_of" not in event
    assert event_from_dict(event).name == "t.add"


def test_the_longest_id_is_kept() -> None:
    longest = "x" * 255
    (event,) = events_of([("sent", "t", time.time(), {"retry_of": longest})])
    assert event["retry_of"] == longest


# -- redaction and size limits ----------------------------------------------------------


def test_credentials_are_redacted_and_flagged() -> None:
    raw: RawEvent = (
        "received",
        "t",
        time.time(),
        {
            "name": "t.login",
            "args": ["postgres://app:hunter2@db/app"],
            "kwargs": {"password": "hunter2", "user": "ann"},
        },
    )
    (event,) = events_of([raw])
    assert event["args"] == [f"postgres://app:{REDACTED}@db/app"]
    assert event["kwargs"] == {"password": REDACTED, "user": "ann"}
    assert (event["redacted"], event["arguments_redacted"]) == (True, True)
    assert not any(flag in event for flag in ("truncated", "arguments_truncated"))
    assert event_from_dict(event).arguments_redacted


def test_a_secret_in_a_result_or_exception_is_not_an_argument() -> None:
    raw: RawEvent = (
        "failed",
        "t",
        time.time(),
        {
            "name": "t.call",
            "result": {"token": "abc123"},
            "exception": "PermissionError('Authorization: Bearer abcdef123456')",
            "traceback": "Traceback ...\n    api_key = 'sk_live_0123456789abcdefghij'\n",
        },
    )
    (event,) = events_of([raw])
    assert event["result"] == {"token": REDACTED}
    assert "abcdef123456" not in event["exception"]
    assert "sk_live_0123456789abcdefghij" not in event["traceback"]
    assert event["redacted"] is True
    assert not any(event.get(flag) for flag in ("truncated", "arguments_redacted"))


def test_nothing_to_redact_sets_no_flag() -> None:
    raw = ("succeeded", "t", time.time(), {"args": [1, "a"], "kwargs": {"n": 2}, "result": 3})
    (event,) = events_of([raw])
    assert not any(flag in event for flag in FLAGS)
    assert (event["args"], event["kwargs"], event["result"]) == ([1, "a"], {"n": 2}, 3)


@pytest.mark.parametrize(
    ("fields", "flags"),
    [
        ({"args": ["x" * 5000]}, {"truncated", "arguments_truncated"}),
        ({"kwargs": {"k": list(range(10_000))}}, {"truncated", "arguments_truncated"}),
        ({"kwargs": {f"k{n}": n for n in range(300)}}, {"truncated", "arguments_truncated"}),
        ({"args": [object()] * 3}, set()),  # a repr, but nothing cut
        ({"result": "y" * 9000}, {"truncated"}),
        ({"result": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}, {"truncated"}),
        ({"exception": "E" * (MAX_EXCEPTION_CHARS + 1)}, {"truncated"}),
        ({"exception": "E" * MAX_EXCEPTION_CHARS}, set()),
        ({"traceback": "T" * (MAX_TRACEBACK_CHARS + 1)}, {"truncated"}),
        ({"args": ["x" * 100], "result": "y" * 100}, set()),
    ],
)
def test_the_agents_own_limits_set_the_truncated_flags(
    fields: dict[str, Any], flags: set[str]
) -> None:
    (event,) = events_of([("succeeded", "t", time.time(), fields)], limit=1000)
    assert {flag for flag in FLAGS if event.get(flag)} == flags
    assert event_from_dict(event).truncated is ("truncated" in flags)


def test_a_project_policy_adds_to_the_defaults() -> None:
    settings = RedactionSettings(
        extra_key_patterns=["pin"],
        extra_value_patterns=[r"ACME-\d{6}"],
        fully_redacted_tasks=["t.medical"],
    )
    policy = settings.policy()
    raw: RawEvent = (
        "received",
        "t",
        time.time(),
        {"name": "t.pay", "kwargs": {"pin": 1234, "ref": "order ACME-123456", "password": "x"}},
    )
    (default,) = [materialize(raw, max_payload_bytes=16_384)]
    assert default["kwargs"] == {"pin": 1234, "ref": "order ACME-123456", "password": REDACTED}
    project = materialize(raw, max_payload_bytes=16_384, policy=policy)
    assert project["kwargs"] == {"pin": REDACTED, "ref": f"order {REDACTED}", "password": REDACTED}
    medical: RawEvent = (
        "succeeded",
        "t",
        time.time(),
        {"name": "t.medical", "args": ["ann", 42], "kwargs": {"dx": "flu"}, "result": "ok"},
    )
    whole = materialize(medical, max_payload_bytes=16_384, policy=policy)
    assert whole["args"] == [REDACTED, REDACTED]
    assert whole["kwargs"] == {"dx": REDACTED}
    assert whole["result"] == REDACTED
    assert whole["arguments_redacted"] is True


def test_a_task_marked_fully_redacted_in_code(
    app: Celery, capture: Capture, raws: list[RawEvent]
) -> None:
    """``@app.task(z4j_fully_redacted=True)``: every event of it, in every handler."""

    @app.task(name="t.private-failing", z4j_fully_redacted=True, shared=False)
    def private(name: str, age: int = 0) -> dict[str, Any]:
        raise ValueError(f"no record for {name}")

    message = message_for(
        app, "t.private-failing", "tid-p", redelivered=False, args=("ann",), kwargs={"age": 42}
    )
    request = Request(message, app=app, hostname="celery@w1", task=private)
    capture.on_received(request=request)
    request.execute()
    received, started, failed = events_of(raws)
    assert received["args"] == [REDACTED]
    assert received["kwargs"] == {"age": REDACTED}
    assert (received["redacted"], received["arguments_redacted"]) == (True, True)
    assert failed["kind"] == "failed"
    assert failed["exception"] == "ValueError('no record for ann')"  # ordinary rules only
    assert "redacted" not in started

    raws.clear()
    private.apply(("bob",), {"age": 7}, task_id="tid-q")
    assert [e["kind"] for e in events_of(raws)] == ["started", "failed"]


def test_a_fully_redacted_task_is_sent_redacted(raws: list[RawEvent]) -> None:
    app = Celery("sent-redacted", broker="memory://", set_as_current=False)

    @app.task(name="t.private-sent", z4j_fully_redacted=True, shared=False)
    def private(name: str) -> None:
        return None

    @app.task(name="t.public-sent", shared=False)
    def public(name: str) -> None:
        return None

    # The worker passes app.tasks; a plain mapping here keeps other tests' shared
    # tasks from being registered into this app when it finalizes.
    tasks = {"t.private-sent": private, "t.public-sent": public}
    capture = Capture(raws.append, hostname="celery@test", tasks=tasks)
    capture.connect()
    try:
        private.apply_async(("ann",), task_id="tid-1")
        public.apply_async(("ann",), task_id="tid-2")
    finally:
        capture.disconnect()
    hidden, shown = events_of(raws)
    assert (hidden["args"], hidden["arguments_redacted"]) == ([REDACTED], True)
    assert (shown["args"], shown.get("redacted")) == (["ann"], None)


def test_a_successful_fully_redacted_run(
    app: Celery, capture: Capture, raws: list[RawEvent]
) -> None:
    @app.task(name="t.private-ok", z4j_fully_redacted=True, shared=False)
    def private(name: str) -> str:
        return f"hello {name}"

    private.apply(("ann",), task_id="tid-s")
    _started, succeeded = events_of(raws)
    assert (succeeded["kind"], succeeded["result"], succeeded["redacted"]) == (
        "succeeded",
        REDACTED,
        True,
    )
    assert "arguments_redacted" not in succeeded


# -- the second pass over event dicts ---------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["password", "pin", "user", "apiKey", "note", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_texts = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.sampled_from(["token=abc123", "Bearer abcdefgh12345678", "pin: 1234", "plain"]),
)
_POLICIES = [
    DEFAULT_POLICY,
    RedactionSettings(extra_key_patterns=["pin"], fully_redacted_tasks=["t.b"]).policy(),
    RedactionPolicy(max_depth=3, max_nodes=5),
]


@given(
    args=st.none() | st.lists(_json, max_size=3),
    kwargs=st.none() | st.dictionaries(st.text(max_size=8), _json, max_size=3),
    result=_json,
    exception=_texts,
    traceback=_texts,
    name=st.sampled_from(["t.a", "t.b"]),
    policy=st.sampled_from(_POLICIES),
    whole=st.booleans(),
    flags=st.sets(st.sampled_from(FLAGS)),
)
def test_the_second_pass_is_redact_event_on_the_dict(
    args: Any,
    kwargs: Any,
    result: Any,
    exception: Any,
    traceback: Any,
    name: str,
    policy: RedactionPolicy,
    whole: bool,
    flags: set[str],
) -> None:
    """:func:`redact_event_dict` gives what ``redact_event`` gives, and is idempotent."""
    event = event_from_dict(
        {
            "id": "e",
            "task_id": "t",
            "kind": "succeeded",
            "timestamp": "2026-01-01T00:00:00+00:00",
            "name": name,
            **dict.fromkeys(flags, True),
            **{
                key: value
                for key, value in (
                    ("args", args),
                    ("kwargs", kwargs),
                    ("result", result),
                    ("exception", exception),
                    ("traceback", traceback),
                )
                if value is not None
            },
        }
    )
    as_dict = event_to_dict(event)
    expected = event_to_dict(redact_event(event, policy, fully_redacted=whole))
    once = redact_event_dict(as_dict, policy, fully_redacted=whole)
    assert once == expected
    assert redact_event_dict(once, policy, fully_redacted=whole) == once


# -- the event dict is the domain's own ------------------------------------------------

_texts = st.one_of(st.none(), st.just(""), st.text(max_size=12), st.integers(), st.just("a\x00b"))
_ids = st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=8), st.just("i" * 255))
_payloads = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=10),
        st.just("password=hunter2"),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.dictionaries(st.sampled_from(["a", "token", "n\x00"]), inner, max_size=3),
    ),
    max_leaves=8,
)
_whens = st.one_of(
    st.none(),
    st.just("2026-03-01T12:00:00Z"),
    st.just("not a date"),
    st.datetimes(max_value=datetime(2100, 1, 1)),
    st.datetimes(max_value=datetime(2100, 1, 1), timezones=st.timezones()),
)
raw_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": _texts,
        "queue": _texts,
        "routing_key": _texts,
        "worker": _texts,
        "root_id": _ids,
        "parent_id": _ids,
        "group_id": _ids,
        "retry_of": _ids,
        "retries": st.one_of(st.none(), st.integers(-2, 5)),
        "redelivered": st.booleans(),
        "fully_redacted": st.booleans(),
        "args": _payloads,
        "kwargs": st.one_of(st.none(), st.dictionaries(st.text(max_size=6), _payloads, max_size=3)),
        "result": _payloads,
        "exception": st.one_of(
            st.none(), st.just(""), st.text(max_size=20), st.just(KeyError("k"))
        ),
        "traceback": st.one_of(st.none(), st.just(""), st.text(max_size=30)),
        "runtime": st.one_of(st.none(), st.floats(), st.integers(0, 5)),
        "chord": st.one_of(
            st.none(), st.fixed_dictionaries({"options": st.fixed_dictionaries({"task_id": _ids})})
        ),
        "eta": _whens,
        "expires": _whens,
    },
)


@given(
    kind=st.sampled_from(["sent", "received", "started", "succeeded", "failed", "retried"]),
    task_id=st.text(min_size=1, max_size=40),
    fields=raw_fields,
    limit=st.sampled_from([64, 16_384]),
)
def test_materialize_gives_the_domain_events_own_dict(
    kind: str, task_id: str, fields: dict[str, Any], limit: int
) -> None:
    """Built directly, the dict is what the domain event makes of it, redacted already."""
    event = materialize((kind, task_id, time.time(), fields), max_payload_bytes=limit)
    domain = event_from_dict(event)
    assert event_to_dict(domain) == event
    assert event_to_dict(redact_event(domain, DEFAULT_POLICY)) == event
