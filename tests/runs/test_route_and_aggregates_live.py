"""route picks the specialist by embedding similarity (the choice and scores are a run event);
parallel's other aggregates: first, vote, and an aggregating agent."""

import pytest

from agents.models import Message
from tests.runs.conftest import api, make_agents, system_prompt
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

SPECIALISTS = {
    "chef": "Cooking, recipes, baking and food preparation",
    "astronomer": "Astronomy: planets, stars, galaxies and telescopes",
    "accountant": "Tax returns, bookkeeping and accounting",
}
LABELLED = [
    ("How long should I boil an egg for a runny yolk?", "chef"),
    ("Which planet in the solar system has the most moons?", "astronomer"),
    ("When is the deadline to file my quarterly VAT return?", "accountant"),
]


def test_a_route_picks_the_expected_specialist_for_labelled_prompts(live, alice, stub_llm):
    for name, specialization in SPECIALISTS.items():
        make_agents(alice.tenant, [name], specialization=specialization)
    stub_llm.when("", lambda body: Reply(content=system_prompt(body)))
    with api(live, alice, Prefer="wait") as client:
        for prompt, expected in LABELLED:
            run = client.post("/runs", json={"pattern": "route", "input": prompt, "agents": list(SPECIALISTS)}).json()
            assert run["status"] == "succeeded", run
            assert run["result"]["chosen"] == expected, (prompt, run["result"]["scores"])
            assert run["output"] == f"You are {expected}.", "the chosen agent answered, through a turn of its own"
            scores = run["result"]["scores"]
            assert set(scores) == set(SPECIALISTS) and max(scores, key=scores.get) == expected
            events = client.get(live.base_url + run["events_url"]).json()["data"]
            chosen = [e for e in events if e["kind"] == "route_chosen"]
            assert len(chosen) == 1 and chosen[0]["payload"]["chosen"] == expected and chosen[0]["payload"]["scores"] == scores
            answer = next(s for s in run["steps"] if s["id"] == "answer")
            assert answer["agent"] == expected and Message.objects.get(turn_id=answer["turn"], role="user").content == prompt


def test_first_ends_the_run_with_the_first_answer(live, alice, stub_llm):
    make_agents(alice.tenant, ["quick", "slow"])
    stub_llm.when("", lambda body: Reply(content="slow one", delay=2) if "slow" in system_prompt(body) else Reply(content="quick one"))
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "parallel", "agents": ["slow", "quick"], "input": "go", "aggregate": "first"}).json()
    assert run["status"] == "succeeded" and run["output"] == "quick one" and run["result"]["step"] == "quick", run
    slow = next(s for s in run["steps"] if s["id"] == "slow")
    assert slow["state"] == "cancelled", "the run does not wait for the others"


def test_vote_returns_the_most_common_answer_with_the_counts(live, alice, stub_llm):
    names = ["v1", "v2", "v3"]
    make_agents(alice.tenant, names)
    stub_llm.when("", lambda body: Reply(content="Paris" if system_prompt(body) != "You are v2." else "Lyon"))
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json={"pattern": "parallel", "agents": names, "input": "Capital of France?", "aggregate": "vote"}).json()
    assert run["status"] == "succeeded" and run["output"] == "Paris" and run["result"]["votes"] == {"Paris": 2, "Lyon": 1}, run


def test_an_aggregating_agent_receives_every_answer_and_writes_the_result(live, alice, stub_llm):
    make_agents(alice.tenant, ["pro", "con", "judge"])
    stub_llm.when("", lambda body: Reply(content=f"{system_prompt(body)} | {body['messages'][-1]['content']}"))
    body = {"pattern": "parallel", "agents": ["pro", "con"], "input": "Tabs?", "aggregate": {"agent": "judge"}}
    with api(live, alice, Prefer="wait") as client:
        run = client.post("/runs", json=body).json()
    assert run["status"] == "succeeded", run
    assert run["output"].startswith("You are judge. | Tabs?")
    assert "You are pro. | Tabs?" in run["output"] and "You are con. | Tabs?" in run["output"], "the judge saw both answers"
    assert [a["step"] for a in run["result"]["answers"]] == ["pro", "con"] and run["result"]["by"] == "aggregate"
