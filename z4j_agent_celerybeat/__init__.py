"""z4j agent for Celery beat: the schedule, shown and changed from the z4j dashboard.

Install ``z4j-celerybeat`` on the host that runs ``celery beat`` and activate it
with one line in the module that creates your Celery app::

    import z4j_agent_celerybeat; z4j_agent_celerybeat.install(app)

(``z4j_agent_celery.install(app)``, the worker agent's line, does this too when
this package is installed, so one line serves both). That only connects a
receiver to Celery's ``beat_init`` signal: the agent starts in ``celery beat``
and nowhere else. Importing this package does nothing.

The agent reports beat's whole schedule to the brain (every entry, with its
last run, run count and next run; entries z4j cannot express are listed as
refused, with why), every time beat sends an entry's task, and carries out
the dashboard's changes (create, edit or rename, delete, enable, disable,
trigger now) on the scheduler beat uses, found from beat's scheduler
instance:

* **django-celery-beat** (``DatabaseScheduler``): its ``PeriodicTask`` rows;
  entries created in the admin or the ORM show up in z4j.
* **RedBeat** (``RedBeatScheduler``): its entries in Redis; entries created
  with RedBeat's API show up in z4j.
* **Celery's default file scheduler** (``PersistentScheduler``): the
  schedule in the running beat and its shelve file; z4j's changes are
  applied again when beat restarts unless the entry's ``beat_schedule``
  setting changed since (see :mod:`~z4j_agent_celerybeat.file_store`).
* any other scheduler: reported, read-only.

Configuration, from beat's environment: the worker agent's variables
(``Z4J_BRAIN_URL``, ``Z4J_TOKEN``, ``Z4J_HMAC_SECRET`` required;
``Z4J_PROJECT_ID``, ``Z4J_AGENT_NAME``), with an agent minted for this beat
(the brain names the scheduler after the agent), and
``Z4J_BEAT_POLL_INTERVAL``: seconds between two looks at the schedule
(default 5), also the longest beat sleeps between ticks, so a new entry
fires on time.

When the agent starts, beat prints::

    INFO:z4j.celerybeat.beat_bootstrap:z4j beat bootstrap: agent runtime started

If a required variable is missing it logs one WARNING naming it and beat
runs normally without the agent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "install"]

__version__ = "0.1.0"


def install(app: Any = None) -> None:
    """Start the agent in every ``celery beat`` of ``app`` (see the module's documentation)."""
    from z4j_agent_celerybeat.bootstrap import install as _install

    _install(app)
