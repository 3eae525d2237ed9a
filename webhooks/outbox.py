"""The durable outbox: events written as deliveries, then sent, retried with backoff, logged per attempt.

`emit` writes one delivery per subscribed endpoint (joining the caller's transaction) and wakes a
sender after the commit. `send` claims a due delivery with a conditional update (pending and due ->
sending, with a lease), posts it through the egress-guarded client, records the attempt and moves the
delivery on: succeeded on a 2xx, otherwise pending again after a backoff (doubling, capped, jittered)
until SENTINEL_WEBHOOK_MAX_ATTEMPTS, then failed. A sender that dies leaves a lease that lapses; the
sweep finds it and it is sent again (receivers dedupe on `webhook-id`).
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx2
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from sentinel_site import config_cache, egress
from webhooks import metrics, signing
from webhooks.models import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint

log = logging.getLogger(__name__)
Wake = Callable[[Any, float], None]  # (delivery id, in seconds)


def subscribed_tenants() -> frozenset:
    """Tenants with an enabled endpoint: every other tenant's events cost no query."""
    return config_cache.get(
        "webhook-tenants", "all", lambda: frozenset(WebhookEndpoint.objects.filter(enabled=True).values_list("tenant_id", flat=True))
    )


def emit(tenant_id: Any, event_type: str, data: dict[str, Any], wake: Wake) -> list[Delivery]:
    """One delivery per enabled endpoint of the tenant that takes `event_type`."""
    if tenant_id not in subscribed_tenants():
        return []
    endpoints = [e for e in WebhookEndpoint.objects.filter(tenant_id=tenant_id, enabled=True) if event_type in e.event_types]
    if not endpoints:
        return []
    now = timezone.now()
    event_id = f"evt_{uuid.uuid4().hex}"
    payload = {"id": event_id, "object": "event", "created_at": int(now.timestamp()), "type": event_type, "data": data}
    deliveries = Delivery.objects.bulk_create(
        Delivery(tenant_id=tenant_id, endpoint=e, event_id=event_id, event_type=event_type, payload=payload, next_attempt_at=now)
        for e in endpoints
    )
    transaction.on_commit(lambda: [wake(d.id, 0) for d in deliveries])
    return deliveries


def backoff(attempts: int) -> float:
    base, cap = settings.SENTINEL["WEBHOOK_RETRY_BASE_SECONDS"], settings.SENTINEL["WEBHOOK_RETRY_MAX_SECONDS"]
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.8, 1.2)


def send(delivery_id: Any, wake: Wake) -> str:
    """One attempt at a due delivery; another sender's claim, or a delivery not due, is left alone."""
    now = timezone.now()
    timeout = settings.SENTINEL["WEBHOOK_TIMEOUT_SECONDS"]
    lease = now + timedelta(seconds=timeout + 30)
    claimed = Delivery.objects.filter(id=delivery_id, next_attempt_at__lte=now, status__in=(DeliveryStatus.PENDING, DeliveryStatus.SENDING))
    if not claimed.update(status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, next_attempt_at=lease):
        return "not due"
    delivery = Delivery.objects.select_related("endpoint").get(id=delivery_id)
    status_code, error, started = None, "", time.monotonic()
    if not delivery.endpoint.enabled:
        error = "endpoint disabled"
    else:
        body = json.dumps(delivery.payload, separators=(",", ":"))
        headers = signing.headers(delivery.endpoint.secret, delivery.event_id, int(time.time()), body)
        try:
            with egress.guarded_http_client(httpx2.Timeout(timeout, connect=min(timeout, 5.0))) as client:
                status_code = client.post(delivery.endpoint.url, content=body.encode(), headers=headers).status_code
        except egress.EgressDenied as denied:
            error = f"not allowed: {denied}"[:300]
        except httpx2.HTTPError as failure:
            error = type(failure).__name__
    duration = int((time.monotonic() - started) * 1000)
    return _record(delivery, status_code, error, duration, wake)


def _record(delivery: Delivery, status_code: int | None, error: str, duration: int, wake: Wake) -> str:
    now = timezone.now()
    ok = status_code is not None and 200 <= status_code < 300
    with transaction.atomic():
        number = DeliveryAttempt.objects.filter(delivery=delivery).count() + 1  # counts on across re-deliveries by hand
        DeliveryAttempt.objects.create(delivery=delivery, number=number, status_code=status_code, error=error, duration_ms=duration)
        fields: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
        if ok:
            fields |= {"status": DeliveryStatus.SUCCEEDED, "delivered_at": now}
        elif delivery.attempts >= settings.SENTINEL["WEBHOOK_MAX_ATTEMPTS"]:
            fields |= {"status": DeliveryStatus.FAILED}
        else:
            delay = backoff(delivery.attempts)
            fields |= {"status": DeliveryStatus.PENDING, "next_attempt_at": now + timedelta(seconds=delay)}
            transaction.on_commit(lambda: wake(delivery.id, delay))
        # Fenced on the attempt: a sender whose lease lapsed (and whose delivery was sent again) writes nothing.
        Delivery.objects.filter(id=delivery.id, attempts=delivery.attempts, status=DeliveryStatus.SENDING).update(**fields)
    metrics.ATTEMPTS.labels(str(fields["status"])).inc()
    return str(fields["status"])


def redeliver(delivery: Delivery, wake: Wake) -> None:
    """By hand: the delivery is due again now, with a fresh allowance of attempts counted from here."""
    with transaction.atomic():
        Delivery.objects.filter(id=delivery.id).exclude(status=DeliveryStatus.SENDING).update(
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), attempts=0
        )
        transaction.on_commit(lambda: wake(delivery.id, 0))


def due(limit: int = 1000) -> list:
    """Deliveries due (a lost wake-up) or whose sender's lease lapsed (a dead sender)."""
    return list(
        Delivery.objects.filter(status__in=(DeliveryStatus.PENDING, DeliveryStatus.SENDING), next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
