"""Workflows on the live stack: memory-grounded answers with sources, llm and transform steps,
retries (a new turn per attempt), a failed step stopping its dependents, the workflow timeout."""

import pytest

from agents.models import Message, Turn
from runs.dispatcher import idempotency_key
from runs.models import Run, Step
from tests.conftest import wait_for
from tests.memory.helpers import FILLER, conversation_with
from tests.runs.conftest import api, make_agents
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

FACT = "The launch code for project Heron is violet-42."


def run_workflow(live, actor, steps, input="go", **extra):
    with api(live, actor, Prefer="wait") as client:
        response = client.post("/runs", json={"pattern": "workflow", "input": input, "workflow": {"steps": steps, **extra}})
    assert response.status_code in (200, 202), response.text
    return response.json()


def test_embed_then_vector_search_then_an_agent_answers_from_memory_with_sources(live, alice, stub_llm):
    conversation_with(alice, [*FILLER, FACT, "Noted, I will keep the launch code safe."])
    steps = [
        {"id": "q", "kind": "embed"},
        {"id": "recall", "kind": "vector_search", "depends_on": ["q"], "embedding": "q", "k": 3},
        {"id": "answer", "kind": "agent", "agent": "helper", "depends_on": ["recall"],
         "template": "Notes:\n{{steps.recall.output}}\n\nQuestion: {{input}}"},
    ]  # fmt: skip
    run = run_workflow(live, alice, steps, input="What is the launch code for project Heron?")
    assert run["status"] == "succeeded", run
    recall = next(s for s in run["steps"] if s["id"] == "recall")
    top = recall["result"]["hits"][0]
    assert top["text"].endswith(FACT) and top["source"]["message"] and top["source"]["conversation"], "ranked texts with sources"
    embed = next(s for s in run["steps"] if s["id"] == "q")
    assert embed["result"]["dimensions"] == 384 and "vector" not in embed["result"], "the vector itself is not sent back"
    assert FACT in run["output"] and f"(source: memory {top['source']['memory']})" in run["output"], "the stub echoes what it was told"
    answer = next(s for s in run["steps"] if s["id"] == "answer")
    assert Turn.objects.get(id=answer["turn"]).status == "succeeded"


def test_llm_and_transform_steps_feed_an_agent_step(live, alice, stub_llm):
    make_agents(alice.tenant, ["writer"])
    stub_llm.when("Summarise", lambda body: Reply(content="SUMMARY"))
    steps = [
        {"id": "sum", "kind": "llm", "agent": "writer", "template": "Summarise: {{input}}", "system": "Be terse."},
        {"id": "wrap", "kind": "transform", "depends_on": ["sum"], "template": "<<{{steps.sum.output}}>>"},
        {"id": "final", "kind": "agent", "agent": "writer", "depends_on": ["wrap"], "template": "{{steps.wrap.output}} and {{input}}"},
    ]
    run = run_workflow(live, alice, steps, input="a long text")
    assert run["status"] == "succeeded", run
    by_id = {s["id"]: s for s in run["steps"]}
    assert by_id["sum"]["output"] == "SUMMARY" and by_id["sum"]["turn"] is None, "an llm step is one completion, not a turn"
    assert by_id["sum"]["usage"]["completion_tokens"] == 1
    llm_request = next(r for r in stub_llm.requests if r["messages"][-1]["content"] == "Summarise: a long text")
    assert llm_request["messages"][0] == {"role": "system", "content": "Be terse."}, "its own system prompt, no agent memory"
    assert by_id["wrap"]["output"] == "<<SUMMARY>>"
    assert run["output"] == "echo: <<SUMMARY>> and a long text"


def test_a_step_with_retries_runs_a_new_turn_per_attempt(live, alice, stub_llm):
    stub_llm.script(Reply(status=400))  # the first turn fails for good (a 400 is not retried by the worker)
    run = run_workflow(live, alice, [{"id": "only", "kind": "agent", "agent": "helper", "retries": 1}])
    assert run["status"] == "succeeded", run
    step = Step.objects.get(run_id=run["id"], key="only")
    assert step.attempt == 2 and step.output == "echo: go"
    first = Turn.objects.get(tenant=alice.tenant, idempotency_key=f"run:{run['id']}:only:1")
    second = Turn.objects.get(tenant=alice.tenant, idempotency_key=idempotency_key(step.run, step))
    assert (first.status, second.status) == ("failed", "succeeded") and step.turn_id == second.id
    kinds = [e["kind"] for e in Run.objects.get(id=run["id"]).events.values("kind")]
    assert "step_retrying" in kinds


def test_a_failed_step_fails_the_run_naming_it_and_its_dependents_never_start(live, alice, stub_llm):
    stub_llm.script(Reply(status=400))
    steps = [
        {"id": "broken", "kind": "agent", "agent": "helper"},
        {"id": "after", "kind": "agent", "agent": "helper", "depends_on": ["broken"]},
    ]
    run = run_workflow(live, alice, steps)
    assert run["status"] == "failed" and run["error"]["code"] == "step_failed" and run["error"]["step"] == "broken", run
    by_id = {s["id"]: s for s in run["steps"]}
    assert by_id["broken"]["state"] == "failed" and by_id["after"]["state"] == "skipped" and by_id["after"]["turn"] is None


def test_the_workflow_timeout_ends_the_run(live, alice, stub_llm):
    stub_llm.script(Reply(content="too late", delay=2.5))
    with api(live, alice) as client:
        steps = [{"id": "slow", "kind": "agent", "agent": "helper"}]
        created = client.post(
            "/runs", json={"pattern": "workflow", "input": "x", "workflow": {"steps": steps, "timeout_seconds": 1}}
        ).json()
    wait_for(lambda: Run.objects.get(id=created["id"]).is_finished, timeout=30, interval=0.2, message="the run to time out")
    run = Run.objects.get(id=created["id"])
    assert run.status == "failed" and run.error["code"] == "run_timeout", run.error
    assert Step.objects.get(run=run).state == "timed_out"
    # the turn itself goes on and ends; the run does not take it back
    turn = wait_for(lambda: Turn.objects.filter(id=Step.objects.get(run=run).turn_id, status="succeeded").first(), timeout=30)
    assert Message.objects.filter(turn=turn, role="assistant").count() == 1
    assert Run.objects.get(id=run.id).status == "failed"
