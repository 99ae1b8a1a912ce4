"""The agent against a fake brain: the conversation, acks, resends, rejections, shutdown."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from z4j_agent_celery.capture import RawEvent
from z4j_agent_celery.config import AgentConfig
from z4j_agent_celery.payload import TRUNCATED
from z4j_agent_celery.runtime import AgentRuntime

from .fake_brain import FAST, SECRET, TOKEN, FakeBrain


def make_runtime(
    url: str, *, token: str = TOKEN, secret: str = SECRET, **config: Any
) -> AgentRuntime:
    settings = AgentConfig(
        brain_url=url,
        token=token,
        hmac_secret=secret,
        agent_name="agent-1",
        project="proj",
        **config,
    )
    return AgentRuntime(
        settings,
        hostname="celery@test",
        worker_stats=lambda: {"hostname": "celery@test", "pool": "solo", "active": 0},
        settings=FAST,
    )


@pytest.fixture
def runtimes() -> Iterator[list[AgentRuntime]]:
    started: list[AgentRuntime] = []
    yield started
    for runtime in started:
        runtime.stop("test over", timeout=1)


def started(runtimes: list[AgentRuntime], runtime: AgentRuntime) -> AgentRuntime:
    runtimes.append(runtime)
    runtime.start()
    return runtime


def raw(task_id: str, kind: str = "succeeded", **fields: Any) -> RawEvent:
    return (kind, task_id, time.time(), {"name": "t.add", **fields})


def test_hello_events_ack_heartbeat_and_bye(brain: FakeBrain, runtimes: list[AgentRuntime]) -> None:
    runtime = started(runtimes, make_runtime(brain.url))
    assert runtime.transport.connected.wait(5)
    for n in range(50):
        runtime.emit(raw(f"t{n}", result=n))
    assert brain.wait_for(lambda: len(brain.events) == 50)
    assert brain.wait_for(lambda: len(brain.heartbeats) >= 2, timeout=5)
    assert brain.wait_for(lambda: len(runtime.buffer) == 0)  # every batch acknowledged
    (hello,) = brain.hellos
    assert hello == {
        "protocol": 1,
        "agent": "agent-1",
        "project": "proj",
        "hostname": "celery@test",
        "pid": os.getpid(),
        "agent_version": "0.1.0",
        "kind": "celery-worker",
    }
    assert brain.heartbeats[0] == {
        "worker": {"hostname": "celery@test", "pool": "solo", "active": 0},
        "tasks": None,  # no worker_tasks given: unknown
    }
    assert [e["task_id"] for e in brain.events] == [f"t{n}" for n in range(50)]
    assert brain.events[7]["result"] == 7
    assert brain.errors == []
    runtime.stop("worker shutdown (test)")
    assert brain.wait_for(lambda: len(brain.byes) == 1)
    assert brain.byes == [{"reason": "worker shutdown (test)", "worker": "celery@test"}]


def test_after_bye_the_agent_lets_the_brain_close(
    brain: FakeBrain, runtimes: list[AgentRuntime]
) -> None:
    """A stopping agent keeps its socket open until the brain has handled the bye and closed."""
    brain.bye_delay = 0.3
    runtime = started(runtimes, make_runtime(brain.url))
    assert runtime.transport.connected.wait(5)
    runtime.stop("worker shutdown (test)")
    assert brain.wait_for(lambda: len(brain.open_after_bye) == 1)
    assert brain.open_after_bye == [True]
    assert not runtime.transport.alive


def test_batches_follow_the_brains_limit(brain: FakeBrain, runtimes: list[AgentRuntime]) -> None:
    brain.max_batch = 7
    runtime = started(runtimes, make_runtime(brain.url))
    assert runtime.transport.connected.wait(5)
    for n in range(40):
        runtime.emit(raw(f"t{n}"))
    assert brain.wait_for(lambda: len(brain.events) == 40)
    assert brain.errors == []  # the fake asserts every batch is <= max_batch
    assert len(brain.batches) >= 6


def test_unacknowledged_events_are_resent_after_a_reconnect(
    brain: FakeBrain, runtimes: list[AgentRuntime], agent_log: io.StringIO
) -> None:
    brain.ack = False
    runtime = started(runtimes, make_runtime(brain.url))
    assert runtime.transport.connected.wait(5)
    for n in range(10):
        runtime.emit(raw(f"t{n}"))
    assert brain.wait_for(lambda: len(brain.events) == 10)
    assert runtime.buffer.in_flight >= 1
    brain.ack = True
    brain.drop_connections(1011, "restarting")
    assert brain.wait_for(lambda: runtime.transport.sessions == 2)
    assert brain.wait_for(lambda: len(runtime.buffer) == 0)
    ids = [e["id"] for e in brain.events]
    assert len(ids) == 20
    assert sorted(set(ids)) == sorted(ids[:10])  # the same events, same ids: the brain dedupes
    assert "connection closed (code 1011 restarting)" in agent_log.getvalue()


def test_a_rejection_close_code_is_logged_with_its_reason(
    brain: FakeBrain, runtimes: list[AgentRuntime], agent_log: io.StringIO
) -> None:
    brain.reject = (4403, "agent disabled")
    runtime = started(runtimes, make_runtime(brain.url))
    assert brain.wait_for(lambda: runtime.transport.last_rejection == "4403 agent disabled")
    assert (
        "WARNING:z4j.celery.transport:z4j brain closed the agent's connection: "
        "code 4403, reason 'agent disabled'" in agent_log.getvalue()
    )


def test_a_bad_signature_is_refused_by_the_brain(
    brain: FakeBrain, runtimes: list[AgentRuntime], agent_log: io.StringIO
) -> None:
    runtime = started(runtimes, make_runtime(brain.url, secret="wrong-secret"))
    assert brain.wait_for(lambda: bool(brain.errors))
    assert "bad_signature" in brain.errors[0]
    assert brain.wait_for(lambda: "code 4400" in agent_log.getvalue())
    assert not runtime.transport.connected.is_set()


def test_a_wrong_token_is_logged_once_and_retried(
    brain: FakeBrain, runtimes: list[AgentRuntime], agent_log: io.StringIO
) -> None:
    runtime = started(runtimes, make_runtime(brain.url, token="wrong"))
    runtime.emit(raw("t1"))
    assert brain.wait_for(lambda: brain.unauthorized >= 3)
    lines = [line for line in agent_log.getvalue().splitlines() if "unauthorized" in line]
    assert len(lines) == 1
    assert lines[0].startswith(
        "ERROR:z4j.celery.transport:z4j rejected the agent: unauthorized (check Z4J_TOKEN)"
    )
    assert runtime.transport.last_rejection == "unauthorized"
    assert runtime.transport.alive
    assert brain.wait_for(lambda: len(runtime.buffer) == 1)  # kept for when the token is fixed


def test_an_unreachable_brain_never_blocks_and_the_buffer_stays_bounded(
    runtimes: list[AgentRuntime], agent_log: io.StringIO
) -> None:
    runtime = started(runtimes, make_runtime("http://127.0.0.1:9", buffer_size=100))
    start = time.perf_counter()
    for n in range(1000):
        runtime.emit(raw(f"t{n}"))
    assert time.perf_counter() - start < 0.5
    deadline = time.monotonic() + 5
    while runtime.buffer.dropped < 900 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(runtime.buffer) == 100
    assert runtime.buffer.dropped == 900
    assert "unreachable" in agent_log.getvalue()
    assert runtime.transport.alive


def _child(runtime: AgentRuntime) -> None:
    for n in range(30):
        runtime.emit(raw(f"child-{n}", args=[n], result={"n": n}))
    runtime.flush_child()
    os._exit(0)


def test_events_of_a_forked_pool_child_reach_the_main_process(
    brain: FakeBrain, runtimes: list[AgentRuntime]
) -> None:
    """A prefork child forwards over the socket pair; the main process holds the only socket."""
    runtime = started(runtimes, make_runtime(brain.url))
    assert runtime.transport.connected.wait(5)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_child, args=(runtime,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(10)
        assert child.exitcode == 0
    assert brain.wait_for(lambda: len(brain.events) == 60)
    assert len(brain.hellos) == 1  # one connection, whatever the number of children
    assert {e["result"]["n"] for e in brain.events} == set(range(30))


def test_only_whole_events_cross_the_socket_pair() -> None:
    """A child's datagram holds one event per line; a line that is not one is counted lost.

    An event's bytes go into a frame as they are, so one broken line would
    spoil the whole batch: the collector keeps only whole JSON objects.
    """
    runtime = make_runtime("http://127.0.0.1:9")
    try:
        runtime._child_pid = os.getpid()  # act as a forked child: no forwarder thread
        runtime._child_queue.extend(raw(f"t{n}", args=[n]) for n in range(3))
        assert runtime._forward_once() == 3
        runtime._child_end.send(b'{"id":"x"}\n\nnot json\n{"truncated')
        assert runtime._collect_once(0) == 4
        assert runtime.lost == 3
        with runtime.lock:
            batch = runtime.buffer.take()
        assert batch is not None
        events = [json.loads(event) for event in batch.events]
        assert [e.get("task_id") for e in events] == ["t0", "t1", "t2", None]
        assert [e["args"] for e in events[:3]] == [[0], [1], [2]]
    finally:
        runtime.stop("test over", timeout=0)


def test_an_event_too_large_for_a_datagram_is_sent_shrunk() -> None:
    """Its payloads are replaced by markers rather than the event being lost."""
    runtime = make_runtime("http://127.0.0.1:9", max_payload_bytes=200_000)
    try:
        runtime._child_pid = os.getpid()
        runtime._child_queue.append(raw("big", args=["x" * 40_000, "y" * 40_000]))
        assert runtime._forward_once() == 1
        assert runtime._collect_once(0) == 1
        with runtime.lock:
            batch = runtime.buffer.take()
        assert batch is not None
        (event,) = [json.loads(e) for e in batch.events]
        assert event["task_id"] == "big"
        assert event["truncated"]
        assert event["arguments_truncated"]
        assert event["args"][0].startswith(TRUNCATED)
        assert runtime.lost == 0
    finally:
        runtime.stop("test over", timeout=0)
