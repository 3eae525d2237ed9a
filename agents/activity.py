"""Whether real-time turns are running now: what batch lines yield the machine to.

A worker that claims a turn which is not a batch line's marks "real-time busy" in Redis for
SENTINEL_BATCH_YIELD_SECONDS, in the claim's own stream round trip (no extra one); the batches'
dispatcher (batches/processing.py) admits at most SENTINEL_BATCH_CONCURRENCY_BUSY lines at once
while the mark lasts, and SENTINEL_BATCH_CONCURRENCY otherwise. A lost mark (Redis down) only lets a
batch run at its full bound: best effort, like the stream it rides with.
"""

from __future__ import annotations

from typing import Any

import redis
from django.conf import settings

from sentinel_site.redis import sync_client

KEY = "sentinel:realtime-busy"
BATCH_PREFIX = "batch:"  # a batch line's turn carries the Idempotency-Key batch:<batch>:<line> (batches.processing)


def is_realtime(turn: Any) -> bool:
    return not (turn.idempotency_key or "").startswith(BATCH_PREFIX)


def mark(pipe: Any) -> None:
    """Queue the mark on a pipeline the caller executes (the claim's stream publish)."""
    pipe.set(KEY, 1, ex=settings.SENTINEL["BATCH_YIELD_SECONDS"])


def realtime_busy() -> bool:
    try:
        return bool(sync_client().exists(KEY))
    except redis.RedisError:
        return False
