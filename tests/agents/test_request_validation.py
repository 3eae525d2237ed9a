"""The two lanes of chat request validation (SENTINEL_REQUEST_VALIDATION): msgspec structs
(agents/api/schema.py) and the DRF serializer. What the structs accept, the serializer accepts with
the same validated data; what the serializer refuses, the structs refuse; and a bad request reads
the same on both lanes."""

import json
import uuid

import pytest
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agents.admission import request_hash
from agents.api import schema
from agents.api.serializers import ChatCompletionRequestSerializer
from agents.models import Turn

URL = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
CONVERSATION = "a8098c1a-f86e-11da-bd1a-00112444be1e"


def drf(body):
    """The serializer's verdict: (validated data, None) or (None, errors)."""
    serializer = ChatCompletionRequestSerializer(data=body)
    if serializer.is_valid():
        return serializer.validated_data, None
    return None, serializer.errors


def assert_same_data(fast, slow):
    assert fast == slow
    assert request_hash(fast) == request_hash(slow), "an Idempotency-Key must find the same body on either lane (1 vs 1.0, ...)"
    assert list(fast) == list(slow), "keys in the serializer's order"
    assert [list(m) for m in fast["messages"]] == [list(m) for m in slow["messages"]]


# Requests the structs take as they are: the fast lane must serve them, not hand them to the serializer.
GOOD = [
    {"model": "helper", "messages": HI},
    {"model": "helper", "messages": HI, "stream": True, "stream_options": {"include_usage": True}},
    {"model": "helper", "messages": HI, "stream_options": {}},
    {"model": "helper", "messages": HI, "stream_options": None, "conversation": None, "temperature": None, "user": None},
    {"model": "helper", "messages": HI, "conversation": CONVERSATION},
    {"model": "helper", "messages": HI, "conversation": CONVERSATION.replace("-", "").upper()},
    {"model": "helper", "messages": HI, "conversation": "urn:uuid:{" + CONVERSATION + "}"},  # as uuid.UUID reads it, on both lanes
    {"model": "h" * 200, "messages": HI, "temperature": 2, "top_p": 0, "presence_penalty": -2, "frequency_penalty": 1.5},
    {"model": "helper", "messages": HI, "max_tokens": 16384, "max_completion_tokens": 1, "n": 1, "seed": -(2**63)},
    {"model": "helper", "messages": HI, "seed": 2**63 - 1, "stop": "END", "user": "u" * 256},
    {"model": "helper", "messages": HI, "stop": ["a", "b", "c", "d"], "logit_bias": {"50256": -100, "1": 0.5}},
    {"model": "helper", "messages": HI, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    {"model": "helper", "messages": HI, "tool_choice": "auto", "parallel_tool_calls": False, "tools": []},
    {"model": "helper", "messages": HI, "tools": None, "tool_choice": None, "response_format": None, "logit_bias": None},
    {
        "model": "helper",
        "messages": HI,
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "", "parameters": {"type": "object"}, "strict": None}},
            {"type": "function", "function": {"name": "a-b_9", "strict": True}, "extra": 1},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}, "extra": [1]},
    },
    {
        "model": "helper",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b", "x": 1}], "name": ""},
            {"role": "user", "content": []},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}],
            },
            {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "f" * 64},
            {"role": "assistant", "content": "done", "tool_calls": []},
        ],
    },
    {"model": "helper", "messages": HI, "metadata": {"unknown": "fields are ignored"}, "stream": False},
]

# What DRF takes although it is not JSON's own type: the structs refuse, the serializer accepts.
LENIENT = [
    {"model": "helper", "messages": HI, "temperature": "0.5"},
    {"model": "helper", "messages": HI, "temperature": True},
    {"model": "helper", "messages": HI, "stream": "true"},
    {"model": "helper", "messages": HI, "stream": 1},
    {"model": "helper", "messages": HI, "max_tokens": 5.0},
    {"model": "helper", "messages": HI, "max_tokens": "7"},
    {"model": "helper", "messages": HI, "conversation": int(uuid.UUID(CONVERSATION))},
    {"model": "helper", "messages": HI, "logit_bias": {"1": "2.5"}},
]

