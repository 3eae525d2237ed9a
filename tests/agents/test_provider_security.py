"""What a tenant-chosen provider URL can reach and receive: only its own key, only allowed hosts,
none of the deployment's services, and none of the text another server answers (issue 11.1-3)."""

import pytest
from django.test import Client

from agents import breaker, providers, runner
from agents.models import Agent, Turn, TurnStatus
from budgets.models import AuditEntry
from sentinel_site import egress
from tests.agents.test_turn_runner import admit_turn, run
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db

DEPLOYMENT_KEY = "sk-deployment-secret"


@pytest.fixture
def deployment_key(settings):
    settings.SENTINEL = {**settings.SENTINEL, "LLM_API_KEY": DEPLOYMENT_KEY}


def bearer(stub_llm) -> str:
    return stub_llm.request_headers[-1].get("authorization", "")


def own_url(actor, url, key=""):
    Agent.objects.filter(id=actor.agent.id).update(provider_base_url=url, provider_api_key=key)
    actor.agent.refresh_from_db()


def write_agent(client, actor, method, path, body):
    return getattr(client, method)(path, body, content_type="application/json", **actor.auth)


# --- 1: the deployment's key goes only to the deployment's URL ------------------------------------
def test_an_agent_with_its_own_url_and_no_key_never_receives_the_deployment_key(alice, stub_llm, settings, deployment_key):
    settings.SENTINEL = {**settings.SENTINEL, "LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    own_url(alice, stub_llm.base_url)
    run(admit_turn(alice))
    assert DEPLOYMENT_KEY not in bearer(stub_llm)
    assert bearer(stub_llm) == f"Bearer {providers.NO_KEY}"


def test_an_agent_with_its_own_url_sends_its_own_key_there(alice, stub_llm, deployment_key):
    own_url(alice, stub_llm.base_url, key="sk-alice-own")
    run(admit_turn(alice))
    assert bearer(stub_llm) == "Bearer sk-alice-own"


def test_the_deployment_url_gets_the_deployment_key_or_the_agents_own(alice, stub_llm, deployment_key):
    run(admit_turn(alice))
    assert bearer(stub_llm) == f"Bearer {DEPLOYMENT_KEY}"
    Agent.objects.filter(id=alice.agent.id).update(provider_api_key="sk-byok")
    alice.agent.refresh_from_db()
    run(admit_turn(alice))
    assert bearer(stub_llm) == "Bearer sk-byok", "a tenant's own key may go to the operator's provider"


def test_the_dreamer_follows_the_same_rule(alice, settings, deployment_key):
    own_url(alice, "http://127.0.0.1:1/v1")
    config = providers.ProviderConfig.for_agent(alice.agent)
    assert config.api_key == providers.NO_KEY and config.tenant_url and not config.deployment_key


def test_moving_an_agents_url_without_a_new_key_clears_its_key(alice, stub_llm):
    client = Client()
    created = write_agent(
        client, alice, "post", "/v1/agents", {"name": "mover", "provider_base_url": stub_llm.base_url, "provider_api_key": "sk-1"}
    )
    agent_id = created.json()["id"]
    moved = write_agent(client, alice, "patch", f"/v1/agents/{agent_id}", {"provider_base_url": "http://127.0.0.1:2/v1"})
    assert moved.status_code == 200 and moved.json()["has_provider_api_key"] is False
    assert Agent.objects.get(id=agent_id).provider_api_key == ""
    entry = AuditEntry.objects.filter(action="agent.updated", target=agent_id).last()
    assert "provider_api_key (cleared: the base URL changed)" in entry.data["fields"]
    assert "sk-1" not in str(AuditEntry.objects.filter(target=agent_id).values_list("data", flat=True))


def test_moving_an_agents_url_with_a_key_keeps_that_key(alice, stub_llm):
    client = Client()
    created = write_agent(
        client, alice, "post", "/v1/agents", {"name": "mover", "provider_base_url": stub_llm.base_url, "provider_api_key": "sk-1"}
    )
    agent_id = created.json()["id"]
    moved = write_agent(
        client, alice, "patch", f"/v1/agents/{agent_id}", {"provider_base_url": "http://127.0.0.1:2/v1", "provider_api_key": "sk-1"}
    )
    assert moved.json()["has_provider_api_key"] is True and Agent.objects.get(id=agent_id).provider_api_key == "sk-1"


def test_model_writes_outside_the_api_follow_the_rule_too(alice, stub_llm):
    agent = Agent.objects.create(tenant=alice.tenant, name="direct", provider_base_url=stub_llm.base_url, provider_api_key="sk-x")
    agent = Agent.objects.get(id=agent.id)
    agent.provider_base_url = "http://127.0.0.1:3/v1"
    agent.save()
    assert Agent.objects.get(id=agent.id).provider_api_key == ""


# --- 2: where an agent's URL may lead ---------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/v1",  # loopback: the local model, any local service
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://10.0.0.7/v1",
        "http://192.168.1.1/v1",
        "http://[::1]:8000/v1",
        "http://0.0.0.0:8000/v1",
        "http://localhost:6379/",
        "http://user:password@api.example.com/v1",  # credentials in the URL would reach logs and labels
        "http://no-such-host.invalid/v1",
        "ftp://files.example.com/",
    ],
)
def test_by_default_an_agent_url_must_lead_to_a_public_address(alice, settings, url):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": []}
    response = write_agent(Client(), alice, "post", "/v1/agents", {"name": "probe", "provider_base_url": url})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == "provider_base_url"
    assert not Agent.objects.filter(name="probe").exists()


