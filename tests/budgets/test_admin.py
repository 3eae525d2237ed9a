"""The admin is tenant-scoped: an operator bound to alice sees alice's rows, in every admin surface, and
nothing of bob's; superusers see all; users, bindings and periodic tasks are for superusers only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, Approval, Conversation, DeadLetter, Message, Turn, TurnEventRecord, TurnStatus
from batches.models import Batch, BatchLine, File
from budgets.admin_roles import group_name, sync_groups
from budgets.models import ApiKey, AuditEntry, Budget, OperatorBinding, Price, Reservation, SpendEntry, Tenant
from memory.models import ConsolidationRun, Memory, Summary
from responses.models import Response
from routing.models import ModelGroup, Policy
from runs.models import Run, Step, Workflow
from sentinel_site.admin import CappedPaginator, SuperuserOnlyMixin, TenantFilter, TenantScopedMixin
from tests.conftest import Actor
from webhooks.models import Delivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

# How each admin's rows reach their tenant, written out here (not read from the admins) so a
# missing or wrong scope fails these tests.
TENANT_PATHS = {
    Tenant: "id",
    ApiKey: "tenant",
    Budget: "tenant",
    Price: "tenant",
    Reservation: "tenant",
    SpendEntry: "tenant",
    AuditEntry: "tenant_id",
    Agent: "tenant",
    Conversation: "tenant",
    Message: "tenant",
    Turn: "tenant",
    TurnEventRecord: "turn__tenant",
    DeadLetter: "tenant",
    Approval: "tenant",
    Summary: "tenant",
    Memory: "tenant",
    ConsolidationRun: "tenant",
    Run: "tenant",
    Step: "tenant",
    Workflow: "tenant",
    File: "tenant",
    Batch: "tenant",
    BatchLine: "batch__tenant",
    Response: "tenant",
    WebhookEndpoint: "tenant",
    Delivery: "tenant",
    ModelGroup: "tenant",
    Policy: "agent__tenant",
}
SHARED = {Price, ModelGroup}  # rows with no tenant (global prices, groups) are every operator's to read
SCOPED = sorted(TENANT_PATHS, key=lambda model: model._meta.label)


def label(model) -> str:
    return model._meta.label


def tenant_of(obj, path: str):
    """The tenant id a row reaches through its admin's tenant path ("turn__tenant", "tenant_id", "id")."""
    if path == "id":
        return obj.pk
    *hops, last = path.removesuffix("_id").split("__")
    for hop in hops:
        obj = getattr(obj, hop)
    return getattr(obj, f"{last}_id")


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def populate(actor: Actor, agent: Agent) -> dict:
    """One row of every tenant-owned kind for this actor's tenant."""
    tenant = actor.tenant
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, title=f"{tenant.name}-private-chat")
    Message.objects.create(tenant=tenant, conversation=conversation, seq=1, index=0, role="user", content=f"{tenant.name} says hi")
    turn = Turn.objects.create(
        tenant=tenant, conversation=conversation, agent=agent, api_key=actor.api_key, seq=1, status=TurnStatus.FAILED
    )
    TurnEventRecord.objects.create(turn=turn, seq=1, kind="queued")
    letter = DeadLetter.objects.create(tenant=tenant, turn=turn, reason="zombie", attempts=3)
    Approval.objects.create(tenant=tenant, turn=turn, tool_calls=[], expires_at=timezone.now() + timedelta(hours=1))
    summary = Summary.objects.create(tenant=tenant, conversation=conversation, text=f"{tenant.name} summary", first_seq=1, last_seq=1)
    Memory.objects.create(
        tenant=tenant, agent=agent, conversation=conversation, kind="summary", summary=summary, text="remembered", embedding=[0.1] * 384
    )
    ConsolidationRun.objects.create(tenant=tenant, conversation=conversation)
    Reservation.objects.create(tenant=tenant, amount=Decimal(1), expires_at=timezone.now() + timedelta(hours=1))
    SpendEntry.objects.create(tenant=tenant, api_key=actor.api_key, model="m", cost=Decimal(1))
    Price.objects.create(tenant=tenant, model="m")
    run = Run.objects.create(tenant=tenant, pattern="parallel", input=f"{tenant.name} asks")
    Step.objects.create(tenant=tenant, run=run, key="a", position=0, kind="agent", agent=agent)
    Workflow.objects.create(tenant=tenant, name=f"{tenant.name}-flow", definition={"steps": []})
    file = File.objects.create(tenant=tenant, purpose="batch", filename=f"{tenant.name}.jsonl", bytes=2, content=b"{}")
    batch = Batch.objects.create(tenant=tenant, endpoint="/v1/chat/completions", input_file=file, expires_at=timezone.now())
    BatchLine.objects.create(batch=batch, index=0, custom_id=f"{tenant.name}-line", turn=turn)
    Response.objects.create(tenant=tenant, turn=turn, model=agent.name)
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url="https://hooks.example.com/", event_types=["batch.completed"], secret="whsec_x"
    )
    Delivery.objects.create(tenant=tenant, endpoint=endpoint, event_id=f"evt_{tenant.name}", event_type="batch.completed", payload={})
    ModelGroup.objects.create(tenant=tenant, name=f"{tenant.name}-group")
    Policy.objects.create(agent=agent, dedup=True)
    return {"conversation": conversation, "letter": letter}


