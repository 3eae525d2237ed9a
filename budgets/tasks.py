"""Celery tasks for governance."""

from celery import shared_task

from budgets import audit, spend
from sentinel_site.singletons import once_per_period


@shared_task(name="budgets.tasks.expire_reservations", ignore_result=True)
@once_per_period("expire-reservations")
def expire_reservations() -> int:
    """Give back money held by turns whose worker died before settling."""
    return spend.expire_stale()


@shared_task(name="budgets.tasks.checkpoint_audit", ignore_result=True)
@once_per_period("audit-checkpoint")
def checkpoint_audit() -> int | None:
    """Write the audit chain's head, signed, to the checkpoint file and the log; nothing if it did not move."""
    point = audit.checkpoint()
    return point.seq if point else None
