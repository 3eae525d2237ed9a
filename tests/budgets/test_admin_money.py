"""Money in the admin reads as money: `$12.34` for amounts, limits and prices without trailing zeros,
and a budget's spend drawn against its limit."""

from decimal import Decimal

import pytest
from django.urls import reverse

from budgets import spend
from budgets.models import Budget, BudgetWindow, Price, Reservation, SpendEntry
from sentinel_site import money

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "value,amount,limit",
    [
        (Decimal("100.000000"), "$100.00", "$100"),
        (Decimal("12.345"), "$12.35", "$12.345"),
        (Decimal("0E-8"), "$0.00", "$0"),
        (Decimal("0.00042000"), "$0.00042", "$0.00042"),
        (Decimal("1234567.5"), "$1,234,567.50", "$1,234,567.5"),
        (None, "$0.00", "$0"),
        (Decimal("-3.2"), "-$3.20", "-$3.2"),
    ],
)
def test_it_formats_amounts_and_limits(value, amount, limit):
    assert money.money(value) == amount
    assert money.limit(value) == limit


def test_the_budget_list_shows_limits_and_spend_as_money(admin_client, alice):
    budget = Budget.objects.update_or_create(
        tenant=alice.tenant, api_key=None, period="monthly", defaults=dict(limit=Decimal("100.000000"), soft_limit_share=Decimal("0.8"))
    )[0]
    BudgetWindow.objects.create(budget=budget, starts=spend.window_start("monthly"), settled=Decimal("12.34"), reserved=Decimal("0.5"))
    html = admin_client.get(reverse("admin:budgets_budget_changelist")).content.decode()
    assert "$12.34 spent + $0.50 held of $100 (13%)" in html
    assert "alice monthly $100" in html
    assert "100.000000" not in html and "0E-8" not in html
    page = admin_client.get(reverse("admin:budgets_budget_change", args=[budget.pk])).content.decode()
    assert 'class="sentinel-meter"' in page and "$12.34 spent" in page, "the budget's page has its spend-against-limit bar"
    assert 'name="limit" value="100"' in page, "the limit's input shows it as set"


def test_a_budget_past_its_limit_draws_a_full_red_bar(admin_client, alice):
    budget = Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="daily", defaults=dict(limit=Decimal("1")))[0]
    BudgetWindow.objects.create(budget=budget, starts=spend.window_start("daily"), settled=Decimal("1.25"))
    html = admin_client.get(reverse("admin:budgets_budget_changelist")).content.decode()
    assert "(125%)" in html and 'width="100.0" height="10" fill="#b33a3a"' in html


def test_the_ledger_reservations_and_prices_show_money(admin_client, alice):
    from datetime import timedelta

    from django.utils import timezone

    SpendEntry.objects.create(tenant=alice.tenant, model="m", cost=Decimal("0.00001234"))
    Reservation.objects.create(tenant=alice.tenant, amount=Decimal("2.5"), expires_at=timezone.now() + timedelta(hours=1))
    Price.objects.create(tenant=alice.tenant, model="m", input_per_mtok=Decimal("0.150000"), output_per_mtok=Decimal("0.600000"))
    assert "$0.00001234" in admin_client.get(reverse("admin:budgets_spendentry_changelist")).content.decode()
    assert "$2.50" in admin_client.get(reverse("admin:budgets_reservation_changelist")).content.decode()
    prices = admin_client.get(reverse("admin:budgets_price_changelist")).content.decode()
    assert "$0.15" in prices and "$0.6<" in prices and "0.150000" not in prices
