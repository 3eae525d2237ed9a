"""An agent's routing policy and cache through the API and the admin: read (every option off with no
row), set, another tenant's agent a 404, agents:write to change; the admin's hit rate, its purge
action, the deployments' live routing state; per-deployment metrics with bounded labels."""

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agents import breaker, providers
from agents.providers import ProviderError
from budgets.models import AuditEntry
from routing import cache, metrics
from routing.models import Policy
from routing.policy import NONE, for_agent
from sentinel_site.redis import sync_client
from tests.agents.test_turn_runner import admit_turn, run
from tests.conftest import make_actor
from tests.routing.helpers import group
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


def put(actor, name, data):
    return Client().put(f"/v1/agents/{name}/routing-policy", json.dumps(data), content_type="application/json", **actor.auth)


def keep_answer(actor, content: str) -> str:
    key = cache.key_for(actor.tenant.id, actor.agent.id, {"model": actor.agent.name, "messages": [{"role": "user", "content": content}]})
    sync_client().set(key, json.dumps({"choices": [{"finish_reason": "stop", "message": {"content": "kept"}}]}), ex=60)
    return key


def test_an_agent_without_a_policy_reads_as_every_option_off(alice):
    response = Client().get("/v1/agents/helper/routing-policy", **alice.auth)
    assert response.status_code == 200
    body = response.json()
    assert (body["dedup"], body["cache_seconds"], body["adaptive"]) == (False, 0, False)
    assert body["cache_stats"] == {"hits": 0, "misses": 0}


def test_the_defaults_read_back_are_the_ones_applied_and_a_put_turns_them_off(alice):
    body = Client().get("/v1/agents/helper/routing-policy", **alice.auth).json()
    assert (body["dedup_deterministic"], body["complex_by_cues"], body["complex_above_tokens"]) == (True, True, 8000)
    assert (NONE.dedup_deterministic, NONE.complex_by_cues, NONE.complex_above_tokens) == (True, True, 8000)
    response = put(alice, "helper", {"dedup_deterministic": False, "complex_by_cues": False})
    assert response.status_code == 200 and response.json()["dedup_deterministic"] is False
    spec = for_agent(alice.agent.id)
    assert (spec.dedup_deterministic, spec.complex_by_cues) == (False, False)


def test_setting_a_policy_is_kept_audited_and_read_back(alice):
    response = put(alice, "helper", {"dedup": True, "cache_seconds": 120})
    assert response.status_code == 200 and response.json()["dedup"] is True
    policy = Policy.objects.get(agent=alice.agent)
    assert (policy.dedup, policy.cache_seconds) == (True, 120)
    assert AuditEntry.objects.filter(action="routing_policy.updated", target=str(alice.agent.id)).exists()


def test_a_bad_value_is_a_400_in_openais_error_shape_with_nothing_written(alice):
    response = put(alice, "helper", {"cache_seconds": -1})
    assert response.status_code == 400 and response.json()["error"]["param"] == "cache_seconds"
    assert not Policy.objects.exists()


def test_another_tenants_agent_is_a_404_and_a_viewer_cannot_change_it(alice, bob):
    assert put(bob, "nobody", {"dedup": True}).status_code == 404
    assert Client().delete("/v1/agents/nobody/cache", **bob.auth).status_code == 404
    viewer = make_actor("alice", role="viewer")
    assert put(viewer, "helper", {"dedup": True}).status_code == 403
    assert Client().delete("/v1/agents/helper/cache", **viewer.auth).status_code == 403


def test_purging_through_the_api_drops_only_that_agents_answers(alice, bob):
    alices, bobs = keep_answer(alice, "q"), keep_answer(bob, "q")
    response = Client().delete("/v1/agents/helper/cache", **alice.auth)
    assert response.status_code == 200 and response.json()["purged"] == 1
    assert not sync_client().exists(alices) and sync_client().exists(bobs), "another tenant's cache is untouched"


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


def test_the_policy_admin_shows_the_hit_rate_and_purges_with_an_audit_entry(root, alice):
    policy = Policy.objects.create(agent=alice.agent, cache_seconds=60)
    key = keep_answer(alice, "q")
    cache.lookup(key, alice.agent.id)
    cache.lookup(key + "-other", alice.agent.id)
    page = root.get("/admin/routing/policy/")
    assert page.status_code == 200 and "1/2 (50%)" in page.content.decode()
    response = root.post("/admin/routing/policy/", {"action": "purge_cache", "_selected_action": [policy.id]}, follow=True)
    assert response.status_code == 200 and "1 cached answers purged" in response.content.decode()
    assert not sync_client().exists(key)
    assert AuditEntry.objects.filter(action="routing_cache.purged", target=str(alice.agent.id)).exists()


def test_the_deployment_inline_shows_its_breaker_and_measured_latency(root, alice, stub_llm, settings):
    made = group(alice.tenant, "chat", {"base_url": stub_llm.base_url})
    alice.agent.model = "chat"
    alice.agent.save()
    run(admit_turn(alice, "measure me"))
    config = providers.ProviderConfig.for_agent(alice.agent)
    for _ in range(settings.SENTINEL["BREAKER_FAILURES"]):
        breaker.record_failure(config, ProviderError(502, "provider_unreachable", "down", retryable=True))
    page = root.get(f"/admin/routing/modelgroup/{made.id}/change/").content.decode()
    assert "breaker open" in page and "1 requests" in page and "latency not measured" not in page


def test_routed_calls_are_counted_per_deployment_with_bounded_labels(alice, stub_llm, second_llm):
    group(None, "shared", {"base_url": stub_llm.base_url}, fallbacks=["mine"])
    group(alice.tenant, "mine", {"base_url": second_llm.base_url})
    alice.agent.model = "shared"
    alice.agent.save()
    ok, failed = metrics.DEPLOYMENT_CALLS.labels("shared/d0", "ok"), metrics.DEPLOYMENT_CALLS.labels("shared/d0", "provider_rate_limited")
    tenants = metrics.DEPLOYMENT_CALLS.labels("tenant", "ok")
    before = (ok._value.get(), failed._value.get(), tenants._value.get())
    run(admit_turn(alice, "one"))
    stub_llm.script(Reply(status=429))
    run(admit_turn(alice, "two"))
    after = (ok._value.get(), failed._value.get(), tenants._value.get())
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1], "the operator's deployment by name, a tenant's as `tenant`"
