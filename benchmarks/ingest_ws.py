"""End-to-end ingest through the agent WebSocket into PostgreSQL, and how soon tasks are visible.

Starts a real ``z4j serve`` on a fresh PostgreSQL database, mints agents, and
drives them with protocol clients built on the domain's own frame code:

1. throughput: 1 and 8 concurrent agents send signed event batches as fast as
   acknowledgements allow (at most ``--window`` unacknowledged batches each);
   events/s counts only events whose batch the brain acknowledged, which it
   does after commit;
2. latency: one agent sends 500 tasks/s (sent, received, started, succeeded),
   and for a sample of tasks a poller asks the task API until the task reads
   ``succeeded``; prints p50/p99 of "terminal event sent -> visible in the API".

    python benchmarks/ingest_ws.py --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import websockets

from z4j_domain.frames import Frame, FrameType, ReplayGuard, decode_frame, encode_frame
from z4j_domain.protocol import HELLO_SESSION

ADMIN_URL = os.environ.get("Z4J_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


class Agent:
    """A minimal protocol client: hello, then signed event batches, counting acks."""

    def __init__(self, url: str, token: str, secret: str, name: str) -> None:
        self.url, self.token, self.secret, self.name = url, token, secret.encode(), name
        self.seq = 0
        self.batch = 0
        self.acked_events = 0
        self.unacked: dict[int, int] = {}
        self.window_size = 1
        self.window = asyncio.Semaphore(1)

    def _frame(self, kind: FrameType, body: dict[str, Any], session: str) -> str:
        frame = Frame(type=kind, session=session, seq=self.seq, ts=datetime.now(UTC), body=body)
        self.seq += 1
        return encode_frame(frame, self.secret)

    async def connect(self, window: int) -> None:
        self.window_size = window
        self.window = asyncio.Semaphore(window)
        self.ws = await websockets.connect(
            self.url, additional_headers={"Authorization": f"Bearer {self.token}"}, max_size=None
        )
        hello = {
            "protocol": 1, "agent": self.name, "project": "default", "hostname": self.name,
            "pid": os.getpid(), "agent_version": "bench", "kind": "celery-worker",
        }  # fmt: skip
        await self.ws.send(self._frame(FrameType.HELLO, hello, HELLO_SESSION))
        welcome = decode_frame(await self.ws.recv(), self.secret)
        self.session = str(welcome.body["session"])
        self.guard = ReplayGuard(session=self.session)
        self.guard.check(welcome, datetime.now(UTC))
        self.reader = asyncio.create_task(self._read_acks())

    async def _read_acks(self) -> None:
        async for text in self.ws:
            frame = decode_frame(text, self.secret)
            self.guard.check(frame, datetime.now(UTC))
            if frame.type is FrameType.ACK:
                for number in frame.body["batches"]:
                    if number in self.unacked:
                        self.acked_events += self.unacked.pop(number)
                        self.window.release()

    async def send(self, events: list[dict[str, Any]]) -> int:
        await self.window.acquire()
        self.batch += 1
        self.unacked[self.batch] = len(events)
        body = {"batch": self.batch, "events": events}
        await self.ws.send(self._frame(FrameType.EVENTS, body, self.session))
        return self.batch

    async def drain(self) -> None:
        for _ in range(self.window_size):
            await self.window.acquire()

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


def task_events(name: str, worker: str) -> list[dict[str, Any]]:
    """The four events of one successful task, as agent dicts."""
    task_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat()
    base = {"task_id": task_id, "timestamp": now}
    return [
        {**base, "id": uuid.uuid4().hex, "kind": "sent", "name": name, "queue": "celery",
         "args": [1, 2], "kwargs": {}},
        {**base, "id": uuid.uuid4().hex, "kind": "received", "name": name, "worker": worker},
        {**base, "id": uuid.uuid4().hex, "kind": "started", "worker": worker},
        {**base, "id": uuid.uuid4().hex, "kind": "succeeded", "worker": worker, "result": 3,
         "runtime": 0.001},
    ]  # fmt: skip


async def throughput(agents: list[Agent], events: int, batch: int) -> float:
    per_agent = events // len(agents)

    async def run(agent: Agent) -> None:
        pending: list[dict[str, Any]] = []
        for _ in range(per_agent // 4):
            pending += task_events("bench.add", agent.name)
            if len(pending) >= batch:
                await agent.send(pending)
                pending = []
        if pending:
            await agent.send(pending)
        await agent.drain()

    started = time.perf_counter()
    await asyncio.gather(*(run(agent) for agent in agents))
    elapsed = time.perf_counter() - started
    return sum(agent.acked_events for agent in agents) / elapsed


async def visibility(agent: Agent, port: int, key: str, rate: int, seconds: float) -> list[float]:
    """Delays (s) from sending a task's terminal event to the API showing it succeeded."""
    delays: list[float] = []
    probes: list[asyncio.Task[None]] = []

    async def probe(task_id: str, sent_at: float) -> None:
        url = f"http://127.0.0.1:{port}/api/v1/projects/default/tasks/{task_id}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        while True:
            try:
                body = await asyncio.to_thread(lambda: urllib.request.urlopen(request).read())
                if json.loads(body)["state"] == "succeeded":
                    delays.append(time.perf_counter() - sent_at)
                    return
            except OSError:
                pass
            await asyncio.sleep(0.01)

    tick = 0.02  # one batch every 20 ms, as an agent's flush would send them
    per_tick = max(1, round(rate * tick))
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        events: list[dict[str, Any]] = []
        sampled = None
        for _ in range(per_tick):
            events += task_events("bench.latency", agent.name)
            n += 1
            if n % 25 == 0:  # sample 1 task in 25: the poller must not load the brain much
                sampled = events[-1]["task_id"]
        await agent.send(events)
        if sampled is not None:
            probes.append(asyncio.create_task(probe(sampled, time.perf_counter())))
        await asyncio.sleep(max(0.0, tick - (time.perf_counter() - began)))
    await asyncio.gather(*probes)
    return delays


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _z4j(*args: str, env: dict[str, str]) -> str:
    z4j = str(Path(sys.executable).parent / "z4j")
    return subprocess.run([z4j, *args], env=env, capture_output=True, text=True, check=True).stdout


