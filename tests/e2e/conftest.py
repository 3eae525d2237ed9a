import pytest
import redis
from django.conf import settings

from tests.conftest import wait_for

QUEUES = ("turns", "batches", "webhooks", "memory", "maintenance")


def worker_is_idle() -> bool:
    """Nothing queued and nothing delivered but unacknowledged (tasks ack late, after they ran)."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    pipe = broker.pipeline()
    for queue in QUEUES:
        pipe.llen(queue)
    pipe.hlen("unacked")
    return sum(pipe.execute()) == 0


@pytest.fixture(autouse=True)
def _settle_background_work(db, live_stack):
    """Let the worker finish what a test started before the database is flushed under it."""
    yield
    wait_for(worker_is_idle, timeout=30, message="the worker to go idle")
