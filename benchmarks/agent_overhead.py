"""Throughput cost of the z4j agent on a Celery worker.

Pre-enqueues ``--tasks`` trivial tasks on a Redis broker, then drains them with
a real ``celery worker`` (prefork, concurrency 2, Redis result backend, Celery's
task events off as by default), once without the agent and once with it
connected to a real ``z4j serve`` (SQLite), alternately, ``--pairs`` times
(odd pairs run the worker without the agent first, even pairs with it first,
so that neither side always runs on a broker the other has just used).
The drain time of a run is the span of the results' own ``date_done`` stamps,
so worker start-up is not counted. Prints tasks/s per run and the ratio of
each pair. ``--unreachable`` points the agent at a closed port instead: what
capturing and buffering cost without sending (or the brain's own CPU).

    python benchmarks/agent_overhead.py --tasks 20000 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis

BROKER_DB, BACKEND_DB = 13, 14
REDIS = "redis://127.0.0.1:6379"

APP = textwrap.dedent(
    f"""
    import os
    from celery import Celery

    app = Celery("bench", broker="{REDIS}/{BROKER_DB}", backend="{REDIS}/{BACKEND_DB}")
    app.conf.update(result_expires=None, worker_prefetch_multiplier=4)

    @app.task
    def noop():
        return None

    if os.environ.get("Z4J_BENCH_AGENT") == "1":
        import z4j_agent_celery; z4j_agent_celery.install(app)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _enqueue(workdir: Path, count: int) -> None:
    code = (
        "import bench_app\n"
        f"with bench_app.app.producer_or_acquire() as producer:\n"
        f"    for _ in range({count}):\n"
        "        bench_app.noop.apply_async(producer=producer)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _worker_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds used so far by a worker's main process and by its pool children."""
    try:
        return _cpu_seconds(pid), sum(_cpu_seconds(child) for child in _children(pid))
    except (OSError, IndexError):  # a child came or went meanwhile
        return _cpu_seconds(pid), 0.0


@dataclass
class Drain:
    """One worker run: the drain time, its output, and the CPU its processes used meanwhile."""

    seconds: float
    output: str
    main_cpu: float
    pool_cpu: float


def _drain(workdir: Path, count: int, env: dict[str, str], timeout: float) -> Drain:
    """Run a worker until ``count`` results exist.

    The CPU figures cover the polls from the first result to the last: the
    worker's start-up and shutdown are left out, as they are of the time.
    """
    backend = redis.Redis.from_url(f"{REDIS}/{BACKEND_DB}")
    log = workdir / f"worker-{secrets.token_hex(3)}.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [_bin("celery"), "-A", "bench_app", "worker", "-P", "prefork", "-c", "2",
             "-l", "INFO", "--without-gossip", "--without-mingle"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        first: tuple[float, float] | None = None
        try:
            while (done := backend.dbsize()) < count:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker stopped or timed out; see {log}")
                if first is None and done:
                    first = _worker_cpu(worker.pid)
                time.sleep(0.05)
            last = _worker_cpu(worker.pid)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    stamps = []
    keys = backend.keys("celery-task-meta-*")
    for start in range(0, len(keys), 1000):
        for raw in backend.mget(keys[start : start + 1000]):
            stamps.append(datetime.fromisoformat(json.loads(raw)["date_done"]))
    first = first or last
    return Drain(
        seconds=(max(stamps) - min(stamps)).total_seconds(),
        output=log.read_text(),
        main_cpu=last[0] - first[0],
        pool_cpu=last[1] - first[1],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--unreachable", action="store_true", help="the agent's brain URL is a closed port"
    )
    args = parser.parse_args()

    broker = redis.Redis.from_url(f"{REDIS}/{BROKER_DB}")
    backend = redis.Redis.from_url(f"{REDIS}/{BACKEND_DB}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "bench_app.py").write_text(APP)
        port = _free_port()
        brain_env = {
            **os.environ,
            "Z4J_HOME": str(workdir / "home"),
            "Z4J_BOOTSTRAP_ADMIN_EMAIL": "bench@example.com",
            "Z4J_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        }
        brain = subprocess.Popen(
            [_bin("z4j"), "serve", "--port", str(port)],
            env=brain_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            minted = json.loads(
                subprocess.run(
                    [_bin("z4j"), "agent", "create", "--project", "default", "--name", "bench",
                     "--json"],
                    env=brain_env, capture_output=True, text=True, check=True,
                ).stdout
            )  # fmt: skip
            agent_env = {
                **os.environ,
                "Z4J_BENCH_AGENT": "1",
                "Z4J_BRAIN_URL": f"http://127.0.0.1:{port}",
                "Z4J_TOKEN": minted["token"],
                "Z4J_HMAC_SECRET": minted["hmac_secret"],
            }
            if args.unreachable:
                agent_env["Z4J_BRAIN_URL"] = f"http://127.0.0.1:{_free_port()}"
            plain_env = {**os.environ, "Z4J_BENCH_AGENT": "0"}
            print(f"{args.tasks:,} no-op tasks, prefork -c 2, Redis broker and backend")
            print(
                f"{'pair':>4} {'without agent':>15} {'with agent':>12} {'ratio':>7}"
                "   CPU us/task (main process, pool; without -> with agent); brain"
            )
            ratios = []
            for pair in range(1, args.pairs + 1):
                drains: dict[str, Drain] = {}
                runs = (("without", plain_env), ("with", agent_env))
                for label, env in runs if pair % 2 else runs[::-1]:
                    broker.flushdb()
                    backend.flushdb()
                    _enqueue(workdir, args.tasks)
                    brain_cpu = _cpu_seconds(brain.pid)
                    drain = drains[label] = _drain(workdir, args.tasks, env, timeout=600)
                    brain_cpu = _cpu_seconds(brain.pid) - brain_cpu
                    started = "z4j worker bootstrap: agent runtime started" in drain.output
                    if started != (label == "with"):
                        raise SystemExit(f"agent bootstrap line presence wrong for run {label!r}")
                    if label == "with":
                        # On one machine the brain's ingest competes with the worker for CPU.
                        brain_share = brain_cpu / drain.seconds
                rates = {label: args.tasks / drain.seconds for label, drain in drains.items()}
                ratio = rates["with"] / rates["without"]
                ratios.append(ratio)
                per_task = {
                    label: (1e6 * drain.main_cpu / args.tasks, 1e6 * drain.pool_cpu / args.tasks)
                    for label, drain in drains.items()
                }
                print(
                    f"{pair:>4} {rates['without']:>11,.0f}/s {rates['with']:>8,.0f}/s "
                    f"{ratio:>6.1%}   main {per_task['without'][0]:,.0f} -> "
                    f"{per_task['with'][0]:,.0f}, pool {per_task['without'][1]:,.0f} -> "
                    f"{per_task['with'][1]:,.0f}; brain {brain_share:.0%} of a core",
                    flush=True,
                )
            print(f"median ratio: {statistics.median(ratios):.1%}")
        finally:
            brain.send_signal(signal.SIGTERM)
            brain.wait(timeout=30)
            broker.flushdb()
            backend.flushdb()


if __name__ == "__main__":
    main()
