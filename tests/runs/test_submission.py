"""POST /v1/runs refuses what cannot run (naming the step and field), scopes and tenants hold, and an
Idempotency-Key replays. No worker: nothing here gets past admission of the run itself."""

import pytest
from django.test import Client

from budgets.models import ApiKey
from runs.models import Run, Step
from tests.runs.conftest import make_agents

pytestmark = pytest.mark.django_db


def post(actor, body, **headers):
    return Client().post("/v1/runs", body, content_type="application/json", **actor.auth, **headers)


def workflow(*steps, **extra):
    return {"pattern": "workflow", "input": "hello", "workflow": {"steps": list(steps), **extra}}


def test_a_parallel_run_is_accepted_with_its_steps_and_written_whole(alice):
    make_agents(alice.tenant, ["a", "b"])
    response = post(alice, {"pattern": "parallel", "agents": ["a", "b", "a"], "input": "hi"})
    assert response.status_code == 202, response.content
    run = response.json()
    assert run["object"] == "run" and run["status"] == "queued" and run["events_url"] == f"/v1/runs/{run['id']}/events"
    assert [s["id"] for s in run["steps"]] == ["a", "b", "a_2"], "the same agent twice gets a numbered step"
    assert all(s["state"] == "pending" and s["turn"] is None for s in run["steps"])
    assert response["Location"] == f"/v1/runs/{run['id']}"
    assert Step.objects.filter(run_id=run["id"]).count() == 3


def test_a_workflow_cycle_is_refused_naming_a_step_on_it(alice):
    steps = [
        {"id": "first", "kind": "transform", "template": "{{input}}"},
        {"id": "b", "kind": "transform", "template": "{{steps.c.output}}", "depends_on": ["first", "c"]},
        {"id": "c", "kind": "transform", "template": "{{steps.b.output}}", "depends_on": ["b"]},
    ]
    response = post(alice, workflow(*steps))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "workflow_cycle" and "step `b`" in error["message"] and "b -> c -> b" in error["message"], error
    assert error["param"] == "workflow.steps[1].depends_on"
    assert not Run.objects.exists(), "nothing is written for a refused run"


@pytest.mark.parametrize(
    ("step", "param", "words"),
    [
        ({"id": "x", "kind": "transform", "template": "t", "depends_on": ["nope"]}, "workflow.steps[0].depends_on", "`nope`"),
        ({"id": "x", "kind": "transform", "template": "{{steps.ghost.output}}"}, "workflow.steps[0].template", "steps.ghost"),
        ({"id": "x", "kind": "transform", "template": "{{steps.x.input}}"}, "workflow.steps[0].template", "unknown template reference"),
        ({"id": "x", "kind": "agent"}, "workflow.steps[0].agent", "needs `agent`"),
        ({"id": "x", "kind": "transform"}, "workflow.steps[0].template", "needs `template`"),
        ({"id": "x", "kind": "transform", "template": "t", "depends_on": ["x"]}, "workflow.steps[0].depends_on", "itself"),
    ],
)
def test_a_bad_workflow_step_is_refused_with_its_field(alice, step, param, words):
    response = post(alice, workflow(step))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"] and "step `x`" in error["message"], error


def test_a_template_may_only_read_steps_it_waits_for(alice):
    steps = [{"id": "a", "kind": "transform", "template": "A"}, {"id": "b", "kind": "transform", "template": "{{steps.a.output}}"}]
    error = post(alice, workflow(*steps)).json()["error"]
    assert "does not depend on `a`" in error["message"] and error["param"] == "workflow.steps[1].template"


