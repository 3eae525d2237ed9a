"""The governance API, and every endpoint refusing a role without its permission."""

import uuid
from decimal import Decimal

import pytest
from django.test import Client

from budgets import roles
from budgets.models import ApiKey, AuditEntry, Budget, Price
from budgets.roles import PERMISSIONS, Role
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db

# Fixed, not random: the test ids carry them, and every pytest-xdist process must collect the same tests.
ID = str(uuid.UUID(int=0x5E17))
HEX = uuid.UUID(int=0x5E18).hex
# (method, path, the scope it needs). Ids need not exist: permission is checked before lookup.
ENDPOINTS = [
    ("post", "/v1/chat/completions", roles.TURNS_EXECUTE),
    ("get", "/v1/turns", roles.TURNS_READ),
    ("get", f"/v1/turns/{ID}", roles.TURNS_READ),
    ("get", f"/v1/turns/{ID}/events", roles.TURNS_READ),
    ("post", f"/v1/turns/{ID}/cancel", roles.TURNS_EXECUTE),
    ("post", f"/v1/turns/{ID}/interrupt", roles.TURNS_EXECUTE),
    ("post", f"/v1/turns/{ID}/resume", roles.TURNS_EXECUTE),
    ("post", f"/v1/conversations/{ID}/interrupt", roles.TURNS_EXECUTE),
    ("get", "/v1/approvals", roles.TURNS_READ),
    ("get", f"/v1/approvals/{ID}", roles.TURNS_READ),
    ("post", f"/v1/approvals/{ID}", roles.TURNS_EXECUTE),
    ("get", "/v1/models", roles.AGENTS_READ),
    ("get", "/v1/agents", roles.AGENTS_READ),
    ("post", "/v1/agents", roles.AGENTS_WRITE),
    ("get", f"/v1/agents/{ID}", roles.AGENTS_READ),
    ("patch", f"/v1/agents/{ID}", roles.AGENTS_WRITE),
    ("delete", f"/v1/agents/{ID}", roles.AGENTS_WRITE),
    ("get", "/v1/conversations", roles.TURNS_READ),
    ("post", "/v1/conversations", roles.MEMORY_WRITE),
    ("get", f"/v1/conversations/{ID}", roles.TURNS_READ),
    ("get", f"/v1/conversations/{ID}/messages", roles.TURNS_READ),
    ("post", f"/v1/conversations/{ID}/messages", roles.MEMORY_WRITE),
    ("delete", f"/v1/conversations/{ID}/messages/{ID}", roles.MEMORY_WRITE),
    ("get", f"/v1/conversations/{ID}/summaries", roles.MEMORY_READ),
    ("post", f"/v1/conversations/{ID}/consolidate", roles.MEMORY_WRITE),
    ("get", f"/v1/conversations/{ID}/consolidations", roles.MEMORY_READ),
    ("get", f"/v1/conversations/{ID}/context", roles.MEMORY_READ),
    ("get", "/v1/memory/search", roles.MEMORY_READ),
    ("delete", f"/v1/memory/{ID}", roles.MEMORY_WRITE),
    ("get", "/v1/budgets", roles.BUDGETS_ADMIN),
    ("put", "/v1/budgets", roles.BUDGETS_ADMIN),
    ("get", "/v1/pricing", roles.BUDGETS_ADMIN),
    ("put", "/v1/pricing", roles.BUDGETS_ADMIN),
    ("get", "/v1/usage", roles.BUDGETS_ADMIN),
    ("get", "/v1/audit", roles.AUDIT_READ),
    ("get", "/v1/keys", roles.KEYS_ADMIN),
    ("post", "/v1/keys", roles.KEYS_ADMIN),
    ("delete", "/v1/keys/abcdefghijkl", roles.KEYS_ADMIN),
    ("post", "/v1/keys/abcdefghijkl/rotate", roles.KEYS_ADMIN),
    ("get", "/v1/files", roles.TURNS_READ),
    ("post", "/v1/files", roles.TURNS_EXECUTE),
    ("get", f"/v1/files/file-{HEX}", roles.TURNS_READ),
    ("get", f"/v1/files/file-{HEX}/content", roles.TURNS_READ),
    ("delete", f"/v1/files/file-{HEX}", roles.TURNS_EXECUTE),
    ("get", "/v1/batches", roles.TURNS_READ),
    ("post", "/v1/batches", roles.TURNS_EXECUTE),
    ("get", f"/v1/batches/batch_{HEX}", roles.TURNS_READ),
    ("post", f"/v1/batches/batch_{HEX}/cancel", roles.TURNS_EXECUTE),
    ("post", "/v1/responses", roles.TURNS_EXECUTE),
    ("get", f"/v1/responses/resp_{HEX}", roles.TURNS_READ),
    ("delete", f"/v1/responses/resp_{HEX}", roles.TURNS_EXECUTE),
    ("post", f"/v1/responses/resp_{HEX}/cancel", roles.TURNS_EXECUTE),
    ("get", f"/v1/responses/resp_{HEX}/input_items", roles.TURNS_READ),
    ("get", f"/v1/conversations/{ID}/items", roles.TURNS_READ),
    ("post", f"/v1/conversations/{ID}/items", roles.MEMORY_WRITE),
    *(
        entry
        for prefix in ("webhook_endpoints", "webhooks")
        for entry in (
            ("get", f"/v1/{prefix}", roles.AGENTS_READ),
            ("post", f"/v1/{prefix}", roles.AGENTS_WRITE),
            ("get", f"/v1/{prefix}/we_{HEX}", roles.AGENTS_READ),
            ("post", f"/v1/{prefix}/we_{HEX}", roles.AGENTS_WRITE),
            ("delete", f"/v1/{prefix}/we_{HEX}", roles.AGENTS_WRITE),
            ("post", f"/v1/{prefix}/we_{HEX}/rotate_secret", roles.AGENTS_WRITE),
            ("post", f"/v1/{prefix}/we_{HEX}/test", roles.AGENTS_WRITE),
            ("get", f"/v1/{prefix}/we_{HEX}/deliveries", roles.AGENTS_READ),
            ("post", f"/v1/{prefix}/we_{HEX}/deliveries/whd_{HEX}/redeliver", roles.AGENTS_WRITE),
        )
    ),
]


