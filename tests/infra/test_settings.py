"""Settings come from the environment and Z4J_HOME, with safe defaults and clear errors."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from z4j_domain.reconciliation import ReconcilePolicy
from z4j_infra.errors import ConfigError
from z4j_infra.settings import Settings, load_settings, normalize_database_url


def _env(home: Path, **values: str) -> dict[str, str]:
    return {"Z4J_HOME": str(home), **values}


def test_defaults(tmp_path: Path) -> None:
    """With only Z4J_HOME set: SQLite in the home, localhost:7700, a generated secret."""
    home = tmp_path / "state"
    settings = load_settings(_env(home))
    assert settings.home == home
    assert settings.database_url == f"sqlite+aiosqlite:///{home / 'z4j.db'}"
    assert (settings.host, settings.port) == ("127.0.0.1", 7700)
    assert settings.bootstrap_admin_email is None
    assert settings.bootstrap_admin_password is None
    assert len(settings.secret) >= 64


def test_home_defaults_to_dot_z4j_in_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Z4J_HOME the state lives in ~/.z4j."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings({}).home == tmp_path / ".z4j"


def test_home_is_created_private(tmp_path: Path) -> None:
    """A missing home is created with mode 0700, whatever the umask."""
    home = tmp_path / "a" / "b"
    old = os.umask(0o022)
    try:
        load_settings(_env(home))
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """Z4J_HOME pointing at a file is a configuration error."""
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        load_settings(_env(path))


def test_secret_file_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    """The generated secret is written privately and read back on every later start."""
    first = load_settings(_env(tmp_path))
    secret_file = tmp_path / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() == first.secret
    assert load_settings(_env(tmp_path)).secret == first.secret
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_secret_from_the_environment_wins(tmp_path: Path) -> None:
    """Z4J_SECRET is used as is and no secret file is written."""
    settings = load_settings(_env(tmp_path, Z4J_SECRET="from-env"))
    assert settings.secret == "from-env"
    assert not (tmp_path / "secret").exists()


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    """An empty secret file is not silently replaced (that would invalidate signatures)."""
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_settings(_env(tmp_path))


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    """Logging a Settings never shows the secret or the bootstrap password."""
    settings = load_settings(
        _env(
            tmp_path,
            Z4J_SECRET="s3cr3t-value",
            Z4J_BOOTSTRAP_ADMIN_EMAIL="admin@example.com",
            Z4J_BOOTSTRAP_ADMIN_PASSWORD="hunter2-password",
        )
    )
    assert "s3cr3t-value" not in repr(settings)
    assert "hunter2-password" not in repr(settings)
    assert settings.bootstrap_admin_password == "hunter2-password"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/z4j", "postgresql+asyncpg://u:p@db:5432/z4j"),
        ("postgres://u@db/z4j", "postgresql+asyncpg://u@db/z4j"),
        ("postgresql+asyncpg://u@db/z4j", "postgresql+asyncpg://u@db/z4j"),
        ("sqlite:////var/lib/z4j/z4j.db", "sqlite+aiosqlite:////var/lib/z4j/z4j.db"),
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("PostgreSQL://u@db/z4j", "postgresql+asyncpg://u@db/z4j"),
    ],
)
def test_database_url_normalization(tmp_path: Path, given: str, expected: str) -> None:
    """Plain and driver-qualified URLs map to the async drivers z4j uses."""
    assert normalize_database_url(given) == expected
    settings = load_settings(_env(tmp_path, Z4J_DATABASE_URL=given))
    assert settings.database_url == expected


@pytest.mark.parametrize(
    "url", ["mysql://u@db/z4j", "postgresql+psycopg2://u@db/z4j", "sqlite+pysqlite:///x", "z4j.db"]
)
def test_other_database_schemes_are_refused(tmp_path: Path, url: str) -> None:
    """Unsupported schemes give a ConfigError that names the supported ones."""
    with pytest.raises(ConfigError, match="sqlite:///") as error:
        load_settings(_env(tmp_path, Z4J_DATABASE_URL=url))
    assert "Z4J_DATABASE_URL" in str(error.value)


def test_host_and_port(tmp_path: Path) -> None:
    """Z4J_HOST and Z4J_PORT are taken as given."""
    settings = load_settings(_env(tmp_path, Z4J_HOST="0.0.0.0", Z4J_PORT="8080"))
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http", "80.5", "7700x"])
def test_bad_port_is_refused(tmp_path: Path, port: str) -> None:
    """A port that is not an integer from 1 to 65535 is a ConfigError naming Z4J_PORT."""
    with pytest.raises(ConfigError, match="Z4J_PORT"):
        load_settings(_env(tmp_path, Z4J_PORT=port))


def test_bootstrap_admin_needs_both_variables(tmp_path: Path) -> None:
    """Email without password or password without email is a ConfigError naming the missing one."""
    with pytest.raises(ConfigError, match="Z4J_BOOTSTRAP_ADMIN_PASSWORD"):
        load_settings(_env(tmp_path, Z4J_BOOTSTRAP_ADMIN_EMAIL="admin@example.com"))
    with pytest.raises(ConfigError, match="Z4J_BOOTSTRAP_ADMIN_EMAIL"):
        load_settings(_env(tmp_path, Z4J_BOOTSTRAP_ADMIN_PASSWORD="pw"))
    settings = load_settings(
        _env(
            tmp_path,
            Z4J_BOOTSTRAP_ADMIN_EMAIL="admin@example.com",
            Z4J_BOOTSTRAP_ADMIN_PASSWORD="pw",
        )
    )
    assert settings.bootstrap_admin_email == "admin@example.com"


def test_nothing_is_read_at_import() -> None:
    """Settings is a plain value: building one touches neither the environment nor the disk."""
    settings = Settings(home=Path("/nonexistent"), database_url="sqlite+aiosqlite://", secret="x")
    assert settings.port == 7700


def test_reconciler_timings_default_and_come_from_the_environment(tmp_path: Path) -> None:
    """Heartbeat interval and window, pass interval and probe timeout, in seconds."""
    default = load_settings(_env(tmp_path)).reconcile
    assert default == ReconcilePolicy()
    tuned = load_settings(
        _env(
            tmp_path,
            Z4J_HEARTBEAT_INTERVAL="5",
            Z4J_HEARTBEAT_WINDOW="20.5",
            Z4J_RECONCILE_INTERVAL="15",
            Z4J_PROBE_TIMEOUT="45",
        )
    ).reconcile
    assert tuned.heartbeat_interval == timedelta(seconds=5)
    assert tuned.heartbeat_window == timedelta(seconds=20.5)
    assert tuned.reconcile_interval == timedelta(seconds=15)
    assert tuned.probe_timeout == timedelta(seconds=45)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"Z4J_RECONCILE_INTERVAL": "soon"}, "Z4J_RECONCILE_INTERVAL must be a number"),
        ({"Z4J_PROBE_TIMEOUT": "0"}, "Z4J_PROBE_TIMEOUT must be a number"),
        ({"Z4J_HEARTBEAT_WINDOW": "-3"}, "Z4J_HEARTBEAT_WINDOW must be a number"),
        ({"Z4J_HEARTBEAT_WINDOW": "1"}, "inconsistent reconciler settings"),
        ({"Z4J_RECONCILE_INTERVAL": "60"}, "inconsistent reconciler settings"),
    ],
)
def test_bad_reconciler_timings_are_refused(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """A value that is not positive, or timings that contradict each other, stop startup."""
    with pytest.raises(ConfigError, match=message):
        load_settings(_env(tmp_path, **variables))


def test_session_settings_default_and_come_from_the_environment(tmp_path: Path) -> None:
    """Sessions last 2 idle hours and 12 in all; the cookie's Secure flag follows the scheme."""
    default = load_settings(_env(tmp_path))
    assert (default.session_idle, default.session_lifetime) == (
        timedelta(hours=2),
        timedelta(hours=12),
    )
    assert default.cookie_secure is None
    tuned = load_settings(
        _env(
            tmp_path,
            Z4J_SESSION_IDLE_TIMEOUT="600",
            Z4J_SESSION_LIFETIME="3600",
            Z4J_COOKIE_SECURE="TRUE",
        )
    )
    assert (tuned.session_idle, tuned.session_lifetime) == (
        timedelta(minutes=10),
        timedelta(hours=1),
    )
    assert tuned.cookie_secure is True
    assert load_settings(_env(tmp_path, Z4J_COOKIE_SECURE="no")).cookie_secure is False
    assert load_settings(_env(tmp_path, Z4J_COOKIE_SECURE="auto")).cookie_secure is None


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"Z4J_SESSION_IDLE_TIMEOUT": "30"}, "Z4J_SESSION_IDLE_TIMEOUT must be a number"),
        ({"Z4J_SESSION_LIFETIME": "forever"}, "Z4J_SESSION_LIFETIME must be a number"),
        ({"Z4J_SESSION_LIFETIME": "1e9"}, "90 days"),
        ({"Z4J_SESSION_IDLE_TIMEOUT": "86400"}, "longer than Z4J_SESSION_LIFETIME"),
        ({"Z4J_COOKIE_SECURE": "maybe"}, "Z4J_COOKIE_SECURE must be auto, true or false"),
    ],
)
def test_bad_session_settings_are_refused(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """Out-of-range or contradictory session settings stop startup with the reason."""
    with pytest.raises(ConfigError, match=message):
        load_settings(_env(tmp_path, **variables))


def test_command_settings_default_and_come_from_the_environment(tmp_path: Path) -> None:
    """Commands time out after ten minutes and a bulk action selects at most 10,000 tasks."""
    default = load_settings(_env(tmp_path))
    assert (default.command_timeout, default.bulk_cap) == (timedelta(minutes=10), 10_000)
    tuned = load_settings(_env(tmp_path, Z4J_COMMAND_TIMEOUT="30", Z4J_BULK_CAP="250"))
    assert (tuned.command_timeout, tuned.bulk_cap) == (timedelta(seconds=30), 250)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"Z4J_COMMAND_TIMEOUT": "5"}, "Z4J_COMMAND_TIMEOUT must be a number of seconds from 10"),
        ({"Z4J_COMMAND_TIMEOUT": "soon"}, "Z4J_COMMAND_TIMEOUT must be a number"),
        ({"Z4J_BULK_CAP": "0"}, "Z4J_BULK_CAP must be a number of tasks from 1"),
        ({"Z4J_BULK_CAP": "lots"}, "Z4J_BULK_CAP must be a number of tasks"),
        ({"Z4J_BULK_CAP": "1000001"}, "Z4J_BULK_CAP must be a number of tasks"),
    ],
)
def test_bad_command_settings_are_refused(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """An out-of-range command timeout or bulk cap stops startup with the reason."""
    with pytest.raises(ConfigError, match=message):
        load_settings(_env(tmp_path, **variables))
