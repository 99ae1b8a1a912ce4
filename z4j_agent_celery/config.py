"""The agent's settings, read from the worker's environment when the worker starts."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "REQUIRED",
    "AgentConfig",
    "ConfigError",
    "agent_url",
]

#: The variables without which the agent does not start.
REQUIRED: Final = ("Z4J_BRAIN_URL", "Z4J_TOKEN", "Z4J_HMAC_SECRET")
#: Events kept in memory while the brain is unreachable or has not acknowledged them.
DEFAULT_BUFFER_SIZE: Final = 100_000
#: Largest JSON encoding of one task's args, kwargs or result that is sent as it is.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 16_384
#: The path of the brain's agent endpoint.
AGENT_PATH: Final = "/ws/agent"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


def agent_url(brain_url: str) -> str:
    """The agent endpoint's ``ws(s)://`` URL for a brain URL (``http(s)://`` or ``ws(s)://``).

    A path on the brain URL is kept as a prefix (a brain behind ``/z4j/`` on a
    shared host); a URL that already ends in ``/ws/agent`` is used as it is.
    """
    parts = urlsplit(brain_url.strip())
    schemes = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ConfigError(
            "Z4J_BRAIN_URL",
            f"Z4J_BRAIN_URL must be an http(s):// or ws(s):// URL, got {brain_url!r}",
        )
    path = parts.path.rstrip("/")
    if not path.endswith(AGENT_PATH):
        path += AGENT_PATH
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(name, f"{name} must be a positive integer, got {raw!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything the agent needs to know to reach the brain."""

    brain_url: str
    token: str
    hmac_secret: str
    project: str = "default"
    agent_name: str
    buffer_size: int = DEFAULT_BUFFER_SIZE
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES

    def __repr__(self) -> str:
        # Never print the token or the secret.
        return (
            f"AgentConfig(brain_url={self.brain_url!r}, project={self.project!r}, "
            f"agent_name={self.agent_name!r}, buffer_size={self.buffer_size})"
        )

    @property
    def url(self) -> str:
        """The WebSocket URL of the brain's agent endpoint."""
        return agent_url(self.brain_url)

    @property
    def secret(self) -> bytes:
        """The HMAC key for frames."""
        return self.hmac_secret.encode("utf-8")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AgentConfig:
        """Read the settings; raise :class:`ConfigError` naming the first bad variable.

        ``Z4J_BRAIN_URL``, ``Z4J_TOKEN``, ``Z4J_HMAC_SECRET``: required.
        ``Z4J_PROJECT_ID``: default ``default``. ``Z4J_AGENT_NAME``: default the
        host name. ``Z4J_BUFFER_SIZE``: events kept while the brain is away
        (default 100000). ``Z4J_MAX_PAYLOAD_BYTES``: size limit of args, kwargs
        and result (default 16384).
        """
        for name in REQUIRED:
            if not environ.get(name, "").strip():
                raise ConfigError(name, f"{name} is not set")
        config = cls(
            brain_url=environ["Z4J_BRAIN_URL"].strip(),
            token=environ["Z4J_TOKEN"].strip(),
            hmac_secret=environ["Z4J_HMAC_SECRET"].strip(),
            project=environ.get("Z4J_PROJECT_ID", "").strip() or "default",
            agent_name=environ.get("Z4J_AGENT_NAME", "").strip() or socket.gethostname(),
            buffer_size=_positive_int(environ, "Z4J_BUFFER_SIZE", DEFAULT_BUFFER_SIZE),
            max_payload_bytes=_positive_int(
                environ, "Z4J_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES
            ),
        )
        agent_url(config.brain_url)  # validate now, with a message naming the variable
        return config
