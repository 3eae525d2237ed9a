"""/metrics: one scrape of the web process covers what the worker did, plus live state."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED = [
    "sentinel_turns",
    "sentinel_turn_duration_seconds",
    "sentinel_llm_requests",
    "sentinel_llm_request_duration_seconds",
    "sentinel_llm_tokens",
    "sentinel_llm_cost_usd",
    "sentinel_context_tokens",
    "sentinel_queue_depth",
    "sentinel_active_turns",
    "sentinel_queued_turns",
    "sentinel_dead_letters_open",
    "sentinel_circuit_breaker_state",
    "sentinel_db_queries",
]


def scrape(live_stack) -> dict:
    text = httpx.get(f"{live_stack.base_url}/metrics").text
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_cover_the_worker_and_the_live_state(live_stack, alice, stub_llm):
    stub_llm.script(Reply(content="measured"), Reply(status=500))
    with httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}"}, timeout=30) as h:
        assert h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
        assert h.post("/chat/completions", json={"model": "helper", "messages": [{"role": "user", "content": "hi"}]}).status_code == 502
    families = scrape(live_stack)
    for name in EXPECTED:
        assert name in families, f"{name} is missing from /metrics"
    turns = {s.labels["status"]: s.value for s in families["sentinel_turns"].samples if s.name == "sentinel_turns_total"}
    assert turns.get("succeeded", 0) >= 1 and turns.get("failed", 0) >= 1, "the worker's counters reach the web's /metrics"
    statuses = {s.labels["status"] for s in families["sentinel_llm_requests"].samples if s.name == "sentinel_llm_requests_total"}
    assert {"ok", "provider_error"} <= statuses
    assert {s.labels["queue"] for s in families["sentinel_queue_depth"].samples} == {
        "turns",
        "batches",
        "webhooks",
        "memory",
        "maintenance",
    }
    queries = {s.labels["process"]: s.value for s in families["sentinel_db_queries"].samples if s.name == "sentinel_db_queries_total"}
    assert queries.get("web", 0) > 0 and queries.get("worker", 0) > 0, "SQL round trips are counted in both processes"
    breaker_states = {s.labels["provider"]: s.value for s in families["sentinel_circuit_breaker_state"].samples}
    assert breaker_states.get("default") == 0, "one failure leaves the deployment's provider's breaker closed"
    providers = {s.labels["provider"] for s in families["sentinel_llm_requests"].samples}
    # The live stack allowlists the stub's host for agents' own URLs (tests/conftest.py), and other
    # tests' turns are in these counters too: every label is one of the known ones, never a URL.
    assert "default" in providers and providers <= {"default", "custom", "127.0.0.1"}, providers


def test_a_remote_scraper_without_the_token_is_refused(live_stack):
    """uvicorn no longer rewrites the client from X-Forwarded-For, so a forwarded scrape is one."""
    response = httpx.get(f"{live_stack.base_url}/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "metrics_token_required"


def _samples(families: dict, family: str, suffix: str) -> float:
    return sum(s.value for s in families[family].samples if s.name == family + suffix) if family in families else 0.0


def test_turns_admitted_together_reach_the_worker_in_shared_messages_and_their_finishes_in_shared_commits(live_stack, alice, stub_llm):
    stub_llm.script(*[Reply(content=f"answer {n}", delay=0.2) for n in range(40)])
    before = scrape(live_stack)

    def ask(n: int) -> int:
        with httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {alice.key}"}, timeout=60) as h:
            body = {"model": "helper", "messages": [{"role": "user", "content": f"together {n}"}]}
            return h.post("/chat/completions", json=body).status_code

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(40) as pool:
        assert set(pool.map(ask, range(40))) == {200}
    after = scrape(live_stack)
    messages = _samples(after, "sentinel_enqueue_batch_size", "_count") - _samples(before, "sentinel_enqueue_batch_size", "_count")
    turns = _samples(after, "sentinel_enqueue_batch_size", "_sum") - _samples(before, "sentinel_enqueue_batch_size", "_sum")
    assert turns == 40 and messages < 40, f"40 turns went in {messages} messages"
    commits = _samples(after, "sentinel_group_commit_batch_size", "_count") - _samples(before, "sentinel_group_commit_batch_size", "_count")
    finishes = _samples(after, "sentinel_group_commit_batch_size", "_sum") - _samples(before, "sentinel_group_commit_batch_size", "_sum")
    assert finishes == 40 and commits < 40, f"40 finishes took {commits} commits"
