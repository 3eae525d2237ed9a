"""A circuit breaker per provider endpoint, shared by every worker through Redis (seed 000 7.3.2.1).

Closed: calls go through; 5 consecutive failures open it. Open: calls fail fast with 503 for 30 s.
Then half-open: one probe call is let through (a Redis SET NX decides which); its success closes the
breaker, its failure opens it again. Only failures that say the provider is unwell count (5xx,
timeouts, unreachable, malformed answers), not a request the provider rightly refused.
"""

from __future__ import annotations

import hashlib
import logging
import time

import redis
from django.conf import settings

from agents import streams
from agents.providers import ProviderError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
log = logging.getLogger(__name__)
_COUNTED = {"provider_error", "provider_timeout", "provider_unreachable", "provider_bad_response"}


def _key(endpoint: str) -> str:
    return "sentinel:cb:" + hashlib.sha1(endpoint.encode()).hexdigest()[:16]


def state(endpoint: str, now: float | None = None) -> str:
    now = now or time.time()
    data = streams.sync_client().hgetall(_key(endpoint))
    opened = float(data.get(b"opened_at", 0) or 0)
    if not opened:
        return CLOSED
    return OPEN if now - opened < settings.SENTINEL["BREAKER_OPEN_SECONDS"] else HALF_OPEN


def before_call(endpoint: str) -> None:
    """Raise a fast 503 unless a call may go to this endpoint now. With Redis out of reach the
    breaker fails open: it protects the provider, it must not become a dependency of every turn."""
    try:
        current = state(endpoint)
        if current == CLOSED:
            return
        if current == HALF_OPEN and streams.sync_client().set(
            _key(endpoint) + ":probe", "1", nx=True, ex=settings.SENTINEL["BREAKER_OPEN_SECONDS"]
        ):
            return  # this call is the probe
    except redis.RedisError as error:
        log.warning("circuit breaker state unreadable (%s); letting the call through", type(error).__name__)
        return
    raise ProviderError(
        503,
        "circuit_open",
        "The model provider is failing; calls are paused for a moment. Retry later.",
        retryable=False,
        type="service_unavailable",
    )


def record_success(endpoint: str) -> None:
    try:
        client = streams.sync_client()
        if client.exists(_key(endpoint)):
            client.delete(_key(endpoint), _key(endpoint) + ":probe")
    except redis.RedisError as error:
        log.warning("could not record a provider success on the breaker: %s", type(error).__name__)


def record_failure(endpoint: str, error: ProviderError) -> None:
    if error.code not in _COUNTED:
        return
    try:
        _count_failure(endpoint)
    except redis.RedisError as redis_error:
        log.warning("could not record a provider failure on the breaker: %s", type(redis_error).__name__)


def _count_failure(endpoint: str) -> None:
    key = _key(endpoint)
    client = streams.sync_client()
    pipe = client.pipeline()
    pipe.hincrby(key, "failures", 1)
    pipe.hset(key, "endpoint", endpoint)
    pipe.hget(key, "opened_at")
    pipe.expire(key, 3600)
    failures, _, opened, _ = pipe.execute()
    if failures >= settings.SENTINEL["BREAKER_FAILURES"] or opened:  # a failed probe re-opens it
        client.hset(key, "opened_at", time.time())
        client.delete(key + ":probe")
