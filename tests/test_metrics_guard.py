"""/metrics: who may scrape it, label values bounded to known ones, and a scrape that spares the
stores. (tests/e2e/test_metrics.py scrapes a live stack.)"""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from budgets.models import Price
from sentinel_site import metrics

TOKEN = "scrape-token-0123456789"


@pytest.fixture(autouse=True)
def fresh_metric_caches():
    metrics.forget_label_caches()
    metrics.STATE.forget()
    yield
    metrics.forget_label_caches()


def with_token(settings, token=TOKEN):
    settings.SENTINEL = {**settings.SENTINEL, "METRICS_TOKEN": token}


@pytest.mark.django_db
def test_with_a_token_set_a_scrape_must_send_it(settings):
    with_token(settings)
    client = Client()
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_metrics_token"
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    scraped = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert scraped.status_code == 200 and b"sentinel_turns_total" in scraped.content, "with the token, from anywhere"


@pytest.mark.django_db
def test_without_a_token_only_unforwarded_local_requests_may_scrape():
    client = Client()
    assert client.get("/metrics").status_code == 200, "the test client is 127.0.0.1"
    remote = client.get("/metrics", REMOTE_ADDR="198.51.100.4")
    assert remote.status_code == 403 and remote.json()["error"]["code"] == "metrics_token_required"
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 403, "a local proxy forwarding the world"


@pytest.mark.django_db
def test_production_without_a_token_answers_no_one(settings):
    settings.SENTINEL_ENV = "production"
    response = Client().get("/metrics")
    assert response.status_code == 403 and "SENTINEL_METRICS_TOKEN" in response.json()["error"]["message"]


def samples(wrapped) -> list[dict]:
    return [sample.labels for family in wrapped.metric.collect() for sample in family.samples if sample.name.endswith("_total")]


@pytest.mark.django_db
def test_provider_labels_are_the_default_an_allowlisted_host_or_custom(settings):
    settings.SENTINEL = {
        **settings.SENTINEL,
        "LLM_BASE_URL": "http://operator:pw@llm.internal:8001/v1",
        "PROVIDER_ALLOWED_HOSTS": ["api.example.com", "10.20.0.0/16", "*.openai.azure.com", "public"],
    }
    assert metrics.provider_label("http://llm.internal:8001/v1/") == "default", "the endpoint as ProviderConfig gives it"
    assert metrics.provider_label("http://operator:pw@llm.internal:8001/v1") == "default"
    assert metrics.provider_label("https://api.example.com/v1") == "api.example.com"
    assert metrics.provider_label("https://API.example.com:8443/v1") == "api.example.com"
    assert metrics.provider_label("http://10.20.3.4:8000/v1") == "10.20.0.0/16", "a network is one label, not one per address"
    assert metrics.provider_label("https://tenant-7.openai.azure.com/v1") == "*.openai.azure.com"
    assert metrics.provider_label("https://user:s3cret@evil.example/v1") == "custom", "public admits it; it is still no label"
    assert metrics.provider_label("http://[::1") == "custom"


@pytest.mark.django_db
def test_model_labels_are_the_default_a_globally_priced_model_or_other(settings, alice):
    Price.objects.create(model="priced-model", input_per_mtok=1, output_per_mtok=2)
    Price.objects.create(tenant=alice.tenant, model="tenant-chosen-model", input_per_mtok=1, output_per_mtok=2)
    assert metrics.model_label(settings.SENTINEL["LLM_MODEL"]) == settings.SENTINEL["LLM_MODEL"]
    assert metrics.model_label("priced-model") == "priced-model"
    assert metrics.model_label("tenant-chosen-model") == "other", "tenants may not mint label values with their own prices"
    assert metrics.model_label("x" * 500) == "other"


@pytest.mark.django_db
def test_a_tenants_endpoint_and_model_never_reach_a_label():
    endpoint = "https://user:s3cret@attacker.example/v1?token=abc"
    metrics.LLM_REQUESTS.labels(endpoint, "made-up-model-1", "ok").inc()
    metrics.LLM_TOKENS.labels(endpoint, "made-up-model-2", "input").inc(3)
    recorded = samples(metrics.LLM_REQUESTS) + samples(metrics.LLM_TOKENS)
    values = {value for labels in recorded for value in labels.values()}
    assert {"custom", "other"} <= values
    assert not [value for value in values if "s3cret" in value or "attacker" in value or "made-up" in value], values


@pytest.mark.django_db
def test_a_scrape_reads_the_stores_at_most_every_few_seconds(alice):
    client = Client()
    with CaptureQueriesContext(connection) as first:
        body = client.get("/metrics").content.decode()
    assert any("agents_turn" in q["sql"] for q in first), "the first scrape reads the turn gauges"
    assert "sentinel_active_turns" in body
    with CaptureQueriesContext(connection) as again:
        families = {family.name for family in text_string_to_metric_families(client.get("/metrics").content.decode())}
    assert len(again) == 0, [q["sql"] for q in again]
    assert {"sentinel_active_turns", "sentinel_queued_turns", "sentinel_dead_letters_open"} <= families, "served from the cache"
