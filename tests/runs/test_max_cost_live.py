"""max_cost: the run stops with budget_exceeded before the step whose worst case would cross it
(finished steps' costs, plus running steps' worst cases, plus the next step's worst case)."""

from decimal import Decimal

import pytest

from agents.models import Turn
from budgets.models import Price
from runs.models import Run
from tests.runs.conftest import api, make_agents

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def priced(db):
    """$1000 per million tokens in and out: a step's worst case is about (context budget + max_tokens) / 1000 dollars."""
    return Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))


def test_a_pipeline_stops_before_the_step_that_would_cross_max_cost(live, alice, priced):
    small = {"context_budget": 256, "default_params": {"max_tokens": 16}}
    make_agents(alice.tenant, ["a", "b"], **small)
    make_agents(alice.tenant, ["c"], context_budget=256, default_params={"max_tokens": 4000})  # worst case above $4
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["a", "b", "c"], "input": "hi", "max_cost": "1.00"}).json()
    assert run["status"] == "failed", run
    error = run["error"]
    assert error["code"] == "budget_exceeded" and error["step"] == "c" and "Step `c`" in error["message"], error
    assert Decimal(error["worst_case"]) > Decimal("4") and Decimal(error["spent"]) + Decimal(error["worst_case"]) > Decimal("1")
    by_id = {s["id"]: s for s in run["steps"]}
    assert by_id["a"]["state"] == by_id["b"]["state"] == "succeeded" and Decimal(by_id["a"]["cost"]) > 0
    assert by_id["c"]["state"] == "skipped" and by_id["c"]["turn"] is None, "the step that would cross it never got a turn"
    assert Turn.objects.filter(tenant=alice.tenant, idempotency_key__startswith=f"run:{run['id']}:").count() == 2
    assert Decimal(run["cost"]) == Decimal(by_id["a"]["cost"]) + Decimal(by_id["b"]["cost"]) <= Decimal("1")


def test_parallel_steps_count_each_others_worst_case_while_they_run(live, alice, priced):
    make_agents(alice.tenant, ["p1", "p2", "p3"], context_budget=256, default_params={"max_tokens": 200})  # ~$0.46 each at worst
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "parallel", "agents": ["p1", "p2", "p3"], "input": "hi", "max_cost": "1.00"}).json()
    assert run["status"] == "failed" and run["error"]["step"] == "p3", "two running at their worst leave no room for a third"
    assert Decimal(run["error"]["held"]) > 0
    assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded", "skipped"]


def test_a_run_within_max_cost_succeeds(live, alice, priced):
    make_agents(alice.tenant, ["cheap"], context_budget=256, default_params={"max_tokens": 16})
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["cheap", "cheap"], "input": "hi", "max_cost": "1"}).json()
    assert run["status"] == "succeeded" and Decimal(run["cost"]) > 0
    assert Run.objects.get(id=run["id"]).cost == sum(Turn.objects.get(id=s["turn"]).cost for s in run["steps"])


def test_a_timed_out_attempt_still_counts_so_its_retry_cannot_cross_max_cost(live, alice, priced, stub_llm):
    from runs.models import Step
    from tests.conftest import wait_for
    from tests.stub_llm import Reply

    make_agents(alice.tenant, ["slowpoke"], context_budget=256, default_params={"max_tokens": 200})  # ~$0.46 at worst
    stub_llm.script(Reply(content="late", delay=2.5))
    steps = [{"id": "s", "kind": "agent", "agent": "slowpoke", "timeout_seconds": 1, "retries": 1}]
    with api(live, alice) as client:
        created = client.post("/runs", json={"pattern": "workflow", "input": "hi", "workflow": {"steps": steps}, "max_cost": "0.8"}).json()
    wait_for(lambda: Run.objects.get(id=created["id"]).is_finished, timeout=30, interval=0.2, message="the run to stop")
    run = Run.objects.get(id=created["id"])
    assert run.status == "failed" and run.error["code"] == "budget_exceeded" and run.error["step"] == "s", run.error
    step = Step.objects.get(run=run)
    assert step.attempt == 1 and step.abandoned_cost > 0, "the first turn may still spend: the retry would cross max_cost"
    assert Turn.objects.filter(tenant=alice.tenant, idempotency_key__startswith=f"run:{run.id}:").count() == 1


def test_a_run_that_would_exceed_the_tenants_budget_stops_naming_the_step(live, alice, priced):
    from budgets.models import Budget

    Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="daily", defaults={"limit": Decimal("2")})
    make_agents(alice.tenant, ["small"], context_budget=256, default_params={"max_tokens": 16})  # ~$0.3 at worst
    make_agents(alice.tenant, ["large"], context_budget=256, default_params={"max_tokens": 4000})  # above $4 at worst
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["small", "large"], "input": "hi"}).json()
    assert run["status"] == "failed", run
    assert run["error"]["type"] == "budget_exceeded" and run["error"]["step"] == "large" and "Step `large`" in run["error"]["message"]
    by_id = {s["id"]: s for s in run["steps"]}
    assert by_id["small"]["state"] == "succeeded" and by_id["large"]["state"] == "failed" and by_id["large"]["turn"] is None
    assert Turn.objects.filter(tenant=alice.tenant, idempotency_key__startswith=f"run:{run['id']}:").count() == 1
