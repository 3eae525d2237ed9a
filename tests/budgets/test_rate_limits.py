"""Rate limits per key, per IP and global, shared through Redis: 429 with Retry-After."""

import pytest
from django.test import Client

from agents import streams
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    client = streams.sync_client()
    for key in client.scan_iter("sentinel:rl:*"):
        client.delete(key)


def limits(settings, **values):
    settings.SENTINEL = {**settings.SENTINEL, "RATE_LIMIT_GLOBAL": 0, "RATE_LIMIT_PER_IP": 0, "RATE_LIMIT_PER_KEY": 0, **values}


def test_a_key_over_its_limit_gets_429_with_retry_after(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_KEY=3)
    client = Client()
    assert [client.get("/v1/models", **alice.auth).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = client.get("/v1/models", **alice.auth)
    assert limited.json()["error"]["type"] == "rate_limit_error" and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert client.get("/v1/models", **bob.auth).status_code == 200, "another key has its own budget of requests"


def test_an_ip_over_its_limit_is_limited_across_keys(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_IP=2)
    client = Client()
    codes = [client.get("/v1/models", **actor.auth).status_code for actor in (alice, bob, alice)]
    assert codes == [200, 200, 429]
    other_ip = client.get("/v1/models", REMOTE_ADDR="10.9.9.9", **bob.auth)
    assert other_ip.status_code == 200


def test_the_global_limit_covers_everyone(settings, alice):
    limits(settings, RATE_LIMIT_GLOBAL=2)
    carol = make_actor("carol")
    client = Client()
    codes = [client.get("/v1/models", REMOTE_ADDR=f"10.0.0.{i}", **actor.auth).status_code for i, actor in enumerate((alice, carol, alice))]
    assert codes == [200, 200, 429]


def test_the_chat_endpoint_is_limited_before_anything_is_written(settings, alice):
    from agents.models import Turn

    limits(settings, RATE_LIMIT_PER_KEY=1)
    streams.sync_client().set(f"sentinel:rl:key:{alice.api_key.key_id}:{__import__('time').time().__int__() // 60}", 5, ex=61)
    body = '{"model": "helper", "messages": [{"role": "user", "content": "hi"}]}'
    response = Client().post("/v1/chat/completions", data=body, content_type="application/json", **alice.auth)
    assert response.status_code == 429 and not Turn.objects.exists()
