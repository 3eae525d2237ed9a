"""Chaos: a poison turn, one whose every run kills the worker that takes it, is dead-lettered after
its attempts while the turns around it, even the one queued behind it, complete."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agents.models import DeadLetter, Message, Turn, TurnStatus
from agents.tasks import supervise
from tests.conftest import start_worker, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

OTHERS = 20


def test_a_poison_turn_is_dead_lettered_without_holding_up_the_others(live_stack, alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ZOMBIE_SECONDS": 3, "UNSENT_SECONDS": 3, "RETRY_BACKOFF_BASE": 0, "MAX_ATTEMPTS": 3}
    kills = []

    def kill_the_worker(body):
        # Like a turn that runs the worker out of memory: it dies a moment into the call, long
        # enough for the turns beside it to finish (a kill takes down whatever is in flight).
        time.sleep(1.5)
        kills.append(live_stack.worker.pid)
        os.kill(live_stack.worker.pid, signal.SIGKILL)
        return Reply(hang=1)

    stub_llm.when("poison", kill_the_worker)
    stop = threading.Event()

    def restart_dead_workers():  # what systemd or Kubernetes does for a crashed worker
        while not stop.is_set():
            if live_stack.worker.poll() is not None:
                live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)
            time.sleep(0.2)

    keeper = threading.Thread(target=restart_dead_workers, daemon=True)
    keeper.start()
    client = httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"})

    def submit(content, conversation=None):
        body = {"model": "helper", "messages": [{"role": "user", "content": content}]}
        if conversation:
            body["conversation"] = conversation
        response = client.post("/chat/completions", json=body)
        assert response.status_code == 202, response.text
        return response.json()["id"], response.headers["Sentinel-Conversation-Id"]

    try:
        poison, conversation = submit("poison pill")
        behind, _ = submit("the next question", conversation)
        with ThreadPoolExecutor(10) as pool:
            others = [turn for turn, _ in pool.map(lambda i: submit(f"question {i}"), range(OTHERS))]

        def settled():
            supervise()  # what beat runs every 10 s
            time.sleep(0.5)
            return (
                not Turn.objects.filter(id__in=[poison, behind, *others])
                .exclude(status__in=[TurnStatus.SUCCEEDED, TurnStatus.FAILED])
                .exists()
            )

        wait_for(settled, timeout=150, interval=1, message="the poison turn to be given up and the rest to finish")
    finally:
        stop.set()
        keeper.join(5)
        client.close()
        # The killed workers' deliveries stay unacknowledged until the visibility timeout; when they
        # come back, their turns are finished and they do nothing. Clear them so the next test
        # starts idle, whatever this one found.
        import redis
        from django.conf import settings as django_settings

        redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")

    turn = Turn.objects.get(id=poison)
    assert turn.status == TurnStatus.FAILED and turn.attempt == 3
    letter = DeadLetter.objects.get(turn=turn)
    assert letter.reason == "heartbeat_lost" and letter.attempts == 3
    assert len(kills) == 3, "each attempt ran once and took its worker down"
    assert not Message.objects.filter(turn=turn, role="assistant").exists()
    for turn in Turn.objects.filter(id__in=[behind, *others]):
        assert turn.status == TurnStatus.SUCCEEDED, f"turn {turn.id} was held up by the poison turn: {turn.error}"
        assert Message.objects.filter(turn=turn, role="assistant").count() == 1
