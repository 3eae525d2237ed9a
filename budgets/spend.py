"""Budgets that concurrency cannot overspend: reserve the worst case, settle the actual, release.

Every budget that applies to a call (the tenant's and the key's, daily and monthly) has a counter
row for the current window. A reservation raises `reserved` on all of them in one transaction,
each by a conditional UPDATE that succeeds only if `settled + reserved + amount <= limit`; if any
fails, the whole reservation rolls back. Row locks taken in a fixed order serialize racing
reservations, so the check and the increment are one step: there is no check-then-increment
window to overspend through. Settling and releasing claim the reservation with a conditional
update first, so each happens at most once. The append-only SpendEntry ledger is the source of truth;
`manage.py reconcile_spend` checks the counters against it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Period, Price, Reservation, SpendEntry

MILLION = Decimal(1_000_000)


class BudgetExceeded(Exception):
    """No room in a budget: seed 000's 503 with `type: budget_exceeded` and Retry-After."""

    def __init__(self, budget: Budget, retry_after: int) -> None:
        scope = "API key" if budget.api_key_id else "tenant"
        super().__init__(f"The {budget.period} budget of this {scope} (${budget.limit}) is exhausted.")
        self.budget = budget
        self.retry_after = retry_after


# --- windows and prices -----------------------------------------------------------------------
def window_start(period: str, now: datetime | None = None) -> date:
    now = (now or timezone.now()).astimezone(UTC)
    return now.date() if period == Period.DAILY else date(now.year, now.month, 1)


def window_end(period: str, start: date) -> datetime:
    next_month = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    end = start + timedelta(days=1) if period == Period.DAILY else next_month
    return datetime(end.year, end.month, end.day, tzinfo=UTC)


def seconds_until_reset(period: str, now: datetime | None = None) -> int:
    now = now or timezone.now()
    return max(1, int((window_end(period, window_start(period, now)) - now).total_seconds()))


_price_cache: dict[tuple, tuple[float, tuple[Decimal, Decimal]]] = {}
_PRICE_TTL = 30.0  # seconds; edits in the admin apply within this


def price_per_token(tenant_id, model: str, endpoint: str) -> tuple[Decimal, Decimal]:
    """(input, output) USD per token: the tenant's own price, else the global one; else free."""
    key = (tenant_id, model, endpoint)
    cached = _price_cache.get(key)
    if cached and time.monotonic() - cached[0] < _PRICE_TTL:
        return cached[1]
    candidates = Price.objects.filter(model=model).filter(Q(endpoint="") | Q(endpoint=endpoint))
    candidates = candidates.filter(Q(tenant_id=tenant_id) | Q(tenant__isnull=True))
    # most specific first: the tenant's over global, an exact endpoint over any
    best = sorted(candidates, key=lambda p: (p.tenant_id is None, p.endpoint == ""))
    price = (best[0].input_per_mtok / MILLION, best[0].output_per_mtok / MILLION) if best else (Decimal(0), Decimal(0))
    _price_cache[key] = (time.monotonic(), price)
    return price


