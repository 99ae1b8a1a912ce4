"""Reading JSON request bodies: one object, known fields of known types, or a clear 400."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import request

from z4j_domain.errors import InvalidInput

__all__ = ["json_object"]

_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", type(None): "null"}


def _describe(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


async def json_object(
    fields: Mapping[str, type | tuple[type, ...]], *, required: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The request's JSON object, checked against ``fields`` (name to accepted types).

    Unknown fields, missing required ones and wrongly typed values are refused
    with :class:`InvalidInput` naming the field, never ignored.
    """
    body = await request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        names = ", ".join(f'"{name}"' for name in fields)
        raise InvalidInput(f"send a JSON object with the fields {names}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; expected: {', '.join(fields)}")
    for name in sorted(required - set(body)):
        raise InvalidInput(f"missing field {name!r}")
    for name, value in body.items():
        wanted = fields[name]
        accepted: tuple[type, ...] = wanted if isinstance(wanted, tuple) else (wanted,)
        # bool is an int subclass: true must not pass for a number.
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise InvalidInput(f"field {name!r} must be {_describe(accepted)}")
    return body
