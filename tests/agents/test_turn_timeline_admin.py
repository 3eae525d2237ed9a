"""A turn's admin page tells its story: states, provider attempts with their context pieces,
spend and audit entries in time order, with links to its conversation and its run."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import Conversation, Turn, TurnEventRecord, TurnStatus
from budgets import audit
from budgets.admin_roles import sync_groups
from budgets.models import Reservation, SpendEntry
from runs.models import Run, Step
from tests.budgets.test_admin import logged_in, staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def story(alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    turn = Turn.objects.create(
        tenant=alice.tenant, conversation=conversation, agent=alice.agent, seq=1, status=TurnStatus.SUCCEEDED, cost=Decimal("0.0123")
    )
    start = timezone.now() - timedelta(seconds=10)

    def event(seq, kind, at, **fields):
        TurnEventRecord.objects.create(turn=turn, seq=seq, attempt=1, kind=kind, created_at=start + timedelta(seconds=at), **fields)

    event(1, "queued", 0)
    event(2, "claimed", 1)
    event(3, "state", 2, from_state="idle", to_state="thinking")
    context = {"pieces": [{"kind": "system", "tokens": 7}, {"kind": "recalled", "tokens": 30, "score": 0.91}], "total_tokens": 37}
    event(4, "provider_request", 3, payload={"endpoint": "x", "body": {"model": "gpt-x", "messages": [{}, {}]}, "context": context})
    event(5, "provider_retry", 4, payload={"message": "upstream said 503"})
    usage = {"total_tokens": 42}
    event(6, "provider_response", 6, payload={"content": "the answer text", "finish_reason": "stop", "usage": usage, "latency_ms": 120})
    event(7, "completed", 8, payload={"cost": "0.0123"})
    Reservation.objects.create(
        tenant=alice.tenant, turn=turn, amount=Decimal("0.5"), expires_at=timezone.now(), created_at=start + timedelta(seconds=2.5)
    )
    spent_at = start + timedelta(seconds=7)
    SpendEntry.objects.create(tenant=alice.tenant, turn=turn, model="gpt-x", cost=Decimal("0.0123"), created_at=spent_at)
    audit.record("turn.cancel_requested", actor="user:root", tenant_id=alice.tenant.id, target=str(turn.id))
    run = Run.objects.create(tenant=alice.tenant, pattern="parallel", input="x")
    Step.objects.create(tenant=alice.tenant, run=run, key="a", position=0, kind="agent", agent=alice.agent, turn=turn)
    return turn, run


def test_the_turn_page_shows_its_events_in_time_order(admin_client, story):
    turn, run = story
    response = admin_client.get(reverse("admin:agents_turn_change", args=[turn.pk]))
    assert response.status_code == 200
    titles = [entry.title for entry in response.context["timeline"]]
    assert titles == [
        "Queued",
        "Claimed by a worker (attempt 1)",
        "State idle → thinking",
        "Reserved $0.50 of budget (held)",
        "Provider request: gpt-x with 2 messages",
        "Provider retry",
        "Provider answered (stop, 42 tokens, 120 ms)",
        "Spent $0.01 on gpt-x",
        "Completed, cost $0.01",
        "Audit: turn.cancel_requested by user:root",
    ]
    html = response.content.decode()
    assert 'id="turn-timeline"' in html
    cost = re.search(r'field-cost_text.*?<div class="readonly">(.*?)</div>', html, flags=re.S)
    assert cost is not None and cost.group(1) == "$0.01", "the turn's cost reads as money"
    assert "context: 2 pieces, 37 tokens" in html and "recalled: 30 tokens, score 0.91" in html
    assert reverse("admin:agents_conversation_change", args=[turn.conversation_id]) in html
    assert reverse("admin:runs_run_change", args=[run.pk]) in html


def test_another_tenants_turn_page_is_a_404_for_an_operator(story, bob):
    sync_groups()
    turn, _ = story
    bobs_operator = logged_in(staff("bo", "admin", bob.tenant))
    assert bobs_operator.get(reverse("admin:agents_turn_change", args=[turn.pk])).status_code == 404
