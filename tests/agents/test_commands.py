"""The brain's side of the conversation: redaction settings, activity in heartbeats, probes.

Against the fake brain (:mod:`tests.agents.fake_brain`) and real Celery
objects: an in-memory broker and result backend, ``celery.worker.state``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from celery import Celery
from celery.utils.timer2 import Timer
from celery.worker import state
from celery.worker.request import Request
from kombu import Message
from kombu.utils.json import dumps

from z4j_agent_celery.activity import MAX_REPORTED_TASKS, Prober, worker_tasks
from z4j_agent_celery.capture import RawEvent
from z4j_agent_celery.config import AgentConfig
from z4j_agent_celery.runtime import AgentRuntime
from z4j_domain.redaction import DEFAULT_POLICY, REDACTED, RedactionSettings

from .fake_brain import FAST, SECRET, TOKEN, FakeBrain

HOSTNAME = "celery@test"
PIN_SETTINGS = {"extra_key_patterns": ["pin"], "fully_redacted_tasks": ["t.medical"]}


@pytest.fixture
def start() -> Iterator[Callable[..., AgentRuntime]]:
    """Start an agent runtime against a URL; every one is stopped after the test."""
    runtimes: list[AgentRuntime] = []

    def started(url: str, **options: Any) -> AgentRuntime:
        config = AgentConfig(
            brain_url=url, token=TOKEN, hmac_secret=SECRET, agent_name="agent-1", project="proj"
        )
        runtime = AgentRuntime(
            config,
            hostname=HOSTNAME,
            worker_stats=lambda: {"hostname": HOSTNAME},
            settings=FAST,
            **options,
        )
        runtimes.append(runtime)
        runtime.start()
        return runtime

    yield started
    for runtime in runtimes:
        runtime.stop("test over", timeout=1)


def raw(task_id: str, name: str = "t.pay", **fields: Any) -> RawEvent:
    return ("received", task_id, time.time(), {"name": name, **fields})


def pay(task_id: str) -> RawEvent:
    return raw(task_id, kwargs={"pin": 1234, "password": "hunter2", "amount": 5})


def event(brain: FakeBrain, task_id: str) -> dict[str, Any]:
    assert brain.wait_for(lambda: bool(brain.events_of(task_id))), task_id
    (only,) = brain.events_of(task_id)
    return only


# -- redaction settings ------------------------------------------------------------------


def test_without_settings_in_welcome_the_default_policy_applies(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    runtime = start(brain.url)
    assert runtime.transport.connected.wait(5)
    runtime.emit(pay("t1"))
    assert event(brain, "t1")["kwargs"] == {"pin": 1234, "password": REDACTED, "amount": 5}
    assert runtime.policy is DEFAULT_POLICY


def _child_emits(runtime: AgentRuntime, task_id: str) -> None:
    runtime.emit(pay(task_id))
    runtime.emit(raw(f"{task_id}-medical", name="t.medical", args=["ann"], result="flu"))
    runtime.flush_child()
    os._exit(0)


def test_the_welcomes_settings_apply_in_the_main_process_and_to_pool_children(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    """A child forked before the settings arrived: the main process's second pass covers it."""
    brain.redaction = PIN_SETTINGS
    runtime = start(brain.url)
    assert runtime.transport.connected.wait(5)
    assert runtime.redaction == RedactionSettings.from_dict(PIN_SETTINGS)
    runtime.emit(pay("main"))
    child = multiprocessing.get_context("fork").Process(
        target=_child_emits, args=(runtime, "child")
    )
    child.start()
    child.join(10)
    assert child.exitcode == 0
    for task_id in ("main", "child"):
        got = event(brain, task_id)
        assert got["kwargs"] == {"pin": REDACTED, "password": REDACTED, "amount": 5}
        assert (got["redacted"], got["arguments_redacted"]) == (True, True)
    medical = event(brain, "child-medical")
    assert (medical["args"], medical["result"]) == ([REDACTED], REDACTED)


