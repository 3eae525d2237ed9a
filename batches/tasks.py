"""Celery tasks for batches, all on the low-priority `batches` queue: thin, by id, safe to run twice."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import redis
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from agents.tasks import run_turn
from batches import processing
from batches.models import Batch, BatchStatus
from sentinel_site.redis import sync_client
from sentinel_site.singletons import once_per_period

log = logging.getLogger(__name__)
QUEUE = "batches"
SWEEP_LIMIT = 1000
WAKE_KEY = "sentinel:batch:wake:{}"


@shared_task(name="batches.tasks.validate", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def validate(batch_id: str) -> str:
    if processing.validate(batch_id):
        wake(batch_id)
        return "validated"
    return "done"


@shared_task(name="batches.tasks.advance", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def advance(batch_id: str) -> str:
    try:
        sync_client().delete(WAKE_KEY.format(batch_id))  # a turn ending from now on wakes it again
    except redis.RedisError:
        pass
    processing.advance(batch_id, enqueue=enqueue_line)
    return "advanced"


def enqueue_line(turn: Any) -> None:
    """A batch line's turn goes to the `batches` queue: it never waits in front of real-time turns."""
    run_turn.apply_async(args=[str(turn.id)], queue=QUEUE)


def wake(batch_id: Any) -> None:
    """Advance the batch soon; wake-ups that arrive while one is already waiting are folded into it."""
    try:
        if not sync_client().set(WAKE_KEY.format(batch_id), "1", nx=True, ex=60):
            return
    except redis.RedisError:
        pass
    advance.apply_async(args=[str(batch_id)], queue=QUEUE)


def on_turn_ended(sender: Any, turn_id: Any, status: str, idempotency_key: str | None = None, **kwargs: Any) -> None:
    """agents.signals.turn_ended: a batch line's turn carries its batch in its Idempotency-Key, so
    any other turn costs nothing; a line's turn wakes its batch."""
    batch_id = processing.batch_of(idempotency_key)
    if batch_id is not None:
        wake(batch_id)


def start_validation(batch: Batch) -> None:
    validate.apply_async(args=[str(batch.id)], queue=QUEUE)


@shared_task(name="batches.tasks.sweep", ignore_result=True)
@once_per_period("batches-sweep")
def sweep() -> dict:
    """The backstop (beat): an unfinished batch nobody moved for a sweep interval is moved on, so a
    killed worker, a lost wake-up or an expiry that passed in silence costs seconds, never a line."""
    idle = timezone.now() - timedelta(seconds=settings.SENTINEL["BATCH_SWEEP_INTERVAL"])
    stale = Batch.objects.filter(updated_at__lt=idle)
    validating = list(stale.filter(status=BatchStatus.VALIDATING).values_list("id", flat=True)[:SWEEP_LIMIT])
    moving = list(stale.filter(status__in=(BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)).values_list("id", flat=True)[:SWEEP_LIMIT])
    for batch_id in validating:
        validate.apply_async(args=[str(batch_id)], queue=QUEUE)
    for batch_id in moving:
        try:
            sync_client().delete(WAKE_KEY.format(batch_id))
        except redis.RedisError:
            pass
        wake(batch_id)
    return {"validating": len(validating), "advanced": len(moving)}
