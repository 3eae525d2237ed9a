"""Issue 19's acceptance in-process (test_cooldowns_live.py runs it through the live stack), with
three stub deployments (one failing, one slow, one healthy): requests succeed through the others,
the failing one is cooled down after its breaker's threshold and probed again after its cooldown
(moved back in Redis rather than waited out), and no request makes more than one attempt at any
deployment."""

import pytest

from agents.models import TurnStatus
from tests.agents.test_turn_runner import admit_turn, run
from tests.routing.helpers import cooldown_passes, group
from tests.stub_llm import Reply, StubLLM

pytestmark = pytest.mark.django_db


@pytest.fixture
def slow_llm():
    stub = StubLLM().start()
    stub.when("", lambda body: Reply(content="slow but fine", delay=0.2))
    yield stub
    stub.stop()


def test_a_failing_deployment_is_cooled_down_after_its_threshold_and_probed_after_its_cooldown(
    alice, stub_llm, second_llm, slow_llm, settings
):
    settings.SENTINEL = {**settings.SENTINEL, "BREAKER_FAILURES": 3, "BREAKER_OPEN_SECONDS": 30, "BREAKER_CACHE_SECONDS": 0}
    stub_llm.when("", lambda body: Reply(status=503))  # the failing one, chosen first whenever it may be
    group(
        alice.tenant,
        "trio",
        {"base_url": stub_llm.base_url, "weight": 50},
        {"base_url": second_llm.base_url, "weight": 1},
        {"base_url": slow_llm.base_url, "weight": 1},
    )
    alice.agent.model = "trio"
    alice.agent.save()

    def turns(count):
        for index in range(count):
            turn = admit_turn(alice, f"question {index}")
            run(turn)
            turn.refresh_from_db()
            assert turn.status == TurnStatus.SUCCEEDED, turn.error
            tried = [event.payload["deployment"] for event in turn.events.filter(kind="route") if "deployment" in event.payload]
            assert len(tried) == len(set(tried)), f"a deployment was attempted twice in one request: {tried}"

    turns(12)
    assert len(stub_llm.requests) == 3, "the failing deployment is called until its breaker opens, then never"
    cooldown_passes(alice)  # one probe goes through, fails, and opens it again
    turns(6)
    assert len(stub_llm.requests) == 4, "after the cooldown exactly one probe reaches the failing deployment"
    assert len(second_llm.requests) + len(slow_llm.requests) == 18, "every request was answered by another deployment"
