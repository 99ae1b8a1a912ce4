"""z4j's domain: task lifecycle, its fold, and the ports the rest of z4j plugs into.

Pure Python (attrs, cattrs); no I/O, no clock, no environment. Everything an
embedding service needs is importable from here; :mod:`z4j_domain.testing`
has in-memory fakes of every port.
"""

from z4j_domain.encoding import canonical_json
from z4j_domain.errors import Conflict, InvalidInput, NotFound, Z4jError
from z4j_domain.projects import DEFAULT_PROJECT_SLUG, Project
from z4j_domain.queries import QueueCount, TaskCursor, TaskFilter, TaskPage, TaskQuery
from z4j_domain.redaction import (
    REDACTED,
    Redacted,
    RedactedPayload,
    RedactionPolicy,
    redact,
    redact_task_payload,
)
from z4j_domain.tasks import EventKey, EventKind, Task, TaskEvent, TaskState, apply, fold, merge
from z4j_domain.users import Agent, ApiKey, User
from z4j_domain.workers import Worker, WorkerStatus

__all__ = [
    "DEFAULT_PROJECT_SLUG",
    "REDACTED",
    "Agent",
    "ApiKey",
    "Conflict",
    "EventKey",
    "EventKind",
    "InvalidInput",
    "NotFound",
    "Project",
    "QueueCount",
    "Redacted",
    "RedactedPayload",
    "RedactionPolicy",
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
    "merge",
    "redact",
    "redact_task_payload",
]

__version__ = "0.1.0"