@pytest.mark.parametrize("role", [r.value for r in Role])
@pytest.mark.parametrize("method,path,scope", ENDPOINTS)
def test_every_endpoint_refuses_a_role_without_its_permission(role, method, path, scope):
    actor = make_actor(f"matrix-{role}", role=role)
    client = Client()
    if method == "get":
        response = client.get(path, **actor.auth)
    else:
        response = getattr(client, method)(path, data="{}", content_type="application/json", **actor.auth)
    if scope in PERMISSIONS[role]:
        assert response.status_code != 403, f"{role} should be allowed {method.upper()} {path}: {response.content[:200]}"
    else:
        assert response.status_code == 403, f"{role} must be refused {method.upper()} {path}, got {response.status_code}"
        assert response.json()["error"]["type"] == "permission_error"


@pytest.fixture
def admin():
    return make_actor("acme", role="admin")


def test_budgets_show_spend_against_limit_and_can_be_set(admin):
    client = Client()
    listed = client.get("/v1/budgets", **admin.auth).json()["data"]
    assert {b["period"]: b["limit"] for b in listed} == {"daily": "100.000000", "monthly": "2000.000000"}
    body = {
        "budgets": [
            {"period": "daily", "limit": "5"},
            {"period": "monthly", "limit": "50", "api_key": admin.api_key.key_id, "fallback_model": "small"},
        ]
    }
    updated = client.put("/v1/budgets", body, content_type="application/json", **admin.auth).json()["data"]
    assert {(b["period"], b["api_key"], b["limit"]) for b in updated} >= {
        ("daily", None, "5.000000"),
        ("monthly", admin.api_key.key_id, "50.000000"),
    }
    assert AuditEntry.objects.filter(action="budget.changed", tenant_id=admin.tenant.id).count() == 2


