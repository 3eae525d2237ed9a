"""Celery tasks for the data lifecycle: the beat's purge (SENTINEL_PURGE_INTERVAL) and the hourly
creation of the time partitions ahead of now (lifecycle/partitions.py)."""

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction

from lifecycle import partitions, retention
from sentinel_site.singletons import once_per_period


@shared_task(name="lifecycle.tasks.purge", ignore_result=True)
@once_per_period("purge")
def purge() -> dict:
    """Delete what the retention policies let go, in bounded batches."""
    done = retention.purge()
    return {f"{line.kind}:{line.table}": line.rows for line in done}


@shared_task(name="lifecycle.tasks.ensure_partitions", ignore_result=True)
@once_per_period("partitions")
def ensure_partitions() -> dict:
    """The next periods' partitions of every partitioned table, before any row needs them (until then
    a row would wait in the default partition, never fail)."""
    with transaction.atomic(), connection.cursor() as cursor:
        created = partitions.ensure_all(cursor, days=settings.SENTINEL["PARTITION_DAYS"])
    return {"created": created}
