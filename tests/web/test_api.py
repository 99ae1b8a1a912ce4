"""The JSON API: health, readiness, authentication, tasks, workers, queues and its errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.encoding import utc_isoformat
from z4j_domain.serialization import TASK_API_FIELDS
from z4j_domain.testing import FakeClock
from z4j_web import services

from .support import T0, TASKS, Backend, Seeded, bearer, event, seed

pytestmark = pytest.mark.anyio

TASKS_URL = "/api/v1/projects/default/tasks"


async def get_json(client: Client, url: str, key: str | None, status: int = 200) -> Any:
    """GET ``url`` and return its JSON body, checking the status code."""
    response = await client.get(url, headers=bearer(key) if key else {})
    body = await response.get_json()
    assert response.status_code == status, body
    assert response.mimetype == "application/json"
    return body


def assert_error(body: Any, code: str, message: str | None = None) -> None:
    """``body`` is the API's error shape with ``code`` (and ``message``, when given)."""
    assert set(body) >= {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if message is not None:
        assert body["error"]["message"] == message


# -- probes ---------------------------------------------------------------------------


async def test_health_needs_no_auth_and_no_database(client: Client) -> None:
    """Liveness answers without credentials and says the version."""
    body = await get_json(client, "/api/v1/health", None)
    assert body["status"] == "ok"
    assert body["version"]


async def test_ready_checks_database_and_revision(client: Client, backend: Backend) -> None:
    """Readiness answers 200 with its checks when storage is up and migrated."""
    body = await get_json(client, "/api/v1/ready", None)
    assert body["status"] == "ready"
    assert all(check["ok"] for check in body["checks"].values())
    if backend.database is not None:
        assert set(body["checks"]) == {"database", "migrations"}


# -- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        TASKS_URL,
        f"{TASKS_URL}/t-00",
        f"{TASKS_URL}/t-00/canvas",
        "/api/v1/projects/default/workers",
        "/api/v1/projects/default/queues",
        "/api/v1/projects/nope/tasks",
    ],
)
async def test_every_project_route_needs_a_key(client: Client, seeded: Seeded, url: str) -> None:
    """Without a key: 401 JSON with a Bearer challenge, before anything else is looked at."""
    response = await client.get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await response.get_json(), "unauthorized")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer z4j_not-a-real-key",
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer z4j_" + "x" * 5000,
    ],
)
async def test_a_bad_key_is_401(client: Client, seeded: Seeded, header: str) -> None:
    """Wrong keys, other schemes and absurd lengths are 401 with ``invalid_token``."""
    response = await client.get(TASKS_URL, headers={"Authorization": header})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert_error(await response.get_json(), "unauthorized")


async def test_a_revoked_key_is_401(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """A key works until it is revoked, then it is refused."""
    await get_json(client, TASKS_URL, seeded.key)
    await backend.revoke_key(seeded.key_id, clock.now())
    body = await get_json(client, TASKS_URL, seeded.key, status=401)
    assert_error(body, "unauthorized", "invalid or revoked API key")


async def test_using_a_key_records_its_last_use(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """Authentication touches ``last_used_at`` (at most once a minute)."""
    from z4j_domain.users import hash_secret

    clock.advance(3600)
    await get_json(client, TASKS_URL, seeded.key)
    async with backend.uow_factory() as uow:
        key = await uow.api_keys.get_by_hash(hash_secret(seeded.key))
    assert key is not None
    assert key.last_used_at == clock.now()


# -- tasks ----------------------------------------------------------------------------


async def test_lists_tasks_newest_first(client: Client, seeded: Seeded) -> None:
    """The list shows every task in API form, newest first, on one page."""
    body = await get_json(client, TASKS_URL, seeded.key)
    assert [task["id"] for task in body["items"]] == seeded.task_ids
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert list(first) == list(TASK_API_FIELDS)
    assert first["state"] == "revoked"
    assert first["name"] == "app.cleanup"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "succeeded"}, {"t-00", "t-02"}),
        ({"state": "succeeded,failed"}, {"t-00", "t-01", "t-02"}),
        ({"state": "SUCCEEDED, failed"}, {"t-00", "t-01", "t-02"}),
        ({"name": "app.resize"}, {"t-02", "t-03"}),
        ({"queue": "mail"}, {"t-00", "t-01"}),
        ({"worker": "w1@host"}, {"t-00", "t-01", "t-04"}),
        ({"text": "REPORT"}, {"t-04", "t-05"}),
        ({"q": "t-0"}, {t for t, *_ in TASKS}),
        ({"q": "mail", "state": "failed"}, {"t-01"}),
        ({"since": "2026-01-01T12:05:00Z"}, {"t-05", "t-06"}),
        ({"until": "2026-01-01T12:01:00+00:00"}, {"t-00"}),
        ({"since": "2026-01-01T13:00:00+01:00", "until": "2026-01-01T12:02:00Z"}, {"t-00", "t-01"}),
        ({"name": "nothing.like.this"}, set()),
        ({"state": ""}, {t for t, *_ in TASKS}),
    ],
)
async def test_filters(
    client: Client, seeded: Seeded, params: dict[str, str], expected: set[str]
) -> None:
    """Each filter parameter selects what the domain's filter semantics say."""
    body = await get_json(client, f"{TASKS_URL}?{urlencode(params)}", seeded.key)
    assert {task["id"] for task in body["items"]} == expected