# Refused by the serializer: refused by the structs too, with the same answer on both lanes.
BAD = [
    {"model": "helper"},
    {"messages": HI},
    {"model": "", "messages": HI},
    {"model": "h" * 201, "messages": HI},
    {"model": 7, "messages": HI},
    {"model": "helper", "messages": []},
    {"model": "helper", "messages": "hi"},
    {"model": "helper", "messages": ["hi"]},
    {"model": "helper", "messages": [{"role": "wizard", "content": "hi"}]},
    {"model": "helper", "messages": [{"role": "", "content": "hi"}]},
    {"model": "helper", "messages": [{"role": "user"}]},
    {"model": "helper", "messages": [{"role": "user", "content": None}]},
    {"model": "helper", "messages": [{"role": "user", "content": 42}]},
    {"model": "helper", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    {"model": "helper", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"model": "helper", "messages": [{"role": "user", "content": ["a"]}]},
    {"model": "helper", "messages": [{"role": "user", "content": "hi", "name": "n" * 65}]},
    {"model": "helper", "messages": [{"role": "user", "content": "hi", "name": None}]},
    {"model": "helper", "messages": [{"role": "tool", "content": "42"}]},
    {"model": "helper", "messages": [{"role": "tool", "content": "42", "tool_call_id": ""}]},
    {"model": "helper", "messages": [{"role": "tool", "content": "42", "tool_call_id": 1}]},
    {"model": "helper", "messages": [{"role": "tool", "content": "42", "tool_call_id": "c" * 101}]},
    {"model": "helper", "messages": [*HI, {"role": "assistant", "content": None}]},
    {"model": "helper", "messages": [*HI, {"role": "assistant", "content": None, "tool_calls": []}]},
    {"model": "helper", "messages": [*HI, {"role": "assistant", "tool_calls": None}]},
    {
        "model": "helper",
        "messages": [
            {"role": "user", "content": "hi", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": ""}}]}
        ],
    },
    {
        "model": "helper",
        "messages": [
            *HI,
            {"role": "assistant", "tool_calls": [{"id": "", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        ],
    },
    {
        "model": "helper",
        "messages": [*HI, {"role": "assistant", "tool_calls": [{"id": "1", "type": "tool", "function": {"name": "f", "arguments": ""}}]}],
    },
    {
        "model": "helper",
        "messages": [*HI, {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f"}}]}],
    },
    {"model": "helper", "messages": HI, "stream": "yes please"},
    {"model": "helper", "messages": HI, "stream": None},
    {"model": "helper", "messages": HI, "stream_options": "usage"},
    {"model": "helper", "messages": HI, "stream_options": {"include_usage": "maybe"}},
    {"model": "helper", "messages": HI, "conversation": "nope"},
    {"model": "helper", "messages": HI, "conversation": 1.5},
    {"model": "helper", "messages": HI, "temperature": "hot"},
    {"model": "helper", "messages": HI, "temperature": 3},
    {"model": "helper", "messages": HI, "temperature": -0.1},
    {"model": "helper", "messages": HI, "top_p": 1.01},
    {"model": "helper", "messages": HI, "presence_penalty": -3},
    {"model": "helper", "messages": HI, "max_tokens": 0},
    {"model": "helper", "messages": HI, "max_tokens": 16385},
    {"model": "helper", "messages": HI, "max_completion_tokens": 10**30},
    {"model": "helper", "messages": HI, "max_tokens": 1.5},
    {"model": "helper", "messages": HI, "max_tokens": True},
    {"model": "helper", "messages": HI, "n": 2},
    {"model": "helper", "messages": HI, "seed": 2**63},
    {"model": "helper", "messages": HI, "seed": -(2**63) - 1},
    {"model": "helper", "messages": HI, "stop": ["a", "b", "c", "d", "e"]},
    {"model": "helper", "messages": HI, "stop": [1]},
    {"model": "helper", "messages": HI, "tools": [{"type": "function"}]},
    {"model": "helper", "messages": HI, "tools": [{"type": "retrieval", "function": {"name": "f"}}]},
    {"model": "helper", "messages": HI, "tools": [{"type": "function", "function": {"name": "has space"}}]},
    {"model": "helper", "messages": HI, "tools": [{"type": "function", "function": {"name": "f" * 65}}]},
    {"model": "helper", "messages": HI, "tools": [{"type": "function", "function": {"name": "f", "parameters": None}}]},
    {"model": "helper", "messages": HI, "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
    {"model": "helper", "messages": HI, "tools": [{"type": "function", "function": {"name": "f", "description": None}}]},
    {"model": "helper", "messages": HI, "tools": {"type": "function"}},
    {"model": "helper", "messages": HI, "tool_choice": "sometimes"},
    {"model": "helper", "messages": HI, "tool_choice": {"type": "function", "function": {}}},
    {"model": "helper", "messages": HI, "tool_choice": {"type": "function", "function": {"name": 1}}},
    {"model": "helper", "messages": HI, "tool_choice": ["auto"]},
    {"model": "helper", "messages": HI, "parallel_tool_calls": "maybe"},
    {"model": "helper", "messages": HI, "response_format": {"type": "yaml"}},
    {"model": "helper", "messages": HI, "response_format": "json_object"},
    {"model": "helper", "messages": HI, "logit_bias": {"1": None}},
    {"model": "helper", "messages": HI, "logit_bias": [1]},
    {"model": "helper", "messages": HI, "logit_bias": {"1": float("inf")}},  # DRF's FloatField takes only finite numbers
    {"model": "helper", "messages": HI, "logit_bias": {"1": float("nan")}},
    {"model": "helper", "messages": HI, "temperature": float("nan")},
    {"model": "helper", "messages": HI, "user": ""},
    {"model": "helper", "messages": HI, "user": 7},
    {"model": "helper", "messages": HI, "user": "u" * 257},
    {"model": "helper", "messages": HI, "temperature": 3, "n": 2, "user": 7},
    {"model": 7, "messages": [{"role": "wizard"}], "stream": "x"},
    [1, 2],
    "hello",
]


@pytest.mark.parametrize("body", GOOD, ids=lambda b: json.dumps(b)[:80])
def test_the_structs_serve_a_good_request_with_the_serializers_data(body):
    slow, errors = drf(body)
    assert errors is None, errors
    fast = schema.fast(body)
    assert fast is not None, "a well-formed request must not need the serializer"
    assert_same_data(fast, slow)


@pytest.mark.parametrize("body", LENIENT, ids=lambda b: json.dumps(b)[:80])
def test_what_only_drf_accepts_goes_to_the_serializer_and_is_accepted(body, settings):
    settings.SENTINEL = {**settings.SENTINEL, "REQUEST_VALIDATION": "msgspec"}
    slow, errors = drf(body)
    assert errors is None, errors
    assert schema.fast(body) is None
    assert schema.validate(body) == slow


@pytest.mark.parametrize("body", BAD, ids=lambda b: json.dumps(b)[:80])
def test_the_structs_refuse_what_the_serializer_refuses(body):
    slow, _ = drf(body)
    assert slow is None, "this case must be a bad request"
    assert schema.fast(body) is None


def test_the_message_count_and_output_limits_follow_the_settings(settings):
    settings.SENTINEL = {**settings.SENTINEL, "MAX_MESSAGES_PER_REQUEST": 2, "MAX_OUTPUT_TOKENS": 10}
    assert schema.fast({"model": "m", "messages": HI * 2, "max_tokens": 10}) is not None
    for body in ({"model": "m", "messages": HI * 3}, {"model": "m", "messages": HI, "max_tokens": 11}):
        assert drf(body)[0] is None and schema.fast(body) is None


def post(body, actor, lane, settings, **headers):
    settings.SENTINEL = {**settings.SENTINEL, "REQUEST_VALIDATION": lane}
    return Client().post(URL, data=json.dumps(body), content_type="application/json", **actor.auth, **headers)


@pytest.mark.django_db
@pytest.mark.parametrize("body", BAD, ids=lambda b: json.dumps(b)[:80])
def test_a_bad_request_gets_the_same_answer_on_both_lanes(body, alice, settings):
    answers = []
    for lane in ("drf", "msgspec"):
        response = post(body, alice, lane, settings)
        assert response.status_code == 400, response.content
        answers.append(response.json())
    assert answers[0] == answers[1]
    assert set(answers[0]["error"]) == {"message", "type", "param", "code"}
    assert not Turn.objects.exists()


@pytest.mark.django_db
def test_an_idempotency_key_finds_its_turn_across_a_change_of_lane(alice, settings):
    body = {**GOOD[-2], "model": alice.agent.name, "temperature": 1, "logit_bias": {"7": 1}}
    headers = {"HTTP_IDEMPOTENCY_KEY": "lane-change", "HTTP_PREFER": "respond-async"}
    first = post(body, alice, "drf", settings, **headers)
    again = post(body, alice, "msgspec", settings, **headers)
    assert first.status_code == again.status_code == 202, again.content
    assert again.json()["id"] == first.json()["id"], "the same body hashes the same on both lanes"
    assert Turn.objects.count() == 1


# Generated bodies: each field mostly well-formed, now and then not (one time in eight), so about a
# third of the bodies are good and the rest are bad in one place or several.
def mix(good, bad):
    return st.integers(0, 7).flatmap(lambda n: bad if n == 7 else good)  # one_of would favour the simpler, bad, side


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6)
_word = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=6)
_json_scalar = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False) | _text
_loose = st.recursive(_json_scalar, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_text, inner, max_size=2), max_leaves=4)
_part = mix(st.fixed_dictionaries({"type": st.just("text"), "text": _text}), st.fixed_dictionaries({"type": _json_scalar, "text": _loose}))
_content = mix(_text | st.lists(_part, max_size=2), st.none() | st.integers() | _loose)
_call = mix(
    st.fixed_dictionaries(
        {"id": _word, "type": st.just("function"), "function": st.fixed_dictionaries({"name": _word, "arguments": _text})}
    ),
    st.fixed_dictionaries({"id": _json_scalar, "type": _json_scalar}, optional={"function": _loose}),
)
_message = mix(
    st.one_of(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "developer", "user"]), "content": _content}, optional={"name": mix(_text, _loose)}
        ),
        st.fixed_dictionaries(
            {"role": st.just("assistant")}, optional={"content": st.none() | _content, "tool_calls": st.lists(_call, max_size=2)}
        ),
        st.fixed_dictionaries({"role": st.just("tool"), "content": _content, "tool_call_id": mix(_word, _json_scalar)}),
    ),
    st.fixed_dictionaries({"role": _json_scalar}, optional={"content": _loose, "tool_calls": _loose, "tool_call_id": _loose}),
)
_function = st.fixed_dictionaries(
    {"name": mix(st.sampled_from(["f", "get-weather_1", "x" * 64]), st.sampled_from(["bad name", "", "x" * 65]) | _json_scalar)},
    optional={
        "description": mix(_text, _json_scalar),
        "parameters": mix(st.dictionaries(_text, _loose, max_size=2), _json_scalar),
        "strict": mix(st.none() | st.booleans(), _json_scalar),
    },
)
_tool = mix(st.fixed_dictionaries({"type": st.just("function"), "function": _function}), _loose)


