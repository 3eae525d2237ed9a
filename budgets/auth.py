"""Authenticating API keys (behind the rate limits, budgets.ratelimit) and checking the scope each endpoint requires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from budgets import audit, keys, ratelimit
from budgets.models import ApiKey, Tenant
from budgets.roles import grants
from sentinel_site import config_cache, logs, metrics

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


class _Refused(Exception):
    """Why a presented key was refused, for the audit log; the client sees only `public`."""

    def __init__(self, reason: str, key_id: str | None = None, tenant_id=None, public: str = "Incorrect API key provided.") -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id
        self.tenant_id = tenant_id
        self.public = public


def _verify(parsed: tuple[str, str] | None) -> ApiKey:
    if parsed is None:
        raise _Refused("malformed")
    key_id, secret = parsed
    api_key = config_cache.get("api_key", key_id, lambda: ApiKey.objects.select_related("tenant").filter(key_id=key_id).first())
    if api_key is None:
        raise _Refused("unknown_key", key_id)
    if not keys.matches(api_key.salt, api_key.hashed_secret, secret):
        raise _Refused("wrong_secret", key_id, api_key.tenant_id)
    if not api_key.is_usable:
        raise _Refused("expired_or_revoked", key_id, api_key.tenant_id, "This API key has expired or been revoked.")
    return api_key


def authenticate_key(plaintext: str, admission: ratelimit.Admission) -> Principal:
    """Return the principal for a presented key, or raise AuthenticationFailed (never says why).

    The request was already admitted by the rate limiter (`admission`). A failure is counted for
    the client's IP in Redis, and the audit log gets at most two entries per IP per window: the
    first failure (with its reason) and, when the IP reaches SENTINEL_AUTH_FAILURES_PER_IP, one
    `auth.throttled` summary with the count; after that the limiter refuses the IP before this
    runs. One locked chain append per failure would let a flood of bad keys queue every turn
    behind the audit head lock.
    """
    try:
        api_key = _verify(keys.parse(plaintext))
    except _Refused as refused:
        _record_failure(refused, admission)
        raise exceptions.AuthenticationFailed(refused.public) from None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > _LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now  # the cached row too: not written again before the resolution passes
    logs.tenant_id.set(str(api_key.tenant_id))
    return Principal(api_key)


def _record_failure(refused: _Refused, admission: ratelimit.Admission) -> None:
    metrics.AUTH_FAILURES.labels(refused.reason).inc()
    failures = ratelimit.failed(admission)
    if failures == 1:
        audit.record(
            "auth.failed",
            actor=audit.actor_for_key_id(refused.key_id or "malformed"),
            tenant_id=refused.tenant_id,
            data={"reason": refused.reason, "ip": admission.ip},
        )
    elif failures == settings.SENTINEL["AUTH_FAILURES_PER_IP"]:
        window = datetime.fromtimestamp(admission.window_started, tz=UTC)
        audit.record(
            "auth.throttled",
            actor=audit.actor_for_ip(admission.ip),
            data={"ip": admission.ip, "failures": failures, "window_start": window.isoformat(), "last_reason": refused.reason},
        )


def gate(request: HttpRequest) -> tuple[str | None, ratelimit.Admission]:
    """The presented key (or None) and the rate limiter's admission, before any database work."""
    token = bearer_token(request)
    parsed = keys.parse(token) if token else None
    return token, ratelimit.admit(ratelimit.client_ip(request), parsed[0] if parsed else None)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer snt_...` -> request.user is a Principal. DRF authenticates first of
    all (before permissions and throttles), so the rate limits are applied here, ahead of the key's
    lookup; a request without a key is counted too, then refused by HasScope."""

    def authenticate(self, request) -> tuple[Principal, None] | None:
        token, admission = gate(request)
        if token is None:
            return None
        return authenticate_key(token, admission), None

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