async def test_an_unencoded_plus_in_a_timestamp_still_works(client: Client, seeded: Seeded) -> None:
    """``since=...+01:00`` typed without %2B arrives as a space; it means the offset."""
    body = await get_json(
        client, f"{TASKS_URL}?since=2026-01-01T13:05:00+01:00&limit=10", seeded.key
    )
    assert {task["id"] for task in body["items"]} == {"t-05", "t-06"}


async def test_state_may_repeat(client: Client, seeded: Seeded) -> None:
    """``state=a&state=b`` is the same as ``state=a,b``."""
    body = await get_json(client, f"{TASKS_URL}?state=revoked&state=pending", seeded.key)
    assert [task["id"] for task in body["items"]] == ["t-06", "t-05"]


async def test_pagination_walks_every_task_once(client: Client, seeded: Seeded) -> None:
    """Following ``next_cursor`` with limit=3 visits all tasks in order, then stops."""
    seen: list[str] = []
    url = f"{TASKS_URL}?limit=3"
    pages = 0
    while True:
        body = await get_json(client, url, seeded.key)
        pages += 1
        seen += [task["id"] for task in body["items"]]
        if body["next_cursor"] is None:
            break
        url = f"{TASKS_URL}?limit=3&cursor={quote(body['next_cursor'])}"
    assert pages == 3
    assert seen == seeded.task_ids


async def test_pagination_keeps_the_filter(client: Client, seeded: Seeded) -> None:
    """A cursor continues the same filtered list."""
    first = await get_json(client, f"{TASKS_URL}?queue=celery&limit=2", seeded.key)
    assert [t["id"] for t in first["items"]] == ["t-06", "t-04"]
    second = await get_json(
        client, f"{TASKS_URL}?queue=celery&limit=2&cursor={first['next_cursor']}", seeded.key
    )
    assert [t["id"] for t in second["items"]] == ["t-03", "t-02"]
    assert second["next_cursor"] is None


BAD_PARAMS = [
    (
        "state=bogus",
        "unknown state 'bogus'; expected one of: pending, received, started, succeeded,"
        " failed, retried, revoked, rejected, lost",
    ),
    ("since=yesterday", "since is not an ISO 8601 timestamp: 'yesterday'"),
    ("until=2026-13-01T00:00:00Z", "until is not an ISO 8601 timestamp: '2026-13-01T00:00:00Z'"),
    (
        "since=2026-01-01T00:00:00",
        "since needs a timezone offset, e.g. 2026-01-01T00:00:00+00:00 or 2026-01-01T00:00:00Z",
    ),
    ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "since must be earlier than until"),
    ("cursor=not-a-cursor", "invalid cursor: pass next_cursor from a previous page"),
    ("cursor=" + "A" * 3000, "invalid cursor: pass next_cursor from a previous page"),
    ("cursor=WyJ4IiwgMV0", "invalid cursor: pass next_cursor from a previous page"),
    ("limit=0", "limit must be between 1 and 500, got 0"),
    ("limit=501", "limit must be between 1 and 500, got 501"),
    ("limit=-1", "limit must be between 1 and 500, got -1"),
    ("limit=ten", "limit must be an integer, got 'ten'"),
    ("limit=1e3", "limit must be an integer, got '1e3'"),
    ("name=" + "x" * 201, "name is longer than 200 characters"),
    ("q=" + "x" * 201, "text is longer than 200 characters"),
    ("retry_of=" + "x" * 256, "retry_of is longer than 255 characters"),
    ("text=a&q=b", "pass either text or q, not both"),
    ("queue=a&queue=b", "parameter 'queue' given more than once"),
]


@pytest.mark.parametrize(("query", "message"), BAD_PARAMS)
async def test_bad_parameters_are_400_with_the_reason(
    client: Client, seeded: Seeded, query: str, message: str
) -> None:
    """Bad filters, cursors and limits are 400 with the domain's message, never 500."""
    body = await get_json(client, f"{TASKS_URL}?{query}", seeded.key, status=400)
    assert_error(body, "invalid_input", message)