def test_bad_budget_input_is_a_400_and_changes_nothing(admin):
    client = Client()
    for body, param in [
        ({"budgets": [{"period": "weekly", "limit": 1}]}, "budgets[0].period"),
        ({"budgets": [{"period": "daily", "limit": -1}]}, "budgets[0].limit"),
        ({"budgets": []}, "budgets"),
    ]:
        response = client.put("/v1/budgets", body, content_type="application/json", **admin.auth)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    other = make_actor("other-co")
    response = client.put(
        "/v1/budgets",
        {"budgets": [{"period": "daily", "limit": 1, "api_key": other.api_key.key_id}]},
        content_type="application/json",
        **admin.auth,
    )
    assert response.status_code == 404, "another tenant's key is not ours to budget"
    assert Budget.objects.get(tenant=admin.tenant, period="daily", api_key=None).limit == 100


@pytest.mark.parametrize("limit", [".", "", "1e3", " 1", "-0", "1_0", "٣", "NaN", "123456789", "1.1234567", True, None, -0.5])
def test_a_budget_limit_is_a_plain_non_negative_decimal(admin, limit):
    body = {"budgets": [{"period": "daily", "limit": limit}]}
    response = Client().put("/v1/budgets", body, content_type="application/json", **admin.auth)
    assert response.status_code == 400 and response.json()["error"]["param"] == "budgets[0].limit", response.content


@pytest.mark.parametrize("share,accepted", [("1", True), ("0.125", True), (1, True), ("1.001", False), ("2", False), (1.5, False)])
def test_a_soft_limit_share_is_from_0_to_1(admin, share, accepted):
    body = {"budgets": [{"period": "daily", "limit": "1", "soft_limit_share": share}]}
    response = Client().put("/v1/budgets", body, content_type="application/json", **admin.auth)
    assert (response.status_code == 200) is accepted, response.content


def test_a_json_number_amount_is_rounded_to_the_fields_places(admin):
    body = {"budgets": [{"period": "daily", "limit": 0.1 + 0.2}]}  # 0.30000000000000004
    response = Client().put("/v1/budgets", body, content_type="application/json", **admin.auth)
    assert response.status_code == 200, response.content
    assert Budget.objects.get(tenant=admin.tenant, period="daily", api_key=None).limit == Decimal("0.3")


def test_pricing_put_sets_only_this_tenants_prices(admin):
    Price.objects.create(model="gpt-x", input_per_mtok=1, output_per_mtok=1)
    body = {"prices": [{"model": "gpt-x", "input_per_mtok": "3", "output_per_mtok": "6"}]}
    assert Client().put("/v1/pricing", body, content_type="application/json", **admin.auth).status_code == 200
    assert Price.objects.get(tenant__isnull=True, model="gpt-x").input_per_mtok == 1
    assert Price.objects.get(tenant=admin.tenant, model="gpt-x").input_per_mtok == 3
    other = make_actor("other-co", role="admin")
    scopes = {p["scope"] for p in Client().get("/v1/pricing", **other.auth).json()["data"]}
    assert scopes == {"global"}


