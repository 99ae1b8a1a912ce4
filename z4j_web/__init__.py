"""The Quart shell: app factory, API, setup page and the ``z4j`` command.

Build an app with :func:`z4j_web.app.create_app`; the command line is
:mod:`z4j_web.cli`. Importing this package starts nothing.
"""

#: Kept equal to ``project.version`` in pyproject.toml; used when z4j runs from a checkout.
__version__ = "0.1.0"
