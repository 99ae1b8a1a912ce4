"""The infrastructure layer's errors, all :class:`~z4j_domain.errors.Z4jError`\\ s.

Adapters translate driver exceptions into these (or into the domain's
``Conflict`` / ``InvalidInput``) at the boundary, so callers never have to know
which database driver is underneath.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import sqlalchemy as sa

from z4j_domain.errors import Conflict, InvalidInput, Transient, Z4jError

__all__ = ["ConfigError", "StorageError", "TransientStorageError", "translate_errors"]


class ConfigError(Z4jError):
    """The configuration (environment, ``Z4J_HOME``) is unusable; the message says how to fix it."""


class StorageError(Z4jError):
    """The database failed or could not be reached."""


class TransientStorageError(StorageError, Transient):
    """The database aborted the transaction (a deadlock, a serialization failure): retry it."""


#: SQLSTATEs of a transaction the database aborted so that another could go on.
_TRANSIENT_STATES: Final = frozenset({"40001", "40P01"})


def _describe(error: sa.exc.DBAPIError) -> str:
    message = str(error.orig) if error.orig is not None else str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def _sqlstate(error: sa.exc.DBAPIError) -> str:
    # SQLAlchemy's asyncpg adapter maps only some server errors to the DB-API
    # classes (a too-long value arrives as a bare Error); the SQLSTATE class
    # says what it is: 22 = data exception, 23 = integrity violation.
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver exceptions raised inside the block into z4j errors.

    Constraint violations become :class:`~z4j_domain.errors.Conflict`, values
    the database refuses become :class:`~z4j_domain.errors.InvalidInput`, and
    everything else the driver or the network raises becomes
    :class:`StorageError` (:class:`TransientStorageError` when the database
    aborted the transaction for another's sake: a deadlock or a serialization
    failure).
    """
    try:
        yield
    except sa.exc.DBAPIError as error:
        state = _sqlstate(error)
        if isinstance(error, sa.exc.IntegrityError) or state.startswith("23"):
            raise Conflict(_describe(error)) from error
        if isinstance(error, sa.exc.DataError) or state.startswith("22"):
            raise InvalidInput(f"the database refused a value: {_describe(error)}") from error
        if state in _TRANSIENT_STATES:
            raise TransientStorageError(f"database error: {_describe(error)}") from error
        raise StorageError(f"database error: {_describe(error)}") from error
    except sa.exc.TimeoutError as error:
        raise StorageError(f"no database connection available: {error}") from error
    except (OSError, TimeoutError) as error:
        raise StorageError(f"cannot reach the database: {error}") from error
