"""The brain's settings, read from the environment (and ``Z4J_HOME``) when asked, never at import.

=================================  ==========================================================
variable                           meaning (default)
=================================  ==========================================================
``Z4J_HOME``                       state directory (``~/.z4j``, created with mode 0700)
``Z4J_DATABASE_URL``               ``sqlite:///...`` or ``postgresql://...``
                                   (``sqlite+aiosqlite:///<home>/z4j.db``)
``Z4J_SECRET``                     signing secret (``<home>/secret``, generated on first run)
``Z4J_HOST`` / ``Z4J_PORT``        where to listen (``127.0.0.1`` / ``7700``)
``Z4J_BOOTSTRAP_ADMIN_EMAIL``      first admin, created on first boot; set both or neither
``Z4J_BOOTSTRAP_ADMIN_PASSWORD``
``Z4J_HEARTBEAT_INTERVAL``         seconds between agents' heartbeats (``2``)
``Z4J_HEARTBEAT_WINDOW``           silence after which a worker is offline (3 intervals + 2 s)
``Z4J_RECONCILE_INTERVAL``         seconds between reconciler passes (``10``)
``Z4J_PROBE_TIMEOUT``              unanswered probes before a dead worker's task is lost (``30``)
``Z4J_SESSION_IDLE_TIMEOUT``       seconds without a request that end a browser session (``7200``)
``Z4J_SESSION_LIFETIME``           seconds after login that end a browser session (``43200``)
``Z4J_COOKIE_SECURE``              ``auto`` (Secure on HTTPS requests), ``true`` or ``false``
``Z4J_COMMAND_TIMEOUT``            seconds a retry, cancel or purge may wait and run (``600``)
``Z4J_BULK_CAP``                   most tasks one bulk retry or cancel may select (``10000``)
=================================  ==========================================================
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import attrs

from z4j_domain.errors import InvalidInput
from z4j_domain.reconciliation import ReconcilePolicy
from z4j_infra.errors import ConfigError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "RECONCILE_VARIABLES",
    "Settings",
    "load_settings",
    "normalize_database_url",
]

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7700
DEFAULT_SESSION_IDLE: Final = timedelta(hours=2)
DEFAULT_SESSION_LIFETIME: Final = timedelta(hours=12)
DEFAULT_COMMAND_TIMEOUT: Final = timedelta(minutes=10)
DEFAULT_BULK_CAP: Final = 10_000
_MAX_BULK_CAP: Final = 1_000_000
_SECRET_FILE: Final = "secret"  # noqa: S105 - a file name, not a secret

# Each accepted spelling of a scheme, and the async driver z4j runs it with.
_SCHEMES: Final = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the brain needs to know about its environment."""

    home: Path
    database_url: str
    # Secrets stay out of repr() so that logging a Settings never leaks them.
    secret: str = attrs.field(repr=False)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: str | None = attrs.field(default=None, repr=False)
    #: Heartbeats, liveness and the reconciler's timings.
    reconcile: ReconcilePolicy = attrs.Factory(ReconcilePolicy)
    #: A browser session ends after this long without a request...
    session_idle: timedelta = DEFAULT_SESSION_IDLE
    #: ... and this long after login, whatever happens.
    session_lifetime: timedelta = DEFAULT_SESSION_LIFETIME
    #: The session cookie's Secure flag: ``None`` sets it on HTTPS requests only.
    cookie_secure: bool | None = None
    #: How long a command may wait for an agent and run before it is timed out.
    command_timeout: timedelta = DEFAULT_COMMAND_TIMEOUT
    #: Most tasks one bulk retry or cancel may select.
    bulk_cap: int = DEFAULT_BULK_CAP


def normalize_database_url(url: str) -> str:
    """Return ``url`` with z4j's async driver; raise :class:`ConfigError` for other schemes."""
    scheme, sep, rest = url.strip().partition("://")
    driver = _SCHEMES.get(scheme.lower())
    if not sep or driver is None:
        shown = scheme if sep else url
        raise ConfigError(
            f"unsupported database URL scheme {shown!r} in Z4J_DATABASE_URL: use "
            "sqlite:///path/to/z4j.db or postgresql://user:password@host:5432/dbname"
        )
    return f"{driver}://{rest}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``environ`` (default: ``os.environ``); raise :class:`ConfigError`.

    Creates ``Z4J_HOME`` (mode 0700) and, when ``Z4J_SECRET`` is unset, the
    secret file in it (mode 0600) on first use.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    home = _prepare_home(Path(get("Z4J_HOME") or "~/.z4j").expanduser())
    raw_url = get("Z4J_DATABASE_URL")
    database_url = (
        normalize_database_url(raw_url)
        if raw_url is not None
        else f"sqlite+aiosqlite:///{home / 'z4j.db'}"
    )
    secret = get("Z4J_SECRET") or _load_or_create_secret(home / _SECRET_FILE)
    email = get("Z4J_BOOTSTRAP_ADMIN_EMAIL")
    password = env.get("Z4J_BOOTSTRAP_ADMIN_PASSWORD") or None
    if (email is None) != (password is None):
        missing = "Z4J_BOOTSTRAP_ADMIN_" + ("PASSWORD" if password is None else "EMAIL")
        raise ConfigError(
            f"{missing} is not set: set both Z4J_BOOTSTRAP_ADMIN_EMAIL and "
            "Z4J_BOOTSTRAP_ADMIN_PASSWORD, or neither"
        )
    return Settings(
        home=home,
        database_url=database_url,
        secret=secret,
        host=get("Z4J_HOST") or DEFAULT_HOST,
        port=_parse_port(get("Z4J_PORT")),
        bootstrap_admin_email=email,
        bootstrap_admin_password=password,
        reconcile=_reconcile_policy(get),
        **_session_settings(get),
        **_command_settings(get),
    )


