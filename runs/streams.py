"""A run's end, told through Redis so a client waiting on `Prefer: wait` blocks on a read, not a poll.

One stream per run, `sentinel:run:<id>`, with one entry when the run ends. A waiter first reads the
run's row; if it is still unfinished it reads the stream from its start, so an end published
between the two reads is not missed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis
from django.conf import settings

from agents.streams import MAX_BLOCK_MS
from sentinel_site.redis import async_client, sync_client

log = logging.getLogger(__name__)


def key(run_id: Any) -> str:
    return f"sentinel:run:{run_id}"


def publish_end(run_id: Any, status: str) -> None:
    """Best effort: PostgreSQL holds the outcome, and a waiter that misses this times out and reads it."""
    try:
        pipe = sync_client().pipeline(transaction=False)
        pipe.xadd(key(run_id), {"status": status})
        pipe.expire(key(run_id), settings.SENTINEL["STREAM_TTL_SECONDS"])
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not publish a run's end: %s", type(error).__name__)


async def wait_end(run_id: Any, timeout: float) -> bool:
    """True once the run's end is published, False after `timeout` seconds without it."""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (remaining := deadline - loop.time()) > 0:
        response = await async_client().xread({key(run_id): "0"}, block=max(1, min(MAX_BLOCK_MS, int(remaining * 1000))), count=1)
        if response:
            return True
    return False
