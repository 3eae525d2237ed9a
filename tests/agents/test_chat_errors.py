"""Bad requests to POST /v1/chat/completions: a clear error in OpenAI's shape, and no row written."""

import json
import uuid

import pytest
from django.test import Client

from agents.models import Conversation, Message, Turn
from tests.conftest import make_actor

URL = "/v1/chat/completions"


@pytest.fixture
def client():
    return Client()


def post(client, body, headers=None, raw=None):
    data = raw if raw is not None else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", **(headers or {}))


def assert_openai_error(response, status, *, param=None, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", "an error is JSON, whatever the Accept header"
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"], "the message must say what went wrong"
    if param is not None:
        assert body["error"]["param"] == param, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def assert_nothing_written():
    assert Turn.objects.count() == 0
    assert Message.objects.count() == 0
    assert Conversation.objects.count() == 0


def good_body(actor, **extra):
    return {"model": actor.agent.name, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.django_db
def test_it_requires_an_api_key(client, alice):
    response = post(client, good_body(alice))
    assert_openai_error(response, 401, code="missing_api_key")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_written()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    ["Bearer snt_aaaaaaaaaaaa_" + "x" * 43, "Bearer not-a-key", "Basic dXNlcjpwYXNz", "Bearer "],
)
def test_it_rejects_a_bad_api_key(client, alice, header):
    response = post(client, good_body(alice), {"HTTP_AUTHORIZATION": header})
    assert response.status_code == 401
    assert_openai_error(response, 401)
    assert_nothing_written()


@pytest.mark.django_db
def test_it_rejects_a_right_key_id_with_a_wrong_secret(client, alice):
    forged = alice.key[: alice.key.rindex("_") + 1] + "A" * 43
    assert_openai_error(post(client, good_body(alice), {"HTTP_AUTHORIZATION": f"Bearer {forged}"}), 401, code="invalid_api_key")


@pytest.mark.django_db
def test_it_rejects_malformed_json(client, alice):
    error = assert_openai_error(post(client, None, alice.auth, raw='{"model": "helper", "messages": ['), 400, code="invalid_json")
    assert "JSON" in error["message"]
    assert_nothing_written()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "helper"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "helper", "messages": []}, "messages"),
        ({"model": "helper", "messages": "hi"}, "messages"),
        ({"model": "helper", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "helper", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "helper", "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
        ({"model": "helper", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"model": "helper", "messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
        (
            {"model": "helper", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None}]},
            "messages[1].content",
        ),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "stream": "yes please"}, "stream"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools[0].function"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "conversation": "nope"}, "conversation"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "user": 7}, "user"),
        ({"model": "helper", "messages": [{"role": "tool", "content": "42", "tool_call_id": 1}]}, "messages[0].tool_call_id"),
    ],
)
def test_it_names_the_bad_parameter(client, alice, body, param):
    assert_openai_error(post(client, body, alice.auth), 400, param=param)
    assert_nothing_written()


@pytest.mark.django_db
def test_a_json_array_body_is_a_400(client, alice):
    assert_openai_error(post(client, [1, 2], alice.auth), 400)
    assert_nothing_written()


@pytest.mark.django_db
def test_an_unknown_model_is_a_404_naming_it(client, alice):
    error = assert_openai_error(
        post(client, {**good_body(alice), "model": "nobody"}, alice.auth), 404, param="model", code="model_not_found"
    )
    assert "nobody" in error["message"]
    assert_nothing_written()


@pytest.mark.django_db
def test_another_tenants_agent_is_not_a_model_you_can_use(client, alice):
    other = make_actor("carol", agent_name="carols-agent")
    assert_openai_error(post(client, {**good_body(alice), "model": other.agent.name}, alice.auth), 404, code="model_not_found")
    assert_nothing_written()


@pytest.mark.django_db
def test_another_tenants_conversation_is_a_404_and_writes_nothing(client, alice, bob):
    from agents.models import Conversation

    bobs = Conversation.objects.create(tenant=bob.tenant, agent=bob.agent)
    response = post(client, good_body(alice, conversation=str(bobs.id)), alice.auth)
    assert_openai_error(response, 404, param="conversation")
    assert Turn.objects.count() == 0 and Message.objects.count() == 0
    bobs.refresh_from_db()
    assert bobs.last_seq == 0, "a rejected request must not advance the conversation"


@pytest.mark.django_db
def test_an_unknown_conversation_is_a_404(client, alice):
    assert_openai_error(post(client, good_body(alice, conversation=str(uuid.uuid4())), alice.auth), 404, code="conversation_not_found")
    assert_nothing_written()


@pytest.mark.django_db
def test_a_viewer_key_may_not_run_turns(client):
    viewer = make_actor("victor", role="viewer")
    assert_openai_error(post(client, good_body(viewer), viewer.auth), 403, code="insufficient_permissions")
    assert_nothing_written()


@pytest.mark.django_db
def test_a_revoked_key_is_rejected(client, alice):
    from django.utils import timezone

    alice.api_key.revoked_at = timezone.now()
    alice.api_key.save()
    assert_openai_error(post(client, good_body(alice), alice.auth), 401)


@pytest.mark.django_db
def test_an_expired_key_is_rejected(client, alice):
    from datetime import timedelta

    from django.utils import timezone

    alice.api_key.expires_at = timezone.now() - timedelta(seconds=1)
    alice.api_key.save()
    assert_openai_error(post(client, good_body(alice), alice.auth), 401)


@pytest.mark.django_db
def test_get_is_not_allowed(client, alice):
    assert_openai_error(client.get(URL, **alice.auth), 405)


@pytest.mark.django_db
def test_an_unknown_url_answers_in_openai_shape(client, alice):
    assert_openai_error(client.get("/v1/nothing-here", **alice.auth), 404)


@pytest.mark.django_db
def test_a_full_turn_queue_sheds_with_503_overloaded_and_writes_nothing(client, alice, settings):
    from agents import backpressure
    from sentinel_site.redis import sync_client

    settings.SENTINEL = {**settings.SENTINEL, "MAX_QUEUED_TURNS": 3}
    broker = sync_client()
    broker.delete(backpressure.TURN_QUEUE)
    broker.rpush(backpressure.TURN_QUEUE, "a", "b", "c")
    try:
        response = post(client, good_body(alice), alice.auth)
    finally:
        broker.delete(backpressure.TURN_QUEUE)
    error = assert_openai_error(response, 503, code="queue_full")
    assert error["type"] == "overloaded" and int(response["Retry-After"]) >= 1
    assert_nothing_written()


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/event-stream", "application/json", "*/*"])
def test_an_error_is_json_whatever_the_accept_header(client, alice, accept):
    events = f"/v1/turns/{uuid.uuid4()}/events"
    assert_openai_error(client.get(events, HTTP_ACCEPT=accept), 401, code="missing_api_key")
    assert_openai_error(client.get(events, HTTP_ACCEPT=accept, **alice.auth), 404)
    assert_openai_error(post(client, {"model": "helper"}, {"HTTP_ACCEPT": accept, **alice.auth}), 400, param="messages")


def test_redis_out_of_reach_is_a_503_and_nothing_is_written(client, alice, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there: the broker is down
    response = post(client, good_body(alice), alice.auth)
    assert_openai_error(response, 503, code="redis_unavailable")
    assert response["Retry-After"] == "2" and "Traceback" not in response.text
    assert_nothing_written()