def test_a_configure_command_applies_to_later_events_and_is_not_answered(
    brain: FakeBrain, start: Callable[..., AgentRuntime], agent_log: io.StringIO
) -> None:
    runtime = start(brain.url)
    assert runtime.transport.connected.wait(5)
    runtime.emit(pay("before"))
    assert event(brain, "before")["kwargs"]["pin"] == 1234
    assert brain.configure(PIN_SETTINGS) == 1
    assert brain.wait_for(lambda: runtime.policy is not DEFAULT_POLICY)
    runtime.emit(pay("after"))
    assert event(brain, "after")["kwargs"]["pin"] == REDACTED
    assert "redacts with the project's settings: 1 key patterns" in agent_log.getvalue()
    # Back to the defaults.
    brain.configure({})
    assert brain.wait_for(lambda: runtime.policy is DEFAULT_POLICY)
    runtime.emit(pay("again"))
    assert event(brain, "again")["kwargs"]["pin"] == 1234
    heartbeats = len(brain.heartbeats)
    assert brain.wait_for(lambda: len(brain.heartbeats) > heartbeats)
    assert brain.results == []
    assert runtime.transport.sessions == 1


@pytest.mark.parametrize(
    "settings",
    [
        "pin",
        None,
        {"extra_key_patterns": "pin"},
        {"extra_key_patterns": [1]},
        {"unknown_setting": []},
        {"extra_value_patterns": ["("]},  # not a regular expression
        {"extra_value_patterns": ["z4j"]},  # would match the redaction marker
        {"fully_redacted_tasks": [" "]},
    ],
)
def test_invalid_settings_are_a_warning_and_the_previous_ones_stay(
    brain: FakeBrain,
    start: Callable[..., AgentRuntime],
    agent_log: io.StringIO,
    settings: Any,
) -> None:
    brain.redaction = PIN_SETTINGS
    runtime = start(brain.url)
    assert runtime.transport.connected.wait(5)
    policy = runtime.policy
    brain.configure(settings)
    assert brain.wait_for(lambda: "ignores invalid redaction settings" in agent_log.getvalue())
    assert runtime.policy is policy
    runtime.emit(pay("t1"))
    assert event(brain, "t1")["kwargs"]["pin"] == REDACTED
    assert runtime.transport.sessions == 1  # the connection stays up


def test_invalid_settings_in_welcome_keep_the_default_policy(
    brain: FakeBrain, start: Callable[..., AgentRuntime], agent_log: io.StringIO
) -> None:
    brain.redaction = {"extra_key_patterns": ["re:("]}
    runtime = start(brain.url)
    assert runtime.transport.connected.wait(5)
    assert "ignores invalid redaction settings" in agent_log.getvalue()
    assert runtime.policy is DEFAULT_POLICY
    runtime.emit(pay("t1"))
    assert event(brain, "t1")["kwargs"]["password"] == REDACTED


def test_events_waiting_in_the_buffer_get_the_new_policy(
    start: Callable[..., AgentRuntime],
) -> None:
    """Built before the settings arrived, not sent yet: redacted again, in order."""
    runtime = start("http://127.0.0.1:9")  # nothing listens: everything stays buffered
    for n in range(30):
        runtime.emit(pay(f"t{n}"))
    deadline = time.monotonic() + 10
    while len(runtime.buffer) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runtime.set_redaction(PIN_SETTINGS)
    with runtime.lock:
        batch = runtime.buffer.take()
    assert batch is not None
    events = [json.loads(e) for e in batch.events]
    assert [e["task_id"] for e in events] == [f"t{n}" for n in range(30)]
    assert all(e["kwargs"]["pin"] == REDACTED for e in events)
    assert all(e["arguments_redacted"] for e in events)


# -- heartbeats ----------------------------------------------------------------------------


