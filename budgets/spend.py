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

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from budgets.models import ApiKey, Budget, BudgetWindow, Period, Price, Reservation, SpendEntry
from sentinel_site import config_cache
from sentinel_site.db import columns, from_row, insert

MILLION = Decimal(1_000_000)


class UnpricedModel(Exception):
    """The deployment would pay for a model it has no price for (SENTINEL_UNPRICED_MODELS=refuse)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` has no price on this deployment, so its cost cannot be budgeted; an operator must price it.")
        self.model = model


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


def price_per_token(tenant_id, model: str, endpoint: str) -> tuple[Decimal, Decimal] | None:
    """(input, output) USD per token, or None if the model has no price. The most specific row wins
    (an exact endpoint over any); a tenant's own price applies, but never below the global one
    unless the operator allows discounts (SENTINEL_TENANT_PRICES_BELOW_GLOBAL)."""
    # Wrapped in a tuple: "no price" is an answer to keep too (config_cache never keeps None).
    return config_cache.get("price", (tenant_id, model, endpoint), lambda: (_price_per_token(tenant_id, model, endpoint),))[0]


def _price_per_token(tenant_id, model: str, endpoint: str) -> tuple[Decimal, Decimal] | None:
    matching = Price.objects.filter(model=model).filter(Q(endpoint="") | Q(endpoint=endpoint))
    candidates = list(matching.filter(Q(tenant_id=tenant_id) | Q(tenant__isnull=True)))
    own = sorted((p for p in candidates if p.tenant_id is not None), key=lambda p: p.endpoint == "")
    shared = sorted((p for p in candidates if p.tenant_id is None), key=lambda p: p.endpoint == "")
    price = None
    if shared:
        price = (shared[0].input_per_mtok / MILLION, shared[0].output_per_mtok / MILLION)
    if own and not settings.SENTINEL["TENANT_PRICES_BELOW_GLOBAL"]:
        if price is not None:
            price = (max(own[0].input_per_mtok / MILLION, price[0]), max(own[0].output_per_mtok / MILLION, price[1]))
        elif settings.SENTINEL["UNPRICED_MODELS"] == "free":
            price = (own[0].input_per_mtok / MILLION, own[0].output_per_mtok / MILLION)
        # else: a model only the tenant priced stays unpriced, so it is refused, not made free by the tenant
    elif own:
        price = (own[0].input_per_mtok / MILLION, own[0].output_per_mtok / MILLION)
    return price


def cost(tenant_id, model: str, endpoint: str, prompt_tokens: int, completion_tokens: int, *, refuse_unpriced: bool = False) -> Decimal:
    """USD for a call at the model's price; an unpriced model is free, unless `refuse_unpriced`
    (the deployment pays for the call) and SENTINEL_UNPRICED_MODELS=refuse: UnpricedModel."""
    price = price_per_token(tenant_id, model, endpoint)
    if price is None:
        if refuse_unpriced and settings.SENTINEL["UNPRICED_MODELS"] == "refuse":
            raise UnpricedModel(model)
        return Decimal(0)
    per_in, per_out = price
    return (per_in * prompt_tokens + per_out * completion_tokens).quantize(Decimal("0.00000001"))


def output_bound(params: dict) -> int:
    """The most tokens a call may generate: the larger of max_tokens and max_completion_tokens when
    both are sent (a provider may honour either), else the default the admission set."""
    sent = [params[key] for key in ("max_tokens", "max_completion_tokens") if params.get(key)]
    return max(sent) if sent else settings.SENTINEL["DEFAULT_MAX_TOKENS"]


def request_overhead_tokens(params: dict) -> int:
    """A bound on the prompt tokens that ride outside the messages: tool definitions and a response
    format's schema. JSON spends at least a token per three characters in every tokenizer we meet."""
    extra = [params[key] for key in ("tools", "response_format") if params.get(key)]
    return sum(len(json.dumps(value, separators=(",", ":"))) for value in extra) // 3 + (8 * len(extra))


# --- reserve, settle, release ------------------------------------------------------------------
def applicable_budgets(tenant_id, api_key_id) -> list[Budget]:
    """The tenant's budgets and the key's, including those of the key it was rotated from (their
    definitions, from the config cache: the windows that count the spend are always read fresh)."""
    return config_cache.get("budgets", (tenant_id, api_key_id), lambda: _applicable_budgets(tenant_id, api_key_id))


