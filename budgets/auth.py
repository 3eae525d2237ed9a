"""Authenticating API keys and checking the scope each endpoint requires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from budgets import audit, keys
from budgets.models import ApiKey, Tenant
from budgets.roles import grants
from sentinel_site import logs

# last_used_at is written at most this often per key, so auth does not write on every request.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its tenant and role. Stands in for DRF's `request.user`."""

    api_key: ApiKey

    @property
    def tenant(self) -> Tenant:
        return self.api_key.tenant

    @property
    def role(self) -> str:
        return self.api_key.role

    @property
    def is_authenticated(self) -> bool:
        return True

    def can(self, scope: str) -> bool:
        return grants(self.role, scope)


def bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_key(plaintext: str) -> Principal:
    """Return the principal for a presented key, or raise AuthenticationFailed (never says why)."""
    parsed = keys.parse(plaintext)
    failure = exceptions.AuthenticationFailed("Incorrect API key provided.")
    if parsed is None:
        audit.record("auth.failed", actor="key:malformed", data={"reason": "malformed"})
        raise failure
    key_id, secret = parsed
    api_key = ApiKey.objects.select_related("tenant").filter(key_id=key_id).first()
    if api_key is None or not keys.matches(api_key.salt, api_key.hashed_secret, secret):
        audit.record(
            "auth.failed",
            actor=f"key:{key_id}",
            tenant_id=api_key.tenant_id if api_key else None,
            data={"reason": "unknown key" if api_key is None else "wrong secret"},
        )
        raise failure
    if not api_key.is_usable:
        audit.record("auth.failed", actor=f"key:{key_id}", tenant_id=api_key.tenant_id, data={"reason": "expired or revoked"})
        raise exceptions.AuthenticationFailed("This API key has expired or been revoked.")
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > _LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    logs.tenant_id.set(str(api_key.tenant_id))
    return Principal(api_key)


def authenticate_request(request: HttpRequest) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise exceptions.NotAuthenticated()
    return authenticate_key(token)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer snt_...` -> request.user is a Principal."""

    def authenticate(self, request) -> tuple[Principal, None] | None:
        token = bearer_token(request)
        if token is None:
            return None
        return authenticate_key(token), None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="sentinel"'


class HasScope(permissions.BasePermission):
    """Allow the request if the key's role grants the view's `required_scopes[method]`."""

    message = "Your API key's role does not allow this action."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            raise exceptions.NotAuthenticated()
        if not hasattr(view, request.method.lower()):
            return True  # not a method this view serves: let dispatch answer 405
        scope = required_scope(view, request.method)
        return scope is not None and principal.can(scope)  # an undeclared method fails closed


def required_scope(view, method: str) -> str | None:
    action = getattr(view, "action", None)
    action_scopes: dict[str, str] = getattr(view, "action_scopes", {})
    if action in action_scopes:
        return action_scopes[action]
    scopes: dict[str, str] = getattr(view, "required_scopes", {})
    if method in scopes:
        return scopes[method]
    if method in ("HEAD", "OPTIONS"):
        return scopes.get("GET")
    return scopes.get("*")
