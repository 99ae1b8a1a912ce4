"""The dashboard's server-rendered pages: login, the task list, a task's page, logout.

What the page's script does (live updates, the buttons, the canvas) is tested
in a real browser under ``tests/browser``; here the HTML each page serves.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import quote

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock

from .support import ADMIN_EMAIL, ADMIN_PASSWORD, Backend, Seeded
from .test_access import PASSWORD, add_user

pytestmark = pytest.mark.anyio

TASKS: Final = "/projects/default/tasks"


async def log_in(client: Client, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Any:
    return await client.post(
        "/login", form={"email": email, "password": password, "next": "/projects/default/tasks"}
    )


async def text(response: Any) -> str:
    body: bytes = await response.get_data()
    return body.decode()


def rows(html: str) -> list[str]:
    """The task ids of the task list's rows, in order."""
    return re.findall(r'<tr data-task-id="([^"]+)"', html)


#: Every dashboard page (a session is required for each).
PAGES: Final = [
    "/projects/default/overview",
    "/projects/default/tasks",
    "/projects/default/tasks/t-01",
    "/projects/default/workers",
    "/projects/default/queues",
    "/projects/default/schedules",
    "/projects/default/schedules/beat/heartbeat",
    "/projects/default/agents",
    "/projects/default/members",
    "/projects/default/audit",
    "/projects/default/settings",
    "/account",
    "/",
]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_sends_a_browser_without_a_session_to_log_in(
    client: Client, seeded: Seeded, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={quote(path, safe='')}"


async def test_pages_redirect_to_the_login_form_without_a_session(
    client: Client, seeded: Seeded
) -> None:
    """A page asked for without a session sends the browser to log in, and back afterwards."""
    response = await client.get(f"{TASKS}?state=failed")
    assert response.status_code == 302
    assert (
        response.headers["Location"] == "/login?next=%2Fprojects%2Fdefault%2Ftasks%3Fstate%3Dfailed"
    )
    form = await client.get(response.headers["Location"])
    assert form.status_code == 200
    html = await text(form)
    assert 'name="next" value="/projects/default/tasks?state=failed"' in html
    assert "script-src 'self'" in form.headers["Content-Security-Policy"]


async def test_logging_in_sets_the_session_and_goes_where_the_user_was_headed(
    client: Client, seeded: Seeded
) -> None:
    """The form logs in (cookie set) and redirects; the tasks page then lists the tasks."""
    response = await log_in(client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/projects/default/tasks"
    assert "z4j_session=" in response.headers["Set-Cookie"]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    page = await client.get(TASKS)
    assert page.status_code == 200
    html = await text(page)
    assert rows(html) == seeded.task_ids
    assert ADMIN_EMAIL in html
    assert '<meta name="z4j-csrf" content="' in html
    assert 'data-live="on"' in html


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"email": ADMIN_EMAIL, "password": "wrong"}, "wrong email or password"),
        ({"email": "nobody@example.com", "password": ADMIN_PASSWORD}, "wrong email or password"),
    ],
)
async def test_a_wrong_login_says_so_in_words(
    client: Client, seeded: Seeded, form: dict[str, str], message: str
) -> None:
    """401 with the form again, the email kept, the reason shown."""
    response = await client.post("/login", form=form)
    assert response.status_code == 401
    html = await text(response)
    assert message in html.lower()
    assert f'value="{form["email"]}"' in html


async def test_a_login_redirects_only_to_this_site(client: Client, seeded: Seeded) -> None:
    """A ``next`` pointing elsewhere (``//evil.example``) goes to ``/`` instead."""
    response = await client.post(
        "/login", form={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "next": "//evil.example/"}
    )
    assert response.headers["Location"] == "/"
    home = await client.get("/")
    assert home.headers["Location"] == "/projects/default/overview"


async def test_the_task_list_filters_from_the_url_and_pages(client: Client, seeded: Seeded) -> None:
    """Filters are query parameters (bookmarkable); a bad one is shown as an error."""
    await log_in(client)
    failed = await text(await client.get(f"{TASKS}?state=failed"))
    assert rows(failed) == ["t-01"]
    assert 'value="failed" checked' in failed
    named = await text(await client.get(f"{TASKS}?name=app.resize&state=succeeded&state=started"))
    assert rows(named) == ["t-03", "t-02"]
    first = await text(await client.get(f"{TASKS}?limit=3"))
    assert rows(first) == seeded.task_ids[:3]
    next_url = re.search(r'href="(\?[^"]+)" rel="next"', first)
    assert next_url is not None
    second = await text(await client.get(TASKS + next_url.group(1).replace("&amp;", "&")))
    assert rows(second) == seeded.task_ids[3:6]
    assert 'data-live="off"' in second
    bad = await client.get(f"{TASKS}?state=finished")
    assert bad.status_code == 400
    assert "unknown state &#39;finished&#39;" in await text(bad)


