"""route with a router agent: a turn of that agent gets the input and the candidates with their
specializations and answers with a name; an answer naming no candidate falls back to embedding
similarity, and the run event says so, with the scores and the reason."""

import pytest

from agents.models import Message
from runs.steps import parse_choice
from tests.runs.conftest import api, make_agents, system_prompt
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

SPECIALISTS = {
    "chef": "Cooking, recipes, baking and food preparation",
    "astronomer": "Astronomy: planets, stars, galaxies and telescopes",
}
EGG = "How long should I boil an egg for a runny yolk?"  # embedding similarity picks the chef


def routed(live, actor, stub_llm, router_answer: str, **extra) -> tuple[dict, dict]:
    for name, specialization in SPECIALISTS.items():
        make_agents(actor.tenant, [name], specialization=specialization)
    make_agents(actor.tenant, ["dispatcher"])
    stub_llm.when("Choose the agent best suited", lambda body: Reply(content=router_answer))
    stub_llm.when("", lambda body: Reply(content=system_prompt(body)))
    with api(live, actor, Prefer="wait") as client:
        body = {"pattern": "route", "input": EGG, "agents": list(SPECIALISTS), "router": "dispatcher", **extra}
        run = client.post("/runs", json=body).json()
        events = client.get(live.base_url + run["events_url"]).json()["data"]
    assert run["status"] == "succeeded", run
    (chosen,) = [e["payload"] for e in events if e["kind"] == "route_chosen"]
    return run, chosen


def test_it_asks_the_router_agent_in_a_turn_and_runs_its_choice(live, alice, stub_llm):
    run, chosen = routed(live, alice, stub_llm, "**Astronomer**.")
    assert chosen["by"] == "router" and chosen["chosen"] == "astronomer", chosen
    assert chosen["router"] == {"agent": "dispatcher", "answer": "**Astronomer**."}
    assert set(chosen["scores"]) == set(SPECIALISTS), "the embedding scores are kept beside the router's choice"
    assert [s["id"] for s in run["steps"]] == ["router", "route", "answer"]
    router = run["steps"][0]
    assert router["agent"] == "dispatcher" and router["turn"], "the router's question is a turn of its own"
    asked = Message.objects.get(turn_id=router["turn"], role="user").content
    for name, specialization in SPECIALISTS.items():
        assert f"- {name}: {specialization}" in asked
    assert asked.endswith(f"Request:\n{EGG}")
    assert run["output"] == "You are astronomer." and run["result"]["chosen"] == "astronomer"


def test_an_answer_naming_no_candidate_falls_back_to_embedding_similarity(live, alice, stub_llm):
    run, chosen = routed(live, alice, stub_llm, "I would ask the plumber.")
    assert chosen["by"] == "embedding" and chosen["chosen"] == "chef", chosen
    assert "names no candidate" in chosen["fallback_reason"] and chosen["scores"]["chef"] > chosen["scores"]["astronomer"]
    assert run["output"] == "You are chef."


def test_a_routers_question_stays_out_of_the_runs_shared_memory(live, alice, stub_llm):
    run, chosen = routed(live, alice, stub_llm, "astronomer", shared_memory=True)
    assert chosen["by"] == "router"
    assert [(item["step"], item["role"]) for item in run["shared_memory"]["items"]] == [("answer", "user"), ("answer", "assistant")]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("chef", "chef"),
        ("  `Chef`\n", "chef"),
        ('{"agent": "astronomer"}', "astronomer"),
        ("The best agent for this is the astronomer, clearly.", "astronomer"),
        ("chef or astronomer", None),
        ("sous-chef", None),
        ("", None),
    ],
)
def test_it_reads_a_routers_answer_robustly(answer, expected):
    assert parse_choice(answer, ["chef", "astronomer"])[0] == expected
