"""Circuit breakers for provider calls, shared by every worker through Redis (seed 000 7.3.2.1).

Closed: calls go through; 5 consecutive failures open it. Open: calls fail fast with 503 for 30 s.
Then half-open: one probe call is let through (a Redis SET NX decides which); its success closes the
breaker, its failure opens it again. Only failures that say the provider is unwell count
(connection errors, timeouts, 429, 5xx), not a request the provider rightly refused (400, 403, 404,
422). There is one breaker per endpoint, credential and tenant (`ProviderConfig.breaker_key`): a
tenant whose agent fails, or whose requests make the provider fail, opens only its own breaker.

The breakers that are open (or half-open) are also listed in one Redis hash, so the metrics scrape
reads every breaker's state in one round trip instead of scanning the keyspace.

A breaker seen clean (closed, no failure counted) is trusted in-process for
SENTINEL_BREAKER_CACHE_SECONDS (1 s), so a healthy provider costs no Redis round trip per turn:
a breaker another process opens is seen here within that interval, one this process counts a
failure on at once. Within it, a success here does not reset failures other processes count (it
knows of none to reset); the next read after the interval does.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import redis
from django.conf import settings

from agents.providers import ProviderConfig, ProviderError
from sentinel_site import metrics
from sentinel_site.redis import sync_client

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
OPEN_INDEX = "sentinel:cb:open"  # breaker id -> "label|opened_at", for every breaker not closed
log = logging.getLogger(__name__)
_clock = time.monotonic  # the cache's clock (tests move it)
_clean_until: dict[str, float] = {}  # breaker key -> until when it is trusted closed and clean
_clean_lock = threading.Lock()


def _key(breaker_key: str) -> str:
    return "sentinel:cb:" + hashlib.sha1(breaker_key.encode()).hexdigest()[:16]


def label(config: ProviderConfig) -> str:
    """A bounded name for metrics, the same the provider metrics carry: never a tenant's URL."""
    return metrics.provider_label(config.endpoint) if config.tenant_url else "default"


def _state_of(opened: float, now: float) -> str:
    if not opened:
        return CLOSED
    return OPEN if now - opened < settings.SENTINEL["BREAKER_OPEN_SECONDS"] else HALF_OPEN


def state(config: ProviderConfig, now: float | None = None) -> str:
    data = sync_client().hgetall(_key(config.breaker_key))
    return _state_of(float(data.get(b"opened_at", 0) or 0), now or time.time())


def before_call(config: ProviderConfig) -> None:
    """Raise a fast 503 unless a call may go to this endpoint now. With Redis out of reach the
    breaker fails open: it protects the provider, it must not become a dependency of every turn."""
    if _known_clean(config.breaker_key):
        return
    key = _key(config.breaker_key)
    try:
        data = sync_client().hgetall(key)
        if not data:
            _trust_clean(config.breaker_key)
            return
        current = _state_of(float(data.get(b"opened_at", 0) or 0), time.time())
        if current == CLOSED:
            return
        if current == HALF_OPEN and sync_client().set(key + ":probe", "1", nx=True, ex=settings.SENTINEL["BREAKER_OPEN_SECONDS"]):
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


def record_success(config: ProviderConfig) -> None:
    if _known_clean(config.breaker_key):
        return  # nothing counted to reset
    key = _key(config.breaker_key)
    try:
        client = sync_client()
        if client.exists(key):
            pipe = client.pipeline(transaction=False)
            pipe.delete(key, key + ":probe")
            pipe.hdel(OPEN_INDEX, key)
            pipe.execute()
        _trust_clean(config.breaker_key)
    except redis.RedisError as error:
        log.warning("could not record a provider success on the breaker: %s", type(error).__name__)


def _known_clean(breaker_key: str) -> bool:
    return _clean_until.get(breaker_key, 0.0) > _clock()


def _trust_clean(breaker_key: str) -> None:
    seconds = settings.SENTINEL["BREAKER_CACHE_SECONDS"]
    if seconds <= 0:
        return
    with _clean_lock:
        if len(_clean_until) >= 10_000:  # one entry per endpoint, credential and tenant: keep it bounded
            now = _clock()
            for stale in [key for key, until in _clean_until.items() if until <= now]:
                del _clean_until[stale]
            if len(_clean_until) >= 10_000:
                _clean_until.clear()
        _clean_until[breaker_key] = _clock() + seconds


def forget_cached() -> None:
    """Trust nothing cached: every breaker is read from Redis at its next call."""
    _clean_until.clear()


def record_failure(config: ProviderConfig, error: ProviderError) -> None:
    if not error.means_provider_unwell:
        return
    _clean_until.pop(config.breaker_key, None)
    try:
        _count_failure(config)
    except redis.RedisError as redis_error:
        log.warning("could not record a provider failure on the breaker: %s", type(redis_error).__name__)


def _count_failure(config: ProviderConfig) -> None:
    key = _key(config.breaker_key)
    client = sync_client()
    pipe = client.pipeline()
    pipe.hincrby(key, "failures", 1)
    pipe.hget(key, "opened_at")
    pipe.expire(key, 3600)
    failures, opened, _ = pipe.execute()
    if failures >= settings.SENTINEL["BREAKER_FAILURES"] or opened:  # a failed probe re-opens it
        now = time.time()
        pipe = client.pipeline()
        pipe.hset(key, "opened_at", now)
        pipe.delete(key + ":probe")
        pipe.hset(OPEN_INDEX, key, f"{label(config)}|{now}")
        pipe.execute()


def snapshot(now: float | None = None) -> list[tuple[str, str]]:
    """(label, state) for every provider label with a breaker not closed, the worst state of its
    breakers (open over half-open), in one Redis round trip. Entries of breakers that closed by
    expiry (an hour without a failure) are dropped as they are seen."""
    now = now or time.time()
    client = sync_client()
    worst: dict[str, str] = {}
    stale = []
    for key, value in client.hgetall(OPEN_INDEX).items():
        name, _, opened = (value.decode() if isinstance(value, bytes) else value).rpartition("|")
        if now - float(opened or 0) > 3600:
            stale.append(key)
            continue
        current = _state_of(float(opened), now)
        if worst.get(name) != OPEN:
            worst[name] = current
    if stale:
        client.hdel(OPEN_INDEX, *stale)
    return sorted(worst.items())
