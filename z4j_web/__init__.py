"""The Quart shell: app factory, API, setup page and the ``z4j`` command."""
