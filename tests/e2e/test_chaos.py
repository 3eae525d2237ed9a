"""Chaos: kill -9 the worker with turns in flight; after a restart every turn completes exactly once."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agents.models import Message, Turn, TurnStatus
from agents.tasks import supervise
from tests.conftest import start_worker, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

TURNS = 60


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(live_stack, alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ZOMBIE_SECONDS": 3, "UNSENT_SECONDS": 3, "RETRY_BACKOFF_BASE": 0}
    stub_llm.script(*[Reply(content=f"answer {i}", delay=1.5) for i in range(TURNS)])

    def submit(i):
        with httpx.Client(
            base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"}, timeout=30
        ) as h:
            response = h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": f"q{i}"}]})
            assert response.status_code == 202
            return response.json()["id"]

    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(submit, range(TURNS)))
    wait_for(lambda: Turn.objects.filter(status=TurnStatus.RUNNING).count() >= 6, timeout=30, message="turns in flight")
    in_flight = Turn.objects.filter(status=TurnStatus.RUNNING).count()
    os.kill(live_stack.worker.pid, signal.SIGKILL)
    live_stack.worker.wait()
    live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)

    def all_done():
        supervise()  # what beat runs every 10 s
        time.sleep(0.5)
        return not Turn.objects.filter(id__in=ids).exclude(status=TurnStatus.SUCCEEDED).exists()

    wait_for(all_done, timeout=120, interval=1, message="every turn to complete after the restart")
    assert in_flight >= 6
    for turn in Turn.objects.filter(id__in=ids):
        assert Message.objects.filter(turn=turn, role="assistant").count() == 1, f"turn {turn.id} must have exactly one reply"
    assert Turn.objects.filter(id__in=ids, attempt__gte=2).exists(), "the turns the dead worker held ran again"
    # The dead worker's deliveries stay "unacked" in Redis until the visibility timeout; redelivered
    # then, they would find their turns finished and do nothing. Clear them so the next test starts idle.
    import redis
    from django.conf import settings as django_settings

    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    broker.delete("unacked", "unacked_index")


def test_a_worker_killed_between_its_provider_calls_and_their_group_commit_completes_each_turn_once(live_stack, alice, stub_llm, settings):
    """The finishes wait in the group commit (a 3 s window here) when the worker dies: the calls were
    made, nothing of their outcome was committed; after a restart each turn runs again and ends once."""
    settings.SENTINEL = {**settings.SENTINEL, "ZOMBIE_SECONDS": 3, "UNSENT_SECONDS": 3, "RETRY_BACKOFF_BASE": 0}
    turns = 12
    stub_llm.script(*[Reply(content=f"answer {i}") for i in range(2 * turns)])
    os.kill(live_stack.worker.pid, signal.SIGKILL)
    live_stack.worker.wait()
    live_stack.worker = start_worker({**live_stack.env, "SENTINEL_GROUP_COMMIT_WAIT_MS": "3000"}, live_stack.worker_log)
    served = len(stub_llm.requests)

    def submit(i):
        with httpx.Client(
            base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"}, timeout=30
        ) as h:
            response = h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": f"batched {i}"}]})
            assert response.status_code == 202
            return response.json()["id"]

    with ThreadPoolExecutor(turns) as pool:
        ids = list(pool.map(submit, range(turns)))
    wait_for(lambda: len(stub_llm.requests) - served >= 4, timeout=30, message="provider calls made")
    answered_before_the_kill = Turn.objects.filter(id__in=ids, status=TurnStatus.SUCCEEDED).count()
    os.kill(live_stack.worker.pid, signal.SIGKILL)
    live_stack.worker.wait()
    live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)

    def all_done():
        supervise()
        time.sleep(0.5)
        return not Turn.objects.filter(id__in=ids).exclude(status=TurnStatus.SUCCEEDED).exists()

    wait_for(all_done, timeout=120, interval=1, message="every turn to complete after the restart")
    assert answered_before_the_kill == 0, "the finishes were still waiting in the group commit"
    for turn in Turn.objects.filter(id__in=ids):
        assert Message.objects.filter(turn=turn, role="assistant").count() == 1, f"turn {turn.id} must have exactly one reply"
        assert turn.events.filter(kind="completed").count() == 1
    assert Turn.objects.filter(id__in=ids, attempt__gte=2).exists(), "the turns whose finish died ran again"
    import redis
    from django.conf import settings as django_settings

    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")