async def test_unknown_parameters_are_refused(client: Client, seeded: Seeded) -> None:
    """A misspelt parameter is 400, not silently ignored."""
    body = await get_json(client, f"{TASKS_URL}?status=failed", seeded.key, status=400)
    assert_error(body, "invalid_input")
    assert body["error"]["message"].startswith("unknown parameter 'status'")


@pytest.mark.parametrize(
    "query",
    [
        "name=%00",
        "text=%00%ff",
        "q=%27%3B--",
        "worker=%F0%9F%92%A5",
        "since=%00",
        "cursor=%00",
        "retry_of=%00%ff",
    ],
)
async def test_odd_bytes_never_cause_a_500(client: Client, seeded: Seeded, query: str) -> None:
    """NUL bytes, invalid UTF-8 and quotes in parameters are 200 or 400, never 500."""
    response = await client.get(f"{TASKS_URL}?{query}", headers=bearer(seeded.key))
    assert response.status_code in (200, 400), await response.get_data()


async def test_task_detail_has_its_timeline(client: Client, seeded: Seeded) -> None:
    """A task's detail is the task plus its events in timeline order."""
    body = await get_json(client, f"{TASKS_URL}/t-01", seeded.key)
    assert body["id"] == "t-01"
    assert body["state"] == "failed"
    assert body["exception"] == "ValueError('boom')"
    assert body["args"] == [1]
    assert body["kwargs"] == {"n": 1}
    assert [e["kind"] for e in body["events"]] == ["sent", "received", "started", "failed"]
    assert all(e["task_id"] == "t-01" for e in body["events"])


