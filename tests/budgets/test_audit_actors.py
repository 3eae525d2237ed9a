"""Who did it: every principal is named one way in the audit log (budgets/audit.py's actor helpers)."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from agents import admission
from budgets import audit, spend
from budgets.models import ApiKey, AuditEntry, Budget, Price
from sentinel_site import config_cache
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db


def test_an_api_keys_request_is_audited_as_its_key_id():
    admin = make_actor("acme", role="admin")
    response = Client().post("/v1/keys", json.dumps({"name": "ci"}), content_type="application/json", **admin.auth)
    assert response.status_code == 201, response.content
    entry = AuditEntry.objects.get(action="key.created", target=response.json()["id"])
    assert entry.actor == f"key:{admin.api_key.key_id}" == audit.actor_for_key(admin.api_key)


def test_an_admin_users_action_is_audited_as_the_user(alice):
    root = Client()
    root.force_login(User.objects.create_superuser("root", password=None))
    root.post(reverse("admin:budgets_apikey_changelist"), {"action": "revoke", "_selected_action": [alice.api_key.pk]})
    assert AuditEntry.objects.get(action="key.revoked", target=alice.api_key.key_id).actor == "user:root"


def test_what_no_key_asked_for_is_the_systems(alice):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))
    config_cache.clear()
    Budget.objects.filter(tenant=alice.tenant).update(limit=Decimal("0.01"))
    data = {"model": alice.agent.name, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(spend.BudgetExceeded):
        admission.admit(tenant=alice.tenant, api_key=None, data=data, idempotency_key=None, enqueue=lambda turn_id: None)
    assert AuditEntry.objects.get(action="budget.exceeded").actor == "system" == audit.SYSTEM


def test_a_key_minted_by_the_command_is_the_commands():
    call_command("create_api_key", "--tenant", "cli-co", stdout=StringIO(), stderr=StringIO())
    key = ApiKey.objects.get(tenant__name="cli-co")
    assert AuditEntry.objects.get(action="key.created", target=key.key_id).actor == "command"
