"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, a real ``z4j serve``.

``browser`` (package: once for all the browser tests of a run)
    Chromium from Debian's ``chromium`` package (``/usr/bin/chromium``, or
    ``Z4J_TEST_CHROMIUM``), headless, launched by the Python ``playwright``
    package. Playwright's own browser download is never used: it fails on
    machines without internet access. When Chromium is not installed, every
    browser test is skipped with a message saying ``apt-get install chromium``,
    or fails if ``Z4J_REQUIRE_SERVICES=1`` (CI, whose ``.ci/run`` installs it).

    Not session-scoped on purpose: Playwright's sync API keeps its asyncio loop
    marked as running in this thread while it is open, and every later
    ``asyncio.run`` (the anyio tests of other packages among them) would fail
    with "Cannot run the event loop while another loop is running". For the
    same reason a browser test that needs asyncio runs it in a thread of its
    own, as ``tests/conftest.py``'s ``_run`` does.
``page`` (function)
    A new tab in a new browser context (no cookies or storage shared between
    tests), 1280 x 800. An uncaught JavaScript error or a
    Content-Security-Policy refusal on it fails the test; when the test fails,
    a screenshot of the page is saved to ``test-artifacts/failures/``.
``start_brain`` (function)
    ``start_brain(**env)`` starts ``z4j serve`` on a fresh SQLite ``Z4J_HOME``
    with the extra environment ``env`` and returns the
    :class:`~tests.serving.Server` once it answers; killed at the test's end.
    Its stderr is printed then, so a failed test shows the server's log.
``brain`` (function)
    A ``z4j serve`` on first boot: no user yet.
``setup_url`` (function)
    The one-time setup link ``brain`` printed on first boot.
``screenshot`` (function)
    ``screenshot(page, name)`` saves a full-page PNG to
    ``test-artifacts/screenshots/<name>.png`` (overwritten on each run) and
    returns its path.
``e2e_app``, ``dashboard_brain``, ``worker`` (module: once per test module that uses them)
    The worker's Celery tasks module (its client on the test Redis, emptied
    first), a running brain on SQLite with the first admin and an API key, and
    a prefork worker on :data:`QUEUE` with the agent, connected to the brain.
    Tests log in with :func:`log_in`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.agents.e2e import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Brain,
    Worker,
    mint_agent,
    require_redis,
    running_brain,
    tasks_module,
    wait_until,
)
from tests.serving import Server, free_port, z4j_environment

#: Where Debian's ``chromium`` package puts the browser.
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Headless, and quiet on the network: without the background-networking flags
#: Chromium keeps dialling Google's services, which a closed network refuses.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: The queue the dashboard tests' worker consumes.
QUEUE: Final = "e2e-dashboard"

#: The link ``z4j serve`` logs on first boot.
SETUP_URL = re.compile(r"(http://127\.0\.0\.1:\d+/setup\?token=[A-Za-z0-9_-]+)")

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")

Screenshot = Callable[[Page, str], Path]
StartBrain = Callable[..., Server]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _chromium() -> str:
    path = os.environ.get("Z4J_TEST_CHROMIUM", DEFAULT_CHROMIUM)
    if not os.access(path, os.X_OK):
        message = (
            f"Chromium is not installed at {path}; the browser tests drive Debian's "
            "Chromium: apt-get install chromium (see README, Development)"
        )
        if os.environ.get("Z4J_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " [Z4J_REQUIRE_SERVICES=1]")
        pytest.skip(message)
    return path


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for the whole session."""
    executable = _chromium()
    # Generous waits for a loaded 2-core machine: they bound a hang, they time nothing.
    expect.set_options(timeout=30_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab in a fresh context; fails the test on a script error or a CSP refusal."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"uncaught error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    try:
        yield tab
        failed = getattr(request.node, "_report_call", None)
        if failed is not None and failed.failed:
            name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
            folder = _artifacts(request) / "failures"
            folder.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=folder / f"{name}.png", full_page=True)
    finally:
        context.close()
    assert not problems, "the page reported problems:\n" + "\n".join(problems)


def _artifacts(request: pytest.FixtureRequest) -> Path:
    return request.config.rootpath / "test-artifacts"


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """Save a full-page screenshot as ``test-artifacts/screenshots/<name>.png``."""
    folder = _artifacts(request) / "screenshots"

    def shoot(page: Page, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"screenshot names are lower-case words and dashes: {name!r}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return shoot


@pytest.fixture
def start_brain(tmp_path_factory: pytest.TempPathFactory) -> Generator[StartBrain, None, None]:
    """Start ``z4j serve`` processes on fresh homes; each is killed at the test's end."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        home = tmp_path_factory.mktemp("brain") / "home"
        server = Server(z4j_environment(home, **env), free_port())
        servers.append(server)
        server.wait_until_healthy()
        return server

    yield start
    for server in servers:
        server.kill()
        # Shown by pytest only when the test failed.
        print(f"--- z4j serve on port {server.port}, stderr ---\n{server.stderr}")


@pytest.fixture
def brain(start_brain: StartBrain) -> Server:
    """A ``z4j serve`` on first boot: an empty SQLite database, no admin."""
    return start_brain()


@pytest.fixture
def setup_url(brain: Server) -> str:
    """The single-use setup link the first boot logged."""
    url = brain.wait_for_line(SETUP_URL).group(1)
    assert url.startswith(brain.base)
    return url


@pytest.fixture(scope="module")
def e2e_app() -> Any:
    """The worker's tasks module, its client on the test Redis (emptied first)."""
    require_redis()
    return tasks_module()


@pytest.fixture(scope="module")
def dashboard_brain(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Brain]:
    """A running brain on SQLite with the first admin and an API key."""
    with running_brain(request, tmp_path_factory, "sqlite") as brain:
        yield brain


@pytest.fixture(scope="module")
def worker(
    e2e_app: Any, dashboard_brain: Brain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A prefork worker on QUEUE with the agent, connected to the brain."""
    agent = mint_agent(dashboard_brain)
    started = Worker(
        tmp_path_factory.mktemp("worker") / "worker.log",
        brain_url=dashboard_brain.url,
        token=agent["token"],
        secret=agent["hmac_secret"],
        queue=QUEUE,
        environment={"Z4J_E2E_RESULT_EXTENDED": "1"},
    )
    try:
        assert wait_until(lambda: dashboard_brain.worker(started.hostname) is not None)
        yield started
    finally:
        started.stop()


def log_in(
    page: Page, brain: Brain, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD
) -> None:
    """Open a page, get sent to the login form, log in, land on the tasks page."""
    page.goto(f"{brain.url}/projects/default/tasks")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
