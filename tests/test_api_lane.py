"""The API lane's handler (sentinel_site/api_lane.py) keeps its requests' threads for the next requests."""

import asyncio
import json
import threading

import pytest

from agents.models import Agent
from sentinel_site import api_lane

pytestmark = pytest.mark.django_db(transaction=True)  # the request's thread reads what the test wrote


async def get(handler, path: str, token: str) -> tuple[int, dict]:
    """One request through the handler as uvicorn sends it; (status, JSON body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict] = []
    request_read = asyncio.Event()

    async def receive() -> dict:
        if not request_read.is_set():
            request_read.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the handler cancels this when it is done
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    await handler(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def api_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("api")}


def test_sequential_requests_run_on_one_kept_thread_and_concurrent_ones_on_their_own(alice, monkeypatch):
    handler = api_lane.ApiHandler()
    before = api_threads()

    async def scenario() -> None:
        for _ in range(3):
            status, body = await get(handler, "/v1/models", alice.key)
            assert status == 200 and body["object"] == "list"
        assert len(handler._threads) == 1 and len(api_threads() - before) == 1, "one thread, kept and used again"
        answers = await asyncio.gather(*(get(handler, "/v1/models", alice.key) for _ in range(3)))
        assert [status for status, _ in answers] == [200, 200, 200]
        assert len(handler._threads) <= 3, "at most one thread a request in flight"
        monkeypatch.setattr(api_lane, "IDLE_THREADS_MAX", 1)
        await asyncio.gather(*(get(handler, "/v1/models", alice.key) for _ in range(2)))
        assert len(handler._threads) == 1, "past the bound, a finished request's thread ends instead of waiting idle"

    asyncio.run(scenario())


def test_another_tenants_request_on_a_kept_thread_sees_only_its_own_tenant(alice, bob):
    Agent.objects.create(tenant=alice.tenant, name="alices-own")
    handler = api_lane.ApiHandler()

    async def scenario() -> tuple[dict, dict]:
        (_, first), (_, second) = await get(handler, "/v1/models", alice.key), await get(handler, "/v1/models", bob.key)
        return first, second

    first, second = asyncio.run(scenario())
    assert len(handler._threads) == 1, "both ran on the same thread"
    assert "alices-own" in {model["id"] for model in first["data"]}
    assert "alices-own" not in {model["id"] for model in second["data"]}
    assert {model["owned_by"] for model in second["data"]} == {bob.tenant.name}


def test_with_connections_kept_past_a_request_no_thread_is_kept(alice, monkeypatch):
    assert not api_lane.connections_outlive_requests(), "the pool (the default): a connection ends with its request"
    monkeypatch.setattr(api_lane, "connections_outlive_requests", lambda: True)  # as with SENTINEL_DB_POOL_MAX_SIZE=0
    handler = api_lane.ApiHandler()
    status, _ = asyncio.run(get(handler, "/v1/models", alice.key))
    assert status == 200 and handler._threads == [], "an idle thread would hold its connection open"
