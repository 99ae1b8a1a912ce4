"""Password hashing with argon2id."""

from __future__ import annotations

import argon2
import attrs
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["Argon2PasswordHasher"]


@attrs.define
class Argon2PasswordHasher:
    """:class:`~z4j_domain.ports.PasswordHasher` using argon2-cffi's recommended parameters.

    Pass a configured ``argon2.PasswordHasher`` to change the cost (tests use a
    cheap one; production keeps the library's defaults).
    """

    hasher: argon2.PasswordHasher = attrs.field(factory=argon2.PasswordHasher)

    def hash(self, password: str) -> str:
        """Return the argon2id hash of ``password`` (salted, self-describing)."""
        return self.hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; ``False`` for malformed hashes too."""
        try:
            return self.hasher.verify(password_hash, password)
        # A corrupt or foreign hash in the database must read as "wrong password",
        # never as a server error on the login page.
        except (VerificationError, InvalidHashError, ValueError, TypeError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with weaker parameters than the current ones."""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError, TypeError):
            return True
