"""Celery tasks for governance."""

from celery import shared_task

from budgets import spend


@shared_task(name="budgets.tasks.expire_reservations", ignore_result=True)
def expire_reservations() -> int:
    """Give back money held by turns whose worker died before settling."""
    return spend.expire_stale()