async def test_a_task_page_shows_its_fields_traceback_timeline_and_actions(
    client: Client, seeded: Seeded
) -> None:
    """The failed t-01: exception, traceback, events, and retry for an admin."""
    await log_in(client)
    response = await client.get(f"{TASKS}/t-01")
    assert response.status_code == 200
    html = await text(response)
    assert "ValueError(&#39;boom&#39;)" in html
    assert "data-traceback>Traceback ..." in html
    assert 'data-action="retry"' in html
    assert 'data-action="cancel"' not in html  # it ended: nothing to cancel
    for kind in ("sent", "received", "started", "failed"):
        assert f'class="state state-{kind}">{kind}</span>' in html
    assert 'data-canvas data-project="default" data-task="t-01"' in html
    running = await text(await client.get(f"{TASKS}/t-03"))
    assert 'data-action="cancel"' in running


async def test_a_viewer_sees_no_retry_button_and_why(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """The page follows the permissions: a viewer reads the task, the buttons are gone."""
    await add_user(backend, clock, "viewer@example.com", Role.VIEWER)
    await log_in(client, "viewer@example.com", PASSWORD)
    html = await text(await client.get(f"{TASKS}/t-01"))
    assert 'data-action="retry"' not in html
    assert "your role in this project cannot retry tasks" in html


async def test_an_unknown_task_or_project_is_a_404_page(client: Client, seeded: Seeded) -> None:
    await log_in(client)
    assert (await client.get(f"{TASKS}/no-such-task")).status_code == 404
    assert (await client.get("/projects/nope/tasks")).status_code == 404


async def test_logout_needs_the_pages_csrf_token_and_ends_the_session(
    client: Client, seeded: Seeded
) -> None:
    """Without the token the logout is refused (403); with it the session ends."""
    await log_in(client)
    html = await text(await client.get(TASKS))
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert token is not None
    refused = await client.post("/logout", form={"csrf_token": "wrong"})
    assert refused.status_code == 403
    response = await client.post("/logout", form={"csrf_token": token.group(1)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert (await client.get(TASKS)).status_code == 302


async def test_the_script_and_stylesheet_are_served_by_the_brain(client: Client) -> None:
    """Everything the pages need comes from z4j serve itself (no CDN)."""
    script = await client.get("/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["Content-Type"]
    style = await client.get("/static/app.css")
    assert style.status_code == 200
    assert "text/css" in style.headers["Content-Type"]


async def test_bulk_actions_are_offered_to_those_who_may_use_them(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """An admin gets the bulk buttons and a checkbox per task on the task list; a viewer
    gets neither."""
    await log_in(client)
    admin = await text(await client.get(f"{TASKS}?state=failed"))
    assert 'data-bulk-action="retry"' in admin
    assert 'data-bulk-action="cancel" data-bulk-scope="selected" disabled' in admin
    assert '<input type="checkbox" data-select value="t-01" aria-label="Select task t-01">' in admin
    assert "data-select-page" in admin
    assert 'data-selectable="yes"' in admin
    empty = await text(await client.get(f"{TASKS}?name=nothing-has-this-name"))
    assert '<td colspan="8">No tasks match.</td>' in empty
    await add_user(backend, clock, "viewer@example.com", Role.VIEWER)
    client.cookie_jar.clear()  # type: ignore[attr-defined]
    await log_in(client, "viewer@example.com", PASSWORD)
    viewer = await text(await client.get(f"{TASKS}?state=failed"))
    assert "data-bulk" not in viewer
    assert "data-select" not in viewer.replace('data-selectable="no"', "")
    assert '<td colspan="7">No tasks match.</td>' in await text(
        await client.get(f"{TASKS}?name=nothing-has-this-name")
    )


async def test_the_navigation_shows_the_pages_the_role_may_open(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """An admin sees Members and the Audit log in the navigation; a viewer does not."""
    await log_in(client)
    admin = await text(await client.get(TASKS))
    assert 'href="/projects/default/members"' in admin
    assert 'href="/projects/default/audit"' in admin
    await add_user(backend, clock, "viewer@example.com", Role.VIEWER)
    client.cookie_jar.clear()  # type: ignore[attr-defined]
    await log_in(client, "viewer@example.com", PASSWORD)
    viewer = await text(await client.get(TASKS))
    assert 'href="/projects/default/tasks"' in viewer
    assert 'href="/projects/default/agents"' in viewer
    assert 'href="/projects/default/members"' not in viewer
    assert 'href="/projects/default/audit"' not in viewer
