"""Liveness and readiness probes: ``/api/v1/health`` and ``/api/v1/ready``."""

from __future__ import annotations

import asyncio
from typing import Any, Final

from quart import Blueprint

from z4j_web import services
from z4j_web.runtime import current_runtime
from z4j_web.version import version

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__, url_prefix="/api/v1")

#: How long readiness waits for the database: a probe that hangs helps nobody.
READY_TIMEOUT: Final = 5.0


@blueprint.get("/health")
async def health() -> dict[str, Any]:
    """Answer while the process serves requests; touches nothing else (no database)."""
    return {"status": "ok", "version": version()}


@blueprint.get("/ready")
async def ready() -> tuple[dict[str, Any], int]:
    """Answer 200 when the database answers and its schema is current, else 503 with why."""
    runtime = current_runtime()
    if runtime.database is None:
        # An injected unit of work (tests, embedding) has no database to probe.
        checks = [services.Check(name="database", ok=True, detail="injected unit of work")]
    else:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                checks = await services.check_database(runtime.database)
        except TimeoutError:
            detail = f"no answer within {READY_TIMEOUT:.0f} s"
            checks = [services.Check(name="database", ok=False, detail=detail)]
    body: dict[str, Any] = {"checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
    failed = [c for c in checks if not c.ok]
    if not failed:
        return {"status": "ready", **body}, 200
    reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
    return {"status": "unavailable", "error": {"code": "not_ready", "message": reason}, **body}, 503
