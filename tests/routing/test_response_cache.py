"""The response cache through the live stack: opt-in per agent and request, exact match, a hit
answered with no turn, no provider call and no cost, counted; never across tenants, never for
history unless the policy allows it; purged per agent through the API."""

import asyncio
import time

import pytest

from agents.models import Turn, TurnStatus
from budgets.models import SpendEntry
from routing import cache
from routing.models import Policy
from sentinel_site.redis import sync_client
from tests.conftest import wait_for
from tests.routing.live import body, client, settle, tokens  # noqa: F401 - settle is a fixture
from tests.stub_llm import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("settle")]
USE = {"Sentinel-Cache": "use"}


def ask(live_stack, actor, payload, **headers):
    async def run():
        async with client(live_stack, actor, **headers) as h:
            if not payload.get("stream"):
                return await h.post("/chat/completions", json=payload), None
            async with h.stream("POST", "/chat/completions", json=payload) as response:
                return response, tokens([line async for line in response.aiter_lines()])

    return asyncio.run(run())


def kept(actor) -> list[bytes]:
    return list(sync_client().scan_iter(f"{cache.PREFIX}{actor.tenant.id}:{actor.agent.id}:*"))


def calls(stub_llm, marker):
    return [r for r in stub_llm.requests if marker in str(r["messages"][-1]["content"])]


@pytest.fixture
def caching(alice):
    Policy.objects.create(agent=alice.agent, cache_seconds=60)
    return alice


def test_a_second_identical_request_is_a_hit_with_no_turn_no_call_and_no_cost(live_stack, caching, stub_llm):
    first, _ = ask(live_stack, caching, body("cache me"), **USE)
    assert first.status_code == 200 and first.headers["sentinel-cache"] == "miss"
    wait_for(lambda: kept(caching), timeout=5, message="the answer kept")
    turns, spent = Turn.objects.count(), SpendEntry.objects.count()
    second, _ = ask(live_stack, caching, body("cache me"), **USE)
    assert second.status_code == 200 and second.headers["sentinel-cache"] == "hit"
    assert second.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert len(calls(stub_llm, "cache me")) == 1, "a hit calls no provider"
    assert (Turn.objects.count(), SpendEntry.objects.count()) == (turns, spent), "a hit admits no turn and costs nothing"
    assert cache.stats(caching.agent.id) == {"hits": 1, "misses": 1}
    assert 0 < sync_client().ttl(kept(caching)[0]) <= 60, "kept for the policy's TTL"


def test_a_streamed_hit_replays_the_same_tokens(live_stack, caching, stub_llm):
    _, streamed = ask(live_stack, caching, body("stream me", stream=True), **USE)
    wait_for(lambda: kept(caching), timeout=5, message="the answer kept")
    response, replayed = ask(live_stack, caching, body("stream me", stream=True, stream_options={"include_usage": True}), **USE)
    assert response.headers["sentinel-cache"] == "hit"
    assert "".join(replayed) == "".join(streamed) == "echo: stream me"
    assert len(calls(stub_llm, "stream me")) == 1


def test_without_the_header_or_with_another_body_the_cache_is_not_used(live_stack, caching, stub_llm):
    ask(live_stack, caching, body("exact"), **USE)
    wait_for(lambda: kept(caching), timeout=5, message="the answer kept")
    plain, _ = ask(live_stack, caching, body("exact"))
    assert "sentinel-cache" not in plain.headers, "the request did not ask (and the policy does not always)"
    near, _ = ask(live_stack, caching, body("exact!"), **USE)
    assert near.headers["sentinel-cache"] == "miss", "exact match only"
    assert len(calls(stub_llm, "exact")) == 3


def test_history_is_not_cached_unless_the_policy_allows_it(live_stack, caching, stub_llm):
    history = {
        "model": "helper",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "again"}],
    }
    refused, _ = ask(live_stack, caching, history, **USE)
    assert "sentinel-cache" not in refused.headers
    Policy.objects.filter(agent=caching.agent).update(cache_history=True)
    Policy.objects.get(agent=caching.agent).save()  # a signal: every process drops its cached policy
    allowed, _ = ask(live_stack, caching, history, **USE)
    assert allowed.headers["sentinel-cache"] == "miss"


def test_another_tenant_never_gets_a_cached_answer(live_stack, caching, bob, stub_llm):
    ask(live_stack, caching, body("tenant secret"), **USE)
    wait_for(lambda: kept(caching), timeout=5, message="the answer kept")
    Policy.objects.create(agent=bob.agent, cache_seconds=60)
    bobs, _ = ask(live_stack, bob, body("tenant secret"), **USE)
    assert bobs.headers["sentinel-cache"] == "miss" and Turn.objects.filter(tenant=bob.tenant).count() == 1
    assert len(calls(stub_llm, "tenant secret")) == 2


def test_purging_an_agents_cache_makes_the_next_request_a_miss(live_stack, caching, bob, stub_llm):
    ask(live_stack, caching, body("purge me"), **USE)
    wait_for(lambda: kept(caching), timeout=5, message="the answer kept")

    async def purge(actor, name):
        async with client(live_stack, actor) as h:
            return await h.delete(f"/agents/{name}/cache")

    assert asyncio.run(purge(bob, "nobody")).status_code == 404
    purged = asyncio.run(purge(caching, "helper"))
    assert purged.status_code == 200 and purged.json()["purged"] == 1 and not kept(caching)
    again, _ = ask(live_stack, caching, body("purge me"), **USE)
    assert again.headers["sentinel-cache"] == "miss"


def test_a_bad_cache_header_is_refused_in_openais_error_shape(live_stack, caching):
    response, _ = ask(live_stack, caching, body("hi"), **{"Sentinel-Cache": "always"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "Sentinel-Cache"


def test_a_cancelled_answer_is_never_kept(live_stack, caching, stub_llm):
    stub_llm.when("cut short", lambda request: Reply(content=" ".join(["word"] * 40), chunk_delay=0.05))

    async def leave_early():
        async with client(live_stack, caching, **USE) as h, h.stream("POST", "/chat/completions", json=body("cut short", stream=True)) as r:
            async for line in r.aiter_lines():
                if '"content":"word' in line:
                    return r.headers["sentinel-turn-id"]

    turn_id = asyncio.run(leave_early())
    wait_for(lambda: Turn.objects.filter(id=turn_id, status=TurnStatus.CANCELLED).exists(), timeout=10, message="the turn cancelled")
    time.sleep(0.3)  # the cache's follower has read the turn's end
    assert not kept(caching), "a partial answer would be replayed to the next identical request"
