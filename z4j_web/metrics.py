"""Prometheus counters of the agent gateway and the ingest path, and ``GET /metrics``.

Each app gets a registry of its own (not prometheus-client's global one), so
several apps in one process, as in the tests, never collide. ``/metrics``
needs no authentication: it exposes counts, never task data, and the brain
listens on 127.0.0.1 by default; put it behind the reverse proxy's access rules
when binding elsewhere.
"""

from __future__ import annotations

import attrs
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from quart import Blueprint, Response

from z4j_web.runtime import current_runtime

__all__ = ["Metrics", "blueprint"]

blueprint = Blueprint("metrics", __name__)


@attrs.define
class Metrics:
    """The brain's counters, in one registry."""

    registry: CollectorRegistry = attrs.Factory(lambda: CollectorRegistry(auto_describe=True))
    frames_accepted: Counter = attrs.field(init=False)
    frames_rejected: Counter = attrs.field(init=False)
    connections_refused: Counter = attrs.field(init=False)
    agent_connections: Gauge = attrs.field(init=False)
    events_ingested: Counter = attrs.field(init=False)
    events_invalid: Counter = attrs.field(init=False)
    queue_depth: Gauge = attrs.field(init=False)
    flush_seconds: Histogram = attrs.field(init=False)
    flush_failures: Counter = attrs.field(init=False)
    live_dropped: Counter = attrs.field(init=False)
    commands_sent: Counter = attrs.field(init=False)
    verdicts: Counter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.frames_accepted = Counter(
            "z4j_gateway_frames_accepted", "Agent frames accepted, by type.", ["type"], registry=r
        )
        self.frames_rejected = Counter(
            "z4j_gateway_frames_rejected",
            "Agent frames refused (the connection was closed), by reason.",
            ["reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "z4j_gateway_connections_refused",
            "Agent connections refused before the WebSocket opened, by reason.",
            ["reason"],
            registry=r,
        )
        self.agent_connections = Gauge(
            "z4j_gateway_agent_connections", "Agent connections open now.", registry=r
        )
        self.events_ingested = Counter(
            "z4j_ingest_events", "Task events committed (duplicates included).", registry=r
        )
        self.events_invalid = Counter(
            "z4j_ingest_events_invalid",
            "Task events skipped because they were invalid, inside valid batches.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "z4j_ingest_queue_depth", "Event batches waiting for the writer.", registry=r
        )
        self.flush_seconds = Histogram(
            "z4j_ingest_flush_seconds",
            "Time to apply and commit one flush of event batches.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.flush_failures = Counter(
            "z4j_ingest_flush_failures",
            "Event batches the writer could not commit (left unacknowledged).",
            registry=r,
        )
        self.live_dropped = Counter(
            "z4j_live_updates_dropped",
            "Live updates dropped because a dashboard socket read too slowly.",
            registry=r,
        )
        self.commands_sent = Counter(
            "z4j_gateway_commands_sent",
            "Commands sent to agents, by command.",
            ["command"],
            registry=r,
        )
        self.verdicts = Counter(
            "z4j_reconciler_verdicts",
            "Reconciler verdicts stored as task events (lost, or the backend's outcome), by kind.",
            ["kind"],
            registry=r,
        )

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), for tests and diagnostics."""
        found = self.registry.get_sample_value(name, labels or None)
        return 0.0 if found is None else found


@blueprint.get("/metrics")
async def metrics() -> Response:
    """The counters in Prometheus' text format."""
    body = generate_latest(current_runtime().metrics.registry)
    return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)
