"""Shared streams through the live stack: identical in-flight requests make one provider call, every
subscriber reads the same tokens at its own pace, a leaving one stalls nobody, each is accounted
once and the provider's cost is charged once; another tenant's twin is never shared."""

import asyncio
import os
from decimal import Decimal

import pytest

from agents.models import Turn, TurnStatus
from budgets.models import Budget, Price, SpendEntry
from routing import dedup
from routing.models import Policy
from sentinel_site.redis import sync_client
from tests.conftest import wait_for
from tests.routing.live import body, client, settle, tokens  # noqa: F401 - settle is a fixture
from tests.stub_llm import Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("settle")]
# The issue asks for 100 subscribers (SENTINEL_SHARED_STREAM_SUBSCRIBERS=100, about 4 s here); the
# default of 20 takes the same path in CI time.
SUBSCRIBERS = int(os.environ.get("SENTINEL_SHARED_STREAM_SUBSCRIBERS", "20"))
ANSWER = " ".join(f"w{index}" for index in range(10))
CHUNK_SECONDS = 0.01


def slow_answer(stub_llm, marker):
    """The stub thinks for half a second (every twin arrives while the first is in flight), then
    answers `marker` in 10 chunks, CHUNK_SECONDS apart."""
    stub_llm.when(marker, lambda request: Reply(content=ANSWER, delay=0.5, chunk_delay=CHUNK_SECONDS))


def calls(stub_llm, marker):
    return [r for r in stub_llm.requests if marker in str(r["messages"][-1]["content"])]


async def read_stream(h, payload, *, pause: float = 0.0, leave_after: int | None = None):
    """(status, headers, content pieces) of one streamed request; `pause` after each event reads
    slowly, `leave_after` content events closes the connection early."""
    lines = []
    async with h.stream("POST", "/chat/completions", json=payload) as response:
        async for line in response.aiter_lines():
            lines.append(line)
            if leave_after is not None and len(tokens(lines)) >= leave_after:
                break
            if pause and line.startswith("data: "):
                await asyncio.sleep(pause)
        return response.status_code, response.headers, tokens(lines)


def test_identical_concurrent_streams_make_one_upstream_call_and_all_get_the_same_tokens(live_stack, alice, stub_llm):
    slow_answer(stub_llm, "shared-100")
    payload = body("shared-100", stream=True)

    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "on"}) as h:
            fast = [read_stream(h, payload) for _ in range(SUBSCRIBERS - 1)]
            slow = read_stream(h, payload, pause=10 * CHUNK_SECONDS)  # 10x slower than the stub writes
            return await asyncio.gather(slow, *fast)

    results = asyncio.run(run())
    assert len(calls(stub_llm, "shared-100")) == 1, "one provider call for every identical request in flight"
    assert all(status == 200 for status, _, _ in results)
    expected = ANSWER.split(" ")
    for _, _, pieces in results:
        assert "".join(pieces).split() == expected, "every subscriber, the slow one first, reads the whole answer in order"
    turn_ids = {headers["sentinel-turn-id"] for _, headers, _ in results}
    assert len(turn_ids) == 1, "they all ride one turn"
    roles = sorted(headers["sentinel-dedup"] for _, headers, _ in results)
    assert roles.count("leader") == 1 and roles.count("shared") == SUBSCRIBERS - 1
    assert dedup.saved(alice.agent.id) == SUBSCRIBERS - 1, "the provider calls saved, counted for the admin and the API"
    entries = SpendEntry.objects.filter(tenant=alice.tenant)
    wait_for(lambda: entries.count() >= SUBSCRIBERS, timeout=10, message=f"every subscriber accounted: {list(entries.values())}")
    assert entries.count() == SUBSCRIBERS, "each subscriber accounted once"
    assert entries.filter(turn_id__in=turn_ids).count() == 1, "the provider's cost is charged once, to the turn that called it"
    assert all(entry.cost == 0 for entry in entries.filter(turn__isnull=True)), "a follower's usage costs nothing"
    assert {entry.completion_tokens for entry in entries} == {10}, "each subscriber's usage is the answer it got"


