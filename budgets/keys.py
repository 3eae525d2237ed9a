"""API keys: minting (the one place a secret is generated), format, hashing and verification.

A key reads `snt_<key id>_<secret>`: the `snt_` prefix makes a leaked key recognisable to secret
scanners, the key id (public, indexed) names the row without a database search on the secret,
and only an HMAC-SHA256 of the secret under a per-key salt is stored. The secret carries 256 bits
of entropy, so a fast keyed hash is as strong as a slow one here and keeps auth off the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "snt_"
_KEY_RE = re.compile(r"^snt_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    key_id: str
    salt: str
    hashed: str
    plaintext: str


def generate() -> NewKey:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return NewKey(key_id=key_id, salt=salt, hashed=hash_secret(salt, secret), plaintext=f"{PREFIX}{key_id}_{secret}")


def hash_secret(salt: str, secret: str) -> str:
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def parse(plaintext: str) -> tuple[str, str] | None:
    """Split a presented key into (key id, secret), or None if it is not one of ours."""
    match = _KEY_RE.match(plaintext)
    return (match.group(1), match.group(2)) if match else None


def matches(salt: str, hashed: str, secret: str) -> bool:
    return hmac.compare_digest(hash_secret(salt, secret), hashed)


def display(key_id: str) -> str:
    """How a key is shown once its secret is gone: identifiable, useless to an attacker."""
    return f"{PREFIX}{key_id}_…"
