"""z4j's domain: task lifecycle, its fold, and the ports the rest of z4j plugs into.

Pure Python (attrs, cattrs); no I/O, no clock, no environment. Everything an
embedding service needs is importable from here; :mod:`z4j_domain.testing`
has in-memory fakes of every port.
"""

from z4j_domain.encoding import canonical_json
from z4j_domain.errors import Conflict, InvalidInput, NotFound, Z4jError
from z4j_domain.projects import DEFAULT_PROJECT_SLUG, Project
from z4j_domain.queries import QueueCount, TaskCursor, TaskFilter, TaskPage, TaskQuery
from z4j_domain.reconciliation import (
    ActivityReport,
    Decision,
    MarkLost,
    MarkOutcome,
    Probe,
    ProbeAnswer,
    ReconcilePolicy,
    is_worker_live,
    reconcile,
    verdict_event,
    worker_offline_at,
)
from z4j_domain.redaction import (
    REDACTED,
    Redacted,
    RedactedPayload,
    RedactionPolicy,
    RedactionSettings,
    redact,
    redact_event,
    redact_task_payload,
)
from z4j_domain.tasks import EventKey, EventKind, Task, TaskEvent, TaskState, apply, fold, merge
from z4j_domain.users import Agent, ApiKey, User
from z4j_domain.workers import Worker, WorkerStatus

__all__ = [
    "DEFAULT_PROJECT_SLUG",
    "REDACTED",
    "ActivityReport",
    "Agent",
    "ApiKey",
    "Conflict",
    "Decision",
    "EventKey",
    "EventKind",
    "InvalidInput",
    "MarkLost",
    "MarkOutcome",
    "NotFound",
    "Probe",
    "ProbeAnswer",
    "Project",
    "QueueCount",
    "ReconcilePolicy",
    "Redacted",
    "RedactedPayload",
    "RedactionPolicy",
    "RedactionSettings",
    "Task",
    "TaskCursor",
    "TaskEvent",
    "TaskFilter",
    "TaskPage",
    "TaskQuery",
    "TaskState",
    "User",
    "Worker",
    "WorkerStatus",
    "Z4jError",
    "apply",
    "canonical_json",
    "fold",
    "is_worker_live",
    "merge",
    "reconcile",
    "redact",
    "redact_event",
    "redact_task_payload",
    "verdict_event",
    "worker_offline_at",
]

__version__ = "0.1.0"
