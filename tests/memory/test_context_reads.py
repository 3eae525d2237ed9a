"""Context assembly's two read lanes (SENTINEL_CONTEXT_READS): hand-written SQL for live turns
(memory/context_reads.py) gives the very Context the ORM's reads give, over the shapes a conversation
takes, in fewer statements (pinned here)."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import forking
from agents.models import Conversation, Message, Turn, TurnStatus
from memory import embeddings, indexing, search
from memory.asof import AsOf
from memory.context import ContextLengthExceeded, assemble
from memory.models import Summary
from tests.memory.helpers import FILLER, conversation_with
from tests.memory.test_context import long_history
from tests.memory.test_context_budget import admit_turn, text_of
from tests.memory.test_shared_memory import remember_all, scoped

pytestmark = pytest.mark.django_db


def use_lane(settings, lane: str) -> None:
    settings.SENTINEL = {**settings.SENTINEL, "CONTEXT_READS": lane}


def fresh(conversation_id) -> Conversation:
    """The conversation with its agent, as a turn's claim loads it."""
    return Conversation.objects.select_related("agent").get(id=conversation_id)


def both_lanes(settings, conversation_id, **kwargs):
    """The context each lane assembles, checked equal (messages, pieces, totals, next_index, query)."""
    built = {}
    for lane in ("orm", "sql"):
        use_lane(settings, lane)
        built[lane] = assemble(fresh(conversation_id), **kwargs)
    assert built["sql"].pieces == built["orm"].pieces
    assert built["sql"] == built["orm"]
    return built["sql"]


def sql_statements(settings, conversation_id, **kwargs) -> list[str]:
    use_lane(settings, "sql")
    conversation = fresh(conversation_id)
    with CaptureQueriesContext(connection) as queries:
        assemble(conversation, **kwargs)
    return [query["sql"] for query in queries.captured_queries]


def summarise(actor, conversation, spans: list[tuple[int, int]], day: int = 3) -> list[Summary]:
    """A summary per span of message indexes (all at seq 1: ties on last_seq, as an import's), linked."""
    made = []
    for n, (first, last) in enumerate(spans):
        sources = list(Message.objects.filter(conversation=conversation, index__gte=first, index__lte=last))
        summary = Summary.objects.create(
            tenant=actor.tenant,
            conversation=conversation,
            text=f"- Span {n}: they talked about the weather and sailing.",
            token_count=14,
            source_message_ids=[m.id for m in sources],
            first_seq=1,
            last_seq=1,
            first_at=datetime(2026, 3, day + n, 9, tzinfo=UTC),
            last_at=datetime(2026, 3, day + n + 1, 23, 30, tzinfo=UTC),
        )
        Message.objects.filter(id__in=[m.id for m in sources]).update(summary=summary)
        made.append(summary)
    return made


def give_client_ids(conversation) -> None:
    for message in Message.objects.filter(conversation=conversation):
        Message.objects.filter(id=message.id).update(client_id=f"import-{message.index}")


# --- the same context -------------------------------------------------------------------------


def test_both_lanes_assemble_the_next_turn_with_recall(settings, alice):
    conversation = long_history(alice)
    context = both_lanes(settings, conversation.id, embed=embeddings.embed)
    assert any(piece.kind == "recalled" for piece in context.pieces) and any(piece.kind == "recent" for piece in context.pieces)


def test_both_lanes_send_a_turns_whole_input_past_the_window(settings, alice):
    alice.agent.short_term_messages = 2
    alice.agent.save()
    turn = admit_turn(alice, [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(7)])
    context = both_lanes(settings, turn.conversation_id, upto_seq=turn.seq)
    assert [m["content"] for m in context.messages[1:]] == [f"m{i}" for i in range(7)]
    assert context.next_index == 7


def test_both_lanes_leave_out_later_turns_of_a_turns_own_context(settings, alice):
    first = admit_turn(alice, [{"role": "user", "content": "The first question."}])
    later = admit_turn(alice, [{"role": "user", "content": "A question queued behind it."}], conversation=first.conversation)
    context = both_lanes(settings, first.conversation_id, upto_seq=first.seq)
    assert "queued behind" not in str(context.messages) and later.seq > first.seq
    both_lanes(settings, first.conversation_id, upto_seq=later.seq)


