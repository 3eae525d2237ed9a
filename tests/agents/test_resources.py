"""Agents, conversations and turns over the API: scoped to the caller's tenant, guarded by role."""

import base64
import uuid

import pytest
from django.test import Client

from agents.models import Agent, Conversation, Message, Turn
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client()


def test_it_creates_reads_updates_and_deletes_an_agent(client, alice):
    created = client.post(
        "/v1/agents",
        {"name": "writer", "system_prompt": "Write well.", "provider_api_key": "sk-secret"},
        content_type="application/json",
        **alice.auth,
    )
    assert created.status_code == 201, created.content
    agent = created.json()
    assert "provider_api_key" not in agent, "a provider key is write-only"
    assert agent["has_provider_api_key"] is True
    assert client.get(f"/v1/agents/{agent['id']}", **alice.auth).json()["name"] == "writer"
    patched = client.patch(
        f"/v1/agents/{agent['id']}", {"model": "gpt-4o", "context_budget": 4096}, content_type="application/json", **alice.auth
    )
    assert patched.status_code == 200 and patched.json()["model"] == "gpt-4o" and patched.json()["context_budget"] == 4096
    assert sorted(a["name"] for a in client.get("/v1/agents", **alice.auth).json()) == ["helper", "writer"]
    assert client.delete(f"/v1/agents/{agent['id']}", **alice.auth).status_code == 204
    assert client.get(f"/v1/agents/{agent['id']}", **alice.auth).status_code == 404
    assert not Agent.objects.live().filter(id=agent["id"]).exists(), "deleted: gone from the API, its records kept"


def test_agent_names_are_unique_per_tenant_only(client, alice, bob):
    clash = client.post("/v1/agents", {"name": "helper"}, content_type="application/json", **alice.auth)
    assert clash.status_code == 409 and clash.json()["error"]["param"] == "name", clash.content
    assert Agent.objects.filter(name="helper").count() == 2  # alice's and bob's, nothing new


def test_bad_agent_input_is_a_400_naming_the_field(client, alice):
    for body, param in [
        ({"name": "no spaces allowed"}, "name"),
        ({"name": "ok", "provider_base_url": "ftp://x"}, "provider_base_url"),
        ({"name": "ok", "default_params": [1]}, "default_params"),
        ({"name": "ok", "default_params": None}, "default_params"),
    ]:
        response = client.post("/v1/agents", body, content_type="application/json", **alice.auth)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content
    assert Agent.objects.filter(tenant=alice.tenant).count() == 1


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_tenants_agent_is_a_404(client, alice, bob, method):
    response = getattr(client, method)(f"/v1/agents/{bob.agent.id}", content_type="application/json", **alice.auth)
    assert response.status_code == 404
    assert Agent.objects.filter(id=bob.agent.id).exists()


def test_a_malformed_id_is_a_404_not_a_500(client, alice):
    assert client.get("/v1/agents/not-a-uuid", **alice.auth).status_code == 404
    assert client.get("/v1/agents/" + "z" * 36, **alice.auth).status_code == 404
    assert client.get(f"/v1/turns/{uuid.uuid4()}", **alice.auth).status_code == 404


@pytest.mark.parametrize(
    "role,method,path,allowed",
    [
        ("viewer", "get", "/v1/agents", True),
        ("viewer", "post", "/v1/agents", False),
        ("executor", "post", "/v1/agents", False),
        ("developer", "post", "/v1/agents", True),
        ("viewer", "get", "/v1/models", True),
        ("viewer", "get", "/v1/conversations", True),
        ("viewer", "get", "/v1/turns", True),
    ],
)
def test_roles_guard_each_endpoint(client, role, method, path, allowed):
    actor = make_actor(f"t-{role}", role=role)
    response = getattr(client, method)(
        path, {"name": "new-agent"} if method == "post" else None, content_type="application/json", **actor.auth
    )
    assert (response.status_code != 403) is allowed, response.content
    if not allowed:
        assert response.json()["error"]["type"] == "permission_error"


def test_conversations_messages_and_turns_never_cross_tenants(client, alice, bob):
    conversation = Conversation.objects.create(tenant=bob.tenant, agent=bob.agent, last_seq=1)
    turn = Turn.objects.create(tenant=bob.tenant, conversation=conversation, agent=bob.agent, seq=1)
    Message.objects.create(tenant=bob.tenant, conversation=conversation, turn=turn, seq=1, index=0, role="user", content="bob's secret")
    for path in ["/v1/conversations", "/v1/turns"]:
        assert client.get(path, **alice.auth).json()["results"] == []
        assert len(client.get(path, **bob.auth).json()["results"]) == 1
    for path in [f"/v1/conversations/{conversation.id}", f"/v1/conversations/{conversation.id}/messages", f"/v1/turns/{turn.id}"]:
        assert client.get(path, **alice.auth).status_code == 404
        assert client.get(path, **bob.auth).status_code == 200


def test_list_endpoints_take_a_limit(client, alice):
    for _ in range(3):
        Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    page = client.get("/v1/conversations?limit=2", **alice.auth).json()
    assert len(page["results"]) == 2 and page["next"]


@pytest.mark.parametrize("limit", ["null", "", "0", "201", "-1", "2.5", "+5", "٣"])
@pytest.mark.parametrize("listing", ["conversations", "turns", "messages"])
def test_a_limit_that_is_not_an_integer_from_1_to_200_is_a_400_naming_it(client, alice, listing, limit):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    path = f"/v1/conversations/{conversation.id}/messages" if listing == "messages" else f"/v1/{listing}"
    response = client.get(path, {"limit": limit}, **alice.auth)
    assert response.status_code == 400, f"?limit={limit!r} must not fall back to the default: {response.content}"
    assert response.json()["error"]["param"] == "limit"
    assert client.get(path, {"limit": "200"}, **alice.auth).status_code == 200


@pytest.mark.parametrize("position", ["not-a-date", "\u0000"])
def test_a_forged_cursor_is_a_404_not_a_500(client, alice, position):
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    assert client.get("/v1/conversations", {"cursor": cursor}, **alice.auth).status_code == 404


@pytest.mark.parametrize(
    "body,param",
    [
        ({"name": 12}, "name"),
        ({"name": "ok", "system_prompt": 0}, "system_prompt"),
        ({"name": "ok", "model": False}, "model"),
        ({"name": "ok", "provider_api_key": 1}, "provider_api_key"),
    ],
)
def test_a_number_where_text_belongs_is_a_400_not_coerced(client, alice, body, param):
    response = client.post("/v1/agents", body, content_type="application/json", **alice.auth)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content
    assert Agent.objects.filter(tenant=alice.tenant).count() == 1


def test_text_is_stored_as_sent(client, alice):
    body = {"name": "spaced", "system_prompt": "  Be brief.\n", "specialization": " "}
    agent = client.post("/v1/agents", body, content_type="application/json", **alice.auth).json()
    assert (agent["system_prompt"], agent["specialization"]) == ("  Be brief.\n", " "), "no trimming: the schema promises none"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"name": "ok", "system_prompt": "a\u0000b"}, "system_prompt"),
        ({"name": "ok", "default_params": {"stop\u0000": 1}}, "default_params.stop\u0000"),
        ({"name": "ok", "default_params": {"stop": ["x", "\ud800"]}}, "default_params.stop[1]"),
    ],
)
def test_text_postgresql_cannot_store_is_a_400_not_a_500(client, alice, body, param):
    response = client.post("/v1/agents", body, content_type="application/json", **alice.auth)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content
    assert Agent.objects.filter(tenant=alice.tenant).count() == 1