def test_an_operator_allowlist_lets_named_ranges_in_but_never_our_own_services(alice, settings, stub_llm):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": ["127.0.0.0/8"]}
    allowed = write_agent(Client(), alice, "post", "/v1/agents", {"name": "local", "provider_base_url": stub_llm.base_url})
    assert allowed.status_code == 201, allowed.content
    redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    for host in ("127.0.0.1", "127.0.0.2", "localhost"):
        refused = write_agent(Client(), alice, "post", "/v1/agents", {"name": "redis", "provider_base_url": f"http://{host}:{redis_port}/"})
        assert refused.status_code == 400 and "own services" in refused.json()["error"]["message"]


def test_an_allowlist_of_names_admits_only_those_names(settings):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": ["localhost", "*.example.org"]}
    egress.check_url("http://localhost:9999/v1")  # named: allowed whatever it resolves to
    with pytest.raises(egress.EgressDenied):
        egress.check_url("http://127.0.0.1:9999/v1")  # the same address, not named
    rules = egress.policy()
    assert rules.allows_name("api.example.org") and not rules.allows_name("example.org.evil.com")


def test_a_bad_allowlist_entry_is_refused_at_start_up():
    with pytest.raises(ValueError, match="not a host name"):
        egress.parse_policy(["10.0.0.0/8", "not a host!"])


def test_the_policy_is_checked_again_when_the_connection_is_made(alice, stub_llm, settings):
    """DNS can change after an agent was saved (or a row predates the policy): the worker checks
    every connection itself, and the provider never sees the request."""
    own_url(alice, stub_llm.base_url)  # written straight to the row: no save-time check
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": []}
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED
    assert (turn.error["status"], turn.error["code"]) == (403, "provider_url_not_allowed")
    assert stub_llm.requests == []


def test_a_kept_connection_does_not_outlive_a_policy_that_no_longer_allows_its_host(alice, stub_llm, settings):
    """Connections are kept for the next call (providers._drain): one opened while the policy
    allowed the host must not carry a call after the policy stopped allowing it."""
    own_url(alice, stub_llm.base_url)
    first = admit_turn(alice)
    run(first)
    first.refresh_from_db()
    assert first.status == TurnStatus.SUCCEEDED and len(stub_llm.requests) == 1  # its connection now kept in the pool
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": []}
    second = admit_turn(alice)
    run(second)
    second.refresh_from_db()
    assert (second.status, second.error["code"]) == (TurnStatus.FAILED, "provider_url_not_allowed")
    assert len(stub_llm.requests) == 1, "the provider never saw the second call"