def test_both_lanes_keep_a_tool_result_with_its_call_at_the_window_edge(settings, alice):
    conversation = conversation_with(alice, ["What is 6 x 7?"], index=False, short_term_messages=1)
    call = [{"id": "c1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}}]
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=1, index=1, role="assistant", content="", tool_calls=call)
    conversation.last_seq = 1
    conversation.save()
    turn = admit_turn(alice, [{"role": "tool", "content": "42", "tool_call_id": "c1"}], conversation=conversation)
    context = both_lanes(settings, conversation.id, upto_seq=turn.seq)
    assert [m["role"] for m in context.messages[1:]] == ["assistant", "tool"]
    assert context.messages[1]["tool_calls"] == call and context.messages[1]["content"] is None


def test_both_lanes_drop_an_orphaned_tool_result_from_the_window_start(settings, alice):
    conversation = conversation_with(alice, ["q", "a"], short_term_messages=2)
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=2, index=0, role="assistant", content="", tool_calls=call)
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=2, index=1, role="tool", content="42", tool_call_id="c1")
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=2, index=2, role="assistant", content="It is 42.")
    context = both_lanes(settings, conversation.id)
    assert [m["role"] for m in context.messages[1:]] == ["assistant"]


def test_both_lanes_count_messages_the_indexer_has_not_counted_inside_and_beyond_the_window(settings, alice):
    conversation = conversation_with(alice, [f"{FILLER[i % len(FILLER)]} (note {i})" for i in range(30)], short_term_messages=4)
    counted = both_lanes(settings, conversation.id)
    Message.objects.filter(conversation=conversation, index__in=[0, 5, 28, 29]).update(token_count=None)
    context = both_lanes(settings, conversation.id)
    assert (context.history_tokens, context.unconsolidated_tokens) == (counted.history_tokens, counted.unconsolidated_tokens)
    Message.objects.filter(conversation=conversation).update(token_count=None)  # none counted yet
    assert both_lanes(settings, conversation.id).history_tokens == counted.history_tokens


def test_both_lanes_give_summaries_newest_first_within_their_share(settings, alice):
    conversation = conversation_with(alice, [f"{FILLER[i % len(FILLER)]} (note {i})" for i in range(40)], short_term_messages=6)
    summaries = summarise(alice, conversation, [(0, 9), (10, 19), (20, 29)])
    context = both_lanes(settings, conversation.id, embed=embeddings.embed)
    pieces = [piece for piece in context.pieces if piece.kind == "summary"]
    assert [piece.summary_id for piece in pieces] == [str(s.id) for s in summaries], "oldest first, all three within the share"
    assert pieces[0].text.startswith("[2026-03-03 to 2026-03-04] ") and pieces[0].date == "2026-03-04"
    assert context.unconsolidated_tokens < context.history_tokens
    alice.agent.context_budget = 400  # a share too small for all three: the newest (by when written, all at seq 1) go first
    alice.agent.save()
    tight = [piece.summary_id for piece in both_lanes(settings, conversation.id).pieces if piece.kind == "summary"]
    assert 0 < len(tight) < 3 and tight == [str(s.id) for s in summaries[-len(tight) :]], tight


def test_both_lanes_read_at_most_twenty_summaries(settings, alice):
    conversation = conversation_with(alice, [f"{FILLER[i % len(FILLER)]} (note {i})" for i in range(30)], context_budget=8000)
    summarise(alice, conversation, [(i, i) for i in range(24)], day=1)
    context = both_lanes(settings, conversation.id)
    assert len([piece for piece in context.pieces if piece.kind == "summary"]) == 20


def test_both_lanes_recall_only_a_forks_own_past(settings, alice):
    original = conversation_with(alice, ["My dog is called Biscuit.", "A fine name for a dog.", "Tell me a joke.", "Why not."])
    turn = Turn.objects.create(tenant=alice.tenant, conversation=original, agent=alice.agent, seq=1, status=TurnStatus.SUCCEEDED)
    copy = forking.fork(original, turn, actor="test").conversation
    Message.objects.create(tenant=alice.tenant, conversation=original, seq=2, index=0, role="user", content="My dog is now called Rex.")
    indexing.index_pending()
    context = both_lanes(settings, copy.id, query="What is my dog called?", embed=embeddings.embed)
    assert "Rex" not in str(context.messages)
    assert "Rex" in str(both_lanes(settings, original.id, query="What is my dog called?", embed=embeddings.embed).messages)


def test_both_lanes_give_a_scoped_conversation_its_shared_memory(settings, alice):
    scout = scoped(alice, "scout", ["Find the code.", "The code is 7741."])
    remember_all(alice, scout)
    writer = scoped(alice, "writer", ["Write up what the code is."])
    context = both_lanes(settings, writer.id, upto_seq=1, embed=embeddings.embed_query)
    assert [piece.kind for piece in context.pieces] == ["system", "shared", "shared", "recent"]


def test_both_lanes_attach_client_ids_of_this_and_other_conversations(settings, alice):
    imported = long_history(alice)
    give_client_ids(imported)
    summarise(alice, imported, [(0, 1)])
    context = both_lanes(settings, imported.id, embed=embeddings.embed)
    assert any(piece.kind == "summary" and piece.client_ids == ["import-0", "import-1"] for piece in context.pieces)
    assert all(piece.client_ids for piece in context.pieces if piece.kind in ("recent", "recalled"))
    # The same agent: its recall reaches the imported conversation.
    plain = conversation_with(alice, ["Something else entirely.", "Indeed.", "What is the name of my dog?"])
    asked = both_lanes(settings, plain.id, embed=embeddings.embed)
    recalled = [piece for piece in asked.pieces if piece.kind == "recalled" and "Biscuit" in piece.text]
    assert recalled and recalled[0].client_ids == ["import-3"], "a recalled piece of another conversation keeps its client id"


