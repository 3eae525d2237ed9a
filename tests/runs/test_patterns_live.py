"""Each pattern end to end on the live stack: uvicorn, a real Celery worker, the stub model. Every
agent step is a turn the worker runs unchanged; the run moves on from the turn_ended signal."""

import pytest

from agents.models import Message, Turn
from runs.models import Run
from tests.conftest import wait_for
from tests.runs.conftest import api, make_agents, system_prompt
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def answer_as_agent(stub_llm):
    """Each agent answers with its own name (read from its system prompt) and the question."""
    stub_llm.when("", lambda body: Reply(content=f"{system_prompt(body)} says: {body['messages'][-1]['content']}"))


def test_ten_agents_in_parallel_all_answer_and_are_aggregated(live, alice, stub_llm):
    names = [f"agent{i}" for i in range(10)]
    make_agents(alice.tenant, names)
    answer_as_agent(stub_llm)
    with api(live, alice, Prefer="wait") as client:
        response = client.post("/runs", json={"pattern": "parallel", "agents": names, "input": "What is 6 x 7?"})
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "succeeded", run
    assert [a["agent"] for a in run["result"]["answers"]] == names
    for name in names:
        assert f"[{name}] You are {name}. says: What is 6 x 7?" in run["output"], f"{name}'s answer is in the aggregate"
    turns = Turn.objects.filter(id__in=[s["turn"] for s in run["steps"]])
    assert turns.count() == 10 and {t.status for t in turns} == {"succeeded"}, "every step was a real turn"
    assert {t.agent.name for t in turns} == set(names)
    for step in run["steps"]:
        assert step["state"] == "succeeded" and step["attempt"] == 1 and step["usage"]["total_tokens"] > 0
        assert step["checkpoint"]["output"] == step["output"]


def test_a_three_agent_pipeline_passes_each_output_on(live, alice, stub_llm):
    make_agents(alice.tenant, ["drafter", "editor", "critic"])
    with api(live, alice) as client:
        created = client.post("/runs?wait=true", json={"pattern": "pipeline", "agents": ["drafter", "editor", "critic"], "input": "start"})
    run = created.json()
    assert created.status_code == 200 and run["status"] == "succeeded", run
    outputs = [s["output"] for s in run["steps"]]
    assert outputs == ["echo: start", "echo: echo: start", "echo: echo: echo: start"], "the stub echoes what each step was given"
    assert run["output"] == outputs[-1]
    for previous, step in zip(run["steps"], run["steps"][1:], strict=False):
        given = Message.objects.get(turn_id=step["turn"], role="user").content
        assert given == previous["output"], f"{step['id']} got {previous['id']}'s output"


def test_a_pipeline_step_can_ask_for_the_original_input_in_its_template(live, alice, stub_llm):
    make_agents(alice.tenant, ["one", "two"])
    templates = ["{{input}}", "Q: {{input}} / A: {{steps.one.output}}"]
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["one", "two"], "input": "why?", "templates": templates}).json()
    assert run["status"] == "succeeded", run
    assert run["output"] == "echo: Q: why? / A: echo: why?"


def test_a_broadcast_to_five_collects_five_responses(live, stub_llm, db):
    from tests.conftest import make_actor

    carol = make_actor("carol", agent_name="sales")
    make_agents(carol.tenant, [f"support{i}" for i in range(1, 6)])
    answer_as_agent(stub_llm)
    with api(live, carol, Prefer="wait") as client:
        everyone = client.post("/runs", json={"pattern": "broadcast", "input": "Status?"}).json()
        assert everyone["status"] == "succeeded" and len(everyone["result"]["responses"]) == 6, "every agent of the tenant"
        carol.tenant.agents.filter(name__startswith="support").update(specialization="Customer support")
        run = client.post("/runs", json={"pattern": "broadcast", "input": "Status?", "specialization": "support"}).json()
    assert run["status"] == "succeeded", run
    responses = run["result"]["responses"]
    assert sorted(r["agent"] for r in responses) == [f"support{i}" for i in range(1, 6)], "the five support agents, and only them"
    assert all(r["output"] == f"You are {r['agent']}. says: Status?" for r in responses), responses
    assert run["result"]["missing"] == []


def test_a_broadcast_reports_the_agents_that_did_not_answer_in_time(live, stub_llm, db, settings):
    from tests.conftest import make_actor

    dave = make_actor("dave", agent_name="fast")
    make_agents(dave.tenant, ["slow"])
    stub_llm.when("", lambda body: Reply(content="late", delay=2.5) if "slow" in system_prompt(body) else Reply(content="quick"))
    with api(live, dave) as client:
        created = client.post("/runs", json={"pattern": "broadcast", "input": "ping", "step_timeout_seconds": 1}).json()
    # No beat here: the dispatcher wakes itself at the step's deadline.
    wait_for(lambda: Run.objects.get(id=created["id"]).is_finished, timeout=30, interval=0.2, message="the broadcast to end")
    run = Run.objects.get(id=created["id"])
    assert run.status == "succeeded" and [r["agent"] for r in run.result["responses"]] == ["fast"]
    assert [(m["agent"], m["state"]) for m in run.result["missing"]] == [("slow", "timed_out")]


def _sse_events(text: str) -> list[dict]:
    import json

    events, current = [], {}
    for line in text.splitlines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return events


def test_a_runs_events_stream_live_as_sse_and_resume_from_last_event_id(live, alice, stub_llm):
    make_agents(alice.tenant, ["first", "second"])
    stub_llm.when("", lambda body: Reply(content="done", delay=0.3))
    with api(live, alice) as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["first", "second"], "input": "go"}).json()
        streamed = client.get(f"/runs/{run['id']}/events", headers={"Accept": "text/event-stream"}, timeout=60)
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(streamed.text)
        logged = client.get(f"/runs/{run['id']}/events").json()["data"]
        assert [e["data"] for e in events] == logged, "the live stream is the log, in order, and ends after the run's end"
        assert events[-1]["event"] == logged[-1]["kind"] and Run.objects.get(id=run["id"]).status == "succeeded"
        middle = events[len(events) // 2]["id"]
        resumed = client.get(f"/runs/{run['id']}/events", headers={"Accept": "text/event-stream", "Last-Event-ID": middle}, timeout=60)
        assert [e["id"] for e in _sse_events(resumed.text)] == [e["id"] for e in events if int(e["id"]) > int(middle)]
        bad = client.get(f"/runs/{run['id']}/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"
