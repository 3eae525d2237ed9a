"""kill -9 of the worker in the middle of a 10-agent run and of a workflow: after a restart each run
succeeds, each step's turn has exactly one reply, and no step ran twice (one attempt, one turn)."""

import os
import signal
import time

import pytest
import redis
from django.conf import settings as django_settings

from agents.models import Message, Turn, TurnStatus
from agents.tasks import supervise
from runs import tasks
from runs.models import Run
from tests.conftest import start_worker, wait_for
from tests.runs.conftest import api, make_agents
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def kill_and_restart(live):
    os.kill(live.worker.pid, signal.SIGKILL)
    live.worker.wait()
    live.worker = start_worker(live.env, live.worker_log)


def recover(run_id):
    def ended():
        supervise()  # what beat runs: zombie turns requeued
        tasks.sweep()  # what beat runs: idle runs dispatched
        time.sleep(0.5)
        return Run.objects.get(id=run_id).is_finished

    wait_for(ended, timeout=120, interval=1, message="the run to end after the restart")


def assert_each_step_ran_once(run):
    turns = Turn.objects.filter(tenant=run.tenant, idempotency_key__startswith=f"run:{run.id}:")
    steps = list(run.steps.all())
    agent_steps = [s for s in steps if s.kind == "agent"]
    assert turns.count() == len(agent_steps), "one turn per agent step: none was admitted twice"
    for step in steps:
        assert step.state == "succeeded" and step.attempt == 1, f"step {step.key} ran once ({step.state}, attempt {step.attempt})"
    for step in agent_steps:
        assert Message.objects.filter(turn_id=step.turn_id, role="assistant").count() == 1, f"{step.key}'s turn has exactly one reply"
        assert step.output == Message.objects.get(turn_id=step.turn_id, role="assistant").content


@pytest.fixture
def chaos_settings(settings):
    settings.SENTINEL = {**settings.SENTINEL, "ZOMBIE_SECONDS": 3, "UNSENT_SECONDS": 3, "RETRY_BACKOFF_BASE": 0}
    settings.RUNS_SWEEP_INTERVAL = 1
    yield
    # The dead worker's deliveries stay "unacked" until the visibility timeout; redelivered then they
    # would find their turns and runs finished. Cleared so the next test starts idle.
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")


def test_a_killed_worker_mid_run_loses_nothing_and_runs_no_step_twice(live, alice, stub_llm, chaos_settings):
    names = [f"w{i}" for i in range(10)]
    make_agents(alice.tenant, names)
    stub_llm.when("", lambda body: Reply(content=f"answer to {body['messages'][-1]['content']}", delay=1.5))
    with api(live, alice) as client:
        run_id = client.post("/runs", json={"pattern": "parallel", "agents": names, "input": "q"}).json()["id"]
    wait_for(
        lambda: Turn.objects.filter(tenant=alice.tenant, status=TurnStatus.RUNNING).count() >= 6, timeout=30, message="turns in flight"
    )
    kill_and_restart(live)
    recover(run_id)
    run = Run.objects.get(id=run_id)
    assert run.status == "succeeded", run.error
    assert_each_step_ran_once(run)
    assert len(run.result["answers"]) == 10
    assert Turn.objects.filter(tenant=alice.tenant, attempt__gte=2).exists(), "the turns the dead worker held ran again, as turns"


def test_a_killed_worker_mid_workflow_resumes_from_its_finished_steps(live, alice, stub_llm, chaos_settings):
    make_agents(alice.tenant, ["first", "second", "third"])
    stub_llm.when("", lambda body: Reply(content=f"after {body['messages'][-1]['content']}", delay=1.5))
    steps = [
        {"id": "one", "kind": "agent", "agent": "first"},
        {"id": "shape", "kind": "transform", "depends_on": ["one"], "template": "[{{steps.one.output}}]"},
        {"id": "two", "kind": "agent", "agent": "second", "depends_on": ["shape"], "template": "{{steps.shape.output}}"},
        {"id": "three", "kind": "agent", "agent": "third", "depends_on": ["two"], "template": "{{steps.two.output}}"},
    ]
    with api(live, alice) as client:
        run_id = client.post("/runs", json={"pattern": "workflow", "input": "go", "workflow": {"steps": steps}}).json()["id"]
    run = Run.objects.get(id=run_id)
    wait_for(lambda: run.steps.filter(key="two", turn__status=TurnStatus.RUNNING).exists(), timeout=30, message="the second agent's turn")
    kill_and_restart(live)
    recover(run_id)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert_each_step_ran_once(run)
    assert run.output == "after after [after go]"
