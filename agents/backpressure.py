"""Backpressure (seed 001): the turn queue is bounded. Past the bound the API sheds new turns with
503 `overloaded` and Retry-After instead of letting the queue, and every client's wait, grow."""

from __future__ import annotations

from django.conf import settings

from agents import streams
from sentinel_site import metrics
from sentinel_site.errors import ApiError

TURN_QUEUE = "turns"  # the Celery queue's list in the Redis broker


async def check_turn_queue() -> None:
    limit = settings.SENTINEL["MAX_QUEUED_TURNS"]
    if not limit:
        return
    depth = await streams.async_client(settings.CELERY_BROKER_URL).llen(TURN_QUEUE)
    if depth >= limit:
        metrics.SHED.labels("queue_full").inc()
        raise ApiError(
            503,
            f"Sentinel is overloaded ({depth} turns waiting); retry shortly.",
            type="overloaded",
            code="queue_full",
            headers={"Retry-After": str(settings.SENTINEL["SHED_RETRY_AFTER"])},
        )