def _number(low, high, integer=False):
    good = st.integers(low, high) | (st.none() if integer else st.floats(low, high) | st.none())
    return mix(good, st.integers(-(2**64), 2**64) | st.floats() | st.booleans() | st.sampled_from(["1", "x", 0.5, 1.0]))


_body = st.fixed_dictionaries(
    {
        "model": mix(st.text(st.characters(codec="ascii", min_codepoint=33), min_size=1, max_size=200), _json_scalar),
        "messages": mix(st.lists(_message, min_size=1, max_size=3), _loose),
    },
    optional={
        "stream": mix(st.booleans(), _json_scalar),
        "stream_options": mix(st.none() | st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}), _loose),
        "conversation": mix(st.none() | st.uuids().map(str), _text | st.integers()),
        "temperature": _number(0, 2),
        "top_p": _number(0, 1),
        "max_tokens": _number(1, 16384, integer=True),
        "max_completion_tokens": _number(1, 16384, integer=True),
        "n": _number(1, 1, integer=True),
        "stop": mix(st.none() | _text | st.lists(_text, max_size=4), _loose),
        "presence_penalty": _number(-2, 2),
        "frequency_penalty": _number(-2, 2),
        "seed": _number(-(2**63), 2**63 - 1, integer=True),
        "tools": mix(st.none() | st.lists(_tool, max_size=2), _loose),
        "tool_choice": mix(
            st.sampled_from(["auto", "none", "required", None])
            | st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": _text})}),
            _loose,
        ),
        "parallel_tool_calls": mix(st.none() | st.booleans(), _json_scalar),
        "response_format": mix(
            st.none() | st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "json_schema"])}), _loose
        ),
        "logit_bias": mix(st.none() | st.dictionaries(_text, st.floats(-100, 100) | st.integers(-100, 100), max_size=2), _loose),
        "user": mix(st.none() | _word, _json_scalar),
        "metadata": _loose,
    },
)


@given(_body)
@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_generated_bodies_get_the_serializers_verdict_on_the_fast_lane(body):
    slow, errors = drf(body)
    fast = schema.fast(body)
    if fast is not None:
        assert errors is None, f"the structs accepted what the serializer refuses: {errors}"
        assert_same_data(fast, slow)
