"""Server time of the dashboard's task list and overview pages with a large PostgreSQL history.

Creates a fresh PostgreSQL database, stores ``--tasks`` tasks in it through the
same batched repository path agents use (their times spread over the last
``--hours`` before the load, so that every minute of the overview's hour and day
charts has finishes), adds 8 workers and 2 agents, starts a real ``z4j serve``
on it, waits until its reconciler has declared the unfinished tasks lost (no
worker sends heartbeats), logs in through the login form, and times sequential
requests (one
keep-alive connection, the session cookie) for: the tasks page (first page, a
state filter, a name filter), the overview page (last hour, last day) and the
overview API (last day, Bearer key). Every timed answer must be 200 and the
page asked for (not a redirect to log in). Prints p50 / p95 / max per query.
The database is dropped at the end.

    python benchmarks/pages.py --tasks 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from _history import (
    ADMIN_EMAIL,
    NAMES,
    WORKERS,
    cli_json,
    fresh_database,
    header,
    load,
    mint_key,
    row,
    serve,
    time_requests,
    vacuum_analyze,
)

from z4j_domain.workers import Worker, WorkerStatus
from z4j_infra.database import Database
from z4j_web.auth import SESSION_COOKIE

WIDTH = 30


async def _add_workers(dsn: str, project_id: int) -> None:
    """The workers the tasks ran on, as their heartbeats would have stored them."""
    db = await Database.connect(dsn)
    now = datetime.now(UTC)
    try:
        async with db.unit_of_work() as uow:
            for hostname in WORKERS:
                await uow.workers.save(
                    project_id,
                    Worker(
                        hostname=hostname,
                        status=WorkerStatus.ONLINE,
                        first_seen_at=now - timedelta(days=1),
                        last_heartbeat_at=now,
                        pool="prefork",
                        concurrency=4,
                        active=2,
                        processed=1000,
                        loadavg=(0.5, 0.4, 0.3),
                        queues=("celery",),
                        software="celery 5.4",
                    ),
                )
            await uow.commit()
    finally:
        await db.dispose()


def _login(port: int, password: str) -> str:
    """Log in through the dashboard's form, as a browser does; the session cookie's value."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    form = {"email": ADMIN_EMAIL, "password": password, "next": "/projects/default/overview"}
    conn.request(
        "POST",
        "/login",
        body=urlencode(form),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            # What a browser says of a form post from the login page itself.
            "Sec-Fetch-Site": "same-origin",
        },
    )
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status not in (302, 303):
        raise SystemExit(f"login answered {response.status}: {body[:300]!r}")
    cookies: SimpleCookie = SimpleCookie()
    for value in response.headers.get_all("Set-Cookie") or []:
        cookies.load(value)
    if SESSION_COOKIE not in cookies:
        raise SystemExit(f"login set no {SESSION_COOKIE} cookie")
    return cookies[SESSION_COOKIE].value


def _tasks_page(body: bytes) -> str | None:
    if b"<h1>Tasks</h1>" not in body:
        return "not the tasks page"
    if b"<tr data-task-id=" not in body:
        return "no task listed"
    return None


def _overview_page(n_tasks: int, window: str) -> Callable[[bytes], str | None]:
    stored = f"({n_tasks:,} stored)".encode()
    current = f'href="?window={window}" aria-current="true"'.encode()

    def check(body: bytes) -> str | None:
        if b"data-state-counts" not in body or stored not in body:
            return f"not the overview page of {n_tasks:,} tasks"
        if current not in body:
            return f"not the {window} window"
        return None

    return check


def _overview_api(n_tasks: int) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        shown = json.loads(body)
        if shown["tasks"] != n_tasks:
            return f"{shown['tasks']} tasks, expected {n_tasks}"
        return None

    return check


