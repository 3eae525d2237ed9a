"""Celery tasks for webhooks, on their own `webhooks` queue: a slow receiver never holds up turns."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from sentinel_site.singletons import once_per_period
from webhooks import outbox

QUEUE = "webhooks"


@shared_task(name="webhooks.tasks.send", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def send(delivery_id: str) -> str:
    return outbox.send(delivery_id, wake)


def wake(delivery_id: Any, seconds: float) -> None:
    send.apply_async(args=[str(delivery_id)], queue=QUEUE, countdown=seconds or None)


@shared_task(name="webhooks.tasks.sweep", ignore_result=True)
@once_per_period("webhooks-sweep")
def sweep() -> dict:
    """The backstop (beat): due deliveries whose wake-up was lost, and those whose sender died."""
    ids = outbox.due()
    for delivery_id in ids:
        wake(delivery_id, 0)
    return {"woken": len(ids)}
