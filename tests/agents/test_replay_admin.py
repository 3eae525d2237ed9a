"""The replay in the admin: an action over selected turns, and the report on a turn's page, both
within the operator's tenants (agents/replay_admin.py)."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from budgets.admin_roles import group_name, sync_groups
from budgets.models import OperatorBinding, Price
from tests.agents.test_replay import admit_turn, run

pytestmark = pytest.mark.django_db


def operator(name: str, role: str, *tenants) -> Client:
    sync_groups()
    user = User.objects.create_user(name, is_staff=True)
    user.groups.add(Group.objects.get(name=group_name(role)))
    for tenant in tenants:
        OperatorBinding.objects.create(user=user, tenant=tenant)
    client = Client()
    client.force_login(user)
    return client


def test_a_turns_page_shows_its_replay_report(alice, stub_llm):
    turn = run(admit_turn(alice, "hello"))
    page = operator("val", "viewer", alice.tenant).get(reverse("admin:agents_turn_change", args=[turn.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "replay report" in text.lower() and "Identical" in text and "&quot;divergences&quot;: []" in text


def test_the_replay_action_reports_which_turns_diverged(alice, stub_llm):
    before = run(admit_turn(alice, "before the price"))
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("5"), output_per_mtok=Decimal("5"))
    after = run(admit_turn(alice, "after the price"))
    client = operator("val", "viewer", alice.tenant)
    response = client.post(
        reverse("admin:agents_turn_changelist"), {"action": "replay_selected", "_selected_action": [before.pk, after.pk]}, follow=True
    )
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == [
        f"Replayed 2 turn(s): 1 identical, 1 diverged, 0 not replayable. Diverged: {before.id} (each turn's page shows its report)."
    ]
    page = client.get(reverse("admin:agents_turn_change", args=[before.pk])).content.decode()
    assert "outcome.cost" in page and "1 divergence(s)" in page


def test_an_operator_replays_and_reads_only_their_tenants_turns(alice, bob, stub_llm):
    theirs = run(admit_turn(bob, "bob's"))
    client = operator("ada", "admin", alice.tenant)
    assert client.get(reverse("admin:agents_turn_change", args=[theirs.pk])).status_code == 404
    selected = {"action": "replay_selected", "_selected_action": [theirs.pk]}
    response = client.post(reverse("admin:agents_turn_changelist"), selected, follow=True)
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Replayed 0 turn(s): 0 identical, 0 diverged, 0 not replayable."]