def test_keys_can_be_created_listed_rotated_and_revoked(admin):
    client = Client()
    created = client.post("/v1/keys", {"role": "viewer", "name": "ci"}, content_type="application/json", **admin.auth).json()
    assert created["key"].startswith("snt_") and created["role"] == "viewer"
    assert "key" not in client.get("/v1/keys", **admin.auth).json()["data"][0]
    assert client.post(f"/v1/keys/{created['id']}/rotate?overlap_hours=1.5", **admin.auth).status_code == 400
    rotated = client.post(f"/v1/keys/{created['id']}/rotate?overlap_hours=1", **admin.auth)
    assert rotated.status_code == 201 and rotated.json()["role"] == "viewer"
    old = ApiKey.objects.get(key_id=created["id"])
    assert old.expires_at is not None and old.is_usable, "the old key keeps working during the overlap"
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {rotated.json()['key']}").status_code == 200
    assert client.delete(f"/v1/keys/{created['id']}", **admin.auth).status_code == 204
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {created['key']}").status_code == 401
    actions = list(AuditEntry.objects.filter(tenant_id=admin.tenant.id).values_list("action", flat=True))
    assert {"key.created", "key.rotated", "key.revoked"} <= set(actions)


def test_a_key_name_must_be_text(admin):
    response = Client().post("/v1/keys", {"name": 0}, content_type="application/json", **admin.auth)
    assert response.status_code == 400 and response.json()["error"]["param"] == "name", "DRF would have stored 0 as '0'"
    assert not ApiKey.objects.filter(tenant=admin.tenant, name="0").exists()


@pytest.mark.parametrize(
    "path,param",
    [
        ("/v1/usage?days=null", "days"),
        ("/v1/usage?days=%2B3", "days"),
        ("/v1/usage?days=367", "days"),
        ("/v1/audit?limit=501", "limit"),
        ("/v1/audit?limit=", "limit"),
        ("/v1/audit?action=%00", "action"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(admin, path, param):
    response = Client().get(path, **admin.auth)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content


def test_a_developer_cannot_mint_admin_keys_and_nobody_reaches_another_tenants_keys(admin):
    other = make_actor("other-co", role="admin")
    assert Client().delete(f"/v1/keys/{other.api_key.key_id}", **admin.auth).status_code == 404
    assert ApiKey.objects.get(pk=other.api_key.pk).revoked_at is None


def test_audit_lists_only_this_tenants_entries(admin):
    other = make_actor("other-co", role="admin")
    Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {other.key}x")  # a failed auth: audited
    entries = Client().get("/v1/audit", **admin.auth).json()["results"]
    assert entries and all(e["seq"] for e in entries)
    assert {e["target"] for e in entries} & {other.api_key.key_id} == set()


def test_usage_is_read_from_the_ledger(admin):
    from budgets import spend

    reservation = spend.reserve(admin.tenant.id, admin.api_key.id, Decimal(1))
    spend.settle(reservation.id, model="gpt-x", prompt_tokens=100, completion_tokens=50, actual=Decimal("0.5"))
    rows = Client().get("/v1/usage", **admin.auth).json()["data"]
    assert rows == [
        {
            "day": rows[0]["day"],
            "api_key": admin.api_key.key_id,
            "model": "gpt-x",
            "cost": "0.50000000",
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "calls": 1,
        }
    ]
    assert Client().get("/v1/usage?days=0", **admin.auth).status_code == 400


def test_admin_users_get_the_same_roles_as_groups():
    from django.contrib.auth.models import Group, User

    from budgets.admin_roles import group_name, sync_groups

    sync_groups()
    viewer = User.objects.create_user("val", is_staff=True)
    viewer.groups.add(Group.objects.get(name=group_name("viewer")))
    admin_user = User.objects.create_user("ada", is_staff=True)
    admin_user.groups.add(Group.objects.get(name=group_name("admin")))
    assert viewer.has_perm("agents.view_agent") and not viewer.has_perm("agents.change_agent")
    assert not viewer.has_perm("budgets.view_auditentry") and not viewer.has_perm("budgets.change_budget")
    assert admin_user.has_perm("budgets.change_budget") and admin_user.has_perm("budgets.view_auditentry")
    developer = Group.objects.get(name=group_name("developer"))
    assert developer.permissions.filter(codename="change_agent").exists()
    assert not developer.permissions.filter(codename="change_apikey").exists()
