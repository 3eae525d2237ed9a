"""Celery task for the data lifecycle: the beat's purge (SENTINEL_PURGE_INTERVAL)."""

from celery import shared_task

from lifecycle import retention
from sentinel_site.singletons import once_per_period


@shared_task(name="lifecycle.tasks.purge", ignore_result=True)
@once_per_period("purge")
def purge() -> dict:
    """Delete what the retention policies let go, in bounded batches."""
    done = retention.purge()
    return {f"{line.kind}:{line.table}": line.rows for line in done}
