"""Rate limits per API key, per client IP and global, counted in Redis so every API process shares
them. Fixed one-minute windows: one pipelined round trip checks all three; over any limit the
request gets 429 with Retry-After (the seconds left in the window)."""

from __future__ import annotations

import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from agents import streams
from sentinel_site import metrics


def _client_ip(request) -> str:
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if settings.SENTINEL["TRUST_X_FORWARDED_FOR"] else ""
    return forwarded.split(",")[0].strip() or request.META.get("REMOTE_ADDR", "") or "unknown"


def check(key_id: str | None, ip: str, now: float | None = None) -> int | None:
    """None if the request may proceed, else the seconds until it may retry."""
    conf = settings.SENTINEL
    now = now or time.time()
    window = int(now // 60)
    scopes = [("global", "all", conf["RATE_LIMIT_GLOBAL"]), ("ip", ip, conf["RATE_LIMIT_PER_IP"])]
    if key_id:
        scopes.append(("key", key_id, conf["RATE_LIMIT_PER_KEY"]))
    scopes = [scope for scope in scopes if scope[2] > 0]  # 0 turns a limit off
    if not scopes:
        return None
    pipe = streams.sync_client().pipeline(transaction=False)
    for kind, name, _ in scopes:
        key = f"sentinel:rl:{kind}:{name}:{window}"
        pipe.incr(key)
        pipe.expire(key, 61)
    counts = pipe.execute()[::2]
    if any(count > limit for count, (_, _, limit) in zip(counts, scopes, strict=True)):
        return max(1, 60 - int(now % 60))
    return None


class RateLimit(BaseThrottle):
    """DRF throttle applying the three limits after authentication."""

    def allow_request(self, request, view) -> bool:
        principal = getattr(request, "user", None)
        key_id = principal.api_key.key_id if getattr(principal, "api_key", None) else None
        self.retry_after = check(key_id, _client_ip(request))
        if self.retry_after is not None:
            metrics.RATE_LIMITED.inc()
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after