@dataclass
class World:
    alice: Actor
    bob: Actor
    bobs_agent: Agent
    rows: dict
    root: Client
    ada: Client  # an operator (admin role) bound to alice
    nobody: Client  # staff with the admin role, bound to no tenant


def staff(name: str, role: str | None, *tenants: Tenant) -> User:
    user = User.objects.create_user(name, is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=group_name(role)))
    for tenant in tenants:
        OperatorBinding.objects.create(user=user, tenant=tenant)
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world(alice, bob) -> World:
    sync_groups()
    bobs_agent = Agent.objects.create(tenant=bob.tenant, name="bobs-secret-agent")
    rows = {"alice": populate(alice, alice.agent), "bob": populate(bob, bobs_agent)}
    Price.objects.create(tenant=None, model="global-model")
    root = User.objects.create_superuser("root", password=None)
    return World(
        alice=alice,
        bob=bob,
        bobs_agent=bobs_agent,
        rows=rows,
        root=logged_in(root),
        ada=logged_in(staff("ada", "admin", alice.tenant)),
        nobody=logged_in(staff("nobody", "admin")),
    )


def changelist(client: Client, model, **params):
    response = client.get(admin_url(model, "changelist"), params)
    assert response.status_code == 200, f"{label(model)} changelist answered {response.status_code}"
    return response.context["cl"]


def tenants_listed(cl) -> set:
    return {tenant_of(row, TENANT_PATHS[cl.model]) for row in cl.result_list}


def test_every_admin_is_tenant_scoped_or_for_superusers_only():
    for model, model_admin in admin.site._registry.items():
        if isinstance(model_admin, SuperuserOnlyMixin):
            continue
        assert model in TENANT_PATHS, f"{label(model)}: give its admin a tenant path (sentinel_site/admin.py) and list it here"
        assert isinstance(model_admin, TenantScopedMixin) and model_admin.tenant_path == TENANT_PATHS[model], label(model)
    assert set(TENANT_PATHS) <= set(admin.site._registry)


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_an_operator_lists_only_their_tenants_rows(world, model):
    shared = model in SHARED
    assert tenants_listed(changelist(world.root, model)) >= {world.alice.tenant.id, world.bob.tenant.id}
    listed = tenants_listed(changelist(world.ada, model))
    assert world.alice.tenant.id in listed
    assert listed <= {world.alice.tenant.id, None} if shared else listed == {world.alice.tenant.id}


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_the_tenant_filter_offers_only_the_operators_tenants(world, model):
    filters = [spec for spec in changelist(world.ada, model).filter_specs if isinstance(spec, TenantFilter)]
    for spec in filters:
        assert spec.lookup_choices == [(str(world.alice.tenant.id), "alice")]
    if model is Tenant:
        assert filters == []  # the rows are the tenants
        return
    assert filters, f"{label(model)}: list_filter needs TenantFilter"
    bobs = tenants_listed(changelist(world.ada, model, tenant=str(world.bob.tenant.id)))
    assert bobs <= {None} if model in SHARED else bobs == set()


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_a_staff_user_bound_to_no_tenant_sees_nothing(world, model):
    listed = tenants_listed(changelist(world.nobody, model))
    assert listed <= {None} if model in SHARED else listed == set()


@pytest.mark.parametrize("model", SCOPED, ids=label)
def test_another_tenants_row_is_a_404_on_its_change_and_history_pages(world, model):
    path = TENANT_PATHS[model]
    rows = list(model._default_manager.all())
    bobs = next(row for row in rows if tenant_of(row, path) == world.bob.tenant.id)
    alices = next(row for row in rows if tenant_of(row, path) == world.alice.tenant.id)
    assert world.ada.get(admin_url(model, "change", alices.pk)).status_code == 200
    assert world.ada.get(admin_url(model, "change", bobs.pk)).status_code == 404
    assert world.ada.get(admin_url(model, "history", bobs.pk)).status_code == 404
    assert world.root.get(admin_url(model, "change", bobs.pk)).status_code == 200


