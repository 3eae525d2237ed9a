"""The admin's overview page: traffic, errors, latency, spend, dead letters, breakers and queues.

Drawn from the turns table, the spend ledger and the stores the metrics module reads, scoped like
every admin page (sentinel_site/admin.py): an operator sees their tenants' numbers only, and the
deployment-wide ones (Celery queue depth, breakers of endpoints none of their agents use) are for
superusers. Charts are inline SVG (sentinel_site/charts.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet, Sum
from django.db.models.functions import TruncDate, TruncMinute
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from agents.models import Agent, DeadLetter, Turn, TurnStatus
from budgets.models import SpendEntry
from sentinel_site import charts, metrics, money
from sentinel_site.admin import scope_queryset, visible_tenant_ids
from sentinel_site.redis import broker_client

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)  # traffic, errors and latency are the last hour's
RATE_WINDOW = timedelta(minutes=5)  # turns/s is the last five minutes'
LATENCY_BUCKET_MINUTES = 5
SPEND_DAYS = 30
QUEUES = ("turns", "memory", "maintenance")
FINISHED = (TurnStatus.SUCCEEDED, TurnStatus.FAILED, TurnStatus.CANCELLED, TurnStatus.INTERRUPTED)


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont: the value below which `fraction` of the rows fall."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass
class SpendRow:
    name: str
    today: Decimal
    month: Decimal

    @property
    def today_text(self) -> str:
        return money.money(self.today)

    @property
    def month_text(self) -> str:
        return money.money(self.month)


def traffic(turns: QuerySet[Turn], now: datetime) -> dict[str, Any]:
    """Turns/s, error rate and latency percentiles of the last hour, with per-minute charts."""
    recent = turns.filter(created_at__gte=now - WINDOW)
    totals = recent.aggregate(
        finished=Count("id", filter=Q(status__in=FINISHED)),
        failed=Count("id", filter=Q(status=TurnStatus.FAILED)),
        last_minutes=Count("id", filter=Q(created_at__gte=now - RATE_WINDOW)),
        p50=Percentile("latency_ms", 0.5),
        p99=Percentile("latency_ms", 0.99),
    )
    per_minute = {
        row["minute"]: row
        for row in recent.annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("id"), failed=Count("id", filter=Q(status=TurnStatus.FAILED)))
    }
    minutes = [(now - WINDOW).replace(second=0, microsecond=0) + timedelta(minutes=i + 1) for i in range(60)]
    local = timezone.localtime
    turns_chart = charts.bar_chart(
        [(f"{local(m):%H:%M}", per_minute.get(m, {}).get("n", 0)) for m in minutes], title="Turns per minute, last hour"
    )
    errors_chart = charts.bar_chart(
        [(f"{local(m):%H:%M}", per_minute.get(m, {}).get("failed", 0)) for m in minutes], title="Failed turns per minute, last hour"
    )
    finished = totals["finished"] or 0
    return {
        "turns_per_second": totals["last_minutes"] / RATE_WINDOW.total_seconds(),
        "turns_last_hour": recent.count() if per_minute else 0,
        "error_rate": (totals["failed"] / finished) if finished else None,
        "p50_ms": totals["p50"],
        "p99_ms": totals["p99"],
        "turns_chart": turns_chart,
        "errors_chart": errors_chart,
        "latency_chart": latency_chart(recent, now),
    }


def latency_chart(recent: QuerySet[Turn], now: datetime) -> str:
    buckets: dict[datetime, dict[str, float | None]] = {}
    rows = (
        recent.filter(latency_ms__isnull=False)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(p50=Percentile("latency_ms", 0.5), p99=Percentile("latency_ms", 0.99))
    )
    for row in rows:
        minute = row["minute"]
        bucket = minute.replace(minute=minute.minute - minute.minute % LATENCY_BUCKET_MINUTES)
        seen = buckets.setdefault(bucket, {"p50": None, "p99": None})
        # The worst minute of a bucket stands for it: a spike is what the chart is for.
        seen["p50"] = max(filter(None, (seen["p50"], row["p50"])), default=None)
        seen["p99"] = max(filter(None, (seen["p99"], row["p99"])), default=None)
    start = (now - WINDOW).replace(second=0, microsecond=0)
    start = start.replace(minute=start.minute - start.minute % LATENCY_BUCKET_MINUTES)
    labels = [start + timedelta(minutes=LATENCY_BUCKET_MINUTES * i) for i in range(60 // LATENCY_BUCKET_MINUTES + 1)]
    series = {name: [(f"{timezone.localtime(b):%H:%M}", buckets.get(b, {}).get(name)) for b in labels] for name in ("p50", "p99")}
    return charts.line_chart(series, title="Turn latency (ms), p50 and p99 per 5 minutes", unit=lambda v: f"{float(v):,.0f} ms")


def spend(entries: QuerySet[SpendEntry], now: datetime) -> dict[str, Any]:
    """Spend today and this month (UTC, as the budget windows count) by tenant, model and key, and per day."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    in_month = entries.filter(created_at__gte=month)
    sums = {"today": Sum("cost", filter=Q(created_at__gte=today)), "month": Sum("cost")}

    def rows(*group: str, name) -> list[SpendRow]:
        grouped = in_month.values(*group).annotate(**sums).order_by("-month")[:20]
        return [SpendRow(name(row), row["today"] or Decimal(0), row["month"] or Decimal(0)) for row in grouped]

    totals = in_month.aggregate(**sums)
    since = today - timedelta(days=SPEND_DAYS - 1)
    daily = dict(
        entries.filter(created_at__gte=since).annotate(day=TruncDate("created_at", tzinfo=UTC)).values_list("day").annotate(Sum("cost"))
    )
    days = [(since + timedelta(days=i)).date() for i in range(SPEND_DAYS)]
    return {
        "today": money.money(totals["today"]),
        "month": money.money(totals["month"]),
        "by_tenant": rows("tenant__name", name=lambda r: r["tenant__name"]),
        "by_model": rows("model", name=lambda r: r["model"] or "(none)"),
        "by_key": rows("api_key__key_id", "api_key__name", name=lambda r: _key_name(r["api_key__key_id"], r["api_key__name"])),
        "chart": charts.bar_chart(
            [(f"{d:%b %d}", daily.get(d) or Decimal(0)) for d in days], title=f"Spend per day, last {SPEND_DAYS} days", unit=money.money
        ),
    }


