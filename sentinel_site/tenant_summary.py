"""What a tenant has, on its admin page: keys, agents, conversations, turns, spend against its
budgets, open dead letters and approvals, runs and memories, each linked to its filtered list.

Shown only on a tenant's own page, which TenantAdmin already scoped to the operator's tenants.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from agents.models import Agent, Approval, ApprovalStatus, Conversation, DeadLetter, Turn
from budgets import spend
from budgets.models import ApiKey, Budget, SpendEntry, Tenant
from memory.models import Memory
from runs.models import Run
from sentinel_site import charts, money


def _list(model: type, tenant: Tenant, **filters: str) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    query = "&".join(f"{k}={v}" for k, v in {"tenant": str(tenant.pk), **filters}.items())
    return f"{url}?{query}"


def _by_status(queryset) -> list[tuple[str, int]]:
    return sorted(queryset.values_list("status").annotate(n=Count("id")).order_by())


def render(tenant: Tenant) -> SafeString:
    now = timezone.now()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month_spend = SpendEntry.objects.filter(tenant=tenant, created_at__gte=today.replace(day=1)).aggregate(
        month=Sum("cost"), today=Sum("cost", filter=Q(created_at__gte=today))
    )
    keys = ApiKey.objects.filter(tenant=tenant)
    budgets = []
    for budget in Budget.objects.filter(tenant=tenant).select_related("api_key"):
        window = budget.windows.filter(starts=spend.window_start(budget.period)).first()
        settled, held = (window.settled, window.reserved) if window else (Decimal(0), Decimal(0))
        budgets.append(
            {
                "name": str(budget),
                "url": reverse("admin:budgets_budget_change", args=[budget.pk]),
                "meter": charts.meter(settled, held, budget.limit, budget.soft_limit_share),
            }
        )
    rows = [
        ("API keys", f"{keys.filter(pk__in=ApiKey.objects.usable()).count()} usable of {keys.count()}", _list(ApiKey, tenant)),
        ("Agents", Agent.objects.filter(tenant=tenant, deleted_at__isnull=True).count(), _list(Agent, tenant)),
        ("Conversations", Conversation.objects.filter(tenant=tenant).count(), _list(Conversation, tenant)),
        ("Turns", _status_text(_by_status(Turn.objects.filter(tenant=tenant))), _list(Turn, tenant)),
        (
            "Turns in the last 24 hours",
            Turn.objects.filter(tenant=tenant, created_at__gte=now - timedelta(days=1)).count(),
            _list(Turn, tenant),
        ),
        ("Spent today (UTC)", money.money(month_spend["today"]), _list(SpendEntry, tenant)),
        ("Spent this month", money.money(month_spend["month"]), _list(SpendEntry, tenant)),
        (
            "Open dead letters",
            DeadLetter.objects.filter(tenant=tenant, redriven_at__isnull=True).count(),
            _list(DeadLetter, tenant, redriven_at__isnull="True"),
        ),
        (
            "Approvals waiting",
            Approval.objects.filter(tenant=tenant, status=ApprovalStatus.PENDING).count(),
            _list(Approval, tenant, status="pending"),
        ),
        ("Runs", _status_text(_by_status(Run.objects.filter(tenant=tenant))), _list(Run, tenant)),
        ("Memories", Memory.objects.filter(tenant=tenant).count(), _list(Memory, tenant)),
    ]
    return render_to_string("admin/sentinel/tenant_summary.html", {"rows": rows, "budgets": budgets, "tenant": tenant})


def _status_text(counts: list[tuple[str, int]]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts) or "none"
