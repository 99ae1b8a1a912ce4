"""celery-redbeat's ``RedBeatScheduler``: entries in Redis, written through RedBeat's own API.

Every entry is a Redis hash (``definition``, ``meta``) named after it, and a
member of the schedule's sorted set (``app.redbeat_conf.schedule_key``) scored
by when it is due. z4j lists the entries from that set and writes them with
``RedBeatSchedulerEntry`` (``save``, ``delete``, ``from_key``), the way
RedBeat's documentation tells applications to; beat reads the set at every
tick, so a change needs no restart (the agent caps beat's sleep so it fires
on time). An entry's last run and run count (its ``meta``) are kept across
edits and renames.

At start-up RedBeat writes the Celery app's ``beat_schedule`` setting over
its entries again (and brings back a deleted one), so a change to one of
those lasts until beat restarts; the outcome says so. Entries created in
z4j, or through RedBeat's API, are not touched. RedBeat has no one-off
entries, descriptions, clocked or solar schedules, and reads every crontab in
beat's own timezone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from z4j_agent_celerybeat.conversion import (
    beat_timezone,
    celery_options,
    celery_schedule,
)
from z4j_agent_celerybeat.errors import EntryExists, NoSuchEntry, Unsupported
from z4j_agent_celerybeat.store import (
    Publication,
    ScheduleStore,
    Snapshot,
    celery_entry,
    publication_of,
    refusal,
)
from z4j_domain.beat import RefusedEntry, SchedulerKind
from z4j_domain.errors import InvalidInput
from z4j_domain.schedules import ScheduleEntry

__all__ = ["RedBeatScheduleStore"]

_LABEL: Final = "RedBeat"


class RedBeatScheduleStore(ScheduleStore):
    """RedBeat's entries in Redis, read and written with RedBeat's entry class."""

    kind = SchedulerKind.REDBEAT
    writable = True
    label = _LABEL

    @property
    def note(self) -> str:
        return (
            "Changes made in z4j are saved in Redis through RedBeat, and beat picks them up"
            " within seconds. Entries of the Celery app's beat_schedule setting are written"
            " over from it each time beat starts (a deleted one comes back); change those there."
        )

    # -- RedBeat ----------------------------------------------------------------------------

    def _redis(self) -> Any:
        from redbeat.schedulers import get_redis

        return get_redis(self.app)

    def _key(self, name: str) -> str:
        from redbeat.schedulers import RedBeatSchedulerEntry

        return str(RedBeatSchedulerEntry.generate_key(self.app, name))

    def _load(self, name: str) -> Any:
        from redbeat.schedulers import RedBeatSchedulerEntry

        try:
            return RedBeatSchedulerEntry.from_key(self._key(name), app=self.app)
        except KeyError:
            raise NoSuchEntry(name) from None

    def _new(self, entry: ScheduleEntry, **fields: Any) -> Any:
        from redbeat.schedulers import RedBeatSchedulerEntry

        if entry.one_off:
            raise Unsupported(
                f"{_LABEL} has no one-off entries (they are django-celery-beat's);"
                " nothing was changed"
            )
        schedule = celery_schedule(
            entry.schedule, timezone=beat_timezone(self.app), scheduler=_LABEL, solar_ok=False
        )
        return RedBeatSchedulerEntry(
            name=entry.name,
            task=entry.task,
            schedule=schedule,
            args=list(entry.args),
            kwargs=dict(entry.kwargs),
            enabled=entry.enabled,
            app=self.app,
            **fields,
        )

    def _warnings(self, entry: ScheduleEntry | None, *names: str) -> list[str]:
        warnings = []
        if entry is not None and entry.description:
            warnings.append(f"{_LABEL} keeps no description; it was not saved")
        static = self.static_names()
        warnings += [
            f"this change will be undone when beat restarts: {name!r} is in the Celery app's"
            f" beat_schedule setting, which {_LABEL} writes over its entry at start-up;"
            " change it there to keep it"
            for name in names
            if name in static
        ]
        return warnings

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self, now: datetime) -> Snapshot:
        from redbeat.schedulers import RedBeatSchedulerEntry

        client = self._redis()
        conf = self.app.redbeat_conf
        keys = list(client.zrange(conf.schedule_key, 0, -1))
        with client.pipeline() as pipe:
            for key in keys:
                pipe.hget(key, "definition")
                pipe.hget(key, "meta")
            values = pipe.execute() if keys else []
        timezone = beat_timezone(self.app)
        entries: list[ScheduleEntry] = []
        refused: list[RefusedEntry] = []
        for index, key in enumerate(keys):
            raw_definition, raw_meta = values[2 * index], values[2 * index + 1]
            if not raw_definition:
                continue  # a stale member: RedBeat removes it when it next loads it
            name: Any = str(key).removeprefix(conf.key_prefix)
            try:
                definition = RedBeatSchedulerEntry.decode_definition(raw_definition)
                meta = RedBeatSchedulerEntry.decode_meta(raw_meta)
                name = definition.get("name", name)
                entry = RedBeatSchedulerEntry(app=self.app, **{**definition, **meta})
                entry.last_run_at = meta.get("last_run_at")
                entries.append(celery_entry(str(name), entry, timezone=timezone, now=now))
            except (InvalidInput, ValueError, TypeError, AttributeError) as error:
                refused.append(refusal(name, str(error) or type(error).__name__))
        entries.sort(key=lambda entry: entry.name)
        return Snapshot(entries=tuple(entries), refused=tuple(refused))

    def get(self, name: str, now: datetime) -> ScheduleEntry | None:
        try:
            entry = self._load(name)
            return celery_entry(name, entry, timezone=beat_timezone(self.app), now=now)
        except (NoSuchEntry, InvalidInput, ValueError, TypeError, AttributeError):
            return None

    def publication(self, name: str) -> Publication:
        return publication_of(self._load(name))

    # -- changing ---------------------------------------------------------------------------

    def create(self, entry: ScheduleEntry) -> list[str]:
        new = self._new(entry, options=celery_options(entry.options))
        if self._redis().exists(new.key):
            raise EntryExists(entry.name)
        new.save()
        return self._warnings(entry, entry.name)

    def update(self, name: str, entry: ScheduleEntry) -> list[str]:
        from redbeat.decoder import RedBeatJSONEncoder

        old = self._load(name)
        renamed = entry.name != name
        if renamed and self._redis().exists(self._key(entry.name)):
            raise EntryExists(entry.name)
        new = self._new(
            entry,
            options=celery_options(entry.options, keep=old.options),
            last_run_at=old.last_run_at,
            total_run_count=old.total_run_count,
        )
        new.save()
        if renamed:
            meta = {"last_run_at": old.last_run_at, "total_run_count": old.total_run_count}
            self._redis().hset(new.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
            old.delete()
        return self._warnings(entry, entry.name, *([name] if renamed else []))

    def delete(self, name: str) -> list[str]:
        self._load(name).delete()
        return self._warnings(None, name)

    def set_enabled(self, name: str, enabled: bool) -> list[str]:
        entry = self._load(name)
        if bool(entry.enabled) == enabled:
            return []
        entry.enabled = enabled
        entry.save()
        return self._warnings(None, name)
