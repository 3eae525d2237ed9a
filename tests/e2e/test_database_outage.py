"""PostgreSQL connections dropped under the API: a clear 503, no traceback in the body, then recovery."""

import httpx
import pytest
from django.db import connection

from agents.models import Turn
from tests.conftest import LIVE_APPLICATION_NAME

pytestmark = pytest.mark.django_db(transaction=True)


def drop_the_live_stacks_connections():
    """Every connection of the web and worker processes, as a database restart would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", [LIVE_APPLICATION_NAME])
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
