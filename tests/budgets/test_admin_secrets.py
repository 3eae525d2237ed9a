"""Secrets are write-only in the admin: an agent's provider key is never rendered, and a new API key's
plaintext is shown once, on the page that answers the form, and kept nowhere."""

from __future__ import annotations

import logging

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest
from django.test import Client
from django.urls import reverse

from agents.models import Agent
from budgets import keys
from budgets.admin_roles import group_name, sync_groups
from budgets.models import ApiKey, AuditEntry, OperatorBinding
from tests.budgets.test_admin import agent_form

pytestmark = pytest.mark.django_db

STORED_KEY = "sk-stored-SECRET-0123456789"
NEW_KEY = "sk-new-SECRET-9876543210"


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


@pytest.fixture
def agent(alice) -> Agent:
    alice.agent.provider_base_url = "http://127.0.0.1:9/v1"  # loopback: allowed to agents in the tests (conftest)
    alice.agent.provider_api_key = STORED_KEY
    alice.agent.save()
    return alice.agent


def change_url(agent: Agent) -> str:
    return reverse("admin:agents_agent_change", args=[agent.pk])


def save_agent(client: Client, agent: Agent, **values):
    body = agent_form(name=agent.name, provider_base_url=agent.provider_base_url, **values)
    response = client.post(change_url(agent), body)
    assert response.status_code in (200, 302)
    return response


def stored_key(agent: Agent) -> str:
    return Agent.objects.get(pk=agent.pk).provider_api_key


def test_the_agent_pages_never_render_the_provider_key(root, agent):
    for url in (change_url(agent), reverse("admin:agents_agent_changelist"), reverse("admin:agents_agent_history", args=[agent.pk])):
        page = root.get(url)
        assert page.status_code == 200 and STORED_KEY not in page.content.decode(), url
    form = root.get(change_url(agent)).context["adminform"].form
    assert "provider_api_key" not in form.fields and "new_provider_api_key" in form.fields


def test_a_view_only_operator_sees_whether_a_key_is_set_but_not_the_key(alice, agent):
    sync_groups()
    val = User.objects.create_user("val", is_staff=True)
    val.groups.add(Group.objects.get(name=group_name("viewer")))
    OperatorBinding.objects.create(user=val, tenant=alice.tenant)
    client = Client()
    client.force_login(val)
    page = client.get(change_url(agent))
    assert page.status_code == 200
    assert STORED_KEY not in page.content.decode()
    assert "Own provider key" in page.content.decode()


def test_a_blank_key_field_keeps_the_stored_key_and_a_new_one_replaces_it(root, agent):
    save_agent(root, agent, system_prompt="Be brief.")
    assert stored_key(agent) == STORED_KEY and Agent.objects.get(pk=agent.pk).system_prompt == "Be brief."
    save_agent(root, agent, new_provider_api_key=NEW_KEY)
    assert stored_key(agent) == NEW_KEY


def test_the_clear_box_removes_the_stored_key(root, agent):
    save_agent(root, agent, clear_provider_api_key="on")
    assert stored_key(agent) == ""


def test_a_new_key_and_the_clear_box_together_are_refused(root, agent):
    response = save_agent(root, agent, new_provider_api_key=NEW_KEY, clear_provider_api_key="on")
    assert "clear_provider_api_key" in response.context["adminform"].form.errors
    assert stored_key(agent) == STORED_KEY
    assert NEW_KEY not in response.content.decode()  # a refused form does not echo the key back


def test_a_key_change_leaves_no_trace_in_the_history_or_the_audit_log(root, agent, caplog):
    caplog.set_level(logging.DEBUG)
    save_agent(root, agent, new_provider_api_key=NEW_KEY)
    assert stored_key(agent) == NEW_KEY
    entry = LogEntry.objects.get(object_id=str(agent.pk))
    assert "New provider API key" in entry.get_change_message()  # names the field, never the value
    history = root.get(reverse("admin:agents_agent_history", args=[agent.pk])).content.decode()
    audited = [str(e.data) for e in AuditEntry.objects.all()]
    for secret in (NEW_KEY, STORED_KEY):
        assert secret not in entry.change_message and secret not in history
        assert not any(secret in data for data in audited)
        assert not any(secret in record.getMessage() for record in caplog.records)


def test_the_agent_form_refuses_a_provider_url_outside_the_allowlist(root, agent):
    response = root.post(change_url(agent), agent_form(name=agent.name, provider_base_url="http://169.254.169.254/v1"))
    assert response.status_code == 200
    assert "provider_base_url" in response.context["adminform"].form.errors
    assert Agent.objects.get(pk=agent.pk).provider_base_url == "http://127.0.0.1:9/v1"


# --- API keys made in the admin ----------------------------------------------------------------


def create_key(client: Client, tenant, **values):
    body = {"tenant": tenant.pk, "name": "ci", "role": "viewer", "expires_at_0": "", "expires_at_1": "", **values}
    return client.post(reverse("admin:budgets_apikey_add"), body)


def test_a_new_api_key_is_shown_once_on_the_page_that_answers_the_form(root, alice, caplog):
    caplog.set_level(logging.DEBUG)
    response = create_key(root, alice.tenant)
    assert response.status_code == 200
    page = response.content.decode()
    new = ApiKey.objects.get(tenant=alice.tenant, name="ci")
    plaintext = next(word for word in page.split('"') if word.startswith(f"snt_{new.key_id}_"))
    key_id, secret = keys.parse(plaintext)
    assert key_id == new.key_id and keys.matches(new.salt, new.hashed_secret, secret) and new.role == "viewer"
    assert "no-store" in response["Cache-Control"]
    # Kept nowhere else: not in a message cookie, the session, the audit log, the history or a log line.
    cookie = response.cookies.get("messages")
    stored_messages = CookieStorage(HttpRequest())._decode(cookie.value) if cookie else []
    assert not any(secret in str(message) for message in stored_messages or [])
    assert not any(secret in str(value) for value in root.session.values())
    assert secret not in str(list(AuditEntry.objects.values_list("data", flat=True)))
    assert secret not in str(list(LogEntry.objects.values_list("object_repr", "change_message")))
    assert not any(secret in record.getMessage() for record in caplog.records)
    assert secret not in root.get(reverse("admin:budgets_apikey_change", args=[new.pk])).content.decode()


def test_a_key_made_in_the_admin_is_issued_and_audited_as_everywhere_else(root, alice):
    create_key(root, alice.tenant, name="from-admin")
    new = ApiKey.objects.get(name="from-admin")
    created = AuditEntry.objects.get(action="key.created", target=new.key_id)
    # ApiKey.issue's own record (it names the key), with the admin user as the actor.
    assert created.actor == "user:root" and created.data == {"role": "viewer", "name": "from-admin"}
    assert created.tenant_id == alice.tenant.id


def test_an_operator_makes_keys_only_for_their_tenants(alice, bob):
    sync_groups()
    ada = User.objects.create_user("ada", is_staff=True)
    ada.groups.add(Group.objects.get(name=group_name("admin")))
    OperatorBinding.objects.create(user=ada, tenant=alice.tenant)
    client = Client()
    client.force_login(ada)
    response = create_key(client, bob.tenant, name="foreign")
    assert response.status_code == 200 and "tenant" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(name="foreign").exists()
    assert create_key(client, alice.tenant, name="own").status_code == 200
    assert ApiKey.objects.get(name="own").tenant == alice.tenant