def test_an_id_that_exists_nowhere_answers_exactly_like_another_tenants(world):
    assert world.ada.get(admin_url(Agent, "change", uuid.uuid4())).status_code == 404
    assert world.ada.get(admin_url(Agent, "change", "not-a-uuid")).status_code == 404
    assert world.ada.get(admin_url(Agent, "delete", world.bobs_agent.pk)).status_code == 404


def test_search_finds_nothing_of_other_tenants(world):
    assert [k.tenant.name for k in changelist(world.root, ApiKey, q="bob").result_list] == ["bob"]
    assert list(changelist(world.ada, ApiKey, q="bob").result_list) == []
    assert list(changelist(world.ada, Tenant, q="bob").result_list) == []
    assert list(changelist(world.ada, Conversation, q="bob-private").result_list) == []


def test_form_choices_offer_only_the_operators_tenants(world):
    form = world.ada.get(admin_url(Agent, "add")).context["adminform"].form
    assert list(form.fields["tenant"].queryset) == [world.alice.tenant]
    response = world.ada.post(admin_url(Agent, "add"), agent_form(tenant=world.bob.tenant.pk, name="sneaky"))
    assert response.status_code == 200 and "tenant" in response.context["adminform"].form.errors
    assert not Agent.objects.filter(name="sneaky").exists()


def can_add_conversations(username: str) -> None:
    User.objects.get(username=username).user_permissions.add(Permission.objects.get(codename="add_conversation"))


def test_a_raw_id_field_refuses_and_does_not_name_another_tenants_row(world):
    can_add_conversations("ada")
    assert "bobs-secret-agent" in world.root.get(admin_url(Conversation, "add"), {"agent": world.bobs_agent.pk}).content.decode()
    page = world.ada.get(admin_url(Conversation, "add"), {"agent": world.bobs_agent.pk})
    assert page.status_code == 200 and "bobs-secret-agent" not in page.content.decode()
    response = world.ada.post(
        admin_url(Conversation, "add"), {"tenant": world.alice.tenant.pk, "agent": world.bobs_agent.pk, "metadata": "{}"}
    )
    assert "agent" in response.context["adminform"].form.errors
    assert "bobs-secret-agent" not in response.content.decode()
    assert not Conversation.objects.filter(tenant=world.alice.tenant, agent=world.bobs_agent).exists()


def test_a_budget_cannot_be_put_on_another_tenants_key(world):
    data = {"tenant": world.alice.tenant.pk, "api_key": world.bob.api_key.pk, "period": "daily", "limit": "5", "soft_limit_share": "0.8"}
    data.update({"windows-TOTAL_FORMS": "0", "windows-INITIAL_FORMS": "0"})
    response = world.ada.post(admin_url(Budget, "add"), data)
    assert response.status_code == 200 and "api_key" in response.context["adminform"].form.errors
    assert not world.bob.api_key.budgets.exists()


def test_an_operator_bound_to_two_tenants_cannot_join_their_rows(world):
    OperatorBinding.objects.create(user=User.objects.get(username="ada"), tenant=world.bob.tenant)
    can_add_conversations("ada")
    response = world.ada.post(
        admin_url(Conversation, "add"), {"tenant": world.alice.tenant.pk, "agent": world.bobs_agent.pk, "metadata": "{}"}
    )
    assert response.context["adminform"].form.errors["agent"] == ["This belongs to another tenant."]


def test_autocomplete_offers_only_the_operators_tenants(world):
    params = {"app_label": "agents", "model_name": "agent", "field_name": "tenant", "term": ""}
    names = lambda client: {r["text"] for r in client.get(reverse("admin:autocomplete"), params).json()["results"]}  # noqa: E731
    assert names(world.root) >= {"alice", "bob"}
    assert names(world.ada) == {"alice"}


