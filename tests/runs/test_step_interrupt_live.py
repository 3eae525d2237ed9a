"""A step's turn interrupted (by a client, or a worker's graceful shutdown) has not ended for its
step: the step waits, and once the turn is resumed the run goes on with it, one turn per step."""

import time

import pytest

from agents.models import Turn
from runs.models import Run, Step
from tests.conftest import wait_for
from tests.runs.conftest import api, make_agents
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_interrupted_step_waits_for_its_turns_resume(live, alice, stub_llm):
    make_agents(alice.tenant, ["one", "two"])
    stub_llm.script(Reply(content="a b c d e f g h", chunk_delay=0.5), Reply(content="the whole answer"))
    with api(live, alice) as client:
        run = client.post("/runs", json={"pattern": "pipeline", "agents": ["one", "two"], "input": "go"}).json()
        step = Step.objects.get(run_id=run["id"], key="one")
        wait_for(lambda: Turn.objects.filter(id=Step.objects.get(id=step.id).turn_id, status="running").exists(), timeout=15,
                 message="the first step's turn to run")  # fmt: skip
        turn_id = Step.objects.get(id=step.id).turn_id
        assert client.post(f"/turns/{turn_id}/interrupt").status_code in (200, 202)
        wait_for(lambda: Turn.objects.get(id=turn_id).status == "interrupted", timeout=15, message="the interrupt")
        time.sleep(1.5)  # the dispatcher was woken meanwhile
        assert Step.objects.get(id=step.id).state == "running", "an interrupted turn has not ended for its step"
        assert Run.objects.get(id=run["id"]).status == "running"
        assert client.post(f"/turns/{turn_id}/resume").status_code == 202
    wait_for(lambda: Run.objects.get(id=run["id"]).is_finished, timeout=30, interval=0.2, message="the run to end")
    done = Run.objects.get(id=run["id"])
    assert done.status == "succeeded", done.error
    first, second = Step.objects.filter(run=done).order_by("position")
    assert first.turn_id == turn_id and first.attempt == 1 and first.output == "the whole answer", "the resumed turn is the step's"
    assert second.output == "echo: the whole answer"
    assert Turn.objects.filter(idempotency_key__startswith=f"run:{done.id}:").count() == 2, "one turn per step"