def test_heartbeats_list_the_tasks_the_worker_holds(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    held: list[str] | None = ["t-2", "t-1"]
    start(brain.url, worker_tasks=lambda: held)
    assert brain.wait_for(lambda: len(brain.heartbeats) >= 1)
    assert brain.heartbeats[0] == {"worker": {"hostname": HOSTNAME}, "tasks": ["t-2", "t-1"]}
    held = None  # unknown
    count = len(brain.heartbeats)
    assert brain.wait_for(lambda: len(brain.heartbeats) > count + 1)
    assert brain.heartbeats[-1]["tasks"] is None


def test_a_failing_task_list_makes_tasks_unknown(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    def broken() -> list[str]:
        raise RuntimeError("state unreadable")

    start(brain.url, worker_tasks=broken)
    assert brain.wait_for(lambda: len(brain.heartbeats) >= 2)
    assert {hb["tasks"] for hb in brain.heartbeats} == {None}


def request_for(app: Celery, task_id: str) -> Request:
    """A real worker Request for a message of task ``t.held``."""
    sent = app.amqp.as_task_v2(task_id, "t.held", args=(), kwargs={})
    message = Message(
        body=dumps(sent.body),
        headers=sent.headers,
        properties=sent.properties,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_info={"routing_key": "q"},
    )
    return Request(message, app=app, hostname=HOSTNAME, task=app.tasks["t.held"])


@pytest.fixture
def worker_app() -> Iterator[Celery]:
    app = Celery("activity", broker="memory://", set_as_current=False)

    @app.task(name="t.held", shared=False)
    def held() -> None:
        return None

    yield app
    state.reset_state()


def test_worker_tasks_reads_active_reserved_and_scheduled_requests(worker_app: Celery) -> None:
    active, reserved, scheduled, done = (
        request_for(worker_app, task_id) for task_id in ("a", "r", "s", "d")
    )
    state.task_accepted(active)
    state.task_reserved(reserved)
    state.task_scheduled(scheduled)
    state.task_reserved(done)
    state.task_ready(done)
    assert worker_tasks()() == ["a", "r", "s"]


def test_worker_tasks_reads_the_timer_of_older_celery_versions(worker_app: Celery) -> None:
    """An ETA request only in the consumer's timer, as before ``scheduled_requests`` existed."""
    timer = Timer()
    try:
        timer.call_at(time.time() + 3600, lambda request: None, (request_for(worker_app, "eta"),))

        class Consumer:
            pass

        class Worker:
            consumer = Consumer()

        Worker.consumer.timer = timer  # type: ignore[attr-defined]
        assert worker_tasks(Worker())() == ["eta"]
    finally:
        timer.stop()


def test_worker_tasks_beyond_the_limit_are_unknown(worker_app: Celery) -> None:
    for n in range(MAX_REPORTED_TASKS + 1):
        state.requests[f"t{n}"] = None
    assert worker_tasks()() is None
    state.requests.pop("t0")
    tasks = worker_tasks()()
    assert tasks is not None
    assert len(tasks) == MAX_REPORTED_TASKS


def test_worker_tasks_copes_with_a_concurrent_consumer(worker_app: Celery) -> None:
    """The consumer thread adds and removes requests while the transport thread reads."""
    requests = [request_for(worker_app, f"t{n}") for n in range(200)]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for request in requests:
                state.task_reserved(request)
            for request in requests:
                state.task_ready(request)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        tasks = worker_tasks()
        for _ in range(200):
            listed = tasks()
            assert listed is None or set(listed) <= {r.id for r in requests}
    finally:
        stop.set()
        thread.join()


# -- probes --------------------------------------------------------------------------------


def test_a_probe_is_answered_from_the_workers_own_state(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    start(brain.url, worker_tasks=lambda: ["held-1", "held-2"])
    assert brain.wait_for(lambda: len(brain.heartbeats) >= 1)
    command_id = brain.probe(["held-2", "gone", "held-1"])
    assert brain.result_of(command_id) == {
        "id": command_id,
        "command": "probe",
        "answers": [
            {"task_id": "held-2", "active_on": HOSTNAME, "backend_state": None},
            {"task_id": "gone", "active_on": None, "backend_state": None},
            {"task_id": "held-1", "active_on": HOSTNAME, "backend_state": None},
        ],
    }


def test_a_probe_reads_the_result_backend_and_asks_the_other_workers() -> None:
    """A real (in-memory) result backend; remote control on a broker no other worker reads."""
    app = Celery("probe", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.backend.store_result("done", 5, "SUCCESS")
    app.backend.store_result("broke", ValueError("x"), "FAILURE")
    prober = Prober(hostname=HOSTNAME, local_tasks=lambda: ["held"], app=app)
    assert prober(["held", "done", "broke", "never-seen"]) == [
        {"task_id": "held", "active_on": HOSTNAME, "backend_state": "PENDING"},
        {"task_id": "done", "active_on": None, "backend_state": "SUCCESS"},
        {"task_id": "broke", "active_on": None, "backend_state": "FAILURE"},
        {"task_id": "never-seen", "active_on": None, "backend_state": "PENDING"},
    ]


@pytest.mark.parametrize("backend", [None, "rpc://"])
def test_without_a_readable_backend_the_backend_state_is_null(backend: str | None) -> None:
    app = Celery("probe", broker="memory://", backend=backend, set_as_current=False)
    prober = Prober(hostname=HOSTNAME, local_tasks=list, app=app, inspect_timeout=0.1)
    assert prober(["t"]) == [{"task_id": "t", "active_on": None, "backend_state": None}]


def test_a_probe_answers_by_its_deadline_whatever_hangs() -> None:
    never = threading.Event()

    def hanging() -> list[str]:
        never.wait()
        return []

    prober = Prober(hostname=HOSTNAME, local_tasks=hanging, deadline=0.2)
    try:
        assert prober(["t"]) == [{"task_id": "t", "active_on": None, "backend_state": None}]
    finally:
        never.set()


def test_a_slow_probe_does_not_hold_up_events(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    release = threading.Event()
    held = ["held"]

    def slow_tasks() -> list[str]:
        if threading.current_thread().name == "z4j-agent-probe":
            release.wait(10)
        return held

    runtime = start(brain.url, worker_tasks=slow_tasks)
    assert runtime.transport.connected.wait(5)
    command_id = brain.probe(["held"])
    for n in range(20):
        runtime.emit(raw(f"t{n}"))
    assert brain.wait_for(lambda: len(brain.events) == 20)
    heartbeats = len(brain.heartbeats)
    assert brain.wait_for(lambda: len(brain.heartbeats) > heartbeats)
    assert brain.results == []
    release.set()
    answer = brain.result_of(command_id)
    assert answer["answers"] == [{"task_id": "held", "active_on": HOSTNAME, "backend_state": None}]


def test_an_answer_for_a_session_that_is_gone_is_dropped(
    brain: FakeBrain, start: Callable[..., AgentRuntime]
) -> None:
    release = threading.Event()

    def probe(task_ids: Sequence[str]) -> list[dict[str, Any]]:
        release.wait(10)
        return [{"task_id": t, "active_on": None, "backend_state": None} for t in task_ids]

    runtime = start(brain.url)
    runtime.transport._probe = probe
    assert runtime.transport.connected.wait(5)
    first = brain.probe(["t"])
    brain.drop_connections()
    assert brain.wait_for(lambda: runtime.transport.sessions == 2)
    assert brain.wait_for(lambda: runtime.transport.connected.is_set())
    release.set()
    second = brain.probe(["u"])
    assert brain.result_of(second)["answers"][0]["task_id"] == "u"
    assert [r["id"] for r in brain.results] == [second]
    assert first != second


def test_at_most_500_ids_are_answered(
    brain: FakeBrain, start: Callable[..., AgentRuntime], agent_log: io.StringIO
) -> None:
    start(brain.url, worker_tasks=list)
    assert brain.wait_for(lambda: len(brain.heartbeats) >= 1)
    command_id = brain.probe([f"t{n}" for n in range(600)])
    answers = brain.result_of(command_id)["answers"]
    assert [a["task_id"] for a in answers] == [f"t{n}" for n in range(500)]
    assert "answers the first 500 of the 600 task ids" in agent_log.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        {"command": "probe", "task_ids": ["t"]},  # no id
        {"id": "c1", "command": "probe", "task_ids": "t"},
        {"id": "c1", "command": "probe", "task_ids": [1]},
        {"id": "c1", "command": "reboot"},  # unknown: ignored
        {"command": None},
    ],
)
def test_malformed_and_unknown_commands_are_ignored(
    brain: FakeBrain,
    start: Callable[..., AgentRuntime],
    agent_log: io.StringIO,
    body: dict[str, Any],
) -> None:
    runtime = start(brain.url, worker_tasks=lambda: ["t"])
    assert runtime.transport.connected.wait(5)
    brain.command(body)
    good = brain.probe(["t"])
    assert brain.result_of(good)["answers"][0]["active_on"] == HOSTNAME
    assert [r["id"] for r in brain.results] == [good]
    assert runtime.transport.sessions == 1
    log = agent_log.getvalue()
    assert "malformed probe" in log or "unknown command" in log