def _applicable_budgets(tenant_id, api_key_id) -> list[Budget]:
    scope = Q(api_key__isnull=True)
    if api_key_id:
        rotated_from = ApiKey.objects.filter(id=api_key_id, budget_key__isnull=False).values("budget_key_id")
        scope |= Q(api_key_id=api_key_id) | Q(api_key_id__in=rotated_from)
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
    holds their locks for as few round trips as possible (they were the measured bottleneck).
    """
    ttl = timedelta(seconds=settings.SENTINEL["RESERVATION_TTL_SECONDS"])
    budgets = applicable_budgets(tenant_id, api_key_id) if budgets is None else budgets
    return _reserve_sql(tenant_id, api_key_id, amount, turn_id, budgets, ttl, savepoint)


def _reserve_sql(tenant_id, api_key_id, amount: Decimal, turn_id, budgets: list[Budget], ttl: timedelta, savepoint: bool) -> Reservation:
    """`reserve` in hand-written SQL, the same steps in the same order: the windows (created on a new
    day or month), the reservation and its links, then each window's conditional UPDATE in id order."""
    reservation = Reservation(tenant_id=tenant_id, api_key_id=api_key_id, turn_id=turn_id, amount=amount, expires_at=timezone.now() + ttl)
    with transaction.atomic(savepoint=savepoint), connection.cursor() as cursor:
        windows = _windows_sql(cursor, budgets)
        insert(cursor, [reservation])
        if windows:
            through = connection.ops.quote_name(Reservation.windows.through._meta.db_table)
            cursor.execute(
                f"INSERT INTO {through} (reservation_id, budgetwindow_id) SELECT %s, unnest(%s::bigint[])",
                [reservation.id, [windows[budget.id] for budget in budgets]],
            )
        table = connection.ops.quote_name(BudgetWindow._meta.db_table)
        for budget in sorted(budgets, key=lambda b: windows[b.id]):
            cursor.execute(
                f"UPDATE {table} SET reserved = reserved + %s WHERE id = %s AND reserved <= %s - settled",
                [amount, windows[budget.id], budget.limit - amount],
            )
            if cursor.rowcount != 1:
                raise BudgetExceeded(budget, seconds_until_reset(budget.period))
    return reservation


# The condition a statement's other writes take to run only when `hold` holds (see its `writes`).
IF_HELD = "(SELECT fits FROM ok)"


class Unmet(Exception):
    """`hold`'s `requires` did not hold: nothing was held or written."""


def hold(
    tenant_id, api_key_id, amount: Decimal, *, budgets: list[Budget], turn_id=None, lazily: bool = True,
    writes: Sequence[tuple[str, str, list]] = (), requires: tuple[str, list] = ("true", []),
) -> Reservation:  # fmt: skip
    """`reserve`, as one statement committed on its own, before the caller's transaction: the
    reservation (for `turn_id`, or for none yet: the caller's transaction links it) and every
    window's hold, all or none; BudgetExceeded if a window has no room.

    Inside a transaction the windows stay locked until its commit, across every round trip still to
    come: under load the tenant's admissions queued on them (the bench measured 3.5 backends waiting
    on one window row at 50 clients, its holders idle in transaction, waiting for their Python
    thread). One statement holds them only while the server runs it. `lazily`: its commit does not
    wait for the disk, for a caller whose own commit, later in the same WAL, makes both durable.
    (Called inside a transaction, as tests do, it is one more statement of it, committed with it,
    and `lazily` applies to that commit.)
    If the caller's transaction fails, it releases the hold; if its process dies first, the hold
    expires (RESERVATION_TTL_SECONDS), as every hold of a dead process does.

    `writes`: more data-modifying CTEs of the same statement, (name, sql, params) each, that write
    only if the hold holds (their condition: IF_HELD); so a caller's rows and the hold commit as one.
    `requires`: an SQL condition (and its params) the hold needs besides room, say that a row the
    writes update exists; Unmet if it does not hold."""
    for fresh in (False, True):
        held = _hold(tenant_id, api_key_id, amount, budgets, turn_id, lazily, writes, requires, fresh=fresh)
        if held is not None:
            return held
    raise AssertionError("unreachable: a fresh read of the windows holds or raises")