def test_both_lanes_assemble_an_empty_conversation(settings, alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    context = both_lanes(settings, conversation.id, embed=embeddings.embed)
    assert context.messages == [{"role": "system", "content": alice.agent.system_prompt}] and context.next_index == 0


def test_both_lanes_refuse_an_input_the_budget_no_longer_holds(settings, alice):
    turn = admit_turn(alice, [{"role": "user", "content": text_of(2000)}])
    alice.agent.context_budget = 200
    alice.agent.save()
    refused = {}
    for lane in ("orm", "sql"):
        use_lane(settings, lane)
        with pytest.raises(ContextLengthExceeded) as raised:
            assemble(fresh(turn.conversation_id), upto_seq=turn.seq)
        refused[lane] = (raised.value.budget, raised.value.size, raised.value.message)
    assert refused["sql"] == refused["orm"]


# --- statements -------------------------------------------------------------------------------


def test_a_memoryless_turn_reads_its_conversation_in_one_statement(settings, alice):
    first = admit_turn(alice, [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."}])
    turn = admit_turn(alice, [{"role": "user", "content": "How are you?"}], conversation=first.conversation)
    assert len(sql_statements(settings, turn.conversation_id, upto_seq=turn.seq, embed=embeddings.embed)) == 1
    use_lane(settings, "orm")
    conversation = fresh(turn.conversation_id)
    with CaptureQueriesContext(connection) as orm:
        assemble(conversation, upto_seq=turn.seq, embed=embeddings.embed)
    assert len(orm) == 2, "the ORM lane: the window, then the totals"


def test_summaries_come_in_the_same_statement(settings, alice):
    conversation = conversation_with(alice, FILLER, index=False)
    summarise(alice, conversation, [(0, 3)])
    statements = sql_statements(settings, conversation.id)
    assert len(statements) == 1 and "memory_summary" in statements[0]


def test_client_ids_are_looked_up_only_when_the_conversation_has_some(settings, alice):
    conversation = conversation_with(alice, FILLER, index=False)
    summarise(alice, conversation, [(0, 3)])
    assert len(sql_statements(settings, conversation.id)) == 1, "no client id in the conversation: none looked up"
    give_client_ids(conversation)
    statements = sql_statements(settings, conversation.id)
    assert len(statements) == 2 and "client_id <> ''" in statements[1]


def test_recall_brings_another_conversations_client_ids_in_the_search_itself(settings, alice):
    imported = long_history(alice)
    give_client_ids(imported)
    plain = conversation_with(alice, ["Something else entirely.", "Indeed.", "What is the name of my dog?"])
    sql_statements(settings, plain.id, embed=embeddings.embed)  # the scope counted once
    statements = sql_statements(settings, plain.id, embed=embeddings.embed)
    assert len(statements) == 2 and "memory_memory" in statements[1], "no statement of its own for the client ids"
    recalled = [piece for piece in assemble(fresh(plain.id), embed=embeddings.embed).pieces if piece.kind == "recalled"]
    assert any(piece.client_ids == ["import-3"] and "Biscuit" in piece.text for piece in recalled)
    settings.SENTINEL = {**settings.SENTINEL, "SEARCH_READS": "orm"}
    statements = sql_statements(settings, plain.id, embed=embeddings.embed)
    assert "client_id <> ''" in statements[-1], "the ORM search brings none: they are looked up after it"


def test_recall_adds_only_the_search_to_the_statement(settings, alice):
    settings.SENTINEL = {**settings.SENTINEL, "EXACT_SEARCH_MAX": 20000}
    search._scope_verdicts.clear()
    conversation = long_history(alice)
    sql_statements(settings, conversation.id, embed=embeddings.embed)  # the scope counted once
    statements = sql_statements(settings, conversation.id, embed=embeddings.embed)
    assert len(statements) == 2, statements
    assert statements[0].lstrip().startswith("WITH recent") and "memory_memory" in statements[1]


def test_a_replay_reads_through_the_orm_whatever_the_lane(settings, alice):
    turn = admit_turn(alice, [{"role": "user", "content": "Hello."}])
    use_lane(settings, "sql")
    conversation = fresh(turn.conversation_id)
    with CaptureQueriesContext(connection) as queries:
        assemble(conversation, upto_seq=turn.seq, as_of=AsOf(at=datetime.now(UTC)))
    assert not any("WITH recent" in query["sql"] for query in queries.captured_queries)
    assert any('"memory_summary"' in query["sql"] for query in queries.captured_queries), "a replay always reads summaries"
