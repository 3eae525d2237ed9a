"""The replay API: a turn replayed or rerun, and an agent's transitions; each scoped to the caller's
tenant (agents/api/history.py)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from agents.models import Turn, TurnEventRecord
from budgets import roles
from budgets.models import AuditEntry, Budget, Price, Reservation, SpendEntry
from budgets.roles import PERMISSIONS, Role
from sentinel_site import config_cache
from tests.agents.test_replay import admit_turn, run
from tests.conftest import make_actor
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client()


def post(client, url, actor, data=None):
    return client.post(url, data or {}, content_type="application/json", **actor.auth)


def test_it_replays_a_turn_and_reports_it_identical(client, alice, stub_llm):
    turn = run(admit_turn(alice, "hello"))
    response = post(client, f"/v1/turns/{turn.id}/replay", alice)
    assert response.status_code == 200, response.content
    report = response.json()
    assert report["object"] == "turn.replay" and report["turn"] == str(turn.id)
    assert report["identical"] is True and report["divergences"] == [] and report["outcome_checked"] is True
    assert len(stub_llm.requests) == 1, "a replay never calls the model"


def test_a_replay_reports_divergences_with_their_paths(client, alice, stub_llm):
    turn = run(admit_turn(alice, "hello"))
    alice.agent.system_prompt = "Another prompt entirely, longer than the first one was."
    alice.agent.save()
    report = post(client, f"/v1/turns/{turn.id}/replay", alice).json()
    assert report["identical"] is False
    assert {"field": "body.messages[0].content", "recorded": "You help alice.", "replayed": alice.agent.system_prompt} in (
        report["divergences"]
    )


def test_a_viewer_may_replay_but_not_rerun(client, alice, stub_llm):
    viewer = make_actor("alice", role="viewer")
    turn = run(admit_turn(alice, "hello"))
    assert post(client, f"/v1/turns/{turn.id}/replay", viewer).status_code == 200
    refused = post(client, f"/v1/turns/{turn.id}/replay?mode=rerun", viewer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_permissions"
    assert len(stub_llm.requests) == 1


def test_another_tenants_turn_is_a_404(client, alice, bob, stub_llm):
    turn = run(admit_turn(alice, "mine"))
    for mode in ("replay", "rerun"):
        response = post(client, f"/v1/turns/{turn.id}/replay?mode={mode}", bob)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert len(stub_llm.requests) == 1


def test_bad_modes_and_unfinished_turns_are_refused(client, alice):
    turn = admit_turn(alice, "queued")
    bad = post(client, f"/v1/turns/{turn.id}/replay?mode=fast", alice)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "mode"
    busy = post(client, f"/v1/turns/{turn.id}/replay", alice)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "turn_in_progress"


def test_a_rerun_sends_the_recorded_request_again_budgeted_and_audited(client, alice, stub_llm):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"))
    turn = run(admit_turn(alice, "tell me a joke", temperature=0.9))
    recorded_body = TurnEventRecord.objects.get(turn=turn, kind="provider_request").payload["body"]
    stub_llm.script(Reply(content="a different joke"))
    response = post(client, f"/v1/turns/{turn.id}/replay?mode=rerun", alice)
    assert response.status_code == 200, response.content
    rerun = response.json()
    assert stub_llm.requests[-1] == recorded_body, "the model gets exactly the recorded request"
    assert rerun["identical"] is False
    assert rerun["recorded"]["content"] == "echo: tell me a joke" and rerun["answer"]["content"] == "a different joke"
    assert {"field": "answer.content", "recorded": "echo: tell me a joke", "replayed": "a different joke"} in rerun["diff"]
    spent = SpendEntry.objects.filter(turn_id=turn.id).order_by("created_at")
    assert spent.count() == 2, "the rerun is a call of its own on the turn's ledger"
    assert Decimal(rerun["answer"]["cost"]) == spent.last().cost > 0
    assert not Reservation.objects.filter(tenant=alice.tenant, status="held").exists()
    entry = AuditEntry.objects.filter(action="turn.rerun").get()
    assert entry.target == str(turn.id) and entry.data["cost"] == str(spent.last().cost)
    Turn.objects.get(id=turn.id)  # the turn itself is unchanged
    assert Turn.objects.get(id=turn.id).cost == turn.cost


def test_a_rerun_over_budget_never_reaches_the_model(client, alice, stub_llm):
    turn = run(admit_turn(alice, "expensive"))
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("1000"), output_per_mtok=Decimal("1000"))
    Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="daily", defaults={"limit": Decimal("0.01")})
    config_cache.clear()
    response = post(client, f"/v1/turns/{turn.id}/replay?mode=rerun", alice)
    assert response.status_code == 503 and response.json()["error"]["code"] == "budget_exceeded"
    assert len(stub_llm.requests) == 1
    assert not Reservation.objects.filter(tenant=alice.tenant, status="held").exists()


def test_a_failed_rerun_releases_its_reservation(client, alice, stub_llm):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("2"), output_per_mtok=Decimal("8"))
    turn = run(admit_turn(alice, "again"))
    stub_llm.script(Reply(status=500))
    response = post(client, f"/v1/turns/{turn.id}/replay?mode=rerun", alice)
    assert response.status_code == 502 and response.json()["error"]["code"] == "provider_error"
    assert not Reservation.objects.filter(tenant=alice.tenant, status="held").exists()
    assert SpendEntry.objects.filter(turn_id=turn.id).count() == 1, "nothing charged for the failed call"
    assert AuditEntry.objects.filter(action="turn.rerun", data__code="provider_error").exists()


def test_it_lists_an_agents_transitions_in_order_with_their_turns(client, alice, stub_llm):
    first = run(admit_turn(alice, "one"))
    second = run(admit_turn(alice, "two", conversation=first.conversation_id))
    response = client.get(f"/v1/agents/{alice.agent.id}/transitions", **alice.auth)
    assert response.status_code == 200, response.content
    rows = response.json()["results"]
    steps = [("idle", "thinking", "message_received"), ("thinking", "reflecting", "llm_response"), ("reflecting", "idle", "complete")]
    assert [(r["turn"], r["from_state"], r["to_state"], r["event"]) for r in rows] == [
        (str(turn.id), *step) for turn in (first, second) for step in steps
    ]
    assert rows[0]["conversation"] == str(first.conversation_id) and rows[0]["object"] == "agent.transition"
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)


def test_transitions_are_filtered_by_range_and_paginated(client, alice, stub_llm):
    first = run(admit_turn(alice, "one"))
    middle = timezone.now()
    second = run(admit_turn(alice, "two"))
    later = client.get(f"/v1/agents/{alice.agent.id}/transitions", {"from": middle.isoformat()}, **alice.auth).json()["results"]
    assert {r["turn"] for r in later} == {str(second.id)}
    earlier = client.get(f"/v1/agents/{alice.agent.id}/transitions", {"to": middle.isoformat()}, **alice.auth).json()["results"]
    assert {r["turn"] for r in earlier} == {str(first.id)}
    unencoded = client.get(f"/v1/agents/{alice.agent.id}/transitions?to={middle.isoformat()}", **alice.auth)  # "+00:00" read as " 00:00"
    assert unencoded.status_code == 200 and {r["turn"] for r in unencoded.json()["results"]} == {str(first.id)}
    page = client.get(f"/v1/agents/{alice.agent.id}/transitions", {"limit": 4}, **alice.auth).json()
    assert len(page["results"]) == 4 and page["next"]
    rest = client.get(page["next"], **alice.auth).json()
    assert len(rest["results"]) == 2 and rest["results"][-1]["turn"] == str(second.id)


def test_bad_ranges_are_a_400(client, alice):
    url = f"/v1/agents/{alice.agent.id}/transitions"
    bad = client.get(url, {"from": "yesterday"}, **alice.auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"
    now = timezone.now()
    reversed_range = client.get(url, {"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()}, **alice.auth)
    assert reversed_range.status_code == 400


def test_another_tenants_agent_has_no_transitions_to_show(client, alice, bob, stub_llm):
    run(admit_turn(alice, "mine"))
    response = client.get(f"/v1/agents/{alice.agent.id}/transitions", **bob.auth)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.get(f"/v1/agents/{bob.agent.id}/transitions", **bob.auth).json()["results"] == []


ID = "00000000-0000-4000-8000-000000000000"
# (method, path, the scope it needs), as tests/budgets/test_governance_api.py checks every other endpoint.
HISTORY_ENDPOINTS = [
    ("get", f"/v1/agents/{ID}/transitions", roles.TURNS_READ),
    ("post", f"/v1/turns/{ID}/replay", roles.TURNS_READ),
    ("post", f"/v1/turns/{ID}/replay?mode=rerun", roles.TURNS_EXECUTE),
    ("post", f"/v1/conversations/{ID}/fork", roles.TURNS_EXECUTE),
]


@pytest.mark.parametrize("role", [r.value for r in Role])
@pytest.mark.parametrize("method,path,scope", HISTORY_ENDPOINTS)
def test_every_history_endpoint_refuses_a_role_without_its_permission(client, role, method, path, scope):
    actor = make_actor(f"matrix-{role}", role=role)
    response = client.get(path, **actor.auth) if method == "get" else post(client, path, actor)
    if scope in PERMISSIONS[role]:
        assert response.status_code == 404, f"{role} should reach {method.upper()} {path} (and find nothing)"
    else:
        assert response.status_code == 403 and response.json()["error"]["type"] == "permission_error"


def test_the_schema_describes_the_history_endpoints(client):
    import yaml

    paths = yaml.safe_load(client.get("/api/schema/").content)["paths"]
    assert "get" in paths["/v1/agents/{agent_id}/transitions"]
    assert "post" in paths["/v1/turns/{turn_id}/replay"]
    assert "post" in paths["/v1/conversations/{conversation_id}/fork"]