def _hold(
    tenant_id, api_key_id, amount: Decimal, budgets: list[Budget], turn_id, lazily: bool, writes: Sequence[tuple[str, str, list]],
    requires: tuple[str, list], *, fresh: bool,
) -> Reservation | None:  # fmt: skip
    """One try of `hold`; None if a cached window is gone (its budget was deleted): try again, fresh."""
    ttl = timedelta(seconds=settings.SENTINEL["RESERVATION_TTL_SECONDS"])
    reservation = Reservation(tenant_id=tenant_id, api_key_id=api_key_id, turn_id=turn_id, amount=amount, expires_at=timezone.now() + ttl)
    with connection.cursor() as cursor:
        if fresh:
            _window_ids.clear()
        windows = _cached_windows(cursor, budgets)
        ordered = sorted(budgets, key=lambda budget: windows[budget.id])
        ids = [windows[budget.id] for budget in ordered]
        setting = "'off'" if lazily else "current_setting('synchronous_commit')"
        more = "".join(f", {name} AS ({sql})" for name, sql, _ in writes)
        cursor.execute(
            f"""
            WITH lazily AS (SELECT set_config('synchronous_commit', {setting}, true)),
            req AS (SELECT {requires[0]} AS met),
            v AS (SELECT * FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, room)),
            locked AS (
                SELECT w.id, w.reserved <= v.room - w.settled AS fits
                FROM {_table(BudgetWindow)} AS w JOIN v ON v.id = w.id ORDER BY w.id FOR UPDATE OF w
            ),
            ok AS (SELECT count(*) FILTER (WHERE fits) = %s AND (SELECT met FROM req) AS fits FROM locked),
            held AS (
                UPDATE {_table(BudgetWindow)} AS w SET reserved = w.reserved + %s FROM ok WHERE ok.fits AND w.id = ANY(%s) RETURNING w.id
            ),
            reservation AS (
                INSERT INTO {_table(Reservation)} (id, tenant_id, api_key_id, turn_id, amount, status, created_at, expires_at)
                SELECT %s, %s, %s, %s::uuid, %s, %s, %s, %s FROM ok WHERE ok.fits RETURNING id
            ),
            links AS (
                INSERT INTO {_table(Reservation.windows.through)} (reservation_id, budgetwindow_id)
                SELECT %s, unnest(%s::bigint[]) FROM ok WHERE ok.fits
            ){more}
            SELECT ok.fits, (SELECT array_agg(id) FROM locked WHERE NOT fits), (SELECT met FROM req) FROM ok, lazily
            """,
            [
                *requires[1], ids, [budget.limit - amount for budget in ordered], len(ids), amount, ids,
                reservation.id, tenant_id, api_key_id, turn_id, amount, Reservation.Status.HELD.value, reservation.created_at,
                reservation.expires_at, reservation.id, ids, *(param for _, _, params in writes for param in params),
            ],
        )  # fmt: skip
        fits, full, met = cursor.fetchone()
    if not met:
        raise Unmet
    if fits:
        return reservation
    budget = next((budget for budget in ordered if windows[budget.id] in (full or [])), None)
    if budget is None:
        return None  # no window was full: one of them no longer exists
    raise BudgetExceeded(budget, seconds_until_reset(budget.period))


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


# {(budget id, window start): window id}: a window's id never changes once it exists.
_window_ids: dict[tuple[uuid.UUID, date], int] = {}


def _cached_windows(cursor, budgets: list[Budget]) -> dict:
    """`_windows_sql`, without its round trip for windows seen before (by this process)."""
    keys = {budget.id: (budget.id, window_start(budget.period)) for budget in budgets}
    if all(key in _window_ids for key in keys.values()):
        return {budget_id: _window_ids[key] for budget_id, key in keys.items()}
    windows = _windows_sql(cursor, budgets)
    if len(_window_ids) > 10_000:
        _window_ids.clear()
    for budget_id, key in keys.items():
        _window_ids[key] = windows[budget_id]
    return windows


