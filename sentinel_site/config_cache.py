"""An in-process cache of the configuration rows every request reads: API keys, agents, budgets,
prices. Kept correct across processes by one generation counter in Redis.

A change to a cached model bumps the generation. Signals call `changed()`, and so do the few
queryset updates that bypass signals (a key revoked, an agent deleted). The bump clears this
process's cache at once and increments the counter in Redis, again after the commit, so no
process can keep a row it read in between. Every process compares its generation with Redis's at
most every CONFIG_CHECK_SECONDS, so a revoked key or a changed price takes effect everywhere
within that interval (0.25 s by default) and the one Redis read in flight: a request that finds
another thread reading the counter goes on with what is cached. An entry lives at most CONFIG_CACHE_SECONDS whatever
happens, for a write made outside Sentinel's code. Setting that to 0 turns the cache off, which is
the lane the benchmark compares against.

Cached values are shared by every thread of the process: treat them as read-only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from sentinel_site.redis import sync_client

log = logging.getLogger(__name__)
GENERATION_KEY = "sentinel:config:generation"
MAX_ENTRIES = 10_000  # past this the cache starts again empty: never a memory leak, whatever the keys
T = TypeVar("T")

_lock = threading.Lock()  # the entries, the epoch and the generation
_check_lock = threading.Lock()  # held by the one thread reading the generation from Redis
_entries: dict[tuple[str, Hashable], tuple[float, Any]] = {}
_epoch = 0  # local: bumped on every clear, so a load that raced a change is not stored
_generation: bytes | None = None  # Redis's counter as last seen
_checked_at = float("-inf")


def get(namespace: str, key: Hashable, load: Callable[[], T]) -> T:
    """The cached value of (namespace, key), or load() it and keep it, unless a change raced the
    load or it is None (a miss is never kept: unknown key ids must not fill the cache)."""
    ttl = settings.SENTINEL["CONFIG_CACHE_SECONDS"]
    if ttl <= 0:
        return load()
    now = time.monotonic()
    _check_generation(now)
    entry = _entries.get((namespace, key))
    if entry is not None and now - entry[0] < ttl:
        return entry[1]
    epoch = _epoch
    value = load()
    if value is None:
        return value
    with _lock:
        if epoch == _epoch:
            if len(_entries) >= MAX_ENTRIES:
                _entries.clear()
            _entries[(namespace, key)] = (now, value)
    return value


def _check_generation(now: float) -> None:
    global _generation, _checked_at
    if now - _checked_at < settings.SENTINEL["CONFIG_CHECK_SECONDS"]:
        return
    # One thread asks Redis; the others go on with what is cached meanwhile (never waiting on a
    # network read behind a lock, nor holding the entries' lock during one).
    if not _check_lock.acquire(blocking=False):
        return
    try:
        if now - _checked_at < settings.SENTINEL["CONFIG_CHECK_SECONDS"]:
            return  # another thread checked meanwhile
        try:
            seen = sync_client().get(GENERATION_KEY)
        except Exception as exc:  # noqa: BLE001 - without the counter nothing cached can be trusted
            log.warning("config generation unreadable, cache dropped: %s", type(exc).__name__)
            clear()
            return  # _checked_at unchanged: the next request asks again
        with _lock:
            if seen != _generation:
                _clear_locked()
                _generation = seen
            _checked_at = now
    finally:
        _check_lock.release()


def _clear_locked() -> None:
    global _epoch
    _entries.clear()
    _epoch += 1


def clear() -> None:
    """Forget every entry of this process (tests, and `changed()`)."""
    with _lock:
        _clear_locked()


def changed(**_: Any) -> None:
    """A cached model changed: clear here and in every process, now and again after the commit
    (a row read between the two would be the old one). Usable as a signal receiver."""
    _publish()
    transaction.on_commit(_publish)


def _publish() -> None:
    global _generation
    clear()
    try:
        bumped = sync_client().incr(GENERATION_KEY)
    except Exception as exc:  # noqa: BLE001 - other processes then catch up within CONFIG_CACHE_SECONDS
        log.warning("config generation not bumped: %s", type(exc).__name__)
        return
    with _lock:
        # This process has just cleared everything, so it is current up to its own bump: adopting
        # the counter spares it clearing once more at its next check.
        _clear_locked()
        _generation = str(bumped).encode()


def watch(*models: type) -> None:
    """Every save and delete of these models is a change (call from an AppConfig.ready)."""
    for model in models:
        for signal in (post_save, post_delete):
            signal.connect(changed, sender=model, dispatch_uid=f"sentinel-config-cache-{signal is post_save}-{model.__name__}")
