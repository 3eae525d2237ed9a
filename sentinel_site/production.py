"""What a production deployment refuses to start with, as plain functions settings.py calls (and
tests can call without re-importing the settings)."""

from __future__ import annotations

DEVELOPMENT_SECRET_KEY = "sentinel-development-key-not-for-production"

# Secrets that shipped in this repository's files at some point: anyone can read them, so a
# deployment using one signs its sessions and CSRF tokens with a public key.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        DEVELOPMENT_SECRET_KEY,
        "change-me-in-production",  # docker-compose.yml's old default
        "build",  # the Dockerfile's collectstatic step, before it generated one
    }
)

# The thresholds of Django's own deployment check (django.core.checks.security.base).
MIN_SECRET_KEY_LENGTH = 50
MIN_SECRET_KEY_UNIQUE_CHARACTERS = 5
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def secret_key_problem(key: str) -> str | None:
    """Why `key` must not sign anything in production, or None if it may."""
    if key in KNOWN_DEFAULT_SECRETS or key.startswith("django-insecure-"):
        return f"is a default published with Sentinel or Django; generate one, e.g. with `{GENERATE}`"
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"must be at least {MIN_SECRET_KEY_LENGTH} characters long (it has {len(key)})"
    if len(set(key)) < MIN_SECRET_KEY_UNIQUE_CHARACTERS:
        return f"must have at least {MIN_SECRET_KEY_UNIQUE_CHARACTERS} different characters"
    return None
