"""Password hashing with Argon2id.

Parameters: OWASP's Password Storage Cheat Sheet baseline for Argon2id (19 MiB, 2 iterations,
1 lane) - about 5x cheaper than argon2-cffi's default (64 MiB, 3 iterations, 4 lanes) on our
2-core machines, so a burst of logins cannot starve the API, and still well above the bar.
Hashes made with other parameters keep verifying and are upgraded at the next login.
"""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash("plantnotify-dummy-password")


def burn_verification_time(password: str) -> None:
    """Spend the time of one verification, so unknown usernames answer as slowly as known ones."""
    verify_password(_dummy_hash(), password)
