"""Ways spend could escape a budget or vanish from the ledger, each closed (issue 11.6 and 11.15)."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from agents import runner, supervisor
from agents.models import Turn, TurnEventRecord, TurnStatus
from budgets import spend
from budgets.models import ApiKey, Budget, BudgetWindow, Price, Reservation, SpendEntry
from memory import dreamer
from memory.models import ConsolidationRun
from sentinel_site import config_cache
from tests.agents.test_turn_runner import admit_turn
from tests.memory.helpers import FILLER, conversation_with
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"


def chat(actor, body=None, **extra):
    body = {"model": actor.agent.name, "messages": [{"role": "user", "content": "hi"}], **(body or {})}
    return Client().post(CHAT, json.dumps(body), content_type="application/json", HTTP_PREFER="respond-async", **actor.auth, **extra)


def price(model="stub-model", tenant=None, inp="1", out="2"):
    Price.objects.create(tenant=tenant, model=model, input_per_mtok=Decimal(inp), output_per_mtok=Decimal(out))
    config_cache.clear()


def window(budget):
    return BudgetWindow.objects.get(budget=budget, starts=spend.window_start(budget.period))


@pytest.fixture
def refuse_unpriced(settings):
    settings.SENTINEL = {**settings.SENTINEL, "UNPRICED_MODELS": "refuse"}
    config_cache.clear()


# --- prices ------------------------------------------------------------------------------------------
def test_an_unpriced_model_the_deployment_pays_for_is_refused_and_nothing_is_written(alice, refuse_unpriced):
    response = chat(alice)
    assert response.status_code == 400, response.content
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("model_not_priced", "model")
    assert not Turn.objects.exists() and not Reservation.objects.exists()


def test_an_unpriced_model_on_the_tenants_own_key_is_the_tenants_business(alice, refuse_unpriced):
    alice.agent.provider_api_key = "sk-alice"
    alice.agent.save()
    assert chat(alice).status_code == 202


def test_a_priced_model_is_admitted_under_refuse(alice, refuse_unpriced):
    price()
    assert chat(alice).status_code == 202


def test_a_tenant_may_not_price_a_model_below_the_global_price(alice, settings):
    admin = alice.api_key
    ApiKey.objects.filter(id=admin.id).update(role="admin")
    price(inp="3", out="6")
    body = {"prices": [{"model": "stub-model", "input_per_mtok": "0", "output_per_mtok": "0"}]}
    refused = Client().put("/v1/pricing", body, content_type="application/json", **alice.auth)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "price_below_global"
    assert not Price.objects.filter(tenant=alice.tenant).exists()
    settings.SENTINEL = {**settings.SENTINEL, "TENANT_PRICES_BELOW_GLOBAL": True}
    assert Client().put("/v1/pricing", body, content_type="application/json", **alice.auth).status_code == 200


def test_a_tenant_may_not_price_a_model_the_operator_has_not_priced_under_refuse(alice, refuse_unpriced):
    ApiKey.objects.filter(id=alice.api_key.id).update(role="admin")
    body = {"prices": [{"model": "stub-model", "input_per_mtok": "0", "output_per_mtok": "0"}]}
    refused = Client().put("/v1/pricing", body, content_type="application/json", **alice.auth)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_priced"


def test_a_tenant_price_row_written_before_the_floor_never_undercuts_the_global(alice):
    price(inp="3", out="6")
    price(tenant=alice.tenant, inp="0", out="0")
    assert spend.cost(alice.tenant.id, "stub-model", "e", 1_000_000, 1_000_000) == Decimal(9)


# --- the worst case reserved ------------------------------------------------------------------------
def reserved_for(actor, **body):
    assert chat(actor, body).status_code == 202
    return Reservation.objects.order_by("-created_at").first().amount


def test_tools_and_a_response_format_are_part_of_the_worst_case(alice):
    price(inp="1000", out="0")
    plain = reserved_for(alice)
    tool = {"type": "function", "function": {"name": "lookup", "description": "x" * 6000, "parameters": {"type": "object"}}}
    with_tools = reserved_for(alice, tools=[tool])
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"description": "y" * 6000}}}
    with_format = reserved_for(alice, response_format=schema)
    assert with_tools >= plain + Decimal("0.002") and with_format >= plain + Decimal("0.002"), (plain, with_tools, with_format)


def test_with_both_output_bounds_the_larger_is_reserved(alice):
    price(inp="0", out="1000")
    small = reserved_for(alice, max_tokens=10)
    both = reserved_for(alice, max_tokens=10, max_completion_tokens=5000)
    assert both == Decimal("5.00000000") and small == Decimal("0.01000000")


@pytest.mark.parametrize("value", [10**20, 1e20, 16385])
def test_an_output_bound_beyond_what_a_model_can_produce_is_a_400(alice, value):
    for field in ("max_tokens", "max_completion_tokens"):
        response = chat(alice, {field: value})
        assert response.status_code == 400 and response.json()["error"]["param"] == field, response.content
    assert not Turn.objects.exists()


def test_an_agents_default_params_are_checked_like_a_request(alice):
    client = Client()
    bad = client.patch(f"/v1/agents/{alice.agent.id}", {"default_params": {"max_tokens": 10**20}}, content_type="application/json",
                       **alice.auth)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "default_params.max_tokens"
    unknown = client.patch(f"/v1/agents/{alice.agent.id}", {"default_params": {"api_key": "x"}}, content_type="application/json",
                           **alice.auth)  # fmt: skip
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "default_params.api_key"
    good = client.patch(f"/v1/agents/{alice.agent.id}", {"default_params": {"max_tokens": 64, "temperature": 0}},
                        content_type="application/json", **alice.auth)  # fmt: skip
    assert good.status_code == 200 and good.json()["default_params"] == {"max_tokens": 64, "temperature": 0}


# --- spend that was paid is on the ledger ------------------------------------------------------------
def test_a_reservation_that_expired_during_the_call_is_still_settled(alice):
    budget = Budget.objects.get(tenant=alice.tenant, period="daily", api_key=None)
    held = spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("3"))
    Reservation.objects.filter(id=held.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert spend.expire_stale() == 1
    assert spend.settle(held, model="m", prompt_tokens=10, completion_tokens=5, actual=Decimal("1.5"))
    assert (window(budget).settled, window(budget).reserved) == (Decimal("1.5"), 0)
    assert SpendEntry.objects.get(reservation=held).cost == Decimal("1.5")
    assert not spend.settle(held, model="m", prompt_tokens=10, completion_tokens=5, actual=Decimal("1.5")), "once only"
    assert spend.reconcile() == []


def test_an_attempt_that_lost_its_claim_after_the_call_still_pays(alice, stub_llm):
    price(inp="1000", out="1000")
    turn = admit_turn(alice)
    first = runner.claim(turn.id)
    Turn.objects.filter(id=turn.id).update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    supervisor.sweep()  # taken back while the first attempt is still talking to the provider
    second = runner.claim(turn.id)
    with pytest.raises(runner.LostClaim):
        runner.execute(first)
    runner.execute(second)
    assert len(stub_llm.requests) == 2
    entries = SpendEntry.objects.filter(turn_id=turn.id)
    assert entries.count() == 2 and all(entry.cost > 0 for entry in entries), "both calls were paid for"
    assert Turn.objects.get(id=turn.id).status == TurnStatus.SUCCEEDED
    assert not Reservation.objects.filter(turn_id=turn.id, status="held").exists()
    assert spend.reconcile() == []


# --- deleting an agent -------------------------------------------------------------------------------
def test_an_agent_with_unfinished_turns_cannot_be_deleted_and_nothing_is_cascaded(alice, stub_llm):
    turn = admit_turn(alice)
    client = Client()
    busy = client.delete(f"/v1/agents/{alice.agent.id}", **alice.auth)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "agent_busy"
    runner.execute(runner.claim(turn.id))
    assert client.delete(f"/v1/agents/{alice.agent.id}", **alice.auth).status_code == 204
    assert TurnEventRecord.objects.filter(turn=turn).count() > 0 and Turn.objects.filter(id=turn.id).exists()
    assert SpendEntry.objects.filter(turn_id=turn.id).exists()
    assert chat(alice).status_code == 404, "a deleted agent answers no more"
    assert client.post("/v1/agents", {"name": alice.agent.name}, content_type="application/json", **alice.auth).status_code == 201


# --- rotation ----------------------------------------------------------------------------------------
def test_a_rotated_key_spends_against_the_old_keys_budget(alice):
    ApiKey.objects.filter(id=alice.api_key.id).update(role="admin")
    price(inp="0", out="1000")
    per_key = Budget.objects.create(tenant=alice.tenant, api_key=alice.api_key, period="daily", limit=Decimal("5"))
    assert chat(alice, {"max_tokens": 4000}).status_code == 202  # $4 held of the key's $5
    rotated = Client().post(f"/v1/keys/{alice.api_key.key_id}/rotate", **alice.auth).json()
    new_auth = {"HTTP_AUTHORIZATION": f"Bearer {rotated['key']}"}
    body = {"model": alice.agent.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    refused = Client().post(CHAT, json.dumps(body), content_type="application/json", HTTP_PREFER="respond-async", **new_auth)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "budget_exceeded", refused.content
    assert window(per_key).reserved == Decimal("4")


# --- the Dreamer -------------------------------------------------------------------------------------
@pytest.fixture
def span_tokens(settings):
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_SPAN_TOKENS": 150}


def long_conversation(actor, n=60):
    return conversation_with(actor, [FILLER[i % len(FILLER)] + f" ({i})" for i in range(n)], consolidation_threshold=300,
                             short_term_messages=6)  # fmt: skip


def test_consolidation_is_reserved_settled_and_on_the_ledger(alice, stub_llm, span_tokens):
    price(inp="1000", out="1000")
    conversation = long_conversation(alice)
    stub_llm.script(*[Reply(content="- a summary", report_usage=(100, 10)) for _ in range(20)])
    runs = dreamer.consolidate(conversation.id, force=True)
    assert runs and runs[0].status == "succeeded"
    entries = SpendEntry.objects.filter(tenant=alice.tenant, turn__isnull=True)
    assert entries.count() == len(runs) and entries.first().cost == Decimal("0.11")
    assert not Reservation.objects.filter(status="held").exists() and spend.reconcile() == []


def test_a_tenant_over_budget_does_not_consolidate(alice, stub_llm, span_tokens):
    price(inp="1000", out="1000")
    Budget.objects.filter(tenant=alice.tenant).update(limit=Decimal("0.01"))
    conversation = long_conversation(alice)
    runs = dreamer.consolidate(conversation.id, force=True)
    assert [(run.status, run.error["code"]) for run in runs] == [("failed", "budget_exceeded")]
    assert stub_llm.requests == [], "no call without room in the budget"


def test_one_tenants_backlog_cannot_use_up_a_dreamer_run(alice, bob, stub_llm, span_tokens, settings):
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_MAX_TOKENS_PER_TENANT": 1000, "DREAMER_MAX_TOKENS_PER_RUN": 100_000}
    for _ in range(3):
        long_conversation(alice)
    long_conversation(bob)
    stub_llm.script(*[Reply(content="- s", report_usage=(400, 100)) for _ in range(40)])
    dreamer.dream()
    spent = {
        actor.tenant.name: sum(r.prompt_tokens + r.completion_tokens for r in ConsolidationRun.objects.filter(tenant=actor.tenant))
        for actor in (alice, bob)
    }
    assert 1000 <= spent["alice"] < 1500, spent
    assert spent["bob"] > 0, "the other tenant still gets its share of the run"
