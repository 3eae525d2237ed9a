"""The web process gives back every database connection, whatever its clients do: leave while their
turn runs, leave mid-stream, send what it refuses. A connection a thread keeps is lost to the pool
for good (PostgreSQL sees an idle connection); the pool's own count says so (sentinel_db_pool_connections)."""

import contextlib
import subprocess

import httpx
import pytest
from django.conf import settings
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from agents.models import Turn, TurnStatus
from sentinel_site.stack import BASE_DIR, process_env, web_command
from tests.conftest import _answers, database_url, free_port, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


OWN_APPLICATION_NAME = "sentinel-pool-test"


@pytest.fixture
def own_web(live_stack, tmp_path):
    """A web process of this test's own, with its own metrics folder and connection name, so that what
    other tests did to the live stack's web (tests/e2e/test_database_outage.py) does not count here."""
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    env = {
        **live_stack.env,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "DATABASE_URL": database_url(settings.DATABASES["default"], application_name=OWN_APPLICATION_NAME),
    }
    port = free_port()
    web = subprocess.Popen(
        web_command("127.0.0.1", port),
        cwd=BASE_DIR,
        env=process_env("web", env),
        stdout=(tmp_path / "web.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/health/live"), timeout=60, message="the test's web process")
        yield base
    finally:
        web.terminate()
        web.wait(15)


def web_pool(base_url: str, state: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "sentinel_db_pool_connections":
            return sum(s.value for s in family.samples if s.labels == {"process": "web", "state": state})
    return -1.0  # no reading yet


def body(content: str, **extra) -> dict:
    return {"model": "helper", "messages": [{"role": "user", "content": content}], **extra}


def test_clients_that_leave_or_are_refused_leave_no_connection_checked_out(own_web, alice, stub_llm):
    stub_llm.script(
        *[Reply(content="slow answer", delay=1.0) for _ in range(6)], *[Reply(content=f"word{i} " * 30, chunk_delay=0.05) for i in range(3)]
    )
    headers = {"Authorization": f"Bearer {alice.key}"}
    with httpx.Client(base_url=f"{own_web}/v1", headers=headers, timeout=0.3) as impatient:
        for n in range(6):  # gone while the web waits for the turn
            with contextlib.suppress(httpx.TimeoutException):
                impatient.post("/chat/completions", json=body(f"wait for me {n}"))
    with httpx.Client(base_url=f"{own_web}/v1", headers=headers, timeout=30) as h:
        for n in range(3):  # gone mid-stream
            with h.stream("POST", "/chat/completions", json=body(f"stream {n}", stream=True)) as response:
                assert response.status_code == 200
                next(response.iter_lines())
        refused = [
            h.post("/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}).status_code,
            h.post("/chat/completions", json={"model": "helper"}).status_code,
            h.get("/no-such-endpoint").status_code,
            h.post("/chat/completions", json=body("no key"), headers={"Authorization": "Bearer sk-wrong"}).status_code,
            h.get("/turns/00000000-0000-0000-0000-000000000000").status_code,
        ]
    assert refused == [400, 400, 404, 401, 404]
    wait_for(lambda: not Turn.objects.filter(status__in=[TurnStatus.QUEUED, TurnStatus.RUNNING]).exists(), 30, message="the turns to end")
    # The web's sampler reads its pool every 5 s: wait for a reading with nothing checked out.
    wait_for(lambda: web_pool(own_web, "checked_out") == 0, 20, 0.5, message="the web's pool to have every connection back")
    assert web_pool(own_web, "open") >= 1


def drop_the_test_webs_connections() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            [OWN_APPLICATION_NAME],
        )
        assert cursor.fetchone()[0] > 0


def test_dropped_connections_leave_none_checked_out(own_web, alice, stub_llm):
    with httpx.Client(base_url=f"{own_web}/v1", headers={"Authorization": f"Bearer {alice.key}"}, timeout=30) as h:
        assert h.post("/chat/completions", json=body("before")).status_code == 200
        drop_the_test_webs_connections()
        statuses = [h.post("/chat/completions", json=body(f"after {n}")).status_code for n in range(6)]
    assert statuses[-1] == 200, statuses
    wait_for(lambda: not Turn.objects.filter(status__in=[TurnStatus.QUEUED, TurnStatus.RUNNING]).exists(), 30, message="the turns to end")
    wait_for(lambda: web_pool(own_web, "checked_out") == 0, 20, 0.5, message="the web's pool to have every connection back")
