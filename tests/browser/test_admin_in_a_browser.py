"""The admin driven in headless Chromium as an operator would: log in, open every page, revoke a
key, re-drive a dead letter and verify the audit log."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.utils import timezone

from agents.models import Conversation, DeadLetter, Turn, TurnEventRecord, TurnStatus
from budgets import spend
from budgets.models import ApiKey, AuditEntry, Budget, BudgetWindow, SpendEntry
from tests.conftest import make_actor
from tests.e2e.conftest import QUEUES

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long-browser-password-1"


@pytest.fixture
def deployment(transactional_db):
    """A tenant with traffic over the last hour, a month of spend, a budget, a key and a dead letter."""
    alice = make_actor("alice")
    now = timezone.now()
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent, title="support chat")
    turns = []
    for i in range(60):
        status = TurnStatus.FAILED if i % 9 == 0 else TurnStatus.SUCCEEDED
        turns.append(
            Turn.objects.create(
                tenant=alice.tenant,
                conversation=conversation,
                agent=alice.agent,
                api_key=alice.api_key,
                seq=i + 1,
                status=status,
                latency_ms=120 + (i * 37) % 400,
                created_at=now - timedelta(minutes=59 - i),
                cost=Decimal("0.0123"),
            )
        )
    story = turns[-1]
    for seq, (kind, extra) in enumerate(
        [
            ("queued", {}),
            ("claimed", {}),
            ("state", {"from_state": "idle", "to_state": "thinking"}),
            (
                "provider_request",
                {
                    "payload": {
                        "body": {"model": "stub-model", "messages": [{}, {}]},
                        "context": {"pieces": [{"kind": "system", "tokens": 9}, {"kind": "recent", "tokens": 21}], "total_tokens": 30},
                    }
                },
            ),
            (
                "provider_response",
                {"payload": {"content": "Hello from the stub.", "finish_reason": "stop", "usage": {"total_tokens": 34}, "latency_ms": 88}},
            ),
            ("state", {"from_state": "reflecting", "to_state": "idle"}),
            ("completed", {"payload": {"cost": "0.0123"}}),
        ],
        1,
    ):
        TurnEventRecord.objects.create(turn=story, seq=seq, attempt=1, kind=kind, created_at=now - timedelta(seconds=8 - seq), **extra)
    for day in range(20):
        SpendEntry.objects.create(
            tenant=alice.tenant, api_key=alice.api_key, turn=story if day == 0 else None, model="stub-model",
            cost=Decimal("0.4") + Decimal(day % 5) / 10, prompt_tokens=900, completion_tokens=300, created_at=now - timedelta(days=day),
        )  # fmt: skip
    budget, _ = Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="monthly", defaults={"limit": Decimal("25")})
    BudgetWindow.objects.update_or_create(
        budget=budget, starts=spend.window_start("monthly"), defaults={"settled": Decimal("14.2"), "reserved": Decimal("0.6")}
    )
    letter = DeadLetter.objects.create(
        tenant=alice.tenant, turn=turns[0], reason="zombie", attempts=3, last_error={"message": "worker lost"}
    )
    spare, _ = ApiKey.issue(alice.tenant, role="viewer", name="leaked-laptop-key")
    User.objects.create_superuser("root", password=PASSWORD)
    yield {"alice": alice, "story": story, "budget": budget, "letter": letter, "spare": spare}
    # The re-driven turn went to the broker with no worker here to run it.
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(*QUEUES)


def log_in(page, live_server):
    page.goto(f"{live_server.url}/admin/")
    assert "Sentinel" in page.title()
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "Control plane" in page.content()


def run_action(page, action: str, row_text: str) -> str:
    """Tick the changelist row that shows row_text, run the action, and return the message shown."""
    page.locator("#result_list tbody tr", has_text=row_text).first.locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    return page.locator("ul.messagelist").inner_text()


def test_an_operator_drives_the_admin_in_a_browser(deployment, page, live_server, screenshots):
    log_in(page, live_server)
    page.screenshot(path=screenshots / "index.png", full_page=True)

    # Every admin page answers with the Sentinel header.
    pages = ["/admin/overview/"] + [f"/admin/{m._meta.app_label}/{m._meta.model_name}/" for m in admin.site._registry]
    for path in pages:
        response = page.goto(live_server.url + path)
        assert response is not None and response.status == 200, f"{path} answered {response and response.status}"
        assert page.locator("#site-name").inner_text().startswith("Sentinel"), path

    page.goto(f"{live_server.url}/admin/overview/")
    assert page.locator("svg.sentinel-chart").count() == 4
    assert page.locator("#card-dead-letters .value").inner_text() == "1"
    assert re.fullmatch(r"\$\d+\.\d\d", page.locator("#card-spend-month .value").inner_text())
    page.screenshot(path=screenshots / "overview.png", full_page=True)

    story = deployment["story"]
    page.goto(f"{live_server.url}/admin/agents/turn/{story.pk}/change/")
    timeline = page.locator("#turn-timeline")
    assert "Provider request: stub-model with 2 messages" in timeline.inner_text()
    assert "Spent $" in timeline.inner_text()
    page.screenshot(path=screenshots / "turn-timeline.png", full_page=True)
    timeline.get_by_role("link", name="Conversation").click()
    assert "support chat" in page.content()

    page.goto(f"{live_server.url}/admin/budgets/budget/{deployment['budget'].pk}/change/")
    assert "$14.20 spent + $0.60 held of $25 (59%)" in page.locator(".sentinel-meter").first.inner_text()
    page.screenshot(path=screenshots / "budget.png", full_page=True)

    page.goto(f"{live_server.url}/admin/budgets/tenant/{deployment['alice'].tenant.pk}/change/")
    assert "Open dead letters" in page.locator("#tenant-summary").inner_text()
    page.screenshot(path=screenshots / "tenant.png", full_page=True)

    # Revoke the leaked key.
    spare = deployment["spare"]
    page.goto(f"{live_server.url}/admin/budgets/apikey/")
    assert "Revoked 1 key(s)." in run_action(page, "revoke", "leaked-laptop-key")
    spare.refresh_from_db()
    assert spare.revoked_at is not None
    page.screenshot(path=screenshots / "key-revoked.png", full_page=True)

    # Re-drive the dead letter.
    letter = deployment["letter"]
    page.goto(f"{live_server.url}/admin/agents/deadletter/")
    assert "Re-driven 1 turn(s)." in run_action(page, "redrive", "zombie")
    letter.refresh_from_db()
    assert letter.redriven_at is not None

    # Both are in the audit log, and the chain verifies.
    page.goto(f"{live_server.url}/admin/budgets/auditentry/")
    listed = page.locator("#result_list").inner_text()
    assert "key.revoked" in listed and "turn.redriven" in listed
    newest = AuditEntry.objects.order_by("-seq").first()
    assert "The audit chain is intact" in run_action(page, "verify_chain", newest.action)
    page.screenshot(path=screenshots / "audit-verified.png", full_page=True)


def test_an_operator_bound_to_one_tenant_sees_only_it_in_the_browser(deployment, page, live_server, screenshots):
    from budgets.admin_roles import sync_groups
    from tests.budgets.test_admin import staff

    sync_groups()
    bob = make_actor("bob")
    SpendEntry.objects.create(tenant=bob.tenant, api_key=bob.api_key, model="bobs-secret-model", cost=Decimal("99"))
    ada = staff("ada", "admin", deployment["alice"].tenant)
    ada.set_password(PASSWORD)
    ada.save()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.get_by_role("link", name="Overview").click()
    overview = page.locator("#sentinel-overview").inner_text()
    assert "Your tenants only" in overview and "alice" in overview
    assert "bob" not in overview and "$99" not in overview and "Queue depth" not in overview
    page.screenshot(path=screenshots / "overview-operator.png", full_page=True)
    response = page.goto(f"{live_server.url}/admin/budgets/tenant/{bob.tenant.pk}/change/")
    assert response is not None and response.status == 404
