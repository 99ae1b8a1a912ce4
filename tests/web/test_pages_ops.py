"""The dashboard's workers, queues and audit log pages (``z4j_web.pages_ops``), as HTML.

The purge button's script (measure, confirm the depth, poll the command) runs in
a real browser under ``tests/browser``; here what each page serves, to whom.
"""

from __future__ import annotations

import html as markup
import re
from datetime import timedelta
from typing import Final

import pytest
from quart.typing import TestClientProtocol as Client

from z4j_domain.audit import ChainHead
from z4j_domain.rbac import Role
from z4j_domain.testing import FakeClock
from z4j_domain.workers import Worker
from z4j_web import auditing

from .support import AUDIT_KEY, T0, TESTS, Backend, Seeded
from .test_access import PASSWORD, add_user
from .test_dashboard import log_in, rows, text

pytestmark = pytest.mark.anyio

P: Final = "/projects/default"


def workers(html: str) -> dict[str, str]:
    """Each worker row's hostname and the status label it shows."""
    found = re.findall(
        r'<tr data-worker="([^"]+)">\s*<td>'
        r'<span class="state state-(\w+)" data-worker-status>(\w+)<',
        html,
    )
    assert all(css == label for _, css, label in found)
    return {hostname: label for hostname, _, label in found}


def entries(html: str) -> list[tuple[int, str]]:
    """The audit page's rows: (entry number, action), in the order shown."""
    found = re.findall(
        r'<tr data-audit-seq="(\d+)">.*?<code data-audit-action>([^<]+)</code>', html, re.S
    )
    return [(int(seq), action) for seq, action in found]


def older_link(html: str) -> str:
    """The "Older entries" link's query string."""
    found = re.search(r'href="(\?[^"]+)" rel="next">Older entries', html)
    assert found is not None
    return markup.unescape(found.group(1))


async def append(backend: Backend, clock: FakeClock, project_id: int | None, *actions: str) -> None:
    """Append one entry per action by ``tests``, a second apart, in ``project_id``."""
    for n, action in enumerate(actions):
        record = TESTS.record(
            action, clock.now(), target=f"thing:{n}", project_id=project_id, n=n, note="é"
        )
        await auditing.record(backend.uow_factory, AUDIT_KEY, record)
        clock.advance(1)


async def relog(client: Client, email: str, password: str) -> None:
    client.cookie_jar.clear()  # type: ignore[attr-defined]
    await log_in(client, email, password)


# -- workers --------------------------------------------------------------------------------


