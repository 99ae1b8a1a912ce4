"""The agent's settings: required variables, defaults, and the brain's endpoint URL."""

from __future__ import annotations

import socket

import pytest

from z4j_agent_celery.config import AgentConfig, ConfigError, agent_url

REQUIRED_ENV = {
    "Z4J_BRAIN_URL": "https://z4j.example.com",
    "Z4J_TOKEN": "tok",
    "Z4J_HMAC_SECRET": "sec",
}


def test_defaults() -> None:
    config = AgentConfig.from_env(REQUIRED_ENV)
    assert config.project == "default"
    assert config.agent_name == socket.gethostname()
    assert config.buffer_size == 100_000
    assert config.url == "wss://z4j.example.com/ws/agent"
    assert config.secret == b"sec"


def test_optional_variables() -> None:
    config = AgentConfig.from_env(
        {
            **REQUIRED_ENV,
            "Z4J_PROJECT_ID": "payments",
            "Z4J_AGENT_NAME": "celery-prod-1",
            "Z4J_BUFFER_SIZE": "500",
            "Z4J_MAX_PAYLOAD_BYTES": "1024",
        }
    )
    assert (config.project, config.agent_name) == ("payments", "celery-prod-1")
    assert (config.buffer_size, config.max_payload_bytes) == (500, 1024)


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_a_missing_required_variable_is_named(missing: str) -> None:
    environ = {k: v for k, v in REQUIRED_ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing) as caught:
        AgentConfig.from_env(environ)
    assert caught.value.variable == missing
    with pytest.raises(ConfigError, match=missing):
        AgentConfig.from_env({**environ, missing: "  "})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("Z4J_BUFFER_SIZE", "lots"), ("Z4J_BUFFER_SIZE", "0"), ("Z4J_BRAIN_URL", "ftp://x")],
)
def test_malformed_values_are_named(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        AgentConfig.from_env({**REQUIRED_ENV, variable: value})


@pytest.mark.parametrize(
    ("brain", "endpoint"),
    [
        ("http://127.0.0.1:7700", "ws://127.0.0.1:7700/ws/agent"),
        ("https://z4j.example.com/", "wss://z4j.example.com/ws/agent"),
        ("https://example.com/z4j", "wss://example.com/z4j/ws/agent"),
        ("wss://example.com/ws/agent", "wss://example.com/ws/agent"),
    ],
)
def test_agent_url(brain: str, endpoint: str) -> None:
    assert agent_url(brain) == endpoint


def test_the_repr_hides_the_credentials() -> None:
    text = repr(AgentConfig.from_env(REQUIRED_ENV))
    assert "tok" not in text
    assert "sec" not in text
