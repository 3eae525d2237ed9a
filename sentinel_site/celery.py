"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered."""

import os

from celery import Celery, signals
from django.core.exceptions import ImproperlyConfigured

from sentinel_site import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")

app = Celery("sentinel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _start_tracing(**kwargs) -> None:
    try:
        tracing.configure("sentinel-worker")
    except ImproperlyConfigured as error:
        # Celery logs and swallows a signal handler's exception; a misconfigured worker must not start.
        raise SystemExit(f"sentinel: {error}") from error


@signals.worker_shutdown.connect
def _stop_tracing(**kwargs) -> None:
    tracing.shutdown()  # the pool has finished its tasks: flush their spans