def test_an_unknown_agent_is_a_404_naming_it(alice, bob):
    make_agents(bob.tenant, ["bobs"])
    response = post(alice, {"pattern": "parallel", "agents": ["helper", "bobs"], "input": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "agents[1]", "another tenant's agent is as unknown as one that does not exist"
    response = post(alice, workflow({"id": "w", "kind": "agent", "agent": "bobs"}))
    assert response.status_code == 404 and "step `w`" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"pattern": "parallel", "agents": ["helper"], "input": ""}, "input"),
        ({"pattern": "parallel", "agents": ["helper"], "input": [{"role": "user"}]}, "input[0].content"),
        ({"pattern": "parallel", "agents": ["helper"], "input": "x", "aggregate": "best"}, "aggregate"),
        ({"pattern": "pipeline", "agents": ["helper"], "input": "x", "aggregate": "vote"}, "aggregate"),
        ({"pattern": "parallel", "input": "x"}, "agents"),
        ({"pattern": "dance", "input": "x"}, "pattern"),
        ({"pattern": "workflow", "input": "x"}, "workflow"),
        ({"pattern": "parallel", "agents": ["helper"], "input": "x", "max_cost": -1}, "max_cost"),
        ({"pattern": "broadcast", "input": "x", "specialization": "nobody has this"}, "specialization"),
        ({"pattern": "route", "input": "x"}, "agents"),
    ],
)
def test_bad_requests_get_openais_error_shape_and_the_field(alice, body, param):
    response = post(alice, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error


def test_an_idempotency_key_replays_the_run_and_refuses_another_body(alice):
    body = {"pattern": "parallel", "agents": ["helper"], "input": "hi"}
    first = post(alice, body, HTTP_IDEMPOTENCY_KEY="k1")
    again = post(alice, body, HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    other = post(alice, {**body, "input": "bye"}, HTTP_IDEMPOTENCY_KEY="k1")
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert Run.objects.count() == 1


def test_a_viewer_may_read_runs_but_not_start_or_cancel_them(alice):
    run_id = post(alice, {"pattern": "parallel", "agents": ["helper"], "input": "hi"}).json()["id"]
    _viewer, key = ApiKey.issue(alice.tenant, role="viewer", name="v")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client = Client()
    assert client.post("/v1/runs", {"pattern": "parallel", "agents": ["helper"], "input": "hi"}, content_type="application/json",
                       **auth).status_code == 403  # fmt: skip
    assert client.post(f"/v1/runs/{run_id}/cancel", **auth).status_code == 403
    assert client.get(f"/v1/runs/{run_id}", **auth).status_code == 200
    assert client.get("/v1/runs", **auth).json()["results"][0]["id"] == run_id


def test_another_tenants_run_is_a_404_everywhere(alice, bob):
    run_id = post(alice, {"pattern": "parallel", "agents": ["helper"], "input": "hi"}).json()["id"]
    client = Client()
    for path in (f"/v1/runs/{run_id}", f"/v1/runs/{run_id}/events"):
        assert client.get(path, **bob.auth).status_code == 404
    assert client.post(f"/v1/runs/{run_id}/cancel", **bob.auth).status_code == 404
    assert client.get("/v1/runs", **bob.auth).json()["results"] == []
    assert Run.objects.get(id=run_id).status == "queued", "bob's cancel touched nothing"


def test_a_cancelled_run_ends_its_steps_and_cannot_be_cancelled_twice(alice):
    run_id = post(alice, {"pattern": "pipeline", "agents": ["helper", "helper"], "input": "hi"}).json()["id"]
    response = Client().post(f"/v1/runs/{run_id}/cancel", **alice.auth)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert {s["state"] for s in response.json()["steps"]} == {"cancelled"}, "a cancel cancels the pending steps"
    assert Client().post(f"/v1/runs/{run_id}/cancel", **alice.auth).status_code == 409
    kinds = [e["kind"] for e in Client().get(f"/v1/runs/{run_id}/events", **alice.auth).json()["data"]]
    assert kinds[0] == "run_created" and kinds[-1] == "run_cancelled"


def test_the_runs_api_is_in_the_openapi_document():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events", "/v1/runs/{run_id}/cancel"):
        assert path in schema["paths"], path
    assert "RunCreateRequest" in schema["components"]["schemas"]
