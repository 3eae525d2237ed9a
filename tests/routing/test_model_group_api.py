"""/v1/model-groups: create, read, update, delete a tenant's groups; keys write-only; another
tenant's group a 404; agents:read to read, agents:write to change; bad input a 400 with nothing written."""

import json

import pytest
from django.test import Client

from budgets.models import AuditEntry
from routing.models import Deployment, ModelGroup
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db
SECRET = "sk-deployment-secret-0123456789"


@pytest.fixture
def client():
    return Client()


def body(**overrides):
    return {
        "name": "chat",
        "strategy": "least_busy",
        "fallbacks": ["backup"],
        "deployments": [
            {"name": "east", "base_url": "http://127.0.0.1:9/v1", "api_key": SECRET, "provider_model": "m", "weight": 2, "rpm": 60},
            {"name": "west", "base_url": "http://127.0.0.1:10/v1", "provider_model": "m"},
        ],
        **overrides,
    }


def post(client, actor, data):
    return client.post("/v1/model-groups", data, content_type="application/json", **actor.auth)


def test_it_creates_reads_updates_and_deletes_a_model_group(client, alice):
    created = post(client, alice, body())
    assert created.status_code == 201, created.content
    group = created.json()
    assert [d["name"] for d in group["deployments"]] == ["east", "west"]
    assert group["deployments"][0]["has_api_key"] is True and group["deployments"][1]["has_api_key"] is False
    assert client.get(f"/v1/model-groups/{group['id']}", **alice.auth).json()["strategy"] == "least_busy"
    assert [g["name"] for g in client.get("/v1/model-groups", **alice.auth).json()] == ["chat"]
    east_only = {"deployments": [{"name": "east", "base_url": "http://127.0.0.1:9/v1", "provider_model": "m2"}]}
    updated = client.patch(f"/v1/model-groups/{group['id']}", east_only, content_type="application/json", **alice.auth)
    assert updated.status_code == 200, updated.content
    assert Deployment.objects.get(group_id=group["id"], name="east").api_key == SECRET, "a key not sent again is kept"
    assert not Deployment.objects.filter(group_id=group["id"], name="west").exists()
    assert client.delete(f"/v1/model-groups/{group['id']}", **alice.auth).status_code == 204
    assert not ModelGroup.objects.filter(id=group["id"]).exists()
    assert AuditEntry.objects.filter(action__startswith="model_group.").count() == 3


def test_the_deployment_key_is_never_in_any_answer_or_the_audit_log(client, alice):
    created = post(client, alice, body())
    group_id = created.json()["id"]
    answers = [created, client.get("/v1/model-groups", **alice.auth), client.get(f"/v1/model-groups/{group_id}", **alice.auth)]
    answers.append(client.patch(f"/v1/model-groups/{group_id}", {"strategy": "weighted"}, content_type="application/json", **alice.auth))
    for answer in answers:
        assert SECRET not in answer.content.decode(), "a deployment key must never be answered"
    assert SECRET not in json.dumps(list(AuditEntry.objects.values_list("data", flat=True)))
    assert SECRET not in client.get("/api/schema/").content.decode()


def test_a_new_base_url_without_a_key_drops_the_old_key(client, alice):
    group_id = post(client, alice, body()).json()["id"]
    moved = {"deployments": [{"name": "east", "base_url": "http://127.0.0.1:11/v1", "provider_model": "m"}]}
    client.patch(f"/v1/model-groups/{group_id}", moved, content_type="application/json", **alice.auth)
    assert Deployment.objects.get(group_id=group_id, name="east").api_key == "", "a key goes only where its owner sent it"


def test_another_tenants_group_is_a_404_and_never_listed(client, alice, bob):
    group_id = post(client, bob, body()).json()["id"]
    for method in ("get", "patch", "put", "delete"):
        response = getattr(client, method)(f"/v1/model-groups/{group_id}", content_type="application/json", **alice.auth)
        assert response.status_code == 404, f"{method} of another tenant's group answered {response.status_code}"
    assert client.get("/v1/model-groups", **alice.auth).json() == []
    assert ModelGroup.objects.get(id=group_id).deployments.count() == 2


def test_global_groups_are_not_listed_or_changed_through_the_api(client, alice):
    shared = ModelGroup.objects.create(tenant=None, name="shared")
    assert client.get("/v1/model-groups", **alice.auth).json() == []
    assert client.delete(f"/v1/model-groups/{shared.id}", **alice.auth).status_code == 404


def test_names_are_unique_per_tenant_only(client, alice, bob):
    assert post(client, alice, body()).status_code == 201
    clash = post(client, alice, body())
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "model_group_name_taken"
    assert post(client, bob, body()).status_code == 201


def test_a_viewer_reads_but_cannot_change(client, alice):
    post(client, alice, body())
    viewer = make_actor("alice", role="viewer")
    assert client.get("/v1/model-groups", **viewer.auth).status_code == 200
    assert post(client, viewer, body(name="other")).status_code == 403


@pytest.mark.parametrize(
    "overrides, param",
    [
        ({"strategy": "fastest"}, "strategy"),
        ({"fallbacks": ["chat"]}, "fallbacks"),
        ({"fallbacks": "backup"}, "fallbacks"),
        ({"deployments": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "provider_model": "m", "weight": -1}]}, "deployments"),
        ({"deployments": [{"name": "a", "base_url": "not a url", "provider_model": "m"}]}, "deployments"),
        ({"deployments": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "provider_model": "m"}] * 2}, "deployments"),
    ],
)
def test_bad_input_is_a_400_and_writes_nothing(client, alice, overrides, param):
    response = post(client, alice, body(**overrides))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"].startswith(param)
    assert not ModelGroup.objects.exists() and not Deployment.objects.exists()


def test_a_deployment_url_outside_the_egress_allowlist_is_refused(client, alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": []}
    response = post(client, alice, body())
    assert response.status_code == 400 and "not allowed" in response.content.decode()
    assert not ModelGroup.objects.exists()


def test_the_schema_describes_model_groups_with_the_key_write_only(client):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    assert "/v1/model-groups" in schema["paths"] and "/v1/model-groups/{id}" in schema["paths"]
    deployment = schema["components"]["schemas"]["DeploymentRequest"]["properties"]
    assert "api_key" in deployment
    assert "api_key" not in schema["components"]["schemas"]["Deployment"]["properties"], "the key is never in a response schema"
