"""Two worker nodes (two `celery worker` processes on one broker and database): one is killed -9
mid-load and never comes back; the other finishes every turn, each with exactly one reply."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.conf import settings as django_settings

from agents.models import Message, Turn, TurnStatus
from agents.tasks import supervise
from tests.conftest import start_worker, wait_for
from tests.stub_llm import Reply

# Worker and beat processes are started and stopped inside the test: more than the default 120 s on a busy machine.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

TURNS = 40


def test_when_one_of_two_workers_is_killed_the_other_finishes_every_turn_once(live_stack, alice, stub_llm, settings, tmp_path):
    settings.SENTINEL = {**settings.SENTINEL, "ZOMBIE_SECONDS": 3, "UNSENT_SECONDS": 3, "RETRY_BACKOFF_BASE": 0}
    second = start_worker(live_stack.env, tmp_path / "second-worker.log")
    stub_llm.script(*[Reply(content=f"answer {i}", delay=1.0) for i in range(2 * TURNS)])

    def submit(i):
        headers = {"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"}
        with httpx.Client(base_url=live_stack.api, headers=headers, timeout=30) as h:
            response = h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": f"q{i}"}]})
            assert response.status_code == 202
            return response.json()["id"]

    try:
        with ThreadPoolExecutor(20) as pool:
            ids = list(pool.map(submit, range(TURNS)))
        # Both nodes busy: more turns running than one worker's 8 threads hold.
        wait_for(lambda: Turn.objects.filter(status=TurnStatus.RUNNING).count() > 8, timeout=30, message="both workers running turns")
        os.kill(second.pid, signal.SIGKILL)
        second.wait()
        assert live_stack.worker.poll() is None, "the other node lives on"

        def all_done():
            supervise()  # what beat runs every 10 s, on whichever node
            time.sleep(0.5)
            return not Turn.objects.filter(id__in=ids).exclude(status=TurnStatus.SUCCEEDED).exists()

        wait_for(all_done, timeout=120, interval=1, message="the surviving worker to finish every turn")
    finally:
        if second.poll() is None:
            second.kill()
    for turn in Turn.objects.filter(id__in=ids):
        assert Message.objects.filter(turn=turn, role="assistant").count() == 1, f"turn {turn.id} must have exactly one reply"
        assert turn.events.filter(kind="completed").count() == 1, f"turn {turn.id} completed once"
    assert Turn.objects.filter(id__in=ids, attempt__gte=2).exists(), "the killed node held turns, and they ran again on the other"
    assert live_stack.worker.poll() is None
    # The dead node's deliveries stay "unacked" until the visibility timeout; they would find their
    # turns finished. Cleared so the next test starts idle.
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")