async def main_async(args: argparse.Namespace) -> None:
    name = f"z4j_bench_ws_{secrets.token_hex(4)}"
    base, _, _ = ADMIN_URL.rpartition("/")
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    brain = None
    try:
        with tempfile.TemporaryDirectory() as home:
            port = _free_port()
            env = {
                **os.environ,
                "Z4J_HOME": home,
                "Z4J_DATABASE_URL": f"{base}/{name}",
                "Z4J_BOOTSTRAP_ADMIN_EMAIL": "bench@example.com",
                "Z4J_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            }
            z4j = str(Path(sys.executable).parent / "z4j")
            brain = subprocess.Popen(
                [z4j, "serve", "--port", str(port)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ready", timeout=1)
                    break
                except OSError:
                    await asyncio.sleep(0.3)
            key = json.loads(
                _z4j("api-key", "create", "--email", "bench@example.com", "--json", env=env)
            )["key"]
            url = f"ws://127.0.0.1:{port}/ws/agent"

            async def mint(count: int, prefix: str) -> list[Agent]:
                agents = []
                for i in range(count):
                    minted = json.loads(
                        _z4j("agent", "create", "--project", "default", "--name",
                             f"{prefix}-{i}", "--json", env=env)
                    )  # fmt: skip
                    agent = Agent(url, minted["token"], minted["hmac_secret"], f"{prefix}-{i}")
                    await agent.connect(args.window)
                    agents.append(agent)
                return agents

            print(f"PostgreSQL, {args.events:,} events per run, batches of {args.batch}")
            for count in (1, 8):
                agents = await mint(count, f"t{count}")
                rate = await throughput(agents, args.events, args.batch)
                print(f"  {count} agent(s): {rate:,.0f} events/s committed and acknowledged")
                for agent in agents:
                    await agent.close()
            (latency_agent,) = await mint(1, "latency")
            delays = await visibility(latency_agent, port, key, args.rate, args.seconds)
            await latency_agent.close()
            delays.sort()
            p99 = delays[min(len(delays) - 1, round(0.99 * (len(delays) - 1)))]
            print(
                f"  visibility at {args.rate} tasks/s ({len(delays)} sampled tasks): "
                f"p50 {statistics.median(delays) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"max {delays[-1] * 1000:.0f} ms"
            )
    finally:
        if brain is not None and brain.poll() is None:
            brain.send_signal(signal.SIGTERM)
            brain.wait(timeout=30)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--window", type=int, default=4, help="unacknowledged batches per agent")
    parser.add_argument("--rate", type=int, default=500, help="tasks/s for the latency run")
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
