"""The Redis clients every app shares: one pooled client per process for the data Redis
(`REDIS_URL`: turn streams, rate limits, breakers, memory limits), one per event loop for async
readers, and a short-timeout client for the broker's queues (metrics and backpressure read them).

The per-turn stream protocol lives in `agents.streams`; this module only knows how to connect.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

# Async reads block on a stream for up to this long (agents.streams.MAX_BLOCK_MS); the socket timeout
# must outlast them (redis-py's default of 5 s turned every turn slower than 5 s into a timeout).
ASYNC_SOCKET_TIMEOUT_SECONDS = 25
# Every SSE stream blocks one connection on its XREAD: redis-py's default pool of 100 refused the
# 101st concurrent stream of a process ("Too many connections"). Redis's own maxclients is 10,000.
ASYNC_MAX_CONNECTIONS = 10_000


@lru_cache(maxsize=1)
def sync_client() -> redis.Redis:
    """The process's client for the data Redis (thread-safe: redis-py pools its connections)."""
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)


@lru_cache(maxsize=1)
def quick_client() -> redis.Redis:
    """A client for the data Redis that gives up after half a second: for a background loop that
    must not stall on Redis (the heartbeat thread's stop flags: its beats come first)."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


@lru_cache(maxsize=1)
def broker_client() -> redis.Redis:
    """A client for the Celery broker's Redis that gives up after a second (it is only ever read
    for queue depths, and a slow answer is worse than none there)."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1)


_async_clients: dict[tuple[int, str], aioredis.Redis] = {}


def async_client(url: str | None = None) -> aioredis.Redis:
    """One pooled client per event loop and URL (an asyncio Redis client is bound to its loop)."""
    url = url or settings.REDIS_URL
    key = (id(asyncio.get_running_loop()), url)
    client = _async_clients.get(key)
    if client is None:
        client = aioredis.Redis.from_url(
            url, health_check_interval=30, socket_timeout=ASYNC_SOCKET_TIMEOUT_SECONDS, max_connections=ASYNC_MAX_CONNECTIONS
        )
        _async_clients[key] = client
    return client