def test_a_follower_that_leaves_stalls_nobody_and_cancels_nothing(live_stack, alice, stub_llm):
    slow_answer(stub_llm, "shared-leave")
    payload = body("shared-leave", stream=True)

    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "on"}) as h:
            first = asyncio.ensure_future(read_stream(h, payload))
            await asyncio.sleep(0.2)  # the first leads; the next two share its turn
            return await asyncio.gather(first, read_stream(h, payload, leave_after=2), read_stream(h, payload))

    (_, headers, whole), (_, _, part), (_, _, other) = asyncio.run(run())
    assert len(part) < 10 and whole == other and "".join(whole).split() == ANSWER.split(" ")
    turn = Turn.objects.get(id=headers["sentinel-turn-id"])
    wait_for(lambda: Turn.objects.filter(id=turn.id, status=TurnStatus.SUCCEEDED).exists(), timeout=10, message="the shared turn to finish")
    assert len(calls(stub_llm, "shared-leave")) == 1


def test_the_agents_policy_shares_requests_without_a_header_and_a_header_opts_out(live_stack, alice, stub_llm):
    Policy.objects.create(agent=alice.agent, dedup=True)
    _policy_seen(live_stack, alice)
    slow_answer(stub_llm, "policy-shared")

    async def run(opt_out: bool):
        async with client(live_stack, alice, **({"Sentinel-Dedup": "off"} if opt_out else {})) as h:
            return await asyncio.gather(*[read_stream(h, body("policy-shared", stream=True)) for _ in range(3)])

    asyncio.run(run(False))
    assert len(calls(stub_llm, "policy-shared")) == 1
    asyncio.run(run(True))
    assert len(calls(stub_llm, "policy-shared")) == 4, "Sentinel-Dedup: off gives each request its own call"


def test_another_tenants_identical_request_is_never_shared(live_stack, alice, bob, stub_llm):
    slow_answer(stub_llm, "two-tenants")

    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "on"}) as a, client(live_stack, bob, **{"Sentinel-Dedup": "on"}) as b:
            return await asyncio.gather(read_stream(a, body("two-tenants", stream=True)), read_stream(b, body("two-tenants", stream=True)))

    (_, alices, _), (_, bobs, _) = asyncio.run(run())
    assert alices["sentinel-turn-id"] != bobs["sentinel-turn-id"], "bob must not read alice's turn"
    assert Turn.objects.get(id=bobs["sentinel-turn-id"]).tenant_id == bob.tenant.id
    assert len(calls(stub_llm, "two-tenants")) == 2


def test_a_non_streaming_twin_shares_the_streaming_ones_call(live_stack, alice, stub_llm):
    slow_answer(stub_llm, "mixed")

    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "on"}) as h:
            streamed = asyncio.ensure_future(read_stream(h, body("mixed", stream=True)))
            await asyncio.sleep(0.2)
            waited = await h.post("/chat/completions", json=body("mixed"))
            return await streamed, waited

    (_, headers, pieces), waited = asyncio.run(run())
    assert waited.status_code == 200 and waited.headers["sentinel-dedup"] == "shared"
    assert waited.headers["sentinel-turn-id"] == headers["sentinel-turn-id"]
    assert waited.json()["choices"][0]["message"]["content"] == "".join(pieces)
    assert len(calls(stub_llm, "mixed")) == 1


def test_a_bad_dedup_header_is_refused_in_openais_error_shape(live_stack, alice):
    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "maybe"}) as h:
            return await h.post("/chat/completions", json=body("hi"))

    response = asyncio.run(run())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Sentinel-Dedup" and response.json()["error"]["code"] == "invalid_value"


def test_a_request_after_its_twin_finished_makes_its_own_call(live_stack, alice, stub_llm):
    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "on"}) as h:
            first = await read_stream(h, body("one after another", stream=True))
            return first, await read_stream(h, body("one after another", stream=True))

    (_, first, _), (_, second, _) = asyncio.run(run())
    assert first["sentinel-turn-id"] != second["sentinel-turn-id"], "only a twin in flight is shared, never a finished one"
    assert first["sentinel-dedup"] == second["sentinel-dedup"] == "leader"
    assert len(calls(stub_llm, "one after another")) == 2


