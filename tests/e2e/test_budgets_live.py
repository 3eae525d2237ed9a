"""Budgets through the live stack: concurrency cannot overspend, turns settle their real cost."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from budgets.models import AuditEntry, Budget, BudgetWindow, Price, Reservation, SpendEntry
from tests.conftest import wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def priced(actor, *, limit, per_call_max):
    """A budget of `limit` USD where each request's worst case costs `per_call_max` USD."""
    Budget.objects.filter(tenant=actor.tenant).delete()
    Budget.objects.create(tenant=actor.tenant, period="daily", limit=Decimal(limit))
    # worst case = (context budget 2048 + max_tokens 952) tokens = 3,000 tokens at $per_call_max/3000 per token
    per_mtok = Decimal(per_call_max) * 1_000_000 / 3000
    Price.objects.create(model="stub-model", input_per_mtok=per_mtok, output_per_mtok=per_mtok)


def test_200_concurrent_requests_against_a_budget_for_10_admit_at_most_10(live_stack, alice, stub_llm):
    priced(alice, limit=10, per_call_max=1)
    stub_llm.script(*[Reply(report_usage=(2048, 952)) for _ in range(200)])  # every call really costs its worst case
    body = {"model": "helper", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 952}

    def call(_):
        with httpx.Client(
            base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}", "Prefer": "respond-async"}, timeout=60
        ) as h:
            return h.post("/chat/completions", json=body)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(call, range(200)))
    codes = [r.status_code for r in responses]
    assert codes.count(202) <= 10, "no more calls than the budget covers may be admitted"
    assert codes.count(202) + codes.count(503) == 200
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"]["type"] == "budget_exceeded" and int(refused.headers["Retry-After"]) > 0
    wait_for(lambda: not Reservation.objects.filter(status="held").exists(), timeout=60, message="turns to settle")
    window = BudgetWindow.objects.get(budget__tenant=alice.tenant)
    assert window.settled + window.reserved <= 10
    assert AuditEntry.objects.filter(action="budget.exceeded", tenant_id=alice.tenant.id).exists()


def test_a_turn_settles_its_actual_cost_and_a_failed_one_releases(live_stack, alice, stub_llm):
    priced(alice, limit=100, per_call_max=1)
    with httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}"}, timeout=60) as h:
        stub_llm.script(Reply(content="four words of answer"))
        ok = h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 952})
        assert ok.status_code == 200
        stub_llm.script(Reply(status=500))
        failed = h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": "again"}]})
        assert failed.status_code == 502
        turn = h.get(f"/turns/{ok.headers['sentinel-turn-id']}").json()
    entry = SpendEntry.objects.get()
    usage = ok.json()["usage"]
    assert (entry.prompt_tokens, entry.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert Decimal(turn["cost"]) == entry.cost > 0
    assert set(Reservation.objects.values_list("status", flat=True)) == {"settled", "released"}
    window = BudgetWindow.objects.get(budget__tenant=alice.tenant)
    assert window.settled == entry.cost and window.reserved == 0
    assert AuditEntry.objects.filter(action="turn.succeeded", target=turn["id"]).exists()