def test_bulk_actions_touch_only_the_operators_rows(world, monkeypatch):
    enqueued = []
    monkeypatch.setattr("agents.admin.enqueue_turn", enqueued.append)
    keys = [world.alice.api_key.pk, world.bob.api_key.pk]
    world.ada.post(admin_url(ApiKey, "changelist"), {"action": "revoke", "_selected_action": keys})
    assert ApiKey.objects.get(pk=world.alice.api_key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=world.bob.api_key.pk).revoked_at is None

    letters = [world.rows["alice"]["letter"], world.rows["bob"]["letter"]]
    world.ada.post(admin_url(DeadLetter, "changelist"), {"action": "redrive", "_selected_action": [d.pk for d in letters]})
    assert enqueued == [letters[0].turn_id]
    assert DeadLetter.objects.get(pk=letters[1].pk).redriven_at is None


def test_a_viewer_cannot_run_the_revoke_or_redrive_actions(world, monkeypatch):
    monkeypatch.setattr("agents.admin.enqueue_turn", lambda turn_id: None)
    val = logged_in(staff("val", "viewer", world.alice.tenant))
    val.post(admin_url(ApiKey, "changelist"), {"action": "revoke", "_selected_action": [world.alice.api_key.pk]})
    assert ApiKey.objects.get(pk=world.alice.api_key.pk).revoked_at is None
    letter = world.rows["alice"]["letter"]
    val.post(admin_url(DeadLetter, "changelist"), {"action": "redrive", "_selected_action": [letter.pk]})
    assert DeadLetter.objects.get(pk=letter.pk).redriven_at is None


def test_operators_see_global_prices_but_cannot_change_them(world):
    price = Price.objects.get(tenant=None, model="global-model")
    assert world.ada.get(admin_url(Price, "change", price.pk)).status_code == 200
    response = world.ada.post(
        admin_url(Price, "change", price.pk), {"model": "global-model", "input_per_mtok": "0", "output_per_mtok": "0"}
    )
    assert response.status_code == 403
    form = world.ada.get(admin_url(Price, "add")).context["adminform"].form
    assert form.fields["tenant"].required and list(form.fields["tenant"].queryset) == [world.alice.tenant]


def test_an_operator_cannot_create_or_delete_tenants_or_manage_bindings(world):
    assert world.ada.get(admin_url(Tenant, "add")).status_code == 403
    assert world.ada.post(admin_url(Tenant, "add"), {"name": "mine", "is_active": "on"}).status_code == 403
    assert not Tenant.objects.filter(name="mine").exists()
    assert world.ada.get(admin_url(Tenant, "delete", world.alice.tenant.pk)).status_code == 403
    User.objects.get(username="ada").user_permissions.add(*Permission.objects.filter(codename__endswith="_operatorbinding"))
    assert world.ada.get(admin_url(OperatorBinding, "changelist")).status_code == 403
    assert world.ada.get(admin_url(OperatorBinding, "add")).status_code == 403
    assert world.root.get(admin_url(OperatorBinding, "changelist")).status_code == 200
    # Superusers bind operators on the tenant's page too; operators do not see who else is bound.
    assert "Operators bound to this tenant" in world.root.get(admin_url(Tenant, "change", world.alice.tenant.pk)).content.decode()
    page = world.ada.get(admin_url(Tenant, "change", world.alice.tenant.pk))
    assert page.status_code == 200 and "Operators bound to this tenant" not in page.content.decode()


def test_users_groups_and_periodic_tasks_are_for_superusers_only_whatever_the_permissions(world):
    ada = User.objects.get(username="ada")
    ada.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["auth", "django_celery_beat"]))
    for url in ("admin:auth_user_changelist", "admin:auth_group_changelist", "admin:django_celery_beat_periodictask_changelist"):
        assert world.ada.get(reverse(url)).status_code == 403, url
        assert world.root.get(reverse(url)).status_code == 200, url
    assert world.ada.get(reverse("admin:auth_user_change", args=[ada.pk])).status_code == 403


def test_no_role_group_grants_tenant_creation_bindings_or_periodic_tasks():
    sync_groups()
    granted = Permission.objects.filter(group__name__startswith="Sentinel ")
    assert not granted.filter(content_type__app_label__in=["django_celery_beat", "auth"]).exists()
    assert not granted.filter(codename__in=["add_tenant", "delete_tenant", "view_operatorbinding", "add_operatorbinding"]).exists()
    assert Group.objects.get(name=group_name("executor")).permissions.filter(codename="change_deadletter").exists()
    assert not Group.objects.get(name=group_name("viewer")).permissions.filter(codename="change_deadletter").exists()


