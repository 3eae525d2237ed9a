"""PostgreSQL connections dropped under the API: a clear 503, no traceback in the body, then recovery."""

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from agents.models import Turn
from sentinel_site.stack import BASE_DIR, web_command
from tests.conftest import LIVE_APPLICATION_NAME, _answers, free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def drop_the_live_stacks_connections():
    """Every connection of the web and worker processes, as a database restart would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            [LIVE_APPLICATION_NAME],
        )
        assert cursor.fetchone()[0] > 0


def test_dropped_database_connections_answer_503_and_the_api_recovers(live_stack, alice, stub_llm):
    body = {"model": "helper", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}"}, timeout=30) as h:
        assert h.post("/chat/completions", json=body).status_code == 200
        drop_the_live_stacks_connections()
        statuses = []
        for _ in range(6):
            response = h.post("/chat/completions", json=body)
            statuses.append(response.status_code)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "database_unavailable" and "Traceback" not in response.text
        assert statuses[-1] == 200, "the pool replaces broken connections; service resumes"
    assert all(turn.status in ("succeeded", "queued", "running") for turn in Turn.objects.all()), "nothing half-written"


def test_a_web_process_out_of_connections_sheds_requests_with_503_overloaded_not_database_unavailable(
    live_stack, alice, stub_llm, tmp_path
):
    """One pooled connection and one waiting slot: a burst is mostly shed at once, with the right
    label and Retry-After, and every request either made its turn or left nothing behind."""
    env = {**live_stack.env, "SENTINEL_DB_POOL_MAX_SIZE": "1", "SENTINEL_DB_POOL_MAX_WAITING": "1"}
    port = free_port()
    web = subprocess.Popen(
        web_command("127.0.0.1", port), cwd=BASE_DIR, env=env, stdout=(tmp_path / "web.log").open("wb"), stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{base}/health/live"), timeout=60, message="the small-pool web process")
        before = Turn.objects.count()
        burst = threading.Barrier(60)
        body = {"model": "helper", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"}

        def call(_: int) -> httpx.Response:
            with httpx.Client(base_url=f"{base}/v1", headers=headers, timeout=60) as h:
                burst.wait(timeout=30)
                return h.post("/chat/completions", json=body)

        with ThreadPoolExecutor(60) as pool:
            responses = list(pool.map(call, range(60)))
    finally:
        web.terminate()
        web.wait(15)
    assert {r.status_code for r in responses} <= {202, 503}, [r.text for r in responses if r.status_code not in (202, 503)]
    shed = [r for r in responses if r.status_code == 503]
    assert shed, "a burst of 60 on one connection with one waiting slot must shed some"
    for response in shed:
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("overloaded", "connections_busy"), error
        assert int(response.headers["Retry-After"]) > 0
    admitted = [r for r in responses if r.status_code == 202]
    assert admitted, "what fits through the pool is still served"
    assert Turn.objects.count() - before == len(admitted), "a shed request leaves nothing behind"