def test_a_refused_connection_does_not_follow_redirects_either(alice, stub_llm):
    client = egress.guarded_http_client(providers.openai.Timeout(2.0))
    assert client.follow_redirects is False and client.trust_env is False


def test_what_another_server_answers_is_not_echoed_to_the_tenant(alice, stub_llm):
    stub_llm.script(Reply(status=400, error_body={"error": {"message": "root:x:0:0 internal secret page", "code": "bad_param"}}))
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert "secret" not in turn.error["message"] and "(bad_param)" in turn.error["message"]
    events = str(list(turn.events.values_list("payload", flat=True)))
    assert "internal secret" not in events


def test_agent_writes_are_audited_by_field_name(alice, stub_llm):
    client = Client()
    created = write_agent(client, alice, "post", "/v1/agents", {"name": "audited", "provider_api_key": "sk-audited"})
    agent_id = created.json()["id"]
    write_agent(client, alice, "patch", f"/v1/agents/{agent_id}", {"system_prompt": "Be brief."})
    assert client.delete(f"/v1/agents/{agent_id}", **alice.auth).status_code == 204
    entries = list(AuditEntry.objects.filter(target=agent_id).order_by("seq"))
    assert [e.action for e in entries] == ["agent.created", "agent.updated", "agent.deleted"]
    assert entries[1].data["fields"] == ["system_prompt"]
    assert all(e.actor == f"key:{alice.api_key.key_id}" for e in entries)
    assert "sk-audited" not in str([e.data for e in entries])


# --- 3: a circuit breaker one tenant cannot open for others -----------------------------------------
@pytest.mark.parametrize("status", [403, 404, 422])
def test_requests_the_provider_rightly_refused_do_not_open_the_breaker(alice, stub_llm, status):
    stub_llm.script(*[Reply(status=status) for _ in range(6)])
    for _ in range(6):
        run(admit_turn(alice))
    assert breaker.state(providers.ProviderConfig.for_agent(alice.agent)) == breaker.CLOSED
    assert len(stub_llm.requests) == 6


def test_rate_limits_and_server_errors_do_count(alice, stub_llm):
    config = providers.ProviderConfig.for_agent(alice.agent)
    stub_llm.script(*[Reply(status=429) for _ in range(3)], *[Reply(status=503) for _ in range(2)])
    for _ in range(5):
        run(admit_turn(alice))
    assert breaker.state(config) == breaker.OPEN


def test_one_tenants_failing_agent_opens_only_its_own_breaker(alice, bob, stub_llm):
    stub_llm.script(*[Reply(status=500) for _ in range(5)])
    for _ in range(5):
        run(admit_turn(alice))
    assert breaker.state(providers.ProviderConfig.for_agent(alice.agent)) == breaker.OPEN
    turn = admit_turn(bob)
    run(turn)
    assert Turn.objects.get(id=turn.id).status == TurnStatus.SUCCEEDED, "the same endpoint still serves everyone else"
    labels = dict(breaker.snapshot())
    assert labels == {"default": breaker.OPEN}, "a bounded label, never a URL"


def test_a_tenant_url_is_labelled_by_its_allowlist_entry_or_custom(alice, settings):
    own_url(alice, "http://127.0.0.1:9/v1")
    assert breaker.label(providers.ProviderConfig.for_agent(alice.agent)) == "127.0.0.1"
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": ["127.0.0.0/8"]}
    assert breaker.label(providers.ProviderConfig.for_agent(alice.agent)) == "127.0.0.0/8", "a network is one label"
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_ALLOWED_HOSTS": ["public"]}
    assert breaker.label(providers.ProviderConfig.for_agent(alice.agent)) == "custom"


def test_a_lost_claim_stops_the_stream_at_the_next_token(alice, stub_llm):
    from agents import heartbeat

    stub_llm.script(Reply(content="one two three four five"))
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    tracked = heartbeat.Tracked(turn.id, recorder.attempt)
    tracked.lost.set()
    config = providers.ProviderConfig.for_agent(alice.agent)
    with pytest.raises(runner.LostClaim):
        runner.call_provider(recorder, config, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, tracked)
