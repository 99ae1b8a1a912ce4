"""Running the real ``z4j`` command in subprocesses: ``z4j serve`` and one-shot commands.

Shared by the CLI tests and the agents' end-to-end tests. Every process gets
an environment of its own (:func:`z4j_environment`): a fresh ``Z4J_HOME`` and
none of the caller's ``Z4J_*`` settings.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "Z4J",
    "Server",
    "clean_environment",
    "free_port",
    "get_json",
    "request",
    "run_z4j",
    "z4j_environment",
]

#: How the tests start the command: the same ``main`` the ``z4j`` entry point calls.
Z4J = [sys.executable, "-m", "z4j_web.cli"]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any ``Z4J_*`` variable, unbuffered, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("Z4J_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def z4j_environment(home: Path, **extra: str) -> dict[str, str]:
    """An environment for ``z4j`` with ``Z4J_HOME=home`` and nothing else of z4j's but ``extra``."""
    return clean_environment(Z4J_HOME=str(home), **extra)


def run_z4j(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``z4j ARGS...`` to completion in ``env``; stdout and stderr are captured."""
    return subprocess.run(
        [*Z4J, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A running ``z4j serve`` whose stderr is collected line by line."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [*Z4J, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._queue.put(line)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        """The first stderr line (from now on) matching ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            match = pattern.search(line)
            if match:
                return match
        pytest.fail(f"no line matching {pattern.pattern!r}; stderr so far:\n{self.stderr}")

    def wait_until_healthy(self, timeout: float = 60) -> None:
        """Poll /api/v1/health until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"z4j serve exited early:\n{self.stderr}")
            try:
                status, _ = request(f"{self.base}/api/v1/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"z4j serve did not become healthy:\n{self.stderr}")

    def stop(self) -> int:
        """SIGTERM, then wait for a clean exit; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"z4j serve did not stop on SIGTERM:\n{self.stderr}")

    def kill(self) -> None:
        """End the process at once if it still runs (clean-up after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        return "".join(self.lines)


def request(
    url: str, *, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """GET (or POST a form to) ``url``; the status and the body, for errors too."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310 - http only
    try:
        with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 - local test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def call_json(
    url: str, key: str, method: str = "GET", body: Any = None, **headers: str
) -> tuple[int, Any]:
    """``method url`` with a JSON body and ``Authorization: Bearer <key>``; status and JSON answer
    (for errors too)."""
    request = urllib.request.Request(  # noqa: S310 - local test servers only
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get_json(url: str, key: str) -> tuple[int, Any]:
    """GET ``url`` with ``Authorization: Bearer <key>``; the status and the decoded JSON body."""
    status, body = request(url, headers={"Authorization": f"Bearer {key}"})
    return status, json.loads(body)
