"""The version of z4j this process runs."""

from __future__ import annotations

from importlib import metadata

from z4j_web import __version__

__all__ = ["version"]


def version() -> str:
    """The installed distribution's version, or the source tree's when run from a checkout."""
    try:
        return metadata.version("z4j")
    except metadata.PackageNotFoundError:
        return __version__
