"""The runs admin (steps with outputs and costs under their run, re-run, tenant scope) and the run
metrics on /metrics."""

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from budgets.admin_roles import sync_groups
from runs.models import Run, Step
from tests.budgets.test_admin import logged_in, staff
from tests.runs.conftest import api, make_agents


def a_run(actor, **fields) -> Run:
    run = Run.objects.create(tenant=actor.tenant, pattern="pipeline", input="hi", request={"pattern": "pipeline", "input": "hi",
                             "agents": ["helper"]}, **fields)  # fmt: skip
    Step.objects.create(tenant=actor.tenant, run=run, key="helper", position=0, kind="agent", agent=actor.agent, output="the answer",
                        state="succeeded", cost="0.25")  # fmt: skip
    return run


@pytest.mark.django_db
def test_the_run_page_shows_its_steps_outputs_and_costs(alice):
    run = a_run(alice)
    root = logged_in(User.objects.create_superuser("root", password=None))
    page = root.get(reverse("admin:runs_run_change", args=[run.id]))
    assert page.status_code == 200
    assert b"the answer" in page.content and b"0.25" in page.content


@pytest.mark.django_db
def test_an_operator_reruns_their_tenants_runs_and_cannot_see_anothers(alice, bob):
    sync_groups()
    mine, theirs = a_run(alice), a_run(bob)
    executor = logged_in(staff("eve", "executor", alice.tenant))
    assert executor.get(reverse("admin:runs_run_change", args=[theirs.id])).status_code == 404
    changelist = reverse("admin:runs_run_changelist")
    response = executor.post(changelist, {"action": "rerun", "_selected_action": [mine.id, theirs.id]})
    assert response.status_code == 302
    again = Run.objects.exclude(id__in=[mine.id, theirs.id])
    assert again.count() == 1 and again.get().tenant == alice.tenant, "only the operator's own run ran again"
    assert list(again.get().steps.values_list("key", "state")) == [("helper", "pending")]
    viewer = logged_in(staff("vic", "viewer", alice.tenant))
    assert viewer.get(changelist).context["action_form"] is None, "a viewer is offered no action"
    viewer.post(changelist, {"action": "rerun", "_selected_action": [mine.id]})
    assert Run.objects.count() == 3, "and the re-run action refuses a viewer who posts it anyway"


@pytest.mark.django_db(transaction=True)
def test_runs_steps_and_fan_out_reach_metrics(live, alice, stub_llm):
    make_agents(alice.tenant, ["m1", "m2"])
    with api(live, alice, Prefer="wait") as client:
        assert client.post("/runs", json={"pattern": "parallel", "agents": ["m1", "m2"], "input": "hi"}).json()["status"] == "succeeded"
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{live.base_url}/metrics").text)}
    runs = {tuple(sorted(s.labels.items())): s.value for s in families["sentinel_runs"].samples if s.name == "sentinel_runs_total"}
    assert runs.get((("pattern", "parallel"), ("status", "succeeded")), 0) >= 1
    steps = [s for s in families["sentinel_run_step_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["kind"] == "agent" and s.value >= 2 for s in steps)
    fan_out = [s for s in families["sentinel_run_fan_out"].samples if s.name.endswith("_count") and s.labels["pattern"] == "parallel"]
    assert fan_out and fan_out[0].value >= 1
    assert Client().get("/metrics").status_code == 200
