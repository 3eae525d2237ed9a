"""Adaptive routing, run in-process against stub model servers: the agent's policy sends short
prompts to its simple group and long ones or ones with tools to its complex group; a latency budget
picks a deployment measured to fit it; past a budget's soft limit the cheapest deployment is called."""

from decimal import Decimal

import pytest

from agents.models import TurnStatus
from budgets.models import Budget, BudgetWindow, Price
from routing import selection
from routing.models import Deployment, Policy
from tests.agents.test_turn_runner import admit_turn, run
from tests.routing.helpers import group

pytestmark = pytest.mark.django_db
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def adaptive(alice, stub_llm, second_llm):
    """alice's agent: `cheap` (on the first stub) for simple prompts, `strong` (the second) for complex ones."""
    group(alice.tenant, "cheap", {"base_url": stub_llm.base_url})
    group(alice.tenant, "strong", {"base_url": second_llm.base_url})
    alice.agent.model = "cheap"
    alice.agent.save()
    Policy.objects.create(agent=alice.agent, adaptive=True, simple_group="cheap", complex_group="strong", complex_above_tokens=200)
    return alice


def first_route(turn):
    return turn.events.filter(kind="route").order_by("attempt", "seq").first().payload


def test_a_short_prompt_goes_to_the_simple_group_and_a_long_one_to_the_complex_group(adaptive, stub_llm, second_llm):
    short = admit_turn(adaptive, "hi")
    run(short)
    long = admit_turn(adaptive, "word " * 400)
    run(long)
    assert len(stub_llm.requests) == 1 and len(second_llm.requests) == 1
    assert first_route(short)["group"] == "cheap" and first_route(long)["group"] == "strong"
    assert first_route(long)["reason"].startswith("adaptive: ~"), "the event says which rule routed it"


def test_a_request_offering_tools_goes_to_the_complex_group(adaptive, stub_llm, second_llm):
    turn = admit_turn(adaptive, "hi", tools=[TOOL])
    run(turn)
    assert first_route(turn)["group"] == "strong" and "tools" in first_route(turn)["reason"]
    assert second_llm.requests[0]["tools"] == [TOOL]


def test_without_the_policy_the_agents_own_group_takes_every_prompt(adaptive, stub_llm, second_llm):
    Policy.objects.filter(agent=adaptive.agent).update(adaptive=False)
    Policy.objects.get(agent=adaptive.agent).save()
    run(admit_turn(adaptive, "word " * 400))
    assert len(stub_llm.requests) == 1 and second_llm.requests == []


def test_a_latency_budget_picks_the_deployment_measured_to_fit_it(alice, stub_llm, second_llm):
    made = group(alice.tenant, "pair", {"base_url": stub_llm.base_url, "weight": 1000}, {"base_url": second_llm.base_url, "weight": 1})
    alice.agent.model = "pair"
    alice.agent.save()
    slow, fast = (selection_spec(d) for d in made.deployments.order_by("name"))
    selection.ended(slow, "", latency_ms=900)
    selection.ended(fast, "", latency_ms=40)
    turn = admit_turn(alice, "hi", latency_budget_ms=100)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.SUCCEEDED
    assert stub_llm.requests == [] and len(second_llm.requests) == 1, "the heavier weight is too slow for the budget"
    assert first_route(turn)["reason"].startswith("within 100 ms")
    assert "latency_budget_ms" not in second_llm.requests[0], "the budget is the route's, never sent to the provider"


def test_with_no_deployment_fitting_the_budget_the_fastest_is_called(alice, stub_llm, second_llm):
    made = group(alice.tenant, "pair", {"base_url": stub_llm.base_url, "weight": 1000}, {"base_url": second_llm.base_url, "weight": 1})
    alice.agent.model = "pair"
    alice.agent.save()
    slow, fast = (selection_spec(d) for d in made.deployments.order_by("name"))
    selection.ended(slow, "", latency_ms=900)
    selection.ended(fast, "", latency_ms=300)
    turn = admit_turn(alice, "hi", latency_budget_ms=100)
    run(turn)
    assert len(second_llm.requests) == 1 and "the fastest" in first_route(turn)["reason"]


def test_past_the_soft_limit_the_cheapest_deployment_is_called(alice, stub_llm, second_llm):
    group(
        alice.tenant,
        "priced",
        {"base_url": stub_llm.base_url, "provider_model": "dear", "weight": 1000},
        {"base_url": second_llm.base_url, "provider_model": "thrifty", "weight": 1},
    )
    alice.agent.model = "priced"
    alice.agent.save()
    Policy.objects.create(agent=alice.agent, adaptive=True)
    Price.objects.create(model="dear", input_per_mtok=Decimal("10"), output_per_mtok=Decimal("10"))
    Price.objects.create(model="thrifty", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("1"))
    budget, _ = Budget.objects.update_or_create(
        tenant=alice.tenant, api_key=None, period="daily", defaults={"limit": Decimal("10"), "soft_limit_share": Decimal("0.5")}
    )
    run(admit_turn(alice, "under the soft limit"))
    assert len(stub_llm.requests) == 1, "below the soft limit the group's strategy (weight 1000) decides"
    BudgetWindow.objects.filter(budget=budget).update(settled=Decimal("6"))
    turn = admit_turn(alice, "past the soft limit")
    run(turn)
    assert len(second_llm.requests) == 1 and [r["model"] for r in second_llm.requests] == ["thrifty"]
    assert "cost-aware" in first_route(turn)["reason"]


def selection_spec(deployment: Deployment):
    from routing.groups import DeploymentSpec

    return DeploymentSpec(deployment.id, deployment.name, deployment.base_url, "", deployment.provider_model, deployment.weight, None, None)


@pytest.mark.parametrize("value", ["fast", "0", "-5", "600001"])
def test_a_bad_latency_budget_header_is_refused_in_openais_error_shape(alice, value):
    from django.test import Client

    response = Client().post(
        "/v1/chat/completions",
        {"model": "helper", "messages": [{"role": "user", "content": "hi"}]},
        content_type="application/json",
        HTTP_SENTINEL_LATENCY_BUDGET_MS=value,
        **alice.auth,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Sentinel-Latency-Budget-Ms" and response.json()["error"]["code"] == "invalid_value"
