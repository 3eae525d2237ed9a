"""Budgets: reservations are atomic across scopes, settle and release once, and never overspend."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgets import spend
from budgets.models import Budget, BudgetWindow, Price, Reservation, SpendEntry, Tenant
from sentinel_site import config_cache
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db


def cap(actor, limit, period="daily", key=False):
    Budget.objects.filter(tenant=actor.tenant).delete()
    return Budget.objects.create(tenant=actor.tenant, api_key=actor.api_key if key else None, period=period, limit=Decimal(limit))


def window(budget):
    return BudgetWindow.objects.get(budget=budget, starts=spend.window_start(budget.period))


def test_new_tenants_get_the_seeds_default_budgets():
    tenant = Tenant.objects.create(name="fresh")
    assert sorted((b.period, b.limit) for b in Budget.objects.filter(tenant=tenant)) == [("daily", 100), ("monthly", 2000)]


def test_a_reservation_holds_money_in_every_applicable_budget(alice, bob):
    daily = Budget.objects.get(tenant=alice.tenant, period="daily")
    monthly = Budget.objects.get(tenant=alice.tenant, period="monthly")
    per_key = Budget.objects.create(tenant=alice.tenant, api_key=alice.api_key, period="daily", limit=5)
    spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("2"))
    assert [window(b).reserved for b in (daily, monthly, per_key)] == [2, 2, 2]
    assert not BudgetWindow.objects.filter(budget__tenant=bob.tenant).exists()


def test_no_room_in_any_one_budget_rolls_the_whole_reservation_back(alice):
    daily = Budget.objects.get(tenant=alice.tenant, period="daily")
    Budget.objects.create(tenant=alice.tenant, api_key=alice.api_key, period="daily", limit=1)
    with pytest.raises(spend.BudgetExceeded) as info:
        spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("2"))
    assert info.value.budget.api_key_id == alice.api_key.id
    assert 0 < info.value.retry_after <= 86400
    assert not BudgetWindow.objects.filter(budget=daily, reserved__gt=0).exists()
    assert not Reservation.objects.exists()


def test_settle_moves_the_actual_cost_into_spend_once_and_writes_the_ledger(alice):
    budget = cap(alice, 10)
    reservation = spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("3"))
    assert spend.settle(reservation.id, model="m", prompt_tokens=10, completion_tokens=5, actual=Decimal("1.25"))
    assert not spend.settle(reservation.id, model="m", prompt_tokens=10, completion_tokens=5, actual=Decimal("1.25"))
    assert not spend.release(reservation.id)
    assert (window(budget).settled, window(budget).reserved, window(budget).tokens) == (Decimal("1.25"), 0, 15)
    assert SpendEntry.objects.get().cost == Decimal("1.25")
    assert spend.reconcile() == []


def test_release_gives_the_money_back_and_writes_no_spend(alice):
    budget = cap(alice, 10)
    reservation = spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("9"))
    assert spend.release(reservation.id)
    assert window(budget).reserved == 0 and not SpendEntry.objects.exists()
    spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("9"))  # room again


def test_stale_reservations_expire(alice):
    budget = cap(alice, 10)
    reservation = spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("4"))
    Reservation.objects.filter(id=reservation.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert spend.expire_stale() == 1
    assert Reservation.objects.get(id=reservation.id).status == "expired" and window(budget).reserved == 0


def test_reconcile_notices_a_counter_that_disagrees_with_the_ledger(alice):
    budget = cap(alice, 10)
    reservation = spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("3"))
    spend.settle(reservation.id, model="m", prompt_tokens=1, completion_tokens=1, actual=Decimal("2"))
    BudgetWindow.objects.filter(budget=budget).update(settled=Decimal("1"))
    assert spend.reconcile()[0]["ledger"] == "2.00000000"


def test_prices_prefer_the_tenants_own_then_the_global_and_default_to_free(alice, bob):
    Price.objects.create(model="gpt-x", input_per_mtok=1, output_per_mtok=2)
    Price.objects.create(tenant=alice.tenant, model="gpt-x", input_per_mtok=10, output_per_mtok=20)
    config_cache.clear()
    assert spend.cost(alice.tenant.id, "gpt-x", "e", 1_000_000, 1_000_000) == Decimal(30)
    assert spend.cost(bob.tenant.id, "gpt-x", "e", 1_000_000, 1_000_000) == Decimal(3)
    assert spend.cost(bob.tenant.id, "smollm2", "e", 1_000_000, 1_000_000) == 0


def test_past_the_soft_limit_a_fallback_model_is_chosen(alice):
    budget = cap(alice, 10)
    Budget.objects.filter(id=budget.id).update(fallback_model="cheap-model", soft_limit_share=Decimal("0.5"))
    assert spend.fallback_model(alice.tenant.id, alice.api_key.id) is None
    spend.reserve(alice.tenant.id, alice.api_key.id, Decimal("6"))
    assert spend.fallback_model(alice.tenant.id, alice.api_key.id) == "cheap-model"


operations = st.lists(
    st.tuples(st.sampled_from(["reserve", "settle", "release", "expire"]), st.integers(0, 400), st.integers(0, 100)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=operations, limit=st.integers(1, 1000))
def test_no_sequence_of_operations_lets_settled_plus_reserved_exceed_the_cap(db, ops, limit):
    actor = make_actor(f"prop-{Tenant.objects.count()}")
    budget = cap(actor, limit)
    held: list[Reservation] = []
    for op, amount_cents, share in ops:
        amount = Decimal(amount_cents) / 100 * 5
        if op == "reserve":
            try:
                held.append(spend.reserve(actor.tenant.id, actor.api_key.id, amount))
            except spend.BudgetExceeded:
                pass
        elif held:
            reservation = held.pop(share % len(held))
            if op == "settle":  # the actual cost never exceeds the worst case reserved
                spend.settle(reservation.id, model="m", prompt_tokens=1, completion_tokens=1, actual=reservation.amount * share / 100)
            elif op == "release":
                spend.release(reservation.id)
            else:
                Reservation.objects.filter(id=reservation.id).update(expires_at=timezone.now() - timedelta(seconds=1))
                spend.expire_stale()
        w = BudgetWindow.objects.filter(budget=budget).first()
        if w is not None:
            assert w.settled + w.reserved <= budget.limit
            assert w.reserved == sum(r.amount for r in held)
    assert spend.reconcile() == [] or all(p["budget"] != str(budget.id) for p in spend.reconcile())


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_reservations_against_a_budget_for_10_admit_10(alice):
    budget = cap(alice, 10)
    barrier = threading.Barrier(20)

    def attempt(_):
        try:
            barrier.wait(timeout=10)  # 20 at a time, released together
            spend.reserve(alice.tenant.id, alice.api_key.id, Decimal(1))
            return True
        except (spend.BudgetExceeded, threading.BrokenBarrierError):
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(20) as pool:
        admitted = sum(pool.map(attempt, range(200)))
    assert admitted == 10
    assert window(budget).reserved == 10 and Reservation.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_holds_each_in_a_statement_of_its_own_against_a_budget_for_10_admit_10(alice):
    budget = cap(alice, 10)
    budgets = spend.applicable_budgets(alice.tenant.id, alice.api_key.id)
    barrier = threading.Barrier(20)

    def attempt(_):
        try:
            barrier.wait(timeout=10)
            assert not connection.in_atomic_block, "each hold commits on its own"
            spend.hold(alice.tenant.id, alice.api_key.id, Decimal(1), budgets=budgets)
            return True
        except (spend.BudgetExceeded, threading.BrokenBarrierError):
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(20) as pool:
        admitted = sum(pool.map(attempt, range(200)))
    assert admitted == 10
    assert window(budget).reserved == 10 and Reservation.objects.filter(status="held").count() == 10
    assert all(r.windows.count() == len(budgets) for r in Reservation.objects.all()), "every hold is linked to each window"


@pytest.mark.django_db(transaction=True)
def test_a_hold_that_does_not_fit_one_budget_holds_nothing_in_the_others(alice):
    small = Budget.objects.create(tenant=alice.tenant, api_key=alice.api_key, period="day", limit=Decimal(1))
    config_cache.clear()
    budgets = spend.applicable_budgets(alice.tenant.id, alice.api_key.id)
    with pytest.raises(spend.BudgetExceeded) as refused:
        spend.hold(alice.tenant.id, alice.api_key.id, Decimal(2), budgets=budgets)
    assert refused.value.budget.id == small.id, "the error names the budget without room"
    assert all(w.reserved == 0 for w in BudgetWindow.objects.all()) and not Reservation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_hold_finds_a_new_window_when_the_budget_it_remembered_is_gone(alice):
    budget = cap(alice, 10)
    budgets = spend.applicable_budgets(alice.tenant.id, alice.api_key.id)
    spend.hold(alice.tenant.id, alice.api_key.id, Decimal(1), budgets=budgets)
    BudgetWindow.objects.filter(budget=budget).delete()  # as when a budget is deleted and made again
    held = spend.hold(alice.tenant.id, alice.api_key.id, Decimal(1), budgets=budgets)
    assert window(budget).reserved == 1 and held.windows.count() == len(budgets)