def _windows_sql(cursor, budgets: list[Budget]) -> dict:
    """Each budget's current window id ({budget id: window id}), created first if missing."""
    if not budgets:
        return {}
    table = connection.ops.quote_name(BudgetWindow._meta.db_table)
    ids, starts = [budget.id for budget in budgets], [window_start(budget.period) for budget in budgets]
    select = (
        f"SELECT w.budget_id, w.id FROM {table} AS w JOIN unnest(%s::uuid[], %s::date[]) AS v(budget_id, starts) USING (budget_id, starts)"
    )
    cursor.execute(select, [ids, starts])
    windows = dict(cursor.fetchall())
    if len(windows) < len(budgets):  # a new day or month: racing inserts are fine
        cursor.execute(
            f"INSERT INTO {table} (budget_id, starts, reserved, settled, tokens) SELECT v.budget_id, v.starts, 0, 0, 0 "
            "FROM unnest(%s::uuid[], %s::date[]) AS v(budget_id, starts) ON CONFLICT (budget_id, starts) DO NOTHING",
            [ids, starts],
        )
        cursor.execute(select, [ids, starts])
        windows = dict(cursor.fetchall())
    return windows


def _claim(reservation: Reservation | uuid.UUID, status: str, closed: tuple[str, ...] = (Reservation.Status.HELD,)) -> Reservation | None:
    """Move a reservation (given, or by id) from one of the `closed` statuses (by default: held) to
    `status`, at most once; None if it was not in one of them."""
    reservation_id = reservation.id if isinstance(reservation, Reservation) else reservation
    if not Reservation.objects.filter(id=reservation_id, status__in=closed).update(status=status, closed_at=timezone.now()):
        return None
    if isinstance(reservation, Reservation):  # what a reservation holds never changes: no need to read it again
        return reservation
    return Reservation.objects.get(id=reservation_id)


def _move_out_of_reserved(reservation: Reservation, actual: Decimal, tokens: int, *, held: bool = True) -> None:
    """The hot rows, last and in a fixed order: see reserve(). A reservation no longer held has
    given its amount back already: only the spend is added."""
    released = reservation.amount if held else Decimal(0)
    for window_id in sorted(reservation.windows.values_list("id", flat=True)):
        BudgetWindow.objects.filter(id=window_id).update(
            reserved=F("reserved") - released, settled=F("settled") + actual, tokens=F("tokens") + tokens
        )


def settle(
    reservation: Reservation | uuid.UUID, *, model: str, prompt_tokens: int, completion_tokens: int, actual: Decimal, turn_id=None
) -> bool:
    """Record a call's spend on the ledger and its reservation's windows, once per reservation.

    Normally the reservation is held and its hold becomes the spend. A call the provider was paid
    for is recorded even when its reservation is no longer held (it expired during a long call, or
    was released when another attempt of the turn took over): the cost is added to the windows'
    settled spend without a limit check, since it is spent already. False only when the
    reservation was settled before (nothing is charged twice)."""
    with transaction.atomic(savepoint=False):  # no SAVEPOINT round trips while the hot rows are locked
        claimed = _claim(reservation, Reservation.Status.SETTLED)
        late = claimed is None
        if claimed is None:
            claimed = _claim(reservation, Reservation.Status.SETTLED, closed=(Reservation.Status.EXPIRED, Reservation.Status.RELEASED))
        if claimed is None:
            return False
        SpendEntry.objects.create(
            tenant_id=claimed.tenant_id,
            api_key_id=claimed.api_key_id,
            turn_id=turn_id or claimed.turn_id,
            reservation=claimed,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=actual,
        )
        _move_out_of_reserved(claimed, actual, prompt_tokens + completion_tokens, held=not late)
    return True


def held_for(turn_id) -> list[Reservation]:
    """The turn's reservations still held, newest first, in hand-written SQL: read before each of a
    turn's provider calls, where the ORM's compilation cost more than the statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns(Reservation)} FROM {_table(Reservation)} WHERE turn_id = %s AND status = %s ORDER BY created_at DESC",
            [turn_id, Reservation.Status.HELD.value],
        )
        return [from_row(Reservation, row) for row in cursor.fetchall()]


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
