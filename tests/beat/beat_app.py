"""The Celery app of the beat agent's subprocess tests (``celery -A tests.beat.beat_app beat``).

The broker is ``Z4J_BEAT_BROKER`` (default Redis database 12); RedBeat keeps
its entries there too. With ``DJANGO_SETTINGS_MODULE`` set (see
:mod:`tests.beat.django_settings`) Django is set up first, for
django-celery-beat. The agent is activated with the worker agent's documented
line, which also activates the beat agent when z4j-celerybeat is installed.
``Z4J_BEAT_STATIC=1`` adds one entry to ``beat_schedule``.
"""

from __future__ import annotations

import os

if os.environ.get("DJANGO_SETTINGS_MODULE"):
    import django

    django.setup()

from celery import Celery
from celery.schedules import crontab

import z4j_agent_celery

BROKER = os.environ.get("Z4J_BEAT_BROKER", "redis://127.0.0.1:6379/12")

app = Celery("z4j_beat_tests", broker=BROKER)
app.conf.update(
    timezone="UTC",
    broker_connection_retry_on_startup=True,
    redbeat_redis_url=BROKER,
    redbeat_key_prefix="z4j-beat-tests:",
    beat_max_loop_interval=300,
)
if os.environ.get("Z4J_BEAT_STATIC") == "1":
    app.conf.beat_schedule = {
        "static-nightly": {
            "task": "tests.beat.beat_app.add",
            "schedule": crontab(minute="0", hour="3"),
            "args": (1, 2),
        }
    }
z4j_agent_celery.install(app)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def ping(*args: object, **kwargs: object) -> str:
    return "pong"
