"""shared_memory: every agent step of the run reads and writes one run-scoped memory. A step's input
and answer are remembered as it ends, and the steps after it recall them into their context (a
`shared` piece, recorded in the turn's provider_request event), whichever agent they are; the run
shows what its memory holds. Another tenant never sees any of it."""

import pytest

from agents.models import TurnEventRecord
from tests.runs.conftest import api, make_agents, system_prompt
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "The launch code is 7741, hidden under the blue mat."
QUESTION = "What is the launch code?"


def scout_knows_the_secret(stub_llm):
    """The scout answers with the secret; everyone else repeats the system message it was sent."""

    def answer(body):
        if system_prompt(body) == "You are scout.":
            return Reply(content=SECRET)
        return Reply(content=next(m["content"] for m in body["messages"] if m["role"] == "system"))

    stub_llm.when("", answer)


def run_body(shared_memory: bool) -> dict:
    """The writer's template is the input only: what the scout said can reach it through shared memory alone."""
    return {
        "pattern": "pipeline",
        "agents": ["scout", "writer"],
        "input": QUESTION,
        "templates": ["{{input}}", "{{input}}"],
        "shared_memory": shared_memory,
    }


def start(client, body: dict) -> dict:
    response = client.post("/runs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def shared_pieces(turn_id) -> list[dict]:
    event = TurnEventRecord.objects.get(turn_id=turn_id, kind="provider_request")
    return [piece for piece in event.payload["context"]["pieces"] if piece["kind"] == "shared"]


def test_it_gives_the_second_agent_what_the_first_said(live, alice, stub_llm):
    make_agents(alice.tenant, ["scout", "writer"])
    scout_knows_the_secret(stub_llm)
    with api(live, alice, Prefer="wait") as client:
        run = start(client, run_body(True))
    assert run["status"] == "succeeded", run
    scout, writer = run["steps"]
    assert scout["output"] == SECRET
    assert SECRET in writer["output"] and "[scout, assistant]" in writer["output"], "the writer's system message carried the scout's answer"
    pieces = shared_pieces(writer["turn"])
    assert [p["agent"] for p in pieces] == ["scout"], "the scout's answer, once (its input is the writer's own, not repeated)"
    assert pieces[0]["memory_id"] and pieces[0]["source_message_ids"], pieces
    assert shared_pieces(scout["turn"]) == [], "nothing was said before the first step"

    memory = run["shared_memory"]
    assert memory["scope"] == f"run:{run['id']}" and memory["message_count"] == 4, memory
    assert [(i["step"], i["agent"], i["role"]) for i in memory["items"]] == [
        ("scout", "scout", "user"),
        ("scout", "scout", "assistant"),
        ("writer", "writer", "user"),
        ("writer", "writer", "assistant"),
    ], memory["items"]
    assert memory["items"][1]["text"] == SECRET and memory["items"][1]["memory"] == pieces[0]["memory_id"]


def test_a_step_that_recalled_the_shared_memory_replays_identically(live, alice, stub_llm):
    from agents import replay
    from agents.models import Turn
    from memory import embeddings

    make_agents(alice.tenant, ["scout", "writer", "editor"])
    scout_knows_the_secret(stub_llm)
    body = {**run_body(True), "agents": ["scout", "writer", "editor"], "templates": ["{{input}}"] * 3}
    with api(live, alice, Prefer="wait") as client:
        run = start(client, body)
    writer = run["steps"][1]
    assert [p["agent"] for p in shared_pieces(writer["turn"])] == ["scout"]
    assert run["shared_memory"]["message_count"] == 6, "the editor's words came into the memory after the writer's turn"
    report = replay.replay(Turn.objects.select_related("agent", "conversation").get(id=writer["turn"]), embed=embeddings.embed_query)
    assert report.identical, report.as_dict()  # the memory as it was: without what the editor said since


def test_it_shares_nothing_without_shared_memory(live, alice, stub_llm):
    make_agents(alice.tenant, ["scout", "writer"])
    scout_knows_the_secret(stub_llm)
    with api(live, alice, Prefer="wait") as client:
        run = start(client, run_body(False))
    assert run["status"] == "succeeded", run
    writer = run["steps"][1]
    assert SECRET not in writer["output"] and shared_pieces(writer["turn"]) == []
    assert run["shared_memory"] is None


def test_parallel_agents_and_their_aggregator_share_one_memory(live, alice, stub_llm):
    make_agents(alice.tenant, ["scout", "judge"])
    scout_knows_the_secret(stub_llm)
    body = {"pattern": "parallel", "agents": ["scout"], "input": QUESTION, "aggregate": {"agent": "judge"}, "shared_memory": True}
    with api(live, alice, Prefer="wait") as client:
        run = start(client, body)
    assert run["status"] == "succeeded", run
    judge = run["steps"][-1]
    assert [p["agent"] for p in shared_pieces(judge["turn"])] == ["scout", "scout"], "the scout's input and answer"


def test_another_tenant_never_sees_a_runs_shared_memory(live, alice, bob, stub_llm):
    make_agents(alice.tenant, ["scout", "writer"])
    make_agents(bob.tenant, ["scout", "writer"])
    scout_knows_the_secret(stub_llm)
    with api(live, alice, Prefer="wait") as client:
        alices = start(client, run_body(True))
    assert alices["status"] == "succeeded", alices

    stub_llm.reset()
    stub_llm.when("", lambda body: Reply(content=next((m["content"] for m in body["messages"] if m["role"] == "system"), "-")))
    with api(live, bob, Prefer="wait") as client:
        bobs = start(client, run_body(True))
        # An attacker names Alice's scope in a conversation of his own, then talks in it.
        conversation = client.post(
            "/conversations", json={"agent": "writer", "metadata": {"memory_scope": alices["shared_memory"]["scope"]}}
        )
        assert conversation.status_code == 201, conversation.text
        chat = client.post("/chat/completions", json={"model": "writer", "messages": [{"role": "user", "content": QUESTION}],
                                                      "conversation": conversation.json()["id"]})  # fmt: skip
        assert chat.status_code == 200, chat.text
        assert client.get(f"/runs/{alices['id']}").status_code == 404
    assert bobs["status"] == "succeeded", bobs
    assert all(SECRET not in step["output"] for step in bobs["steps"])
    assert all(item["text"] != SECRET for item in bobs["shared_memory"]["items"]), "Bob's run remembers only what Bob's steps said"
    assert SECRET not in chat.json()["choices"][0]["message"]["content"], "a scope named by another tenant finds nothing"
    assert not any(SECRET in str(r) for r in stub_llm.requests), "no request of Bob's carried Alice's secret"
