"""Rate limits per IP, per key and global, shared through Redis and applied before the key is looked
up: 429 with Retry-After; a request refused by a narrow limit costs the wider ones nothing; bad keys
are throttled per IP and audited in aggregate."""

import pytest
import redis
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from budgets import ratelimit
from budgets.models import AuditEntry
from sentinel_site.redis import sync_client
from tests.conftest import make_actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("rate_window")]

MODELS = "/v1/models"


def limits(settings, **values):
    settings.SENTINEL = {
        **settings.SENTINEL,
        "RATE_LIMIT_GLOBAL": 0,
        "RATE_LIMIT_PER_IP": 0,
        "RATE_LIMIT_PER_KEY": 0,
        "AUTH_FAILURES_PER_IP": 0,
        **values,
    }


def bad_key(actor) -> dict[str, str]:
    """The actor's key id with a wrong secret: well-formed, so it reaches the database if let through."""
    return {"HTTP_AUTHORIZATION": f"Bearer snt_{actor.api_key.key_id}_{'A' * 43}"}


def test_a_key_over_its_limit_gets_429_with_retry_after(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_KEY=3)
    client = Client()
    assert [client.get(MODELS, **alice.auth).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = client.get(MODELS, **alice.auth)
    assert limited.json()["error"]["type"] == "rate_limit_error" and limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert client.get(MODELS, **bob.auth).status_code == 200, "another key has its own budget of requests"


def test_an_ip_over_its_limit_is_limited_across_keys(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_IP=2)
    client = Client()
    codes = [client.get(MODELS, **actor.auth).status_code for actor in (alice, bob, alice)]
    assert codes == [200, 200, 429]
    other_ip = client.get(MODELS, REMOTE_ADDR="10.9.9.9", **bob.auth)
    assert other_ip.status_code == 200


def test_the_global_limit_covers_everyone(settings, alice):
    limits(settings, RATE_LIMIT_GLOBAL=2)
    carol = make_actor("carol")
    client = Client()
    codes = [client.get(MODELS, REMOTE_ADDR=f"10.0.0.{i}", **actor.auth).status_code for i, actor in enumerate((alice, carol, alice))]
    assert codes == [200, 200, 429]


def test_one_client_over_its_ip_limit_does_not_use_up_the_global_limit(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_IP=2, RATE_LIMIT_GLOBAL=5)
    client = Client()
    codes = [client.get(MODELS, REMOTE_ADDR="10.0.0.1", **alice.auth).status_code for _ in range(30)]
    assert codes.count(200) == 2 and codes.count(429) == 28
    others = [client.get(MODELS, REMOTE_ADDR=f"10.0.1.{i}", **bob.auth).status_code for i in range(3)]
    assert others == [200, 200, 200], "requests refused per IP must not count against the global limit"


def test_a_key_over_its_limit_does_not_use_up_the_global_limit(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_KEY=1, RATE_LIMIT_GLOBAL=3)
    client = Client()
    codes = [client.get(MODELS, REMOTE_ADDR=f"10.0.0.{i}", **alice.auth).status_code for i in range(10)]
    assert codes == [200] + [429] * 9
    assert client.get(MODELS, REMOTE_ADDR="10.0.2.1", **bob.auth).status_code == 200
    assert client.get(MODELS, REMOTE_ADDR="10.0.2.2", **bob.auth).status_code == 429, "bob's own key limit, not the global one"


def test_the_ip_limit_is_applied_before_the_key_is_looked_up(settings, alice):
    limits(settings, RATE_LIMIT_PER_IP=1)
    client = Client()
    assert client.get(MODELS, **alice.auth).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert client.get(MODELS, **alice.auth).status_code == 429
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_an_ipv6_client_is_limited_by_its_slash_64(settings, alice):
    limits(settings, RATE_LIMIT_PER_IP=2)
    client = Client()
    codes = [client.get(MODELS, REMOTE_ADDR=f"2001:db8:1:2::{i:x}", **alice.auth).status_code for i in range(1, 4)]
    assert codes == [200, 200, 429], "addresses of one /64 are one client"
    assert client.get(MODELS, REMOTE_ADDR="2001:db8:1:3::1", **alice.auth).status_code == 200


def test_a_flood_of_bad_keys_is_throttled_before_the_database(settings, alice):
    limits(settings, AUTH_FAILURES_PER_IP=3)
    client = Client()
    assert [client.get(MODELS, **bad_key(alice)).status_code for _ in range(3)] == [401, 401, 401]
    with CaptureQueriesContext(connection) as queries:
        refused = client.get(MODELS, **bad_key(alice))
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    assert "failed authentications" in refused.json()["error"]["message"]
    assert len(queries) == 0, "a throttled flood must not reach PostgreSQL"
    assert client.get(MODELS, REMOTE_ADDR="10.0.0.7", **alice.auth).status_code == 200, "other addresses are not affected"


def test_bad_keys_are_audited_once_per_ip_and_window_with_a_summary(settings, alice):
    limits(settings, AUTH_FAILURES_PER_IP=5)
    client = Client()
    codes = [client.get(MODELS, REMOTE_ADDR="198.51.100.7", **bad_key(alice)).status_code for _ in range(40)]
    assert codes == [401] * 5 + [429] * 35
    entries = list(AuditEntry.objects.filter(action__startswith="auth.").order_by("seq"))
    assert [entry.action for entry in entries] == ["auth.failed", "auth.throttled"]
    assert entries[0].data == {"reason": "wrong_secret", "ip": "198.51.100.7"} and entries[0].tenant_id == alice.tenant.id
    assert entries[1].data["failures"] == 5 and entries[1].data["ip"] == "198.51.100.7"
    client.get(MODELS, REMOTE_ADDR="198.51.100.8", HTTP_AUTHORIZATION="Bearer not-a-key")
    assert AuditEntry.objects.filter(action="auth.failed").count() == 2, "each address gets its own first entry"


def test_bad_keys_spend_neither_the_named_keys_budget_nor_the_global_one(settings, alice, bob):
    limits(settings, RATE_LIMIT_PER_KEY=2, RATE_LIMIT_GLOBAL=3, AUTH_FAILURES_PER_IP=100)
    client = Client()
    assert {client.get(MODELS, REMOTE_ADDR="203.0.113.66", **bad_key(alice)).status_code for _ in range(10)} == {401}
    assert [client.get(MODELS, REMOTE_ADDR="10.0.3.1", **alice.auth).status_code for _ in range(2)] == [200, 200]
    assert client.get(MODELS, REMOTE_ADDR="10.0.3.2", **bob.auth).status_code == 200


def test_a_request_without_a_key_counts_against_its_ip(settings, alice):
    limits(settings, RATE_LIMIT_PER_IP=2)
    client = Client()
    assert [client.get(MODELS).status_code for _ in range(2)] == [401, 401]
    assert client.get(MODELS, **alice.auth).status_code == 429


def test_the_chat_endpoint_is_limited_before_anything_is_written(settings, alice, rate_window):
    from agents.models import Turn

    limits(settings, RATE_LIMIT_PER_KEY=1)
    sync_client().set(f"sentinel:rl:key:{alice.api_key.key_id}:{int(rate_window) // 60}", 5, ex=61)
    body = '{"model": "helper", "messages": [{"role": "user", "content": "hi"}]}'
    response = Client().post("/v1/chat/completions", data=body, content_type="application/json", **alice.auth)
    assert response.status_code == 429 and not Turn.objects.exists()


def test_with_redis_out_of_reach_the_api_fails_closed(settings, alice, monkeypatch):
    limits(settings, RATE_LIMIT_PER_IP=10)
    monkeypatch.setattr(ratelimit, "sync_client", lambda: redis.Redis(port=1, socket_connect_timeout=0.5))
    with CaptureQueriesContext(connection) as queries:
        response = Client().get(MODELS, **alice.auth)
    assert response.status_code == 503 and response.json()["error"]["code"] == "redis_unavailable"
    assert len(queries) == 0, "no key is looked up without the limiter"
