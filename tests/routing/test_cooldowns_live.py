"""Issue 19's acceptance through the live stack (uvicorn + a Celery worker): three stub deployments,
one failing, one slow, one healthy. Every request succeeds through the other two; the failing one is
cooled down once its breaker counts SENTINEL_BREAKER_FAILURES, probed once after its cooldown, and
no request makes more than one attempt at any deployment (so never two at a cooled-down one).

The live stack runs with the default 30 s cooldown; rather than wait it out, the test moves the
breaker's opening back in Redis (the state every worker reads), as 30 s passing would."""

import httpx
import pytest
from django.conf import settings

from tests.routing.helpers import cooldown_passes, group
from tests.routing.live import settle  # noqa: F401 - a fixture
from tests.stub_llm import Reply, StubLLM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("settle")]


@pytest.fixture
def trio(alice, stub_llm, second_llm):
    """alice's agent calls `trio`: the failing deployment (chosen first whenever it may be), the
    healthy one and a slow one."""
    slow = StubLLM().start()
    slow.when("", lambda body: Reply(content="slow but fine", delay=0.15))
    stub_llm.when("", lambda body: Reply(status=503))
    group(
        alice.tenant,
        "trio",
        {"base_url": stub_llm.base_url, "weight": 50},
        {"base_url": second_llm.base_url, "weight": 1},
        {"base_url": slow.base_url, "weight": 1},
    )
    alice.agent.model = "trio"
    alice.agent.save()
    yield stub_llm, second_llm, slow
    slow.stop()


def requests(live_stack, actor, count: int) -> None:
    with httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {actor.key}"}, timeout=30) as h:
        for index in range(count):
            answer = h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": f"q{index}"}]})
            assert answer.status_code == 200, answer.text
            events = h.get(f"/turns/{answer.headers['sentinel-turn-id']}/events", headers={"Accept": "application/json"}).json()["data"]
            tried = [e["payload"]["deployment"] for e in events if e["kind"] == "route" and "deployment" in e["payload"]]
            assert len(tried) == len(set(tried)), f"a deployment was attempted twice in one request: {tried}"


def test_the_failing_deployment_is_cooled_down_after_its_threshold_and_probed_once_after_its_cooldown(live_stack, alice, trio):
    failing, healthy, slow = trio
    threshold = settings.SENTINEL["BREAKER_FAILURES"]
    requests(live_stack, alice, threshold + 5)
    assert len(failing.requests) == threshold, "called until its breaker opens, then never within the cooldown"
    cooldown_passes(alice)
    requests(live_stack, alice, 4)
    assert len(failing.requests) == threshold + 1, "after the cooldown exactly one probe reaches it (and fails: open again)"
    assert len(healthy.requests) + len(slow.requests) == threshold + 9, "every request was answered by another deployment"
