"""Celery tasks for runs: thin wrappers that take ids and hand off to runs.dispatcher."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from runs import config, dispatcher
from runs.models import RUN_UNFINISHED, Run
from sentinel_site.singletons import once_per_period

log = logging.getLogger(__name__)
SWEEP_LIMIT = 1000


@shared_task(name="runs.tasks.dispatch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def dispatch(run_id: str) -> str:
    """One run moved on from its rows. Delivered twice, or for a run that ended, it does nothing harmful."""
    if dispatcher.advance(run_id, wake=lambda run, seconds: enqueue_dispatch(run, countdown=seconds)):
        enqueue_dispatch(run_id)  # more inline steps than one call runs: the rest in a task of their own
        return "more"
    return "done"


def enqueue_dispatch(run_id: Any, countdown: float | None = None) -> None:
    dispatch.apply_async(args=[str(run_id)], queue="maintenance", countdown=countdown)


@shared_task(name="runs.tasks.sweep", ignore_result=True)
@once_per_period("runs-sweep")
def sweep() -> dict:
    """The backstop (beat): every unfinished run nobody moved for a sweep interval is dispatched,
    so a lost wake-up, a killed dispatcher or a deadline that passed in silence is seen to."""
    idle = timezone.now() - timedelta(seconds=settings.RUNS_SWEEP_INTERVAL)
    run_ids = list(Run.objects.filter(status__in=RUN_UNFINISHED, updated_at__lt=idle).values_list("id", flat=True)[:SWEEP_LIMIT])
    for run_id in run_ids:
        enqueue_dispatch(run_id)
    return {"dispatched": len(run_ids)}


@shared_task(name="runs.tasks.reload_config", ignore_result=True)
@once_per_period("reload-config")
def reload_config() -> str:
    """Beat: SENTINEL_CONFIG_FILE applied within seconds of a change, without a restart."""
    path = settings.SENTINEL["CONFIG_FILE"]
    return config.reload(path) if path else "no file"
