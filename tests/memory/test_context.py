"""Context assembly: each tier, the budget, no piece twice, and a turn's context on record."""

import pytest

from agents import runner
from agents.admission import admit
from agents.models import Message
from memory import embeddings
from memory.context import assemble
from memory.models import Summary
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db


def long_history(actor, fact_at=3, turns=120):
    texts = [FILLER[i % len(FILLER)] + f" (note {i})" for i in range(turns)]
    texts[fact_at] = "By the way, my dog is called Biscuit and he is a beagle."
    texts.append("What is the name of my dog?")
    return conversation_with(actor, texts, context_budget=1024, short_term_messages=6, short_term_tokens=400, recall_limit=4)


def test_the_recent_window_keeps_the_newest_messages_within_count_and_tokens(alice):
    conversation = conversation_with(alice, FILLER, short_term_messages=3)
    context = assemble(conversation)
    recent = [piece for piece in context.pieces if piece.kind == "recent"]
    assert [piece.text for piece in recent] == FILLER[-3:]
    assert context.messages[-3:] == [{"role": m.role, "content": m.content} for m in Message.objects.order_by("index")[5:]]


def test_the_system_prompt_comes_first(alice):
    context = assemble(conversation_with(alice, FILLER))
    assert context.pieces[0].kind == "system" and context.messages[0]["role"] == "system"
    assert context.messages[0]["content"].startswith("You help alice.")


def test_a_planted_fact_is_recalled_from_long_ago_and_the_context_stays_small(alice):
    conversation = long_history(alice)
    context = assemble(conversation, embed=embeddings.embed)
    recalled = [piece for piece in context.pieces if piece.kind == "recalled"]
    assert any("Biscuit" in piece.text for piece in recalled), [p.text for p in recalled]
    assert context.total_tokens <= 1024
    assert context.total_tokens < 0.2 * context.history_tokens, "context must be at least 80% smaller than the history"
    assert "Biscuit" in context.messages[0]["content"], "recalled memories reach the model in the system message"


def test_no_piece_is_included_twice(alice):
    conversation = long_history(alice)
    context = assemble(conversation, embed=embeddings.embed, query="weather clouds hills")  # matches recent messages too
    recent_ids = {mid for p in context.pieces if p.kind == "recent" for mid in p.source_message_ids}
    recalled_ids = [mid for p in context.pieces if p.kind == "recalled" for mid in p.source_message_ids]
    assert not recent_ids & set(recalled_ids)
    assert len(recalled_ids) == len(set(recalled_ids))


def test_summaries_are_included_and_not_recalled_again(alice):
    conversation = long_history(alice)
    messages = list(Message.objects.filter(conversation=conversation).order_by("index")[:40])
    summary = Summary.objects.create(
        tenant=alice.tenant,
        conversation=conversation,
        text="- The user has a beagle named Biscuit.",
        token_count=12,
        source_message_ids=[m.id for m in messages],
        first_seq=1,
        last_seq=1,
    )
    Message.objects.filter(id__in=[m.id for m in messages]).update(summary=summary)
    from memory import indexing

    indexing.index_pending()
    context = assemble(conversation, embed=embeddings.embed)
    summaries = [p for p in context.pieces if p.kind == "summary"]
    assert [p.summary_id for p in summaries] == [str(summary.id)]
    assert not any(p.kind == "recalled" and p.text.endswith(summary.text) for p in context.pieces)
    assert context.unconsolidated_tokens < context.history_tokens


def test_the_turns_own_input_is_always_sent_even_past_the_window(alice):
    alice.agent.short_term_messages = 2
    alice.agent.save()
    data = {"model": "helper", "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(7)]}
    turn = admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda _: None).turn
    context = assemble(turn.conversation, upto_seq=turn.seq)
    assert [m["content"] for m in context.messages[1:]] == [f"m{i}" for i in range(7)]


def test_a_window_never_starts_with_an_orphaned_tool_result(alice):
    conversation = conversation_with(alice, ["q", "a"], short_term_messages=2)
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=2, index=0, role="assistant", content="", tool_calls=call)
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=2, index=1, role="tool", content="42", tool_call_id="c1")
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=2, index=2, role="assistant", content="It is 42.")
    roles = [m["role"] for m in assemble(conversation).messages[1:]]
    assert roles[0] != "tool"


def test_a_turn_records_what_its_context_was_made_of(alice, stub_llm):
    conversation = long_history(alice)
    data = {"model": "helper", "conversation": conversation.id, "messages": [{"role": "user", "content": "And my dog's breed?"}]}
    conversation.last_seq = 1
    conversation.save()
    turn = admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda _: None).turn
    runner.execute(runner.claim(turn.id))
    explained = turn.events.get(kind="provider_request").payload["context"]
    kinds = {piece["kind"] for piece in explained["pieces"]}
    assert {"system", "recent", "recalled"} <= kinds
    assert explained["total_tokens"] == sum(piece["tokens"] for piece in explained["pieces"])
    assert all(piece["source_message_ids"] for piece in explained["pieces"] if piece["kind"] != "system")
    assert explained["tokenizer"] == "smollm2-gguf"