_SESSION_VARIABLES: Final = {
    "Z4J_SESSION_IDLE_TIMEOUT": "session_idle",
    "Z4J_SESSION_LIFETIME": "session_lifetime",
}
_BOOLEANS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _durations(
    get: Any, variables: dict[str, str], accept: Any, expected: str
) -> dict[str, timedelta]:
    """The durations set among ``variables`` (variable to field), each checked by ``accept``."""
    values: dict[str, timedelta] = {}
    for variable, field in variables.items():
        raw = get(variable)
        if raw is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not accept(seconds):
            raise ConfigError(f"{variable} must be a number of seconds {expected}, got {raw!r}")
        values[field] = timedelta(seconds=seconds)
    return values


def _session_settings(get: Any) -> dict[str, Any]:
    values: dict[str, Any] = _durations(
        get,
        _SESSION_VARIABLES,
        lambda seconds: 60 <= seconds <= 90 * 86_400,
        "from 60 to 7776000 (90 days)",
    )
    idle = values.get("session_idle", DEFAULT_SESSION_IDLE)
    lifetime = values.get("session_lifetime", DEFAULT_SESSION_LIFETIME)
    if idle > lifetime:
        raise ConfigError(
            "Z4J_SESSION_IDLE_TIMEOUT is longer than Z4J_SESSION_LIFETIME: a session could"
            " never reach its idle timeout"
        )
    raw_secure = get("Z4J_COOKIE_SECURE")
    if raw_secure is not None and raw_secure.lower() != "auto":
        if raw_secure.lower() not in _BOOLEANS:
            raise ConfigError(f"Z4J_COOKIE_SECURE must be auto, true or false, got {raw_secure!r}")
        values["cookie_secure"] = _BOOLEANS[raw_secure.lower()]
    return values


def _command_settings(get: Any) -> dict[str, Any]:
    values: dict[str, Any] = _durations(
        get,
        {"Z4J_COMMAND_TIMEOUT": "command_timeout"},
        lambda seconds: 10 <= seconds <= 86_400,
        "from 10 to 86400 (a day)",
    )
    raw_cap = get("Z4J_BULK_CAP")
    if raw_cap is not None:
        try:
            cap = int(raw_cap)
        except ValueError:
            cap = 0
        if not 1 <= cap <= _MAX_BULK_CAP:
            raise ConfigError(
                f"Z4J_BULK_CAP must be a number of tasks from 1 to {_MAX_BULK_CAP}, got {raw_cap!r}"
            )
        values["bulk_cap"] = cap
    return values


#: The environment variables of the reconciler's windows, and the
#: :class:`~z4j_domain.reconciliation.ReconcilePolicy` field each one sets.
RECONCILE_VARIABLES: Final = {
    "Z4J_HEARTBEAT_INTERVAL": "heartbeat_interval",
    "Z4J_HEARTBEAT_WINDOW": "heartbeat_window",
    "Z4J_RECONCILE_INTERVAL": "reconcile_interval",
    "Z4J_PROBE_TIMEOUT": "probe_timeout",
}


def _reconcile_policy(get: Any) -> ReconcilePolicy:
    values = _durations(get, RECONCILE_VARIABLES, lambda seconds: 0 < seconds < 86_400, "above 0")
    try:
        return ReconcilePolicy(**values)
    except (ValueError, TypeError, InvalidInput) as error:
        names = ", ".join(sorted(RECONCILE_VARIABLES))
        raise ConfigError(f"inconsistent reconciler settings ({names}): {error}") from None


def _parse_port(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"Z4J_PORT must be a port number between 1 and 65535, got {raw!r}")
    return port


def _prepare_home(home: Path) -> Path:
    if home.exists():
        if not home.is_dir():
            raise ConfigError(f"Z4J_HOME {str(home)!r} exists and is not a directory")
        return home
    try:
        home.mkdir(mode=0o700, parents=True)
        # mkdir's mode is filtered through the umask; the state directory holds
        # the secret and the database, so make it private whatever the umask.
        home.chmod(0o700)
    except FileExistsError:
        pass  # Another process created it first.
    except OSError as error:
        raise ConfigError(f"cannot create Z4J_HOME {str(home)!r}: {error.strerror}") from None
    return home


def _load_or_create_secret(path: Path) -> str:
    secret = _read_secret(path)
    if secret is not None:
        return secret
    _write_new_secret(path, secrets.token_urlsafe(48))
    # Re-read: if another process won the race, its secret is the one on disk.
    secret = _read_secret(path)
    if secret is None:  # pragma: no cover - only if the file vanishes under us
        raise ConfigError(f"the secret file {str(path)!r} disappeared while it was being created")
    return secret


def _read_secret(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"cannot read the secret file {str(path)!r}: {error.strerror}") from None
    if not text:
        raise ConfigError(
            f"the secret file {str(path)!r} is empty: delete it to have a new secret generated, "
            "or set Z4J_SECRET"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret file %s is readable by other users; run: chmod 600 %s", path, path)
    return text


def _write_new_secret(path: Path, secret: str) -> None:
    # Write a private temporary file, then link it into place: readers never see
    # a partial secret, and link() (unlike rename) never replaces a secret that
    # another process published in the meantime.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secret + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:
            # Some filesystems have no hard links; an atomic rename is the next best.
            os.replace(temporary, path)
    except OSError as error:
        raise ConfigError(f"cannot write the secret file {str(path)!r}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
