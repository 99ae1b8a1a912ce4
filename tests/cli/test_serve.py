"""``z4j serve`` end to end: first boot's setup link, setup, an API key, the API, shutdown."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving import Server, free_port, request

from .conftest import RunZ4j

pytestmark = pytest.mark.slow

SETUP_URL = re.compile(r"(http://127\.0\.0\.1:\d+/setup\?token=[A-Za-z0-9_-]+)")
PASSWORD = "a long enough password"


@pytest.fixture
def start_server(z4j_env: dict[str, str]) -> Iterator[Any]:
    """Start ``z4j serve`` processes (stopped at the end of the test, whatever happens)."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server({**z4j_env, **env}, free_port())
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def test_first_boot_setup_api_key_and_api(start_server: Any, run_z4j: RunZ4j) -> None:
    """The operator's first hour: boot, open the link, set up, mint a key, call the API, stop."""
    server = start_server()
    setup_url = server.wait_for_line(SETUP_URL).group(1)
    assert setup_url.startswith(server.base)
    server.wait_until_healthy()

    status, page = request(setup_url)
    assert status == 200
    assert 'name="password"' in page
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(setup_url).query)["token"][0]

    status, page = request(
        f"{server.base}/setup",
        data={
            "token": token,
            "email": "ops@example.com",
            "password": PASSWORD,
            "confirm": PASSWORD,
        },
    )
    assert status == 200, page
    assert "z4j api-key create --email ops@example.com" in page
    status, _ = request(setup_url)
    assert status == 410

    created = run_z4j("api-key", "create", "--email", "ops@example.com", "--name", "e2e", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]

    tasks_url = f"{server.base}/api/v1/projects/default/tasks"
    status, body = request(tasks_url, headers={"Authorization": f"Bearer {key}"})
    assert status == 200, body
    assert json.loads(body) == {"items": [], "next_cursor": None}
    status, body = request(tasks_url)
    assert status == 401
    assert json.loads(body)["error"]["code"] == "unauthorized"
    status, body = request(f"{tasks_url}?state=nope", headers={"Authorization": f"Bearer {key}"})
    assert status == 400
    status, body = request(f"{server.base}/api/v1/ready")
    assert status == 200, body

    status_cmd = run_z4j("status", "--json")
    assert status_cmd.returncode == 0, status_cmd.stderr
    assert json.loads(status_cmd.stdout)["users"] == 1

    assert server.stop() == 0
    assert len(SETUP_URL.findall(server.stderr)) == 1
    assert "INFO:z4j.setup:" in server.stderr
    assert "Traceback" not in server.stderr

    # A later boot finds the admin and prints no setup link.
    second = start_server()
    second.wait_until_healthy()
    assert second.stop() == 0
    assert SETUP_URL.search(second.stderr) is None
    assert "Traceback" not in second.stderr


def test_first_boot_with_bootstrap_admin(start_server: Any, run_z4j: RunZ4j) -> None:
    """With Z4J_BOOTSTRAP_ADMIN_* set, first boot creates the admin and prints no link."""
    server = start_server(
        Z4J_BOOTSTRAP_ADMIN_EMAIL="root@example.com", Z4J_BOOTSTRAP_ADMIN_PASSWORD=PASSWORD
    )
    server.wait_for_line(re.compile(r"created the first admin root@example\.com"))
    server.wait_until_healthy()
    created = run_z4j("api-key", "create", "--email", "root@example.com", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    status, body = request(
        f"{server.base}/api/v1/projects/default/queues",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert status == 200, body
    assert json.loads(body) == {"items": []}
    assert server.stop() == 0
    assert SETUP_URL.search(server.stderr) is None
