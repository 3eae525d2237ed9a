"""The in-process configuration cache: hits save the lookups, every change is seen in time."""

import time
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents import admission
from budgets import spend
from budgets.models import ApiKey, Price
from sentinel_site import config_cache
from sentinel_site.redis import sync_client

MODELS = "/v1/models"


@pytest.fixture
def cached(settings):
    """The cache on, checking Redis's generation at every lookup unless a test says otherwise."""
    settings.SENTINEL = {**settings.SENTINEL, "CONFIG_CACHE_SECONDS": 60.0, "CONFIG_CHECK_SECONDS": 0}
    return settings


def lookups(fn) -> int:
    with CaptureQueriesContext(connection) as queries:
        fn()
    return len(queries)


def test_a_second_request_does_not_look_the_key_up_again(cached, alice):
    assert Client().get(MODELS, **alice.auth).status_code == 200
    first = lookups(lambda: Client().get(MODELS, **alice.auth))
    config_cache.clear()
    uncached = lookups(lambda: Client().get(MODELS, **alice.auth))
    assert first < uncached, "the key's row comes from the cache"


def test_a_revoked_key_is_refused_at_once(cached, alice):
    assert Client().get(MODELS, **alice.auth).status_code == 200
    alice.api_key.revoke(actor="test")
    assert Client().get(MODELS, **alice.auth).status_code == 401


def test_a_change_made_by_another_process_is_seen_through_the_generation(cached, alice):
    assert Client().get(MODELS, **alice.auth).status_code == 200
    ApiKey.objects.filter(pk=alice.api_key.pk).update(revoked_at="2020-01-01T00:00:00Z")  # no signal here
    assert Client().get(MODELS, **alice.auth).status_code == 200, "cached: this process was not told"
    sync_client().incr(config_cache.GENERATION_KEY)  # what changed() in another process does
    assert Client().get(MODELS, **alice.auth).status_code == 401


def test_the_generation_is_read_at_most_once_per_check_interval(cached, alice):
    cached.SENTINEL = {**cached.SENTINEL, "CONFIG_CHECK_SECONDS": 3600}
    assert Client().get(MODELS, **alice.auth).status_code == 200
    ApiKey.objects.filter(pk=alice.api_key.pk).update(revoked_at="2020-01-01T00:00:00Z")
    sync_client().incr(config_cache.GENERATION_KEY)
    assert Client().get(MODELS, **alice.auth).status_code == 200, "within the interval the old generation stands"
    cached.SENTINEL = {**cached.SENTINEL, "CONFIG_CHECK_SECONDS": 0}
    assert Client().get(MODELS, **alice.auth).status_code == 401


def test_an_entry_expires_after_its_ttl_even_unannounced(cached, alice):
    cached.SENTINEL = {**cached.SENTINEL, "CONFIG_CACHE_SECONDS": 0.05}
    assert Client().get(MODELS, **alice.auth).status_code == 200
    ApiKey.objects.filter(pk=alice.api_key.pk).update(revoked_at="2020-01-01T00:00:00Z")
    time.sleep(0.1)
    assert Client().get(MODELS, **alice.auth).status_code == 401


def test_a_saved_agent_and_a_deleted_one_are_seen_at_once(cached, alice):
    assert admission.find_agent(alice.tenant, "helper").system_prompt == alice.agent.system_prompt
    alice.agent.system_prompt = "Something else."
    alice.agent.save()
    assert admission.find_agent(alice.tenant, "helper").system_prompt == "Something else."
    response = Client().delete(f"/v1/agents/{alice.agent.id}", **alice.auth)
    assert response.status_code in (200, 204), response.content
    with pytest.raises(admission.AgentNotFound):
        admission.find_agent(alice.tenant, "helper")


def test_a_new_price_applies_at_once(cached, alice):
    assert spend.price_per_token(alice.tenant.id, "priced-model", "") is None
    Price.objects.create(model="priced-model", input_per_mtok=1, output_per_mtok=2)
    assert spend.price_per_token(alice.tenant.id, "priced-model", "") is not None


def test_a_load_that_raced_a_change_is_not_kept(cached, db):
    loads = []

    def load():
        loads.append(1)
        if len(loads) == 1:
            config_cache.changed()  # a change lands while the first load is reading the old row
        return "value"

    assert config_cache.get("test", 1, load) == "value"
    assert config_cache.get("test", 1, load) == "value"
    assert config_cache.get("test", 1, load) == "value"
    assert len(loads) == 2, "the raced load was dropped, the next one kept"


def test_a_miss_is_never_kept(cached):
    loads = []
    assert config_cache.get("test", "unknown", lambda: loads.append(1)) is None
    assert config_cache.get("test", "unknown", lambda: loads.append(1)) is None
    assert len(loads) == 2


def test_with_redis_out_of_reach_nothing_cached_is_trusted(cached, monkeypatch):
    import redis

    assert config_cache.get("test", 1, lambda: "old") == "old"
    monkeypatch.setattr(config_cache, "sync_client", lambda: redis.Redis(port=1, socket_connect_timeout=0.2))
    assert config_cache.get("test", 1, lambda: "new") == "new", "without the generation the entry is dropped"


def test_off_means_every_lookup_reads(settings, alice):
    settings.SENTINEL = {**settings.SENTINEL, "CONFIG_CACHE_SECONDS": 0}
    assert Client().get(MODELS, **alice.auth).status_code == 200
    ApiKey.objects.filter(pk=alice.api_key.pk).update(revoked_at="2020-01-01T00:00:00Z")
    assert Client().get(MODELS, **alice.auth).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_budget_deleted_elsewhere_within_the_interval_costs_one_retry_not_an_error(cached, alice):
    from agents.models import Turn
    from budgets.models import Budget, Reservation

    cached.SENTINEL = {**cached.SENTINEL, "CONFIG_CHECK_SECONDS": 3600}
    real = list(Budget.objects.filter(tenant=alice.tenant))
    gone = Budget(id=uuid.uuid4(), tenant=alice.tenant, period=real[0].period, limit=real[0].limit)  # deleted by another process
    config_cache.get("budgets", (alice.tenant.id, alice.api_key.id), lambda: [*real, gone])
    data = {"model": "helper", "messages": [{"role": "user", "content": "hi"}]}
    turn = admission.admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda _: None).turn
    assert Turn.objects.filter(id=turn.id).count() == 1
    held = Reservation.objects.get(turn_id=turn.id)
    assert {w.budget_id for w in held.windows.all()} == {b.id for b in real}
