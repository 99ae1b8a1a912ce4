"""Projects: the unit of isolation for tasks, agents, workers, members and audit."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import attrs

from z4j_domain._validators import aware_utc, non_empty
from z4j_domain.errors import InvalidInput

__all__ = ["DEFAULT_PROJECT_SLUG", "Project", "validate_slug"]

#: The project created on first boot, and the one agents join when unconfigured.
DEFAULT_PROJECT_SLUG: Final = "default"

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def validate_slug(slug: str) -> str:
    """Return ``slug`` if it is a valid project slug, else raise :class:`InvalidInput`."""
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise InvalidInput(
            f"invalid project slug {slug!r}: use 1-63 lower-case letters, digits and inner hyphens"
        )
    return slug


def _slug(_instance: Any, _attribute: Any, value: str) -> None:
    validate_slug(value)


@attrs.frozen(kw_only=True)
class Project:
    """A project; ``slug`` is what URLs and agents use to name it."""

    id: int
    slug: str = attrs.field(validator=_slug)
    name: str = attrs.field(validator=non_empty)
    created_at: datetime = attrs.field(converter=aware_utc)
