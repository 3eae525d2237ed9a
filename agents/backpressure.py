"""Backpressure (seed 001): the turn queue is bounded. Past the bound the API sheds new turns
(QueueFull: 503 `overloaded` with Retry-After) instead of letting the queue, and every client's wait, grow."""

from __future__ import annotations

from django.conf import settings

from agents import outbox
from sentinel_site import metrics
from sentinel_site.redis import async_client

TURN_QUEUE = "turns"  # the Celery queue's list in the Redis broker


class QueueFull(Exception):
    """As many turns wait in the queue as SENTINEL_MAX_QUEUED_TURNS allows: this one is shed."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"Sentinel is overloaded ({depth} turns waiting); retry shortly.")
        self.depth = depth


async def check_turn_queue() -> None:
    limit = settings.SENTINEL["MAX_QUEUED_TURNS"]
    if not limit:
        return
    # A message carries a batch of turns when the outbox batches them: count turns, not messages.
    depth = int(await async_client(settings.CELERY_BROKER_URL).llen(TURN_QUEUE) * outbox.mean_batch())
    if depth >= limit:
        metrics.SHED.labels("queue_full").inc()
        raise QueueFull(depth)
