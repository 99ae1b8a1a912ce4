"""The beat agent's settings: the worker agent's (same variables), and how often it looks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from z4j_agent_celery.config import AgentConfig, ConfigError

__all__ = ["DEFAULT_POLL_INTERVAL", "BeatConfig", "ConfigError"]

#: Seconds between two looks at the schedule, and the longest beat sleeps between ticks.
DEFAULT_POLL_INTERVAL: Final = 5.0
_POLL_VARIABLE: Final = "Z4J_BEAT_POLL_INTERVAL"


@dataclass(frozen=True, kw_only=True)
class BeatConfig:
    """How to reach the brain (the worker agent's :class:`AgentConfig`) and the poll interval."""

    agent: AgentConfig
    poll_interval: float = DEFAULT_POLL_INTERVAL

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BeatConfig:
        """Read the settings; raise :class:`ConfigError` naming the first bad variable.

        ``Z4J_BRAIN_URL``, ``Z4J_TOKEN``, ``Z4J_HMAC_SECRET`` (required),
        ``Z4J_PROJECT_ID`` and ``Z4J_AGENT_NAME`` as for the worker's agent;
        ``Z4J_BEAT_POLL_INTERVAL``: seconds between two looks at the schedule
        (default 5), also the longest beat sleeps between two ticks.
        """
        agent = AgentConfig.from_env(environ)
        raw = environ.get(_POLL_VARIABLE, "").strip()
        poll = DEFAULT_POLL_INTERVAL
        if raw:
            try:
                poll = float(raw)
            except ValueError:
                poll = -1.0
            if not 0.1 <= poll <= 3600:
                raise ConfigError(
                    _POLL_VARIABLE,
                    f"{_POLL_VARIABLE} must be a number of seconds from 0.1 to 3600, got {raw!r}",
                )
        return cls(agent=agent, poll_interval=poll)
