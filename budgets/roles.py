"""Roles and the permissions (scopes) each grants, in seed 004's `resource:action` style."""

from __future__ import annotations

from django.db import models

AGENTS_READ = "agents:read"
AGENTS_WRITE = "agents:write"
TURNS_EXECUTE = "turns:execute"
TURNS_READ = "turns:read"
MEMORY_READ = "memory:read"
MEMORY_WRITE = "memory:write"
BUDGETS_ADMIN = "budgets:admin"
KEYS_ADMIN = "keys:admin"
AUDIT_READ = "audit:read"


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    EXECUTOR = "executor", "Executor"
    DEVELOPER = "developer", "Developer"
    ADMIN = "admin", "Admin"


_VIEWER = frozenset({AGENTS_READ, TURNS_READ, MEMORY_READ})
_EXECUTOR = _VIEWER | {TURNS_EXECUTE, MEMORY_WRITE}
_DEVELOPER = _EXECUTOR | {AGENTS_WRITE}
_ADMIN = _DEVELOPER | {BUDGETS_ADMIN, KEYS_ADMIN, AUDIT_READ}

PERMISSIONS: dict[str, frozenset[str]] = {
    Role.VIEWER: _VIEWER,
    Role.EXECUTOR: frozenset(_EXECUTOR),
    Role.DEVELOPER: frozenset(_DEVELOPER),
    Role.ADMIN: frozenset(_ADMIN),
}


def grants(role: str, scope: str) -> bool:
    return scope in PERMISSIONS.get(role, frozenset())