def _key_name(key_id: str | None, name: str | None) -> str:
    if not key_id:
        return "(no key)"
    return f"snt_{key_id}… {name}".strip() if name else f"snt_{key_id}…"


def breakers(request: HttpRequest) -> list[tuple[str, str]] | None:
    """(provider label, state): every label for superusers, the labels of their tenants' agents'
    endpoints for operators. None when Redis cannot be read."""
    from agents import breaker  # agents' modules import the metrics module at load

    try:
        states = {"default": "closed", **dict(breaker.snapshot())}
    except Exception as exc:  # noqa: BLE001 - the page must not fail for a store out of reach
        log.warning("breaker states unreadable: %s", type(exc).__name__)
        return None
    if visible_tenant_ids(request) is not None:
        agents = scope_queryset(request, Agent.objects.filter(deleted_at__isnull=True), "tenant")
        default = settings.SENTINEL["LLM_BASE_URL"] or metrics.OPENAI_BASE_URL
        labels = {metrics.provider_label(url or default) for url in agents.values_list("provider_base_url", flat=True).distinct()}
        states = {label: state for label, state in states.items() if label in labels}
    return sorted(states.items())


def queue_depths() -> list[tuple[str, int]] | None:
    try:
        pipe = broker_client().pipeline(transaction=False)
        for name in QUEUES:
            pipe.llen(name)
        return list(zip(QUEUES, pipe.execute(), strict=True))
    except Exception as exc:  # noqa: BLE001 - as above
        log.warning("queue depth unreadable: %s", type(exc).__name__)
        return None


def overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    turns = scope_queryset(request, Turn.objects.all(), "tenant")
    superuser = visible_tenant_ids(request) is None
    states = dict(turns.filter(status__in=[TurnStatus.QUEUED, TurnStatus.RUNNING]).values_list("status").annotate(n=Count("id")))
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "traffic": traffic(turns, now),
        "spend": spend(scope_queryset(request, SpendEntry.objects.all(), "tenant"), now),
        "dead_letters": scope_queryset(request, DeadLetter.objects.filter(redriven_at__isnull=True), "tenant").count(),
        "queued_turns": states.get(TurnStatus.QUEUED, 0),
        "running_turns": states.get(TurnStatus.RUNNING, 0),
        "breakers": breakers(request),
        "queues": queue_depths() if superuser else None,
        "superuser": superuser,
        "generated_at": now,
    }
    return TemplateResponse(request, "admin/sentinel/overview.html", context)


def view() -> Any:
    """The overview behind the admin's login (any staff user; what they see is scoped)."""
    return admin.site.admin_view(overview)
