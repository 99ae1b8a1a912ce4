"""The dashboard's account page (password, API keys) and a project's settings page.

Both are read server-side; every change (the password, an API key created or
revoked, the redaction settings) is made by ``static/app.js`` through the JSON
API, with the same checks and audit log as a script's. The account page is
the logged-in user's own; the settings page is readable by every member of
the project and editable with ``settings.change``. The reconciler's windows
are instance-wide (environment variables of ``z4j serve``): shown, not edited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from quart import Blueprint

from z4j_domain.rbac import Permission
from z4j_domain.redaction import DEFAULT_POLICY
from z4j_infra.settings import RECONCILE_VARIABLES
from z4j_web import accounts
from z4j_web.account import api_key_to_dict
from z4j_web.accounts import Access
from z4j_web.dashboard import current_page, page, render
from z4j_web.pages_admin import ROLES
from z4j_web.runtime import current_runtime
from z4j_web.services import MIN_PASSWORD_LENGTH

__all__ = ["RECONCILER_WINDOWS", "blueprint"]

blueprint = Blueprint("pages_account", __name__)

#: The reconciler's windows as the settings page lists them: the ``ReconcilePolicy``
#: field and what it does.
RECONCILER_WINDOWS: Final = (
    ("heartbeat_interval", "How often agents send a heartbeat."),
    ("heartbeat_window", "Silence after which a worker is offline."),
    ("reconcile_interval", "Time between two reconciler passes."),
    (
        "probe_timeout",
        "How long unanswered probes go on before a task of an offline worker is declared lost.",
    ),
    (
        "report_grace",
        "How long after a task's last event a live worker's report must be made"
        " for the task's absence from it to count.",
    ),
    (
        "unstarted_grace",
        "Extra time a received, not started task of an offline worker gets before it is probed.",
    ),
    (
        "probe_unassigned_after",
        "When set, a task that no worker has received is probed this long after it was first seen.",
    ),
)
#: The variable of ``z4j serve`` that sets each field (a field without one is fixed).
_VARIABLE_OF: Final = {field: variable for variable, field in RECONCILE_VARIABLES.items()}


def _duration(value: timedelta | None) -> str:
    """A window as the page shows it: seconds, as the environment variables take them."""
    return "off" if value is None else f"{value.total_seconds():g} s"


@blueprint.get("/account")
@page()
async def account_page() -> Any:
    """The user's own account: change the password; list, create and revoke API keys."""
    current = current_page()
    runtime = current_runtime()
    visible = await accounts.visible_projects(runtime.uow, current.principal)
    if visible and current.access is None:
        # Not a project's page, but its navigation (which the template shows by the
        # caller's rights in ``project``) leads back to the first project the user sees.
        project, grant = visible[0]
        current.access = Access(project=project, grant=grant)
    keys = await accounts.list_api_keys(runtime.uow, current.principal.user)
    async with runtime.uow() as uow:
        # Every project, not only the visible ones: a key may outlive its owner's membership.
        slugs = {project.id: project.slug for project in await uow.projects.list()}
    return await render(
        "account.html",
        active="account",
        project=visible[0][0] if visible else None,
        api_keys=[api_key_to_dict(key, slugs) for key in keys],
        key_projects=[project for project, _ in visible],
        roles=ROLES,
        min_password=MIN_PASSWORD_LENGTH,
    )


@blueprint.get("/projects/<project>/settings")
@page(Permission.READ_TASKS)
async def settings_page(project: str) -> Any:
    """The project's redaction settings (editable with settings.change) and the reconciler's
    instance-wide windows (read-only)."""
    current = current_page()
    assert current.access is not None
    runtime = current_runtime()
    redaction = await runtime.redaction.settings(current.access.project.id)
    policy = runtime.settings.reconcile
    windows = [
        {
            "name": name,
            "value": _duration(getattr(policy, name)),
            "env": _VARIABLE_OF.get(name),
            "meaning": meaning,
        }
        for name, meaning in RECONCILER_WINDOWS
    ]
    return await render(
        "settings.html",
        active="settings",
        project=current.access.project,
        redaction=redaction.to_dict(),
        can_change=current.can(Permission.CHANGE_SETTINGS),
        default_fragments=sorted(DEFAULT_POLICY.key_fragments),
        default_words=sorted(DEFAULT_POLICY.key_words),
        default_value_patterns=DEFAULT_POLICY.value_patterns,
        windows=windows,
    )
