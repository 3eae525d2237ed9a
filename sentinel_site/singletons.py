"""Beat singletons: a periodic task runs once per period however many beat or worker processes exist.

A **per-period lock**, not a leader lease. The first invocation of a beat entry in a period sets a
Redis key (`SET NX PX`) that lives for most of the period (`HOLD_SHARE` of it, so a beat that fires
a little early next time is not skipped); any other invocation that arrives while the key lives (a
second beat process, an operator's "run now", a message redelivered after a worker died) returns
`SKIPPED` without running. While the run lasts the key is kept alive, so a run longer than its period
is never overlapped by the next; once it ends the key keeps the rest of the period, or is freed at once
if the run outlasted it. A worker killed mid-run leaves the key to expire within `HOLD_SHARE` of a
period: the next period runs as usual.

Why not a leader lease in beat: a lease only stops a second *beat*; the lock is taken where the work
runs, so it stops every source of a duplicate, needs no election, and any surviving beat keeps the
schedule going (no hand-over window). It lives in the broker's own Redis deployment: with Redis
down no task is delivered either. The work behind each entry is itself safe to repeat (conditional
updates, leases); the lock is what makes it run once.

Only deliveries are locked: a task function called directly in code (`supervise()` in a test or a
management command) runs at once, as asked.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import current_task
from django.conf import settings

from sentinel_site.redis import sync_client

log = logging.getLogger(__name__)

SKIPPED = "skipped: another run holds this period"
HOLD_SHARE = 0.9  # of the period; beat entries expire at the same share (settings.CELERY_BEAT_SCHEDULE)
KEY = "sentinel:singleton:{entry}"

# Only the holder's token may extend or shorten the key (another run may hold it after an expiry).
_SET_EXPIRY = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return redis.call('del', KEYS[1])
"""

F = TypeVar("F", bound=Callable[..., Any])


def period_of(entry: str) -> float:
    """The period of a beat entry, in seconds, as settings schedule it."""
    entries: dict[str, dict[str, Any]] = settings.CELERY_BEAT_SCHEDULE
    return float(entries[entry]["schedule"])


def _set_expiry(key: str, token: str, milliseconds: int) -> bool:
    return bool(sync_client().eval(_SET_EXPIRY, 1, key, token, milliseconds))


class _Renewer(threading.Thread):
    """Keeps the holder's key alive while its run lasts (a run may outlast its period)."""

    def __init__(self, key: str, token: str, hold_ms: int) -> None:
        super().__init__(name=f"singleton-renew:{key}", daemon=True)
        self.key, self.token, self.hold_ms = key, token, hold_ms
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.hold_ms / 3000):
            try:
                if not _set_expiry(self.key, self.token, self.hold_ms):
                    return  # lost (Redis flushed or restarted): nothing left to keep
            except Exception:
                log.warning("could not renew the lock of %s", self.key, exc_info=True)


def acquire(entry: str) -> tuple[str, str, int] | None:
    """Take this period of `entry`: (key, token, hold in ms), or None if another run holds it."""
    key = KEY.format(entry=entry)
    token = uuid.uuid4().hex
    hold_ms = max(1, int(period_of(entry) * HOLD_SHARE * 1000))
    if not sync_client().set(key, token, nx=True, px=hold_ms):
        return None
    return key, token, hold_ms


def once_per_period(entry: str) -> Callable[[F], F]:
    """Run the decorated periodic task at most once per period of the beat entry `entry`; other
    invocations in that period return `SKIPPED`. Put it under `@shared_task`."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if current_task is None or current_task.request.called_directly:
                return function(*args, **kwargs)
            held = acquire(entry)
            if held is None:
                log.info("periodic %s skipped: another run holds this period", entry, extra={"singleton": entry, "ran": False})
                return SKIPPED
            key, token, hold_ms = held
            started = time.monotonic()
            renewer = _Renewer(key, token, hold_ms)
            renewer.start()
            log.info("periodic %s runs", entry, extra={"singleton": entry, "ran": True})
            try:
                return function(*args, **kwargs)
            finally:
                renewer.stopped.set()
                renewer.join()
                # Keep the rest of the period from the start; a run that outlasted it frees the key now.
                _set_expiry(key, token, max(0, hold_ms - int((time.monotonic() - started) * 1000)))

        return wrapper  # type: ignore[return-value]

    return decorate