def test_a_leader_refused_at_admission_lets_its_twin_be_admitted_on_its_own(live_stack, alice, stub_llm):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("1000"), output_per_mtok=Decimal("1000"))
    Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="daily", defaults={"limit": Decimal("0.000001")})

    async def run():
        async with client(live_stack, alice, **{"Sentinel-Dedup": "on"}) as h:
            return await asyncio.gather(*[h.post("/chat/completions", json=body("refused twins")) for _ in range(3)])

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [503] * 3
    assert {r.json()["error"]["type"] for r in responses} == {"budget_exceeded"}, "each refused by its own admission, not a stale claim"
    assert not list(sync_client().scan_iter(f"{dedup.PREFIX}{alice.tenant.id}:*")), "no claim outlives a refused admission"


def _policy_seen(live_stack, actor):
    """One request before the concurrent ones, so the web process has read the policy just
    changed: a request racing the thread that reads the config generation from Redis is served
    the cached spec (sentinel_site/config_cache.py), and three concurrent ones would race it."""

    async def run():
        async with client(live_stack, actor) as h:
            return await h.post("/chat/completions", json=body("policy seen"))

    assert asyncio.run(run()).status_code == 200


def _concurrent(live_stack, alice, payload, n=3, **headers):
    async def run():
        async with client(live_stack, alice, **headers) as h:
            return await asyncio.gather(*[read_stream(h, payload) for _ in range(n)])

    return asyncio.run(run())


def test_identical_deterministic_stateless_requests_share_one_call_without_being_asked(live_stack, alice, stub_llm):
    slow_answer(stub_llm, "deterministic")
    results = _concurrent(live_stack, alice, body("deterministic", stream=True, temperature=0), n=5)
    assert len(calls(stub_llm, "deterministic")) == 1, "temperature 0, no conversation, no header, no policy: one provider call"
    assert sorted(headers["sentinel-dedup"] for _, headers, _ in results) == ["leader"] + ["shared"] * 4
    assert all("".join(pieces).split() == ANSWER.split(" ") for _, _, pieces in results)
    slow_answer(stub_llm, "seeded")
    _concurrent(live_stack, alice, body("seeded", stream=True, temperature=1, seed=7))
    assert len(calls(stub_llm, "seeded")) == 1, "a seed asks for a reproducible answer too"
    entries = SpendEntry.objects.filter(tenant=alice.tenant)
    wait_for(lambda: entries.count() >= 8, timeout=10, message="every subscriber accounted")
    assert entries.count() == 8 and entries.filter(turn__isnull=True, cost=0).count() == 6, "each follower once, at no cost"


def test_sampling_requests_get_independent_calls_unless_asked(live_stack, alice, stub_llm):
    slow_answer(stub_llm, "sampling")
    results = _concurrent(live_stack, alice, body("sampling", stream=True, temperature=1))
    assert len(calls(stub_llm, "sampling")) == 3, "temperature 1 without an opt-in: each its own sample"
    assert all("sentinel-dedup" not in headers for _, headers, _ in results)
    _concurrent(live_stack, alice, body("sampling", stream=True))  # no temperature: OpenAI's default of 1
    assert len(calls(stub_llm, "sampling")) == 6


def test_dedup_off_and_the_policy_turn_the_default_off(live_stack, alice, stub_llm):
    slow_answer(stub_llm, "opted-out")
    _concurrent(live_stack, alice, body("opted-out", stream=True, temperature=0), **{"Sentinel-Dedup": "off"})
    assert len(calls(stub_llm, "opted-out")) == 3, "Sentinel-Dedup: off gives each request its own call"
    Policy.objects.create(agent=alice.agent, dedup_deterministic=False)
    _policy_seen(live_stack, alice)
    _concurrent(live_stack, alice, body("opted-out", stream=True, temperature=0))
    assert len(calls(stub_llm, "opted-out")) == 6, "the agent's policy turns the default off"
