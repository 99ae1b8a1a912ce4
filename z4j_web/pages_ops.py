"""The dashboard's operations pages: a project's workers, its queues, and its audit log.

They read through the same services as the API (``/workers``, ``/queues``,
``/audit``) with the same permissions; the queues page's purge button posts
to the API's purge endpoint (``static/app.js``), never to a page.
"""

from __future__ import annotations

import json
from typing import Any, Final

from quart import Blueprint, request

from z4j_domain.audit import AuditQuery, Verification
from z4j_domain.errors import InvalidInput
from z4j_domain.rbac import Permission
from z4j_web import auditing, services
from z4j_web.account import audit_page_to_dict
from z4j_web.api import workers_of
from z4j_web.dashboard import STATES, current_page, page, page_url, render
from z4j_web.runtime import current_runtime

__all__ = ["blueprint"]

blueprint = Blueprint("pages_ops", __name__)

#: The audit page's filters, as the API's ``/audit`` reads them (``before`` pages).
AUDIT_FILTERS: Final = ("action", "actor", "target", "since", "until")
#: Entries per audit page.
AUDIT_PAGE: Final = 100


@blueprint.get("/projects/<project>/workers")
@page(Permission.READ_TASKS)
async def workers_page(project: str) -> Any:
    """The project's workers: online or offline (as the reconciler sees them now), and counts."""
    access = current_page().access
    assert access is not None
    shown = await workers_of(access.project)
    online = sum(1 for row in shown if row["status"] == "online")
    return await render("workers.html", project=access.project, workers=shown, online=online)


@blueprint.get("/projects/<project>/queues")
@page(Permission.READ_TASKS)
async def queues_page(project: str) -> Any:
    """Task counts per queue and state, each linking to the task list; purge for admins."""
    access = current_page().access
    assert access is not None
    summaries = await services.queue_summaries(current_runtime().uow, access.project)
    # Only the states some queue has, in lifecycle order: a narrow table stays readable.
    present = {state for summary in summaries for state in summary.counts}
    return await render(
        "queues.html",
        project=access.project,
        queues=summaries,
        states=[state for state in STATES if state in present],
        can_purge=current_page().can(Permission.PURGE),
    )


@blueprint.get("/projects/<project>/audit")
@page(Permission.READ_AUDIT)
async def audit_page(project: str) -> Any:
    """The project's audit log, newest first, filtered by the URL, with the chain's status."""
    current = current_page()
    access = current.access
    assert access is not None
    runtime = current_runtime()
    args = request.args.to_dict()
    # Verifying reads the whole chain (a million entries take a minute or two): only when asked.
    asked_to_verify = args.pop("verify", None) == "1"
    error = None
    try:
        query = AuditQuery.from_params(
            {"limit": str(AUDIT_PAGE), **args}, project_id=access.project.id
        )
    except InvalidInput as invalid:
        error = str(invalid)
        query = AuditQuery(project_id=access.project.id, limit=AUDIT_PAGE)
    found = await auditing.search(runtime.uow, query)
    shown = audit_page_to_dict(found, {access.project.id: access.project.slug})
    for entry in shown["items"]:
        entry["details_json"] = json.dumps(
            entry["details"], separators=(",", ":"), ensure_ascii=False, default=str
        )
    filters = {key: args.get(key, "") for key in AUDIT_FILTERS}
    older_url = None
    if shown["next_before"] is not None:
        older_url = page_url("before", str(shown["next_before"]))
    verification: Verification | None = None
    may_verify = current.principal.instance_admin
    if may_verify and asked_to_verify:
        verification = await auditing.verify(runtime.uow, runtime.audit_key)
    return await render(
        "audit.html",
        400 if error else 200,
        project=access.project,
        entries=shown["items"],
        filters=filters,
        older_url=older_url,
        paged=query.before is not None,
        verify_url=page_url("verify", "1"),
        error=error,
        may_verify=may_verify,
        verification=verification,
    )
