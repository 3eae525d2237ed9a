"""The Responses API through the official openai client against a live stack: each response one turn."""

import json

import openai
import pytest

from agents.models import Turn, TurnStatus
from responses.models import Response
from tests.conftest import make_actor, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def user_texts(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] in ("user", "assistant") and m.get("content")]


def test_it_answers_a_plain_response(client, stub_llm):
    stub_llm.script(Reply(content="Hello from a response."))
    response = client.responses.create(model="helper", input="Hi there", metadata={"ticket": "42"})
    assert response.status == "completed" and response.object == "response" and response.model == "helper"
    assert response.output_text == "Hello from a response."
    assert response.output[0].type == "message" and response.output[0].content[0].type == "output_text"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens > 0
    assert response.metadata == {"ticket": "42"}
    turn = Turn.objects.get()
    assert turn.status == TurnStatus.SUCCEEDED and Response.objects.get().turn == turn, "a response is a turn"
    assert client.responses.retrieve(response.id).output_text == "Hello from a response."


def test_it_streams_typed_events_with_sequence_numbers_and_resumes_after_one(client, stub_llm):
    stub_llm.script(Reply(content="one two three four"))
    events = list(client.responses.create(model="helper", input="count", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three four"
    assert {"response.output_item.added", "response.content_part.added", "response.output_text.done", "response.output_item.done"} <= set(
        types
    )
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "one two three four"
    resumed = list(client.responses.retrieve(final.id, stream=True, starting_after=3))
    assert [e.sequence_number for e in resumed] == list(range(4, len(events)))
    assert [e.type for e in resumed] == types[4:]


def test_a_background_response_answers_queued_and_is_retrieved_later(client, stub_llm):
    stub_llm.script(Reply(content="done in the background", delay=0.5))
    response = client.responses.create(model="helper", input="take your time", background=True)
    assert response.status in ("queued", "in_progress") and response.background is True
    done = wait_for(lambda: (r := client.responses.retrieve(response.id)).status == "completed" and r, timeout=30, message="completed")
    assert done.output_text == "done in the background"


def test_previous_response_id_continues_the_conversation(client, stub_llm):
    stub_llm.script(Reply(content="Your name is Ada."), Reply(content="You told me: Ada."))
    first = client.responses.create(model="helper", input="My name is Ada.")
    second = client.responses.create(model="helper", input="What is my name?", previous_response_id=first.id, instructions="Be brief.")
    assert second.previous_response_id == first.id and second.instructions == "Be brief."
    sent = stub_llm.requests[-1]
    assert user_texts(sent)[-3:] == ["My name is Ada.", "Your name is Ada.", "What is my name?"], "the earlier exchange is remembered"
    assert any(m["role"] == "system" and m["content"] == "Be brief." for m in sent["messages"])
    first_turn, second_turn = (Response.objects.get(id=r.id.removeprefix("resp_")).turn for r in (first, second))
    assert first_turn.conversation_id == second_turn.conversation_id


def test_a_function_call_round_trip(client, stub_llm):
    call = {"id": "call_7", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    stub_llm.script(Reply(tool_calls=[call]), Reply(content="It is sunny in Oslo."))
    tools = [
        {
            "type": "function",
            "name": "weather",
            "description": "The weather.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    first = client.responses.create(model="helper", input="Weather in Oslo?", tools=tools)
    assert stub_llm.requests[-1]["tools"][0]["function"]["name"] == "weather", "function tools pass through in chat's shape"
    item = first.output[0]
    assert item.type == "function_call" and item.call_id == "call_7" and json.loads(item.arguments) == {"city": "Oslo"}
    second = client.responses.create(
        model="helper",
        previous_response_id=first.id,
        tools=tools,
        input=[{"type": "function_call_output", "call_id": "call_7", "output": '{"sky": "sunny"}'}],
    )
    assert second.output_text == "It is sunny in Oslo."
    tool_message = stub_llm.requests[-1]["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "call_7", "content": '{"sky": "sunny"}'}


def test_text_format_is_passed_through_as_structured_output(client, stub_llm):
    stub_llm.script(Reply(content='{"answer": 4}'))
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    response = client.responses.create(
        model="helper", input="2+2?", text={"format": {"type": "json_schema", "name": "sum", "schema": schema, "strict": True}}
    )
    assert json.loads(response.output_text) == {"answer": 4}
    assert stub_llm.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "sum", "schema": schema, "strict": True},
    }


def test_input_items_are_listed_and_a_deleted_response_is_gone(client, stub_llm):
    stub_llm.script(Reply(content="ok"))
    items = [
        {"role": "user", "content": "first"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second"}]},
    ]
    response = client.responses.create(model="helper", input=items)
    listed = client.responses.input_items.list(response.id, order="asc")
    assert [item.content[0].text for item in listed.data] == ["first", "second"]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert Turn.objects.count() == 1, "the turn (the audit record) stays"


def test_a_queued_background_response_is_cancelled_before_it_runs(client, stub_llm):
    stub_llm.script(Reply(content="slow first", delay=2.0), Reply(content="never"))
    first = client.responses.create(model="helper", input="first", background=True)
    second = client.responses.create(model="helper", input="second", previous_response_id=first.id, background=True)
    assert second.status == "queued", "it waits for the earlier turn of its conversation"
    cancelled = client.responses.cancel(second.id)
    assert cancelled.status == "cancelled"
    wait_for(lambda: client.responses.retrieve(first.id).status == "completed", timeout=30)
    assert client.responses.retrieve(second.id).status == "cancelled"
    assert len(stub_llm.requests) == 1, "the cancelled response never reached the model"


def test_a_running_background_response_is_cancelled_at_its_next_token(client, stub_llm):
    stub_llm.script(Reply(content=" ".join(f"w{i}" for i in range(40)), chunk_delay=0.2))
    response = client.responses.create(model="helper", input="talk slowly", background=True)
    turn_id = Response.objects.get(id=response.id.removeprefix("resp_")).turn_id
    wait_for(lambda: Turn.objects.get(id=turn_id).status == TurnStatus.RUNNING, timeout=30, message="the turn to run")
    client.responses.cancel(response.id)
    done = wait_for(lambda: (r := client.responses.retrieve(response.id)).status != "in_progress" and r, timeout=30, message="it to stop")
    assert done.status == "cancelled"
    assert Turn.objects.get(id=turn_id).status == TurnStatus.CANCELLED, "cancelled as any turn is (agents.control)"


def test_bad_requests_are_refused_in_openais_shape(client, stub_llm):
    cases = [
        (dict(model="nobody", input="x"), openai.NotFoundError, "model"),
        (dict(model="helper", input=[{"type": "web_search_call"}]), openai.BadRequestError, "input[0].type"),
        (dict(model="helper", input="x", previous_response_id="resp_0", conversation="c"), openai.BadRequestError, "previous_response_id"),
        (dict(model="helper", input="x", previous_response_id="resp_0"), openai.NotFoundError, "previous_response_id"),
        (dict(model="helper", input="x", conversation="not-a-conversation"), openai.NotFoundError, "conversation"),
        (dict(model="helper", input="x", tools=[{"type": "web_search"}]), openai.BadRequestError, "tools[0].type"),
        (dict(model="helper", input="x", background=True, store=False), openai.BadRequestError, "background"),
    ]
    for kwargs, error, param in cases:
        with pytest.raises(error) as raised:
            client.responses.create(**kwargs)
        assert raised.value.body["param"] == param, kwargs
    assert not Turn.objects.exists() and not Response.objects.exists(), "nothing was written"


def test_another_tenants_response_is_not_found(client, live, stub_llm):
    stub_llm.script(Reply(content="mine"))
    response = client.responses.create(model="helper", input="x")
    bob = openai.OpenAI(base_url=live.api, api_key=make_actor("bob").key, max_retries=0)
    for call in (
        lambda: bob.responses.retrieve(response.id),
        lambda: bob.responses.delete(response.id),
        lambda: bob.responses.input_items.list(response.id),
        lambda: bob.responses.cancel(response.id),
        lambda: bob.responses.create(model="helper", input="y", previous_response_id=response.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
