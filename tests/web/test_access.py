"""RBAC over the API: each role against each project endpoint, bound and capped keys."""

from __future__ import annotations

from typing import Any, Final

import attrs
import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.rbac import Permission, Role
from z4j_domain.testing import FakeClock, PlainPasswordHasher
from z4j_web import accounts

from .support import ADMIN_EMAIL, Backend, Seeded, bearer, change

pytestmark = pytest.mark.anyio

PASSWORD: Final = "a long enough password"
P: Final = "/api/v1/projects/default"


@attrs.frozen
class Endpoint:
    """One project endpoint, the permission it needs, and what success answers."""

    method: str
    path: str
    permission: Permission
    ok: int = 200
    body: Any = None


# Allowed requests must succeed without changing who may do what, so the matrix
# can run them in any order: targets that do not exist answer 404 after the
# permission check, and the one role change sets a role the member already has.
ENDPOINTS: Final = [
    Endpoint("GET", f"{P}/tasks", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/tasks/t-00", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/tasks/t-00/canvas", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/workers", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/queues", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/agents", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/overview?window=day", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/settings/redaction", Permission.READ_TASKS),
    Endpoint(
        "PUT",
        f"{P}/settings/redaction",
        Permission.CHANGE_SETTINGS,
        body={"extra_key_patterns": ["pin"]},
    ),
    Endpoint("POST", f"{P}/agents", Permission.MANAGE_AGENTS, ok=201, body={"name": "{role}"}),
    Endpoint("DELETE", f"{P}/agents/no-such-agent", Permission.MANAGE_AGENTS, ok=404),
    Endpoint("GET", f"{P}/members", Permission.MANAGE_MEMBERS),
    Endpoint(
        "PUT",
        f"{P}/members/bystander@example.com",
        Permission.MANAGE_MEMBERS,
        body={"role": "viewer"},
    ),
    Endpoint("DELETE", f"{P}/members/nobody@example.com", Permission.MANAGE_MEMBERS, ok=404),
    Endpoint("GET", f"{P}/invitations", Permission.MANAGE_MEMBERS),
    Endpoint(
        "POST",
        f"{P}/invitations",
        Permission.MANAGE_MEMBERS,
        ok=201,
        body={"email": "{role}-invitee@example.com", "role": "viewer"},
    ),
    Endpoint("DELETE", f"{P}/invitations/999999", Permission.MANAGE_MEMBERS, ok=404),
    Endpoint("GET", f"{P}/audit", Permission.READ_AUDIT),
    Endpoint("GET", f"{P}/schedules", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/schedules/no-beat/nightly", Permission.READ_TASKS, ok=404),
    Endpoint(
        "POST",
        f"{P}/schedules/preview",
        Permission.READ_TASKS,
        body={"schedule": {"kind": "crontab", "minute": "*/5"}},
    ),
    # No scheduler has reported: a permitted change finds none (404) and stores nothing.
    Endpoint(
        "POST",
        f"{P}/schedules",
        Permission.MANAGE_SCHEDULES,
        ok=404,
        body={
            "scheduler": "no-beat",
            "entry": {
                "name": "nightly",
                "task": "app.report",
                "schedule": {"kind": "interval", "every": 5, "period": "seconds"},
            },
        },
    ),
    Endpoint(
        "PUT",
        f"{P}/schedules/no-beat/nightly",
        Permission.MANAGE_SCHEDULES,
        ok=404,
        body={
            "entry": {
                "name": "nightly",
                "task": "app.report",
                "schedule": {"kind": "interval", "every": 5, "period": "seconds"},
            }
        },
    ),
    Endpoint("DELETE", f"{P}/schedules/no-beat/nightly", Permission.MANAGE_SCHEDULES, ok=404),
    Endpoint("POST", f"{P}/schedules/no-beat/nightly/enable", Permission.MANAGE_SCHEDULES, ok=404),
    Endpoint("POST", f"{P}/schedules/no-beat/nightly/disable", Permission.MANAGE_SCHEDULES, ok=404),
    Endpoint("POST", f"{P}/schedules/no-beat/nightly/trigger", Permission.MANAGE_SCHEDULES, ok=404),
    # Actions only store a command (no agent is connected), so any order is fine.
    Endpoint("POST", f"{P}/tasks/t-01/retry", Permission.RETRY, ok=202),
    Endpoint("POST", f"{P}/tasks/t-03/cancel", Permission.CANCEL, ok=202),
    Endpoint(
        "POST",
        f"{P}/tasks/bulk-retry",
        Permission.BULK_ACTIONS,
        body={"filter": {"state": "failed"}, "dry_run": True},
    ),
    Endpoint(
        "POST", f"{P}/tasks/bulk-cancel", Permission.BULK_ACTIONS, ok=202, body={"ids": ["t-03"]}
    ),
    Endpoint(
        "POST", f"{P}/queues/celery/purge", Permission.PURGE, ok=202, body={"confirm_depth": 0}
    ),
    Endpoint("GET", f"{P}/commands", Permission.READ_TASKS),
    Endpoint("GET", f"{P}/commands/no-such-command", Permission.READ_TASKS, ok=404),
]

#: Who may do what, written out: the matrix the API must follow.
ALLOWED: Final = {
    "viewer": {Permission.READ_TASKS},
    "auditor": {Permission.READ_TASKS, Permission.READ_AUDIT},
    "operator": {
        Permission.READ_TASKS,
        Permission.RETRY,
        Permission.CANCEL,
        Permission.BULK_ACTIONS,
        Permission.MANAGE_SCHEDULES,
    },
    "admin": set(Permission),
    "instance-admin": set(Permission),
}


async def add_user(
    backend: Backend, clock: FakeClock, email: str, role: Role | None, *, is_admin: bool = False
) -> str:
    """Create a user (a member of the default project with ``role``) and return an API key."""
    user = await accounts.create_user(
        change(backend.uow_factory, clock),
        PlainPasswordHasher(),
        None,
        email=email,
        password=PASSWORD,
        is_admin=is_admin,
    )
    if role is not None:
        async with backend.uow_factory() as uow:
            project = await uow.projects.get_by_slug("default")
            assert project is not None
            await uow.memberships.set(project.id, user.id, role, clock.now())
            await uow.commit()
    created = await accounts.create_api_key(
        change(backend.uow_factory, clock), email=email, name="tests"
    )
    return created.key


@pytest.fixture
async def keys(seeded: Seeded, backend: Backend, clock: FakeClock) -> dict[str, str]:
    """An API key per role of the default project, an instance admin's, and an outsider's."""
    result = {"instance-admin": seeded.key}
    for role in Role:
        result[role.value] = await add_user(
            backend, clock, f"{role.value}-member@example.com", role
        )
    result["outsider"] = await add_user(backend, clock, "outsider@example.com", None)
    await add_user(backend, clock, "bystander@example.com", Role.VIEWER)
    return result


async def call(
    client: Client, endpoint: Endpoint, headers: dict[str, str], role: str
) -> tuple[int, Any]:
    """Send ``endpoint``'s request; return its status and JSON body."""
    body = endpoint.body
    if isinstance(body, dict):
        body = {k: v.format(role=role) if isinstance(v, str) else v for k, v in body.items()}
    response = await client.open(endpoint.path, method=endpoint.method, headers=headers, json=body)
    return response.status_code, await response.get_json()


async def test_every_role_against_every_project_endpoint(
    client: Client, keys: dict[str, str]
) -> None:
    """Each role gets success where the matrix allows, 403 where it does not; outsiders 404."""
    mismatches = []
    for who, key in keys.items():
        for endpoint in ENDPOINTS:
            if who == "outsider":
                expected = 404
            elif endpoint.permission in ALLOWED[who]:
                expected = endpoint.ok
            else:
                expected = 403
            status, body = await call(client, endpoint, bearer(key), who)
            if status != expected:
                mismatches.append((who, endpoint.method, endpoint.path, status, expected, body))
            if status == 403:
                assert body["error"]["code"] == "forbidden"
                assert endpoint.permission.value in body["error"]["message"]
    assert mismatches == []


async def test_no_credentials_get_401_on_every_endpoint(client: Client, seeded: Seeded) -> None:
    """Without credentials every project endpoint answers 401 with a Bearer challenge."""
    for endpoint in ENDPOINTS:
        status, body = await call(client, endpoint, {}, "anonymous")
        assert status == 401, (endpoint, body)
        assert body["error"]["code"] == "unauthorized"


async def test_unknown_and_invisible_projects_read_the_same(
    client: Client, keys: dict[str, str]
) -> None:
    """A project the caller cannot see answers exactly like one that does not exist."""
    hidden = await client.get(f"{P}/tasks", headers=bearer(keys["outsider"]))
    missing = await client.get("/api/v1/projects/nope/tasks", headers=bearer(keys["outsider"]))
    assert hidden.status_code == missing.status_code == 404
    assert (await hidden.get_json())["error"]["message"] == "no project 'default'"
    assert (await missing.get_json())["error"]["message"] == "no project 'nope'"


async def test_a_key_bound_to_project_a_cannot_read_project_b(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """An instance admin's key bound to one project gets 404 for every other project."""
    await accounts.create_project(
        change(backend.uow_factory, clock), None, slug="other", name="Other"
    )
    bound = await accounts.create_api_key(
        change(backend.uow_factory, clock), email=ADMIN_EMAIL, name="a", project="other"
    )
    own = await client.get("/api/v1/projects/other/tasks", headers=bearer(bound.key))
    assert own.status_code == 200
    for path in ("/tasks", "/workers", "/audit", "/members", "/settings/redaction"):
        response = await client.get(f"{P}{path}", headers=bearer(bound.key))
        assert response.status_code == 404, path
    listed = await client.get("/api/v1/projects", headers=bearer(bound.key))
    assert [p["slug"] for p in (await listed.get_json())["items"]] == ["other"]
    # A bound key is no instance admin: it cannot create projects or users.
    created = await client.post(
        "/api/v1/projects", headers=bearer(bound.key), json={"slug": "third"}
    )
    assert created.status_code == 403


async def test_a_capped_key_does_no_more_than_its_cap(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """An admin's key capped at viewer may read but not change settings or mint agents."""
    capped = await accounts.create_api_key(
        change(backend.uow_factory, clock), email=ADMIN_EMAIL, name="ro", role="viewer"
    )
    headers = bearer(capped.key)
    assert (await client.get(f"{P}/tasks", headers=headers)).status_code == 200
    refused = await client.put(
        f"{P}/settings/redaction", headers=headers, json={"extra_key_patterns": ["x"]}
    )
    assert refused.status_code == 403
    message = (await refused.get_json())["error"]["message"]
    assert "capped at viewer" in message
    assert (
        await client.post(f"{P}/agents", headers=headers, json={"name": "w"})
    ).status_code == 403
    # Nor can it mint itself a broader key.
    broader = await client.post("/api/v1/auth/api-keys", headers=headers, json={"name": "x"})
    assert broader.status_code == 403
    narrower = await client.post(
        "/api/v1/auth/api-keys", headers=headers, json={"name": "x", "role": "viewer"}
    )
    assert narrower.status_code == 201
    assert (await narrower.get_json())["api_key"]["role"] == "viewer"


async def test_a_removed_member_loses_access_at_once(client: Client, keys: dict[str, str]) -> None:
    """Removing a member turns their next request into a 404; a role change applies at once."""
    admin = bearer(keys["admin"])
    operator = bearer(keys["operator"])
    body = {"extra_key_patterns": ["pin"]}
    assert (
        await client.put(f"{P}/settings/redaction", headers=operator, json=body)
    ).status_code == 403
    promoted = await client.put(
        f"{P}/members/operator-member@example.com", headers=admin, json={"role": "admin"}
    )
    assert promoted.status_code == 200
    assert (
        await client.put(f"{P}/settings/redaction", headers=operator, json=body)
    ).status_code == 200
    removed = await client.delete(f"{P}/members/operator-member@example.com", headers=admin)
    assert removed.status_code == 200
    assert (await client.get(f"{P}/tasks", headers=operator)).status_code == 404


async def test_the_last_admin_cannot_be_demoted_or_removed(
    client: Client, keys: dict[str, str]
) -> None:
    """A project keeps at least one admin member: demoting or removing the last one is a 409."""
    admin = bearer(keys["admin"])
    demoted = await client.put(
        f"{P}/members/admin-member@example.com", headers=admin, json={"role": "viewer"}
    )
    assert demoted.status_code == 409
    assert "last admin" in (await demoted.get_json())["error"]["message"]
    assert (
        await client.delete(f"{P}/members/admin-member@example.com", headers=admin)
    ).status_code == 409


async def test_member_endpoints_refuse_bad_input(client: Client, keys: dict[str, str]) -> None:
    """Unknown roles, unknown users and malformed bodies are 400/404 with the reason."""
    admin = bearer(keys["admin"])
    bad_role = await client.put(
        f"{P}/members/viewer-member@example.com", headers=admin, json={"role": "god"}
    )
    assert bad_role.status_code == 400
    assert "unknown role 'god'" in (await bad_role.get_json())["error"]["message"]
    unknown = await client.put(
        f"{P}/members/ghost@example.com", headers=admin, json={"role": "viewer"}
    )
    assert unknown.status_code == 404
    assert "invite them" in (await unknown.get_json())["error"]["message"]
    for body in (None, [], {"role": 3}, {"role": "viewer", "extra": 1}):
        response = await client.put(
            f"{P}/members/viewer-member@example.com", headers=admin, json=body
        )
        assert response.status_code == 400, body


async def test_instance_admin_endpoints(client: Client, keys: dict[str, str]) -> None:
    """Only an instance admin lists and creates users and projects or reads the whole log."""
    root = bearer(keys["instance-admin"])
    created = await client.post("/api/v1/projects", headers=root, json={"slug": "billing"})
    assert created.status_code == 201
    duplicate = await client.post("/api/v1/projects", headers=root, json={"slug": "billing"})
    assert duplicate.status_code == 409
    user = await client.post(
        "/api/v1/users", headers=root, json={"email": "new@example.com", "password": PASSWORD}
    )
    assert user.status_code == 201
    assert "password" not in str(await user.get_json())
    assert (await client.get("/api/v1/users", headers=root)).status_code == 200
    assert (await client.get("/api/v1/audit", headers=root)).status_code == 200
    for role in ("admin", "operator", "viewer", "auditor", "outsider"):
        headers = bearer(keys[role])
        assert (await client.get("/api/v1/users", headers=headers)).status_code == 403
        assert (await client.get("/api/v1/audit", headers=headers)).status_code == 403
        refused = await client.post("/api/v1/projects", headers=headers, json={"slug": "x"})
        assert refused.status_code == 403
    # Members see only their projects, each with their role and permissions.
    listed = await client.get("/api/v1/projects", headers=bearer(keys["auditor"]))
    (only,) = (await listed.get_json())["items"]
    assert only["slug"] == "default"
    assert only["role"] == "auditor"
    assert only["permissions"] == ["audit.read", "tasks.read"]
