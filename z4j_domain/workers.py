"""Workers: the Celery worker processes an agent reports on."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from z4j_domain._validators import aware_utc, non_empty, non_negative, optional_aware_utc

__all__ = ["Worker", "WorkerStatus"]


class WorkerStatus(enum.StrEnum):
    """Whether a worker is heard from."""

    ONLINE = "online"
    OFFLINE = "offline"


def _str_tuple(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError("expected a sequence of strings")
    return tuple(str(v) for v in value)


def _float_tuple(value: object) -> tuple[float, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise TypeError("expected a sequence of numbers")
    return tuple(float(v) for v in value)


@attrs.frozen(kw_only=True)
class Worker:
    """One worker (Celery hostname) of a project and what it last said about itself."""

    hostname: str = attrs.field(validator=non_empty)
    status: WorkerStatus = attrs.field(converter=WorkerStatus)
    first_seen_at: datetime = attrs.field(converter=aware_utc)
    last_heartbeat_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    pool: str | None = None
    concurrency: int | None = attrs.field(default=None, validator=non_negative)
    active: int | None = attrs.field(default=None, validator=non_negative)
    processed: int | None = attrs.field(default=None, validator=non_negative)
    loadavg: tuple[float, ...] = attrs.field(default=(), converter=_float_tuple)
    queues: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    software: str | None = None
