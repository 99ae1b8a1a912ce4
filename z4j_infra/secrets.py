"""Fresh random tokens for API keys, agent tokens and the like."""

from __future__ import annotations

# Absolute imports make this the standard library's module, not this one.
import secrets as _stdlib_secrets

__all__ = ["new_token"]


def new_token(prefix: str = "") -> str:
    """Return ``prefix`` followed by 32 random bytes, URL-safe base64 encoded."""
    return prefix + _stdlib_secrets.token_urlsafe(32)