def cost(tenant_id, model: str, endpoint: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    per_in, per_out = price_per_token(tenant_id, model, endpoint)
    return (per_in * prompt_tokens + per_out * completion_tokens).quantize(Decimal("0.00000001"))


# --- reserve, settle, release ------------------------------------------------------------------
def applicable_budgets(tenant_id, api_key_id) -> list[Budget]:
    scope = Q(api_key__isnull=True) | Q(api_key_id=api_key_id) if api_key_id else Q(api_key__isnull=True)
    return list(Budget.objects.filter(tenant_id=tenant_id).filter(scope).select_related("api_key").order_by("id"))


@dataclass(frozen=True)
class Standing:
    """How much of a budget window is used: for soft limits and the operator API."""

    budget: Budget
    settled: Decimal
    reserved: Decimal

    @property
    def used_share(self) -> Decimal:
        return (self.settled + self.reserved) / self.budget.limit if self.budget.limit else Decimal(1)


def current_windows(budgets: list[Budget], *, create: bool = False) -> dict:
    """Each budget's counter row for the window now running, in one query ({budget id: window}).
    With create, missing rows (a new day or month) are inserted first; racing inserts are fine."""
    if not budgets:
        return {}
    starts = {budget.id: window_start(budget.period) for budget in budgets}
    current = Q()
    for budget_id, start in starts.items():
        current |= Q(budget_id=budget_id, starts=start)
    windows = {window.budget_id: window for window in BudgetWindow.objects.filter(current)}
    if create and len(windows) < len(budgets):
        missing = [BudgetWindow(budget_id=budget_id, starts=start) for budget_id, start in starts.items() if budget_id not in windows]
        BudgetWindow.objects.bulk_create(missing, ignore_conflicts=True)
        windows = {window.budget_id: window for window in BudgetWindow.objects.filter(current)}
    return windows


def standings(tenant_id, api_key_id=None, budgets: list[Budget] | None = None) -> list[Standing]:
    budgets = applicable_budgets(tenant_id, api_key_id) if budgets is None else budgets
    windows = current_windows(budgets)
    zero = Decimal(0)
    return [
        Standing(budget, windows[budget.id].settled, windows[budget.id].reserved) if budget.id in windows else Standing(budget, zero, zero)
        for budget in budgets
    ]


def fallback_model(tenant_id, api_key_id, budgets: list[Budget] | None = None) -> str | None:
    """A cheaper model to switch to once a budget passes its soft limit, if the operator set one."""
    budgets = applicable_budgets(tenant_id, api_key_id) if budgets is None else budgets
    with_fallback = [budget for budget in budgets if budget.fallback_model]
    if not with_fallback:
        return None  # the usual case: no window to read
    for standing in standings(tenant_id, api_key_id, with_fallback):
        if standing.used_share >= standing.budget.soft_limit_share:
            return standing.budget.fallback_model
    return None


def reserve(
    tenant_id, api_key_id, amount: Decimal, *, turn_id=None, budgets: list[Budget] | None = None, savepoint: bool = True
) -> Reservation:
    """Hold `amount` against every applicable budget, atomically; BudgetExceeded if one has no room.
    `savepoint=False` saves two round trips for a caller whose transaction ends on BudgetExceeded.

    The budget windows are a tenant's hottest rows: every turn of the tenant updates them. So they
    are updated last, just before the commit, in a fixed order (no deadlocks), and the transaction
    holds their locks for as few round trips as possible (issue 6: measured as the bottleneck).
    """
    ttl = timedelta(seconds=settings.SENTINEL["RESERVATION_TTL_SECONDS"])
    budgets = applicable_budgets(tenant_id, api_key_id) if budgets is None else budgets
    with transaction.atomic(savepoint=savepoint):  # a savepoint: a caller may go on after BudgetExceeded
        current = current_windows(budgets, create=True)
        windows = [current[budget.id] for budget in budgets]
        reservation = Reservation.objects.create(
            tenant_id=tenant_id, api_key_id=api_key_id, turn_id=turn_id, amount=amount, expires_at=timezone.now() + ttl
        )
        through = Reservation.windows.through
        through.objects.bulk_create(through(reservation_id=reservation.id, budgetwindow_id=window.id) for window in windows)
        for budget, window in sorted(zip(budgets, windows, strict=True), key=lambda pair: pair[1].id):
            room = BudgetWindow.objects.filter(id=window.id, reserved__lte=Value(budget.limit - amount) - F("settled"))
            if not room.update(reserved=F("reserved") + amount):
                raise BudgetExceeded(budget, seconds_until_reset(budget.period))
    return reservation


def _claim(reservation: Reservation | uuid.UUID, status: str) -> Reservation | None:
    """Mark a held reservation (given, or by id) closed, at most once; None if it was closed already."""
    reservation_id = reservation.id if isinstance(reservation, Reservation) else reservation
    if not Reservation.objects.filter(id=reservation_id, status=Reservation.Status.HELD).update(status=status, closed_at=timezone.now()):
        return None
    if isinstance(reservation, Reservation):  # what a reservation holds never changes: no need to read it again
        return reservation
    return Reservation.objects.get(id=reservation_id)


def _move_out_of_reserved(reservation: Reservation, actual: Decimal, tokens: int) -> None:
    """The hot rows, last and in a fixed order: see reserve()."""
    for window_id in sorted(reservation.windows.values_list("id", flat=True)):
        BudgetWindow.objects.filter(id=window_id).update(
            reserved=F("reserved") - reservation.amount, settled=F("settled") + actual, tokens=F("tokens") + tokens
        )


def settle(
    reservation: Reservation | uuid.UUID, *, model: str, prompt_tokens: int, completion_tokens: int, actual: Decimal, turn_id=None
) -> bool:
    """Turn a reservation (or the one with this id) into spend: counters and the ledger, once.
    False if it was already closed."""
    with transaction.atomic(savepoint=False):  # no SAVEPOINT round trips while the hot rows are locked
        reservation = _claim(reservation, Reservation.Status.SETTLED)
        if reservation is None:
            return False
        SpendEntry.objects.create(
            tenant_id=reservation.tenant_id,
            api_key_id=reservation.api_key_id,
            turn_id=turn_id or reservation.turn_id,
            reservation=reservation,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=actual,
        )
        _move_out_of_reserved(reservation, actual, prompt_tokens + completion_tokens)
    return True


def release(reservation_id, status: str = Reservation.Status.RELEASED) -> bool:
    """Give the held money back (error, cancellation, expiry). False if it was already closed."""
    with transaction.atomic(savepoint=False):  # no SAVEPOINT round trips while the hot rows are locked
        reservation = _claim(reservation_id, status)
        if reservation is None:
            return False
        _move_out_of_reserved(reservation, Decimal(0), 0)
    return True


def expire_stale(now: datetime | None = None) -> int:
    """Release reservations held past their expiry (a worker died holding them)."""
    now = now or timezone.now()
    stale = Reservation.objects.filter(status=Reservation.Status.HELD, expires_at__lt=now).values_list("id", flat=True)[:1000]
    return sum(1 for rid in list(stale) if release(rid, Reservation.Status.EXPIRED))


def reconcile() -> list[dict]:
    """Windows whose `settled` counter differs from the ledger. An empty list means all is well."""
    from django.db.models import Sum

    problems = []
    for window in BudgetWindow.objects.select_related("budget"):
        budget = window.budget
        ledger = SpendEntry.objects.filter(reservation__windows=window).aggregate(total=Sum("cost"))["total"] or Decimal(0)
        held = Reservation.objects.filter(windows=window, status=Reservation.Status.HELD).aggregate(total=Sum("amount"))[
            "total"
        ] or Decimal(0)
        if ledger != window.settled or held != window.reserved:
            problems.append(
                {
                    "budget": str(budget.id),
                    "window": str(window.starts),
                    "settled": str(window.settled),
                    "ledger": str(ledger),
                    "reserved": str(window.reserved),
                    "held": str(held),
                }
            )
    return problems
