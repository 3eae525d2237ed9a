"""Batch metrics (as sentinel_site/metrics.py's): batches by how they ended, and their lines by outcome."""

from __future__ import annotations

from prometheus_client import Counter

BATCHES = Counter("sentinel_batches_total", "Batches ended, by status.", ["status"])
BATCH_LINES = Counter("sentinel_batch_lines_total", "Lines of ended batches, by outcome (succeeded, failed).", ["outcome"])


def observe_end(status: str, completed: int, failed: int) -> None:
    BATCHES.labels(status).inc()
    BATCH_LINES.labels("succeeded").inc(completed)
    BATCH_LINES.labels("failed").inc(failed)
