"""Webhook metrics (as sentinel_site/metrics.py's): delivery attempts by what came of them."""

from __future__ import annotations

from prometheus_client import Counter

ATTEMPTS = Counter(
    "sentinel_webhook_attempts_total", "Webhook delivery attempts, by what came of them (succeeded, pending: retried, failed).", ["outcome"]
)