def test_read_only_tables_allow_no_delete_except_memories(world):
    ada = User.objects.get(username="ada")
    ada.user_permissions.add(*Permission.objects.filter(codename__in=["delete_message", "delete_summary", "delete_memory"]))
    message = Message.objects.filter(tenant=world.alice.tenant).first()
    assert world.ada.get(admin_url(Message, "delete", message.pk)).status_code == 403
    memory = Memory.objects.filter(tenant=world.alice.tenant).first()
    assert world.ada.get(admin_url(Memory, "delete", memory.pk)).status_code == 200


# --- the memory search page --------------------------------------------------------------------
SEARCH = "admin:memory_semantic_search"


def test_the_memory_search_page_offers_only_the_operators_tenants(world):
    page = world.ada.get(reverse(SEARCH)).content.decode()
    assert f'value="{world.alice.tenant.id}"' in page and f'value="{world.bob.tenant.id}"' not in page
    assert f'value="{world.bob.tenant.id}"' in world.root.get(reverse(SEARCH)).content.decode()


def test_the_memory_search_page_refuses_another_tenants_id(world):
    assert world.ada.get(reverse(SEARCH), {"tenant": str(world.bob.tenant.id)}).status_code == 404
    assert world.ada.get(reverse(SEARCH), {"tenant": str(uuid.uuid4())}).status_code == 404
    assert world.ada.get(reverse(SEARCH), {"tenant": "nonsense"}).status_code == 404
    assert world.ada.get(reverse(SEARCH), {"tenant": str(world.alice.tenant.id)}).status_code == 200


def test_the_memory_search_page_needs_the_memory_view_permission(world):
    no_role = logged_in(staff("norole", None, world.alice.tenant))
    assert no_role.get(reverse(SEARCH)).status_code == 403


# --- big tables --------------------------------------------------------------------------------
BIG = [Message, TurnEventRecord, Turn, Memory, Summary, AuditEntry, SpendEntry, Reservation, Conversation, ConsolidationRun]


@pytest.mark.parametrize("model", BIG, ids=label)
def test_big_tables_use_the_capped_paginator(model):
    model_admin = admin.site._registry[model]
    assert model_admin.paginator is CappedPaginator and model_admin.show_full_result_count is False


def test_a_big_changelist_never_counts_past_the_cap(world, monkeypatch):
    monkeypatch.setattr(CappedPaginator, "CAP", 3)
    monkeypatch.setattr(admin.site._registry[Message], "list_per_page", 2)  # the cap stays above a page, as in production
    conversation = world.rows["alice"]["conversation"]
    Message.objects.bulk_create(
        Message(tenant=world.alice.tenant, conversation=conversation, seq=2, index=i, role="user", content="x") for i in range(5)
    )
    with CaptureQueriesContext(connection) as queries:
        cl = changelist(world.root, Message)
    assert cl.result_count == 3 and len(cl.result_list) == 2
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 3" in sql for sql in counts), counts


def agent_form(**values) -> dict:
    """A complete agent form body (the admin's POST), with `values` over the defaults."""
    data = {
        "name": "helper",
        "system_prompt": "",
        "model": "",
        "specialization": "",
        "default_params": "{}",
        "provider_base_url": "",
        "context_budget": 2048,
        "short_term_messages": 12,
        "short_term_tokens": 1024,
        "recall_limit": 8,
        "consolidation_threshold": 10000,
        "multitask_strategy": "enqueue",
        "requires_approval": "[]",
        "new_provider_api_key": "",
    }
    data.update(values)
    return data


def test_only_superusers_may_verify_the_whole_audit_chain(world):
    def actions(client: Client) -> set[str]:
        form = client.get(admin_url(AuditEntry, "changelist")).context["action_form"]
        return set() if form is None else {name for name, _ in form.fields["action"].choices}

    assert "verify_chain" in actions(world.root)
    assert "verify_chain" not in actions(world.ada)  # it reads every tenant's entries


def test_an_admin_change_is_audited_under_the_changed_objects_tenant(alice):
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType

    from budgets.models import AuditEntry

    root = User.objects.create_superuser("auditor", password=None)
    LogEntry.objects.log_actions(root.pk, [alice.agent], CHANGE, change_message="[]", single_object=True)
    entry = AuditEntry.objects.filter(action="admin.change").last()
    assert entry.tenant_id == alice.tenant.id and ContentType.objects.get_for_model(alice.agent).model in entry.target


def test_a_malformed_tenant_filter_lists_nothing_instead_of_failing(alice):
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.create_superuser("filterer", password=None))
    response = client.get("/admin/agents/agent/?tenant=not-a-uuid")
    assert response.status_code == 200 and alice.agent.name not in response.content.decode().split("result_list")[-1]
