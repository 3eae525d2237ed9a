"""The turn's own input and the context budget: sent whole with the rest trimmed, or refused, never dropped."""

import json

import pytest
from django.test import Client

from agents import runner
from agents.admission import admit
from agents.models import Conversation, Message, Turn, TurnStatus
from agents.tasks import run_turn
from memory import tokens
from memory.context import ContextLengthExceeded, assemble
from memory.models import Summary
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db


def text_of(characters: int) -> str:
    words = " ".join(FILLER)
    return (words * (characters // len(words) + 1))[:characters]


def admit_turn(actor, messages, conversation=None):
    data = {"model": actor.agent.name, "messages": messages}
    if conversation is not None:
        data["conversation"] = conversation.id
    return admit(tenant=actor.tenant, api_key=actor.api_key, data=data, idempotency_key=None, enqueue=lambda _: None).turn


def test_a_12000_character_message_to_the_default_agent_is_refused_naming_the_budget(alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent, last_seq=3)
    body = {"model": "helper", "conversation": str(conversation.id), "messages": [{"role": "user", "content": text_of(12_000)}]}
    response = Client().post(
        "/v1/chat/completions", data=json.dumps(body), content_type="application/json", HTTP_PREFER="respond-async", **alice.auth
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "context_length_exceeded", "messages")
    size = tokens.count(alice.agent.system_prompt) + tokens.MESSAGE_OVERHEAD + tokens.count_message(body["messages"][0])
    assert "2048 tokens" in error["message"] and f"{size} tokens" in error["message"], error["message"]
    assert not Turn.objects.exists() and not Message.objects.exists(), "a refused request writes nothing"
    conversation.refresh_from_db()
    assert conversation.last_seq == 3, "not even the conversation's turn counter moves"


def test_an_input_that_fits_is_sent_whole_and_the_older_pieces_make_room(alice):
    conversation = conversation_with(
        alice, [f"{FILLER[i % len(FILLER)]} (note {i})" for i in range(60)], index=False, short_term_messages=12, short_term_tokens=1024
    )
    older = list(Message.objects.filter(conversation=conversation).order_by("index")[:20])
    Summary.objects.create(
        tenant=alice.tenant,
        conversation=conversation,
        text="- The user talked about the weather. " * 60,
        token_count=600,
        source_message_ids=[m.id for m in older],
        first_seq=1,
        last_seq=1,
    )
    big = [
        {"role": "user", "content": text_of(3000)},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": text_of(2500)},
    ]
    turn = admit_turn(alice, big, conversation=conversation)
    context = assemble(turn.conversation, upto_seq=turn.seq)
    assert [m["content"] for m in context.messages[-3:]] == [m["content"] for m in big], "the whole input, in order"
    assert context.total_tokens <= alice.agent.context_budget
    assert "summary" not in [piece.kind for piece in context.pieces], "the summary gave way to the input"


def test_a_tool_result_is_sent_with_the_call_it_answers_even_past_the_window(alice):
    conversation = conversation_with(alice, ["What is 6 x 7?"], index=False, short_term_messages=1)
    call = [{"id": "c1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}}]
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=1, index=1, role="assistant", content="", tool_calls=call)
    conversation.last_seq = 1
    conversation.save()
    turn = admit_turn(alice, [{"role": "tool", "content": "42", "tool_call_id": "c1"}], conversation=conversation)
    sent = assemble(turn.conversation, upto_seq=turn.seq).messages[1:]
    assert [m["role"] for m in sent] == ["assistant", "tool"], sent
    assert sent[-1]["content"] == "42", "the turn's own input is never dropped"


def test_assembly_refuses_an_input_the_budget_no_longer_holds(alice):
    turn = admit_turn(alice, [{"role": "user", "content": text_of(2000)}])
    alice.agent.context_budget = 200  # lowered after the turn was admitted
    alice.agent.save()
    turn.conversation.agent.refresh_from_db()
    with pytest.raises(ContextLengthExceeded) as raised:
        assemble(turn.conversation, upto_seq=turn.seq)
    assert raised.value.budget == 200 and raised.value.size > 200
    assert "200 tokens" in raised.value.message


def test_a_turn_whose_input_no_longer_fits_fails_without_reaching_the_model(alice, stub_llm):
    turn = admit_turn(alice, [{"role": "user", "content": text_of(2000)}])
    alice.agent.context_budget = 200
    alice.agent.save()
    run_turn(str(turn.id))
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED, "the turn fails visibly"
    assert (turn.error["status"], turn.error["code"]) == (400, "context_length_exceeded")
    assert stub_llm.requests == [], "the model never sees the turn without its input"
    assert not Message.objects.filter(turn=turn, role="assistant").exists()


def test_the_runner_sends_the_whole_input_to_the_model(alice, stub_llm):
    content = text_of(5000)
    turn = admit_turn(alice, [{"role": "user", "content": content}])
    runner.execute(runner.claim(turn.id))
    assert stub_llm.requests[-1]["messages"][-1]["content"] == content