async def test_the_workers_page_shows_status_heartbeat_pool_counts_and_queues(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """Each worker: its status as a word, last heartbeat, pool, concurrency, counts, queues."""
    async with backend.uow_factory() as uow:
        await uow.workers.save(
            seeded.project_id,
            Worker(
                hostname="w3@host",
                status="offline",
                first_seen_at=T0,
                last_heartbeat_at=T0 + timedelta(minutes=5),
                pool="threads",
                concurrency=8,
                active=2,
                processed=17,
                queues=["reports"],
            ),
        )
        await uow.commit()
    await log_in(client)
    response = await client.get(f"{P}/workers")
    assert response.status_code == 200
    html = await text(response)
    assert workers(html) == {"w1@host": "online", "w2@host": "online", "w3@host": "offline"}
    assert "2 of 3 workers online" in html
    w3 = html[html.index('data-worker="w3@host"') :].split("</tr>")[0]
    assert '<time datetime="2026-01-01T12:05:00' in w3
    assert "2026-01-01 12:05:00" in w3
    for cell in ("<td>threads</td>", "<td>8</td>", "<td>2</td>", "<td>17</td>"):
        assert cell in w3
    assert f'href="{P}/tasks?queue=reports">reports</a>' in w3
    assert f'<a href="{P}/workers" aria-current="page">Workers</a>' in html


async def test_a_silent_worker_shows_offline_as_the_reconciler_sees_it(
    client: Client, seeded: Seeded, clock: FakeClock
) -> None:
    """Stored online but silent past the heartbeat window: the page already says offline."""
    await log_in(client)
    assert set(workers(await text(await client.get(f"{P}/workers"))).values()) == {"online"}
    clock.current = T0 + timedelta(hours=1)
    await relog(client, "admin@example.com", "correct horse battery staple")
    assert set(workers(await text(await client.get(f"{P}/workers"))).values()) == {"offline"}


async def test_the_workers_page_of_a_project_without_workers_says_so(
    client: Client, backend: Backend, clock: FakeClock, seeded: Seeded
) -> None:
    async with backend.uow_factory() as uow:
        await uow.projects.create(slug="empty", name="Empty", created_at=clock.now())
        await uow.commit()
    await log_in(client)
    html = await text(await client.get("/projects/empty/workers"))
    assert "No worker has reported yet" in html


# -- queues ---------------------------------------------------------------------------------


async def test_the_queues_page_links_each_count_to_the_task_list(
    client: Client, seeded: Seeded
) -> None:
    """Counts per queue and state; each opens the task list filtered by queue and state."""
    await log_in(client)
    response = await client.get(f"{P}/queues")
    assert response.status_code == 200
    html = await text(response)
    link = f'href="{P}/tasks?queue=mail&amp;state=failed"'
    assert f'<td class="count" data-state="failed"><a {link}' in html
    assert re.search(rf'<a href="{P}/tasks\?queue=celery">4</a>', html)
    # The queue no event named: counted, but nothing to link to or purge.
    unknown = html[html.index('<tr data-queue="">') :].split("</tr>")[0]
    assert "(queue unknown)" in unknown
    assert "<a " not in unknown
    assert "data-purge-queue" not in unknown
    # States no queue has are not columns.
    assert "state-lost" not in html.split("</thead>")[0]
    # Following a count lists exactly those tasks.
    listed = await text(await client.get(f"{P}/tasks?queue=mail&state=failed"))
    assert rows(listed) == ["t-01"]
    assert rows(await text(await client.get(f"{P}/tasks?queue=celery&state=retried"))) == ["t-04"]


async def test_only_admins_get_the_purge_buttons(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """An admin may purge each named queue; an operator or viewer sees the counts only."""
    await log_in(client)
    html = await text(await client.get(f"{P}/queues"))
    assert 'data-purge data-project="default"' in html
    assert re.findall(r'data-purge-queue="([^"]+)"', html) == ["celery", "mail"]
    for email, role in (("operator@example.com", Role.OPERATOR), ("v@example.com", Role.VIEWER)):
        await add_user(backend, clock, email, role)
        await relog(client, email, PASSWORD)
        response = await client.get(f"{P}/queues")
        assert response.status_code == 200
        shown = await text(response)
        assert "data-purge" not in shown
        assert 'data-state="failed"' in shown


# -- audit log ------------------------------------------------------------------------------


async def test_the_audit_page_lists_the_projects_entries_newest_first_and_verifies(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """An instance admin sees the project's entries (not other ones) and the chain verified."""
    await append(backend, clock, seeded.project_id, "task.retry.requested", "task.retry.succeeded")
    await append(backend, clock, None, "instance.thing")
    await log_in(client)
    unchecked = await text(await client.get(f"{P}/audit"))
    assert 'data-chain-status="not-run"' in unchecked
    assert "Chain verified" not in unchecked
    response = await client.get(f"{P}/audit?verify=1")
    assert response.status_code == 200
    html = await text(response)
    shown = entries(html)
    assert [action for _, action in shown][:2] == ["task.retry.succeeded", "task.retry.requested"]
    assert "instance.thing" not in html
    assert [seq for seq, _ in shown] == sorted((seq for seq, _ in shown), reverse=True)
    newest = html[html.index("<tr data-audit-seq=") :].split("</tr>")[0]
    assert "<td data-actor>tests" in newest
    assert "<code>thing:1</code>" in newest
    assert "{&#34;n&#34;:1,&#34;note&#34;:&#34;é&#34;}" in newest  # compact JSON, as written
    verified = await auditing.verify(backend.uow_factory, AUDIT_KEY)
    assert verified.ok
    assert f"Chain verified: {verified.verified} entries" in html
    assert 'data-chain-status="verified"' in html


async def test_the_audit_filters_are_the_url_and_older_pages_keep_them(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """Action prefix, actor and target filter; "Older entries" pages with the filter kept."""
    await append(
        backend,
        clock,
        seeded.project_id,
        "task.retry.requested",
        "task.retry.succeeded",
        "task.cancel.requested",
        "queue.purge.requested",
    )
    await log_in(client)
    by_prefix = await text(await client.get(f"{P}/audit?action=task.retry."))
    assert [a for _, a in entries(by_prefix)] == ["task.retry.succeeded", "task.retry.requested"]
    assert 'name="action" value="task.retry."' in by_prefix
    exact = await text(await client.get(f"{P}/audit?action=task.cancel.requested"))
    assert [a for _, a in entries(exact)] == ["task.cancel.requested"]
    by_target = await text(await client.get(f"{P}/audit?target=thing:3&actor=tests"))
    assert [a for _, a in entries(by_target)] == ["queue.purge.requested"]
    assert entries(await text(await client.get(f"{P}/audit?actor=nobody"))) == []
    first = await text(await client.get(f"{P}/audit?action=task.&limit=2"))
    assert [a for _, a in entries(first)] == ["task.cancel.requested", "task.retry.succeeded"]
    query = older_link(first)
    assert "action=task." in query
    assert "limit=2" in query
    second = await text(await client.get(f"{P}/audit{query}"))
    assert [a for _, a in entries(second)] == ["task.retry.requested"]
    assert "Older entries" not in second
    assert 'data-chain-status="not-run"' in second


async def test_a_bad_audit_filter_is_shown_in_words(client: Client, seeded: Seeded) -> None:
    await log_in(client)
    response = await client.get(f"{P}/audit?since=yesterday")
    assert response.status_code == 400
    assert "invalid time &#39;yesterday&#39;" in await text(response)
    unknown = await client.get(f"{P}/audit?who=me")
    assert unknown.status_code == 400
    assert "unknown parameter &#39;who&#39;" in await text(unknown)


async def test_a_broken_chain_is_shown_with_its_first_bad_entry(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """The head moved back past newer entries: the page names the entry and the reason."""
    await append(backend, clock, seeded.project_id, "a.one", "a.two", "a.three")
    await log_in(client)
    async with backend.uow_factory() as uow:
        head = await uow.audit.lock_head()
        earlier = (await uow.audit.entries(after_seq=head.seq - 2, through_seq=head.seq, limit=1))[
            0
        ]
    await backend.set_audit_head(ChainHead.signed(AUDIT_KEY, earlier.seq, earlier.mac))
    html = await text(await client.get(f"{P}/audit?verify=1"))
    assert 'data-chain-status="broken"' in html
    assert f"Chain broken at entry {earlier.seq + 1}:" in html
    assert "beyond the chain&#39;s head" in html


async def test_the_audit_page_is_for_auditors_and_admins_and_verifies_for_instance_admins(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """A viewer or operator is refused (403); an auditor reads the log but not the chain's check."""
    await append(backend, clock, seeded.project_id, "task.retry.requested")
    for email, role in (("v@example.com", Role.VIEWER), ("op@example.com", Role.OPERATOR)):
        await add_user(backend, clock, email, role)
        await relog(client, email, PASSWORD)
        refused = await client.get(f"{P}/audit")
        assert refused.status_code == 403
        assert "audit.read" in await text(refused)
    await add_user(backend, clock, "auditor@example.com", Role.AUDITOR)
    await relog(client, "auditor@example.com", PASSWORD)
    response = await client.get(f"{P}/audit?verify=1")
    assert response.status_code == 200
    html = await text(response)
    assert any(a == "task.retry.requested" for _, a in entries(html))
    assert 'data-chain-status="not-admin"' in html
    assert "Chain verified" not in html


async def test_the_pages_need_a_session(client: Client, seeded: Seeded) -> None:
    for name in ("workers", "queues", "audit"):
        response = await client.get(f"{P}/{name}")
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
        assert (await client.get(f"/projects/nope/{name}")).status_code == 302


async def test_an_invisible_project_is_not_found(
    client: Client, seeded: Seeded, backend: Backend, clock: FakeClock
) -> None:
    """A project the user is no member of answers 404 on every page, as an unknown one does."""
    async with backend.uow_factory() as uow:
        await uow.projects.create(slug="other", name="Other", created_at=clock.now())
        await uow.commit()
    await add_user(backend, clock, "v@example.com", Role.VIEWER)
    await relog(client, "v@example.com", PASSWORD)
    for name in ("workers", "queues", "audit"):
        assert (await client.get(f"/projects/other/{name}")).status_code == 404
        assert (await client.get(f"/projects/nope/{name}")).status_code == 404
