"""A run's cost is everything it spent (the ledger's entries for every turn it admitted, a retried or
timed-out attempt's and a turn that ends after the run did, too), and a cancelled run starts no step
after the cancel: its pending steps end cancelled and never get a turn, and its running turn is
cancelled as a turn (agents.control)."""

import time
from decimal import Decimal

import pytest
from django.db.models import Sum

from agents.models import Turn
from budgets.models import Price, SpendEntry
from runs.models import Run, RunEvent, Step
from tests.conftest import wait_for
from tests.runs.conftest import api, make_agents
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def priced(db):
    return Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))


def run_turns(run_id) -> list[Turn]:
    return list(Turn.objects.filter(idempotency_key__startswith=f"run:{run_id}:"))


def ledger(turns: list[Turn]) -> Decimal:
    return SpendEntry.objects.filter(turn__in=turns).aggregate(total=Sum("cost"))["total"] or Decimal(0)


def test_a_retried_attempts_spend_counts_in_the_runs_cost(live, alice, priced, stub_llm):
    make_agents(alice.tenant, ["slowpoke"], context_budget=256, default_params={"max_tokens": 16})
    stub_llm.script(Reply(content="late", delay=2.5), Reply(content="on time"))
    steps = [{"id": "s", "kind": "agent", "agent": "slowpoke", "timeout_seconds": 1, "retries": 1}]
    with api(live, alice) as client:
        created = client.post("/runs", json={"pattern": "workflow", "input": "hi", "workflow": {"steps": steps}})
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    wait_for(lambda: Run.objects.get(id=run_id).is_finished, timeout=30, interval=0.2, message="the run to end")
    wait_for(lambda: all(t.is_finished for t in run_turns(run_id)), timeout=30, interval=0.2, message="the late turn to end")
    turns = run_turns(run_id)
    step = Step.objects.get(run_id=run_id)
    assert len(turns) == 2 and step.state == "succeeded" and step.output == "on time"
    spent = ledger(turns)
    assert spent > step.cost > 0, "both attempts were paid for, not only the one whose answer was used"
    wait_for(lambda: Run.objects.get(id=run_id).cost == spent, timeout=15, interval=0.2, message="the run's cost to count the late turn")


def test_a_cancelled_run_starts_no_step_and_cancels_its_running_turn(live, alice, priced, stub_llm):
    make_agents(alice.tenant, ["a", "b", "c"], context_budget=256, default_params={"max_tokens": 16})
    stub_llm.script(Reply(content="a slow answer, word by word", chunk_delay=1))
    with api(live, alice) as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["a", "b", "c"], "input": "hi"}).json()
        wait_for(lambda: any(t.status == "running" for t in run_turns(run["id"])), timeout=15, interval=0.05, message="the first turn")
        cancelled = client.post(f"/runs/{run['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled"
        assert [(s["id"], s["state"]) for s in body["steps"]] == [("a", "cancelled"), ("b", "cancelled"), ("c", "cancelled")]
        events = client.get(f"/runs/{run['id']}/events").json()["data"]
    (stopped,) = [e["payload"]["turns"] for e in events if e["kind"] == "turns_cancelled"]
    assert stopped == [body["steps"][0]["turn"]], "the turn that was running is named"

    (turn,) = run_turns(run["id"])
    wait_for(lambda: Turn.objects.get(id=turn.id).is_finished, timeout=15, interval=0.1, message="the running turn to stop")
    assert Turn.objects.get(id=turn.id).status == "cancelled", "the run's cancel cancelled its turn too"
    wait_for(lambda: Run.objects.get(id=run["id"]).cost == ledger([turn]), timeout=15, interval=0.2, message="the run's cost to count it")
    time.sleep(2)  # the turn's end woke the dispatcher: it starts nothing for a cancelled run
    assert len(run_turns(run["id"])) == 1, "no step started after the cancel"
    assert set(Step.objects.filter(run_id=run["id"]).values_list("state", flat=True)) == {"cancelled"}
    assert Run.objects.get(id=run["id"]).status == "cancelled"
    assert RunEvent.objects.filter(run_id=run["id"], kind__in=["run_cancelled"]).count() == 1
