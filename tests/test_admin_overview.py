"""The admin's overview: traffic, errors, latency, spend, dead letters, breakers and queues, drawn
as inline SVG from the turns and the ledger, and scoped like every admin page."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from agents import breaker
from agents.models import Conversation, DeadLetter, Turn, TurnStatus
from budgets.admin_roles import sync_groups
from budgets.models import SpendEntry
from sentinel_site.redis import sync_client
from tests.budgets.test_admin import logged_in, staff

pytestmark = pytest.mark.django_db

URL = "/admin/overview/"


def turns(actor, statuses_and_latencies):
    conversation = Conversation.objects.create(tenant=actor.tenant, agent=actor.agent)
    now = timezone.now()
    return [
        Turn.objects.create(
            tenant=actor.tenant, conversation=conversation, agent=actor.agent, seq=i, status=status, latency_ms=latency, created_at=now
        )
        for i, (status, latency) in enumerate(statuses_and_latencies, 1)
    ]


@pytest.fixture
def traffic(alice, bob):
    sync_groups()
    turns(alice, [(TurnStatus.SUCCEEDED, 100)] * 9 + [(TurnStatus.FAILED, 1000)])
    bobs = turns(bob, [(TurnStatus.FAILED, 5000)] * 4)
    DeadLetter.objects.create(tenant=bob.tenant, turn=bobs[0], reason="zombie", attempts=3)
    SpendEntry.objects.create(tenant=alice.tenant, api_key=alice.api_key, model="gpt-alice", cost=Decimal("1.5"))
    SpendEntry.objects.create(tenant=alice.tenant, api_key=alice.api_key, model="gpt-alice", cost=Decimal("0.25"))
    SpendEntry.objects.create(
        tenant=alice.tenant, model="gpt-alice", cost=Decimal("10"), created_at=timezone.now().replace(day=1, hour=0) - timedelta(days=2)
    )
    SpendEntry.objects.create(tenant=bob.tenant, api_key=bob.api_key, model="bobs-secret-model", cost=Decimal("7"))


def test_it_is_behind_the_admin_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_a_superuser_sees_every_tenants_numbers(traffic, admin_client):
    response = admin_client.get(URL)
    assert response.status_code == 200
    context = response.context
    assert context["traffic"]["error_rate"] == pytest.approx(5 / 14)
    assert context["traffic"]["p50_ms"] == pytest.approx(100)
    assert context["traffic"]["p99_ms"] > 4000
    assert context["traffic"]["turns_per_second"] == pytest.approx(14 / 300)
    assert context["spend"]["today"] == context["spend"]["month"] == "$8.75"
    assert [(r.name, r.month_text) for r in context["spend"]["by_tenant"]] == [("bob", "$7.00"), ("alice", "$1.75")]
    assert context["dead_letters"] == 1
    assert context["queues"] is not None and [name for name, _ in context["queues"]] == ["turns", "memory", "maintenance"]
    html = response.content.decode()
    assert html.count('<svg class="sentinel-chart"') == 4, "traffic, errors, latency and spend are charts"
    assert "Sentinel" in html and "Django administration" not in html


def test_an_operator_sees_only_their_tenants_numbers(traffic, alice):
    ada = logged_in(staff("ada", "viewer", alice.tenant))
    response = ada.get(URL)
    assert response.status_code == 200
    context = response.context
    assert context["traffic"]["error_rate"] == pytest.approx(1 / 10)
    assert context["traffic"]["p99_ms"] < 1001
    assert context["spend"]["month"] == "$1.75"
    assert [r.name for r in context["spend"]["by_tenant"]] == ["alice"]
    assert context["dead_letters"] == 0
    assert context["queues"] is None, "the deployment's queues are for superusers"
    html = response.content.decode()
    assert "bob" not in html and "bobs-secret-model" not in html


def test_a_staff_user_bound_to_no_tenant_sees_zeros(traffic):
    nobody = logged_in(staff("nobody", "admin"))
    context = nobody.get(URL).context
    assert context["traffic"]["error_rate"] is None and context["spend"]["month"] == "$0.00" and context["dead_letters"] == 0
    assert context["breakers"] == []


def test_breakers_show_their_state_and_operators_see_only_their_endpoints(traffic, alice, admin_client):
    now = time.time()
    sync_client().hset(breaker.OPEN_INDEX, mapping={"a": f"default|{now}", "b": f"10.9.9.0/24|{now}"})
    assert admin_client.get(URL).context["breakers"] == [("10.9.9.0/24", "open"), ("default", "open")]
    ada = logged_in(staff("ada", "viewer", alice.tenant))
    assert ada.get(URL).context["breakers"] == [("default", "open")], "alice's agent uses the deployment's provider only"
    assert b"10.9.9.0/24" not in ada.get(URL).content


def test_every_admin_page_links_to_the_overview(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}"' in html and "Control plane" in html
