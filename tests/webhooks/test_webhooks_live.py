"""Webhooks through the official client against a live stack: signed as Standard Webhooks says, once
per attempt, retried until the receiver answers 2xx, logged, re-deliverable by hand."""

import json

import openai
import pytest

from tests.batches.conftest import jsonl, line, upload
from tests.conftest import make_actor, wait_for
from tests.stub_llm import Reply
from webhooks.models import Delivery, DeliveryAttempt

pytestmark = pytest.mark.django_db(transaction=True)


def register(client, receiver, *event_types):
    return client.webhooks.create(event_types=list(event_types), name="test hook", url=receiver.url)


def test_a_response_and_its_turn_are_told_with_signatures_that_verify(client, receiver, stub_llm):
    endpoint = register(client, receiver, "response.completed", "turn.completed")
    assert endpoint.signing_secret.startswith("whsec_") and endpoint.object == "webhook_endpoint"
    stub_llm.script(Reply(content="hooked"))
    response = client.responses.create(model="helper", input="hi")
    wait_for(lambda: len(receiver.received) >= 2, timeout=30, message="both events")
    ((headers, body),) = receiver.of_type("response.completed")
    event = client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
    assert event.type == "response.completed" and event.data.id == response.id
    ((turn_headers, turn_body),) = receiver.of_type("turn.completed")
    client.webhooks.verify_signature(turn_body, turn_headers, secret=endpoint.signing_secret)
    assert json.loads(turn_body)["data"]["status"] == "succeeded"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body.replace(b"completed", b"failed"), headers, secret=endpoint.signing_secret)
    assert (
        not hasattr(client.webhooks.retrieve(endpoint.id), "signing_secret")
        or client.webhooks.retrieve(endpoint.id).model_extra.get("signing_secret") is None
    ), "the secret is shown once"


def test_a_receiver_that_answers_500_twice_gets_the_third_try(client, receiver, stub_llm):
    endpoint = register(client, receiver, "response.completed")
    receiver.statuses.extend([500, 500])
    stub_llm.script(Reply(content="eventually"))
    client.responses.create(model="helper", input="hi")
    wait_for(lambda: Delivery.objects.filter(status="succeeded").exists(), timeout=30, message="the delivery to succeed")
    attempts = receiver.of_type("response.completed")
    assert len(attempts) == 3, "once per attempt"
    assert len({h["webhook-id"] for h, _ in attempts}) == 1, "the same webhook-id on every attempt, to dedupe on"
    for headers, body in attempts:
        client.webhooks.verify_signature(body, headers, secret=endpoint.signing_secret)
    delivery = Delivery.objects.get()
    assert delivery.attempts == 3
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("status_code", flat=True)) == [500, 500, 200]
    log = client.get(f"/webhooks/{endpoint.id}/deliveries", cast_to=object)
    assert [a["status_code"] for a in log["data"][0]["attempts"]] == [500, 500, 200]
    client.post(f"/webhooks/{endpoint.id}/deliveries/{log['data'][0]['id']}/redeliver", cast_to=object)
    wait_for(lambda: len(receiver.of_type("response.completed")) == 4, timeout=30, message="the re-delivery")


def test_a_batch_end_is_told(client, receiver, stub_llm):
    endpoint = register(client, receiver, "batch.completed")
    stub_llm.script(Reply(content="one"))
    batch = client.batches.create(
        input_file_id=upload(client, jsonl(line("x"))).id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(lambda: receiver.of_type("batch.completed"), timeout=60, message="batch.completed")
    ((headers, body),) = receiver.of_type("batch.completed")
    event = client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
    assert event.data.id == batch.id
    assert not receiver.of_type("turn.completed"), "a batch's lines are told by its end, and this endpoint takes no turn events"


def test_a_runs_end_is_told_when_it_succeeds_and_when_it_fails(client, receiver, stub_llm):
    endpoint = register(client, receiver, "run.completed", "run.failed")
    stub_llm.script(Reply(content="ran"), Reply(status=400))  # the second run's turn fails for good (a 400 is not retried)
    ran = client.post("/runs", body={"pattern": "pipeline", "agents": ["helper"], "input": "hi"}, cast_to=object)
    wait_for(lambda: receiver.of_type("run.completed"), timeout=30, message="run.completed")
    failed = client.post("/runs", body={"pattern": "pipeline", "agents": ["helper"], "input": "hi"}, cast_to=object)
    wait_for(lambda: receiver.of_type("run.failed"), timeout=30, message="run.failed")
    for kind, run, status in (("run.completed", ran, "succeeded"), ("run.failed", failed, "failed")):
        ((headers, body),) = receiver.of_type(kind)
        event = client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
        assert (event.data.id, json.loads(body)["data"]["status"]) == (run["id"], status), kind
    assert not receiver.of_type("turn.completed"), "the step turns are turn events, which this endpoint does not take"


def test_a_url_the_allowlist_refuses_is_not_registered(client, live):
    from urllib.parse import urlsplit

    redis_port = urlsplit(live.env["REDIS_URL"]).port or 6379
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest", f"http://127.0.0.1:{redis_port}/", "http://user:pw@127.0.0.1/"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.webhooks.create(event_types=["batch.completed"], name="x", url=url)
        assert refused.value.body["param"] == "url", url


def test_another_tenants_endpoint_is_not_found(client, live, receiver):
    endpoint = register(client, receiver, "batch.completed")
    bob = openai.OpenAI(base_url=live.api, api_key=make_actor("bob").key, max_retries=0)
    for call in (
        lambda: bob.webhooks.retrieve(endpoint.id),
        lambda: bob.webhooks.delete(endpoint.id),
        lambda: bob.webhooks.update(endpoint.id, url=receiver.url),
        lambda: bob.webhooks.rotate_secret(endpoint.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [e.id for e in bob.webhooks.list()] == []
    assert client.webhooks.delete(endpoint.id).deleted is True
