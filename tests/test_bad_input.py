"""Bad input that used to answer 500 or break a stream: JSON nested thousands deep, and a
Last-Event-ID with parts of 2**64 or more. Each gets a 400 in OpenAI's error shape."""

import json

import pytest
from django.test import Client

from agents.admission import admit
from agents.models import Agent, Conversation, Turn
from sentinel_site.parsers import MAX_DEPTH

pytestmark = pytest.mark.django_db


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def chat(actor, messages_json: str):
    body = '{"model": "helper", "messages": ' + messages_json + "}"
    return Client().post("/v1/chat/completions", data=body, content_type="application/json", **actor.auth)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_json_nested_thousands_deep_is_a_400_naming_the_limit(alice, depth):
    error = assert_error(chat(alice, nested(depth)), 400, "invalid_json")
    assert f"at most {MAX_DEPTH} levels" in error["message"]
    assert not Turn.objects.exists() and not Conversation.objects.exists()


def test_json_one_level_past_the_limit_is_refused_and_at_the_limit_is_parsed(alice):
    # The body is an object (level 1) holding `messages`, so `messages` may nest MAX_DEPTH - 1 levels.
    assert_error(chat(alice, nested(MAX_DEPTH)), 400, "invalid_json")
    at_limit = chat(alice, nested(MAX_DEPTH - 1))
    error = assert_error(at_limit, 400, "invalid_value")
    assert error["param"].startswith("messages"), "parsed, then judged on its fields"


def test_a_free_form_object_nested_too_deep_is_refused_too(alice):
    body = '{"default_params": {"x": ' + nested(3_000) + "}}"
    response = Client().patch(f"/v1/agents/{alice.agent.id}", data=body, content_type="application/json", **alice.auth)
    assert_error(response, 400, "invalid_json")
    assert Agent.objects.get(id=alice.agent.id).default_params == alice.agent.default_params


@pytest.fixture
def queued_turn(alice):
    data = {"model": alice.agent.name, "messages": [{"role": "user", "content": "hi"}]}
    return admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda turn_id: None).turn


def events(actor, turn, last_event_id=None, query=""):
    headers = {"HTTP_ACCEPT": "text/event-stream", **actor.auth}
    if last_event_id is not None:
        headers["HTTP_LAST_EVENT_ID"] = last_event_id
    return Client().get(f"/v1/turns/{turn.id}/events{query}", **headers)


@pytest.mark.parametrize(
    "last_event_id",
    ["9" * 30, "18446744073709551616", "1700000000000-18446744073709551616", "1-2-3", "-1", "1700000000000-"],
)
def test_a_last_event_id_redis_cannot_read_is_a_400_before_the_stream_starts(alice, queued_turn, last_event_id):
    response = events(alice, queued_turn, last_event_id)
    assert response["Content-Type"] == "application/json" and not response.streaming
    error = assert_error(response, 400, "invalid_value")
    assert error["param"] == "Last-Event-ID"


def test_the_query_parameter_is_checked_the_same_way(alice, queued_turn):
    assert_error(events(alice, queued_turn, query="?last_event_id=" + "1" * 25), 400, "invalid_value")


def test_the_largest_stream_id_is_accepted(alice, queued_turn):
    largest = f"{2**64 - 1}-{2**64 - 1}"
    response = events(alice, queued_turn, largest)
    assert response.status_code == 200 and response.streaming
    response.close()


def test_a_body_with_nul_still_names_the_field(alice):
    body = json.dumps({"model": "helper", "messages": [{"role": "user", "content": "hi"}], "metadata": {"a": [1, "x\u0000"]}})
    error = assert_error(
        Client().post("/v1/chat/completions", data=body, content_type="application/json", **alice.auth), 400, "invalid_value"
    )
    assert error["param"] == "metadata.a[1]"