def _settle(port: int, headers: dict[str, str], timeout: float = 900) -> str:
    """Wait until the reconciler has settled the unfinished tasks (their workers send no
    heartbeats, so it declares them lost, up to 20,000 a pass): until then its passes
    read those tasks every 10 s, which is not the steady state the pages are timed in."""
    began = time.monotonic()
    unfinished = []
    while time.monotonic() - began < timeout:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/v1/projects/default/overview", headers=headers)
        states = json.loads(conn.getresponse().read())["states"]
        conn.close()
        unfinished.append(states["received"] + states["started"])
        if unfinished[-1] == 0:
            return (
                f"  the reconciler declared {unfinished[0]:,} unfinished tasks lost "
                f"in {time.monotonic() - began:.0f}s ({states['lost']:,} lost now)"
            )
        time.sleep(2)
    raise SystemExit(f"the reconciler left {unfinished[-1]:,} unfinished tasks in {timeout:.0f}s")


def _describe(port: int, headers: dict[str, str], window: str) -> str:
    """What the overview API shows: the figures the timed pages are made of."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/api/v1/projects/default/overview?window={window}", headers=headers)
    shown = json.loads(conn.getresponse().read())
    conn.close()
    t = shown["throughput"]
    failures = shown["failures"]
    groups = ", ".join(f"{g['exception_type']} {g['count']}" for g in failures["groups"])
    busy = sum(1 for p in t["points"] if p["succeeded"] + p["failed"] + p["other"])
    return (
        f"  last {window}: {t['finished']:,} finished ({t['failed']:,} failed), "
        f"{busy} of {len(t['points'])} bars non-empty; "
        f"failure groups of the last {failures['sampled']}: {groups}; "
        f"{shown['workers']['online'] + shown['workers']['offline']} workers, "
        f"{shown['agents']['active']} agents"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument(
        "--hours", type=float, default=25, help="span of the tasks' times, ending at the load"
    )
    args = parser.parse_args()

    with fresh_database("z4j_bench_p") as (name, dsn):
        print(f"loading {args.tasks:,} tasks into PostgreSQL database {name} ...", flush=True)
        span = timedelta(hours=args.hours)
        start = datetime.now(UTC) - span
        project_id, elapsed = asyncio.run(
            load(dsn, args.tasks, args.batch, start, span / args.tasks)
        )
        print(f"  loaded in {elapsed:.1f}s ({args.tasks / elapsed:,.0f} events/s)", flush=True)
        asyncio.run(_add_workers(dsn, project_id))
        vacuum_analyze(dsn)

        password = secrets.token_urlsafe(16)
        with serve(dsn, password) as (port, env):
            for agent in ("workers", "beat"):
                cli_json(env, "agent", "create", "--name", agent)
            bearer = {"Authorization": f"Bearer {mint_key(env)}"}
            cookie = {"Cookie": f"{SESSION_COOKIE}={_login(port, password)}"}
            print(_settle(port, bearer), flush=True)
            for window in ("hour", "day"):
                print(_describe(port, bearer, window), flush=True)

            tasks = "/projects/default/tasks"
            overview = "/projects/default/overview"
            queries: dict[str, tuple[str, dict[str, str], Callable[[bytes], str | None]]] = {
                "page: tasks, first page": (tasks, cookie, _tasks_page),
                "page: tasks, state=failed": (f"{tasks}?state=failed", cookie, _tasks_page),
                "page: tasks, name=...job_07": (f"{tasks}?name={NAMES[7]}", cookie, _tasks_page),
                "page: overview (hour)": (overview, cookie, _overview_page(args.tasks, "hour")),
                "page: overview (day)": (
                    f"{overview}?window=day",
                    cookie,
                    _overview_page(args.tasks, "day"),
                ),
                "api: overview (day)": (
                    f"/api/v1{overview}?window=day",
                    bearer,
                    _overview_api(args.tasks),
                ),
            }
            print(f"\n{args.tasks:,} tasks, {args.samples} sequential requests each, milliseconds")
            print(header(WIDTH))
            for label, (path, headers, check) in queries.items():
                timings = time_requests(port, path, args.samples, headers, check)
                print(row(label, timings, WIDTH), flush=True)
            # Other jobs share this machine's cores: say how busy it was.
            print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
