"""The smallest Django project django-celery-beat runs in, for the beat agent's tests.

The database is an SQLite file named by ``Z4J_BEAT_DJANGO_DB`` (the tests
put it in a temporary directory and run ``migrate`` on it).
"""

from __future__ import annotations

import os

SECRET_KEY = "z4j-beat-tests-only"
INSTALLED_APPS = ["django_celery_beat"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("Z4J_BEAT_DJANGO_DB", "z4j-beat-tests.sqlite3"),
        # Beat's thread and the agent's write to the same file.
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
