"""A tenant's admin page summarises what the tenant has, each count linked to its filtered list."""

from decimal import Decimal

import pytest
from django.urls import reverse

from agents.models import Conversation, DeadLetter, Turn, TurnStatus
from budgets import spend
from budgets.admin_roles import sync_groups
from budgets.models import ApiKey, Budget, BudgetWindow, SpendEntry
from tests.budgets.test_admin import logged_in, staff

pytestmark = pytest.mark.django_db


def test_the_tenant_page_summarises_the_tenant(admin_client, alice, bob):
    ApiKey.issue(alice.tenant, role="viewer", name="spare")[0].revoke(actor="user:root")
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    turn = Turn.objects.create(tenant=alice.tenant, conversation=conversation, agent=alice.agent, seq=1, status=TurnStatus.FAILED)
    DeadLetter.objects.create(tenant=alice.tenant, turn=turn, reason="zombie", attempts=3)
    SpendEntry.objects.create(tenant=alice.tenant, model="m", cost=Decimal("3.5"))
    SpendEntry.objects.create(tenant=bob.tenant, model="m", cost=Decimal("99"))
    budget = Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="monthly", defaults=dict(limit=Decimal("10")))[0]
    BudgetWindow.objects.create(budget=budget, starts=spend.window_start("monthly"), settled=Decimal("3.5"))
    response = admin_client.get(reverse("admin:budgets_tenant_change", args=[alice.tenant.pk]))
    html = response.content.decode()
    assert 'id="tenant-summary"' in html
    assert "1 usable of 2" in html and "1 failed" in html
    assert 'Spent this month</th><td class="num"><a' in html and "$3.50" in html and "$99" not in html
    assert f'?tenant={alice.tenant.pk}&amp;redriven_at__isnull=True">1</a>' in html
    assert "$3.50 spent + $0.00 held of $10 (35%)" in html


def test_an_operator_cannot_open_another_tenants_summary(alice, bob):
    sync_groups()
    ada = logged_in(staff("ada", "viewer", alice.tenant))
    assert ada.get(reverse("admin:budgets_tenant_change", args=[alice.tenant.pk])).status_code == 200
    assert ada.get(reverse("admin:budgets_tenant_change", args=[bob.tenant.pk])).status_code == 404
