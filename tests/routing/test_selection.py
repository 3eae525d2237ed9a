"""Choosing a deployment: weighted, least busy, lowest latency; open breakers and reached limits skipped."""

from collections import Counter

import pytest

from agents import breaker, providers
from agents.providers import ProviderError
from routing import groups, selection
from routing.route import route_of
from tests.routing.helpers import group

pytestmark = pytest.mark.django_db


def spec(tenant, name):
    found = groups.find(tenant.id, name)
    assert found is not None
    return found


def test_it_splits_calls_roughly_as_weighted(alice, stub_llm):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "weight": 3}, {"base_url": stub_llm.base_url, "weight": 1})
    chat = spec(alice.tenant, "chat")
    counts = Counter(selection.choose(chat, alice.tenant.id).deployment.name for _ in range(4000))
    assert 0.70 < counts["d0"] / 4000 < 0.80, f"weight 3 of 4 should take about 75% of calls, took {counts}"


def test_it_skips_a_deployment_whose_breaker_is_open(alice, stub_llm, settings):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "weight": 1000}, {"base_url": stub_llm.base_url, "weight": 1})
    alice.agent.model = "chat"
    config = None
    while config is None or config.route.deployment.name != "d0":
        config = providers.ProviderConfig.for_agent(alice.agent)
    for _ in range(settings.SENTINEL["BREAKER_FAILURES"]):
        breaker.record_failure(config, ProviderError(502, "provider_unreachable", "down", retryable=True))
    assert breaker.state(config) == breaker.OPEN
    choices = {selection.choose(spec(alice.tenant, "chat"), alice.tenant.id) for _ in range(50)}
    assert {choice.deployment.name for choice in choices} == {"d1"}, "an open breaker's deployment must never be chosen"
    assert ("d0", "circuit_open") in next(iter(choices)).skipped


def test_the_breaker_of_one_deployment_is_not_the_others(alice, stub_llm, settings):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url}, {"base_url": stub_llm.base_url})
    alice.agent.model = "chat"
    first = providers.ProviderConfig.for_agent(alice.agent)
    other = next(d for d in spec(alice.tenant, "chat").deployments if d.id != first.route.deployment.id)
    assert first.breaker_key != selection.breaker_key(other, alice.tenant.id)


def test_it_skips_a_deployment_at_its_requests_per_minute(alice, stub_llm):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "rpm": 2, "weight": 1000}, {"base_url": stub_llm.base_url})
    chat = spec(alice.tenant, "chat")
    limited = next(d for d in chat.deployments if d.name == "d0")
    selection.started(limited, "a")
    selection.started(limited, "b")
    choices = {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(50)}
    assert choices == {"d1"}


def test_it_skips_a_deployment_at_its_tokens_per_minute(alice, stub_llm):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "tpm": 100, "weight": 1000}, {"base_url": stub_llm.base_url})
    chat = spec(alice.tenant, "chat")
    selection.ended(next(d for d in chat.deployments if d.name == "d0"), "", tokens=100)
    assert {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(50)} == {"d1"}


def test_nothing_is_chosen_when_every_deployment_is_out(alice, stub_llm):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "rpm": 1})
    chat = spec(alice.tenant, "chat")
    selection.started(chat.deployments[0], "a")
    assert selection.choose(chat, alice.tenant.id) is None


def test_least_busy_takes_the_deployment_with_fewest_calls_in_flight(alice, stub_llm):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url}, {"base_url": stub_llm.base_url}, strategy="least_busy")
    chat = spec(alice.tenant, "chat")
    busy = next(d for d in chat.deployments if d.name == "d0")
    selection.started(busy, "a")
    assert {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(30)} == {"d1"}
    selection.ended(busy, "a")
    assert {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(60)} == {"d0", "d1"}


def test_lowest_latency_takes_the_fastest_measured_deployment_and_forgets_slowly(alice, stub_llm):
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url}, {"base_url": stub_llm.base_url}, strategy="lowest_latency")
    chat = spec(alice.tenant, "chat")
    fast, slow = sorted(chat.deployments, key=lambda d: d.name)
    selection.ended(fast, "", latency_ms=100)
    selection.ended(slow, "", latency_ms=300)
    assert selection.choose(chat, alice.tenant.id).deployment == fast
    selection.ended(fast, "", latency_ms=1000)  # one slow call moves the average, not all the way
    assert selection.choose(chat, alice.tenant.id).deployment == slow
    value = float(selection.sync_client().get(selection.latency_key(fast.id)))
    assert value == pytest.approx(100 + 0.3 * 900)


def test_a_tenants_own_group_wins_over_a_global_one_and_others_see_only_the_global(alice, bob, stub_llm):
    group(None, "chat", {"base_url": stub_llm.base_url, "provider_model": "global-model"})
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "provider_model": "alice-model"})
    alice.agent.model = bob.agent.model = "chat"
    assert providers.ProviderConfig.for_agent(alice.agent).model == "alice-model"
    bobs = providers.ProviderConfig.for_agent(bob.agent)
    assert bobs.model == "global-model" and route_of(bobs) is not None
    assert not bobs.tenant_url and bobs.deployment_key, "a global group is the operator's: its calls are the deployment's"


def test_another_tenants_group_is_not_routed_to(alice, bob, stub_llm):
    group(alice.tenant, "private", {"base_url": stub_llm.base_url})
    bob.agent.model = "private"
    config = providers.ProviderConfig.for_agent(bob.agent)
    assert route_of(config) is None, "a tenant's model group name is only its own"
    assert config.model == "private" and config.api_key != "", "bob's agent calls its model directly, as without groups"


def test_a_snapshot_sees_this_workers_own_calls_at_once_and_others_within_its_age(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ROUTING_STATE_SECONDS": 60}
    group(alice.tenant, "chat", {"base_url": stub_llm.base_url, "rpm": 1, "weight": 1000}, {"base_url": stub_llm.base_url})
    chat = spec(alice.tenant, "chat")
    limited = next(d for d in chat.deployments if d.name == "d0")
    selection.choose(chat, alice.tenant.id)  # the snapshot is taken
    selection.started(limited, "mine")
    assert {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(30)} == {"d1"}, "its own call counts at once"
    selection.forget()
    selection.sync_client().delete(selection.rpm_key(limited.id, selection._minute()))  # another minute, as another worker sees it
    selection.choose(chat, alice.tenant.id)
    selection.sync_client().incr(selection.rpm_key(limited.id, selection._minute()))  # another worker's call
    assert "d0" in {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(30)}, "others' are seen within the age"
    selection.forget()
    assert {selection.choose(chat, alice.tenant.id).deployment.name for _ in range(30)} == {"d1"}
