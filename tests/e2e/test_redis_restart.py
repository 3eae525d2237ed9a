"""Chaos: restart Redis (losing everything in it) under load; every turn still finishes, once.

PostgreSQL is the source of truth: tasks lost with Redis are found by the Supervisor (run by a real
Celery beat here) as turns queued too long, and enqueued again.
"""

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agents.models import Message, Turn, TurnStatus
from sentinel_site.stack import BASE_DIR, redis_answers, web_command
from tests.conftest import _answers, free_port, start_worker, wait_for
from tests.stub_llm import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")]

TURNS = 30


def start_redis(port: int, tmp_path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), timeout=15, message="redis-server")
    return process


def test_turns_survive_a_redis_restart(live_stack, alice, stub_llm, tmp_path):
    redis_port, web_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **live_stack.env,
        "REDIS_URL": url,
        "CELERY_BROKER_URL": url,
        "SENTINEL_ZOMBIE_SECONDS": "5",
        "SENTINEL_UNSENT_SECONDS": "3",
        "SENTINEL_SUPERVISOR_INTERVAL": "1",
        "SENTINEL_RETRY_BACKOFF_BASE": "0",
    }
    redis = start_redis(redis_port, tmp_path)
    processes = []
    try:
        web = subprocess.Popen(
            web_command("127.0.0.1", web_port), cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "sentinel_site", "beat", "-l", "WARNING", "--schedule", str(tmp_path / "beat")],
            cwd=BASE_DIR,
            env=env,
            stdout=(tmp_path / "beat.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes += [web, beat]
        worker = start_worker(env, tmp_path / "worker.log", concurrency=4)
        processes.append(worker)
        wait_for(lambda: _answers(f"http://127.0.0.1:{web_port}/health/live"), timeout=30, message="the web process")
        stub_llm.script(*[Reply(content=f"reply {i}", delay=0.3) for i in range(TURNS * 2)])

        def submit(i):
            with httpx.Client(headers={"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"}, timeout=30) as h:
                response = h.post(
                    f"http://127.0.0.1:{web_port}/v1/chat/completions",
                    json={"model": "helper", "messages": [{"role": "user", "content": f"q{i}"}]},
                )
                assert response.status_code == 202, response.text
                return response.json()["id"]

        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(submit, range(TURNS)))
        wait_for(lambda: Turn.objects.filter(id__in=ids, status=TurnStatus.SUCCEEDED).count() >= 3, timeout=30, message="some progress")
        redis.terminate()
        redis.wait(10)
        redis = start_redis(redis_port, tmp_path)  # empty: queued tasks and streams are gone
        wait_for(
            lambda: not Turn.objects.filter(id__in=ids).exclude(status=TurnStatus.SUCCEEDED).exists(),
            timeout=120,
            interval=1,
            message="every turn to finish after the restart",
        )
        for turn_id in ids:
            assert Message.objects.filter(turn_id=turn_id, role="assistant").count() == 1
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.terminate()