async def test_task_detail_lists_the_tasks_that_retried_it(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """A retry names the task it retried; that task lists its retries, oldest first."""
    retries = [
        event("t-01-b", "sent", 20, name="app.send_mail", retry_of="t-01"),
        event("t-01-a", "received", 10.1, worker="w2@host"),
        event("t-01-a", "sent", 10, name="app.send_mail", retry_of="t-01"),
        event("t-01-a", "succeeded", 10.3, worker="w2@host", result=1),
        # A retry of the retry is the first retry's, not the original's.
        event("t-01-a-a", "sent", 30, name="app.send_mail", retry_of="t-01-a"),
    ]
    async with backend.uow_factory() as uow:
        await uow.tasks.apply_events(seeded.project_id, retries)
        await uow.commit()

    def at(minute: float) -> str:
        return utc_isoformat(T0 + timedelta(minutes=minute))

    original = await get_json(client, f"{TASKS_URL}/t-01", seeded.key)
    assert original["retry_of"] is None
    assert original["retries"] == 0  # Celery's count of the task's own retries, untouched
    assert original["retried_by"] == [
        {
            "id": "t-01-a",
            "name": "app.send_mail",
            "state": "succeeded",
            "attempt": 0,
            "first_seen_at": at(10),
            "sent_at": at(10),
            "received_at": at(10.1),
            "started_at": None,
            "finished_at": at(10.3),
        },
        {
            "id": "t-01-b",
            "name": "app.send_mail",
            "state": "pending",
            "attempt": 0,
            "first_seen_at": at(20),
            "sent_at": at(20),
            "received_at": None,
            "started_at": None,
            "finished_at": None,
        },
    ]
    first = await get_json(client, f"{TASKS_URL}/t-01-a", seeded.key)
    assert first["retry_of"] == "t-01"
    assert [retry["id"] for retry in first["retried_by"]] == ["t-01-a-a"]
    plain = await get_json(client, f"{TASKS_URL}/t-02", seeded.key)
    assert (plain["retry_of"], plain["retried_by"]) == (None, [])
    listed = await get_json(client, TASKS_URL, seeded.key)
    assert {task["id"]: task["retry_of"] for task in listed["items"][:3]} == {
        "t-01-a-a": "t-01-a",
        "t-01-b": "t-01",
        "t-01-a": "t-01",
    }
    filtered = await get_json(client, f"{TASKS_URL}?retry_of=t-01", seeded.key)
    assert [task["id"] for task in filtered["items"]] == ["t-01-b", "t-01-a"]
    pending = await get_json(client, f"{TASKS_URL}?retry_of=t-01&state=pending", seeded.key)
    assert [task["id"] for task in pending["items"]] == ["t-01-b"]


async def test_task_canvas_lays_out_a_chord_from_any_of_its_tasks(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """a | chord([b, c, d], e) | f: the same layout from each task, a fan-in of three edges."""
    canvas = {"root_id": "c-a"}
    events = [
        event("c-a", "succeeded", 20, name="app.start", runtime=0.5),
        *(
            event(
                h,
                "succeeded",
                21,
                name="app.part",
                parent_id="c-a",
                group_id="G",
                chord_id="c-e",
                runtime=2.0,
                **canvas,
            )
            for h in ("c-b", "c-c", "c-d")
        ),
        # The callback: published by the header task that finished last.
        event("c-e", "started", 22, name="app.join", parent_id="c-c", group_id="G", **canvas),
        event("c-f", "sent", 23, name="app.notify", parent_id="c-e", **canvas),
    ]
    async with backend.uow_factory() as uow:
        await uow.tasks.apply_events(seeded.project_id, events)
        await uow.commit()

    body = await get_json(client, f"{TASKS_URL}/c-c/canvas", seeded.key)
    assert (body["task_id"], body["root_id"], body["truncated"]) == ("c-c", "c-a", False)
    nodes = {node["id"]: node for node in body["nodes"]}
    assert {i: nodes[i]["layer"] for i in nodes} == {
        "c-a": 0,
        "c-b": 1,
        "c-c": 1,
        "c-d": 1,
        "c-e": 2,
        "c-f": 3,
    }
    assert nodes["c-e"]["chord_callback"]
    assert (nodes["c-e"]["state"], nodes["c-b"]["runtime"]) == ("started", 2.0)
    assert nodes["c-c"]["group_member"]
    assert sorted((e["source"], e["target"], e["kind"]) for e in body["edges"]) == [
        ("c-a", "c-b", "parent"),
        ("c-a", "c-c", "parent"),
        ("c-a", "c-d", "parent"),
        ("c-b", "c-e", "chord"),
        ("c-c", "c-e", "chord"),
        ("c-d", "c-e", "chord"),
        ("c-e", "c-f", "parent"),
    ]
    for task_id in ("c-a", "c-e", "c-f"):
        other = await get_json(client, f"{TASKS_URL}/{task_id}/canvas", seeded.key)
        assert other == {**body, "task_id": task_id}
    # Storage is asked for one task more than fits, so a cut canvas says so.
    async with backend.uow_factory() as uow:
        project = await uow.projects.get(seeded.project_id)
    assert project is not None
    root_id, cut = await services.get_task_canvas(backend.uow_factory, project, "c-f", max_nodes=3)
    assert (root_id, cut.truncated) == ("c-a", True)
    assert [placed.node.id for placed in cut.nodes] == ["c-a", "c-b", "c-c"]
    # A task outside any canvas is a canvas of one.
    alone = await get_json(client, f"{TASKS_URL}/t-02/canvas", seeded.key)
    assert (alone["root_id"], [n["id"] for n in alone["nodes"]], alone["edges"]) == (
        "t-02",
        ["t-02"],
        [],
    )


async def test_task_canvas_of_a_chord_applied_from_outside_a_task(
    client: Client, seeded: Seeded, backend: Backend
) -> None:
    """chord([add] * 3)(total) applied outside a task, as a real worker stores it: the header
    tasks are each their own root, the callback names one of them as root and parent. The
    canvas is still the four tasks, the same from each, with a fan-in edge from every header.
    """
    events = [
        *(
            event(h, "succeeded", 30 + n, name="app.add", root_id=h, group_id="O", chord_id="o-cb")
            for n, h in enumerate(("o-h1", "o-h2", "o-h3"))
        ),
        event(
            "o-cb",
            "succeeded",
            34,
            name="app.total",
            root_id="o-h1",
            parent_id="o-h1",
            group_id="O",
        ),
        # Another chord applied from outside: not part of this canvas.
        event(
            "x-h1", "succeeded", 30, name="app.add", root_id="x-h1", group_id="X", chord_id="x-cb"
        ),
        event("x-cb", "sent", 31, name="app.total", root_id="x-h1", parent_id="x-h1", group_id="X"),
    ]
    async with backend.uow_factory() as uow:
        await uow.tasks.apply_events(seeded.project_id, events)
        await uow.commit()

    body = await get_json(client, f"{TASKS_URL}/o-cb/canvas", seeded.key)
    assert (body["task_id"], body["root_id"], body["truncated"]) == ("o-cb", "o-h1", False)
    nodes = {node["id"]: node for node in body["nodes"]}
    assert {i: nodes[i]["layer"] for i in nodes} == {"o-h1": 0, "o-h2": 0, "o-h3": 0, "o-cb": 1}
    assert nodes["o-cb"]["chord_callback"]
    assert not any(node["missing"] for node in body["nodes"])
    assert sorted((e["source"], e["target"], e["kind"]) for e in body["edges"]) == [
        ("o-h1", "o-cb", "chord"),
        ("o-h2", "o-cb", "chord"),
        ("o-h3", "o-cb", "chord"),
    ]
    # From a header task: the same layout; its root is its own.
    for task_id in ("o-h1", "o-h2", "o-h3"):
        other = await get_json(client, f"{TASKS_URL}/{task_id}/canvas", seeded.key)
        assert other == {**body, "task_id": task_id, "root_id": task_id}
    other = await get_json(client, f"{TASKS_URL}/x-cb/canvas", seeded.key)
    assert sorted(node["id"] for node in other["nodes"]) == ["x-cb", "x-h1"]


@pytest.mark.parametrize(
    "url",
    [
        f"{TASKS_URL}/no-such-task",
        f"{TASKS_URL}/{'x' * 1000}",
        f"{TASKS_URL}/a/b/c",
        f"{TASKS_URL}/no-such-task/canvas",
        "/api/v1/projects/nope/tasks/t-00/canvas",
        "/api/v1/projects/nope/tasks",
        "/api/v1/projects/nope/tasks/t-00",
        "/api/v1/projects/nope/workers",
        "/api/v1/projects/nope/queues",
        "/api/v1/projects/NOT%20A%20SLUG/queues",
    ],
)
async def test_unknown_projects_and_tasks_are_404(client: Client, seeded: Seeded, url: str) -> None:
    """An unknown project or task is a JSON 404."""
    body = await get_json(client, url, seeded.key, status=404)
    assert_error(body, "not_found")


async def test_nul_in_the_path_is_400(client: Client, seeded: Seeded) -> None:
    """A NUL character in a task id or slug is bad input (PostgreSQL cannot even compare it)."""
    for url in (f"{TASKS_URL}/a%00b", "/api/v1/projects/a%00b/tasks"):
        body = await get_json(client, url, seeded.key, status=400)
        assert_error(body, "invalid_input", "the path contains a NUL character")


# -- workers and queues ---------------------------------------------------------------


async def test_lists_workers(client: Client, seeded: Seeded) -> None:
    """Workers are listed by hostname in API form."""
    body = await get_json(client, "/api/v1/projects/default/workers", seeded.key)
    assert [w["hostname"] for w in body["items"]] == ["w1@host", "w2@host"]
    assert body["items"][0]["status"] == "online"
    assert body["items"][0]["queues"] == ["celery", "mail"]


async def test_counts_tasks_per_queue_and_state(client: Client, seeded: Seeded) -> None:
    """Queues come with per-state counts and a total; the unknown queue comes last."""
    body = await get_json(client, "/api/v1/projects/default/queues", seeded.key)
    assert body["items"] == [
        {
            "queue": "celery",
            "counts": {"retried": 1, "revoked": 1, "started": 1, "succeeded": 1},
            "total": 4,
        },
        {"queue": "mail", "counts": {"failed": 1, "succeeded": 1}, "total": 2},
        {"queue": None, "counts": {"pending": 1}, "total": 1},
    ]


async def test_an_empty_project_has_empty_lists(
    client: Client, backend: Backend, clock: FakeClock
) -> None:
    """A project without data answers empty lists, not 404."""
    created = await seed(backend.uow_factory, clock)
    async with backend.uow_factory() as uow:
        await uow.projects.create(slug="empty", name="Empty", created_at=clock.now())
        await uow.commit()
    for what in ("tasks", "workers", "queues"):
        body = await get_json(client, f"/api/v1/projects/empty/{what}", created.key)
        assert body["items"] == []


# -- routing errors -------------------------------------------------------------------


async def test_unknown_api_route_is_json_404(client: Client) -> None:
    """Any path under /api/ that matches no route is a JSON 404."""
    body = await get_json(client, "/api/v2/nothing", None, status=404)
    assert_error(body, "not_found", "no such endpoint: GET /api/v2/nothing")


async def test_wrong_method_is_json_405(client: Client) -> None:
    """A wrong method is a JSON 405 that keeps the Allow header."""
    response = await client.post("/api/v1/health", json={})
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert_error(await response.get_json(), "method_not_allowed")


async def test_status_counts_service(backend: Backend, clock: FakeClock, test_app: Any) -> None:
    """The status counts see what was stored."""
    await seed(backend.uow_factory, clock)
    counts = await services.status_counts(backend.uow_factory)
    assert counts == services.StatusCounts(users=1, projects=1, agents=0, tasks=7, workers=2)
