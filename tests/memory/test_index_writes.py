"""Indexing's two write lanes (SENTINEL_INDEX_WRITES): the hand-written statements write the very
memories, agent flags and token counts the ORM lane writes, and lock the same way."""

import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from agents.models import Message
from memory import indexing
from memory.models import Memory
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db

TOOL_CALL = [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "tide tables"}'}}]
# the conversation's first: whose it is, then what a lane writes alike
MEMORY_FIELDS = ("tenant_id", "agent_id", "conversation_id", "kind", "summary_id", "role", "text", "embedding_model", "scope",
                 "fact_key", "supersedes_id")  # fmt: skip


def use_lane(settings, lane: str) -> None:
    settings.SENTINEL = {**settings.SENTINEL, "INDEX_WRITES": lane}


def waiting_messages(actor, *, tool_call: bool = True):
    """A conversation of FILLER, not indexed, with an empty message and a tool call among them."""
    conversation = conversation_with(actor, FILLER, index=False)
    Message.objects.create(tenant=actor.tenant, conversation=conversation, seq=2, index=0, role="assistant", content="")
    if tool_call:
        Message.objects.create(
            tenant=actor.tenant, conversation=conversation, seq=2, index=1, role="assistant", content="", tool_calls=TOOL_CALL
        )
    return conversation


def written(conversation) -> tuple[list, list, bool]:
    memories = sorted((Memory.objects.filter(conversation=conversation)), key=lambda memory: (memory.message.seq, memory.message.index))
    in_order = Message.objects.filter(conversation=conversation).order_by("seq", "index")
    messages = list(in_order.values_list("seq", "index", "token_count", "embedded"))
    conversation.agent.refresh_from_db(fields=["has_memories"])
    return (
        [
            (
                *(getattr(m, name) for name in MEMORY_FIELDS),
                m.source_message_ids == [m.message_id] and m.occurred_at == m.message.occurred_at,
                m.message_id,
                [round(float(x), 6) for x in m.embedding],
            )
            for m in memories
        ],
        messages,
        conversation.agent.has_memories,
    )


def test_the_sql_lane_writes_what_the_orm_lane_writes(alice, bob, settings):
    found = {}
    for lane, actor in (("orm", alice), ("sql", bob)):
        use_lane(settings, lane)
        conversation = waiting_messages(actor)
        assert indexing.index_pending_messages() == len(FILLER) + 2
        memories, messages, flagged = written(conversation)
        # the same but for whose they are
        found[lane] = ([row[3:-2] + row[-1:] for row in memories], [m for m in messages], flagged)
        assert all(row[0] == actor.tenant.id and row[1] == actor.agent.id and row[2] == conversation.id for row in memories)
        with_text = [m.id for m in Message.objects.filter(conversation=conversation).order_by("seq", "index") if m.content or m.tool_calls]
        assert [row[-2] for row in memories] == with_text
    assert found["sql"] == found["orm"]
    texts = [row[3] for row in found["sql"][0]]
    assert texts[-1] == '[tool call lookup({"q": "tide tables"})]', "a tool call's text is its call"
    assert "" not in texts, "an empty message has no memory"
    assert all(embedded and tokens > 0 for _, _, tokens, embedded in found["sql"][1]), "every message counted and marked, the empty one too"
    assert found["sql"][2] is True


def test_the_sql_lane_is_two_statements_for_a_batch(alice, settings):
    use_lane(settings, "sql")
    waiting_messages(alice)
    ids = indexing.fair_batch(256)
    with CaptureQueriesContext(connection) as queries:
        assert indexing._index_messages_sql(ids) == len(FILLER) + 2
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]  # the test's own transaction
    assert len(statements) == 2, statements


@pytest.mark.django_db(transaction=True)
def test_a_message_already_embedded_or_locked_by_another_indexer_is_not_written_twice(alice, settings):
    use_lane(settings, "sql")
    conversation = waiting_messages(alice, tool_call=False)
    ids = indexing.fair_batch(256)
    first = Message.objects.filter(conversation=conversation).order_by("seq", "index").first()
    held, release = threading.Event(), threading.Event()

    def hold_the_first() -> None:  # another indexer's batch: the row locked until it commits
        with transaction.atomic():
            Message.objects.select_for_update().filter(id=first.id).get()
            held.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_the_first)
    holder.start()
    try:
        assert held.wait(10)
        assert indexing._index_messages_sql(ids) == len(FILLER)  # the locked one skipped, the empty one taken
    finally:
        release.set()
        holder.join()
    assert not Memory.objects.filter(message=first).exists()
    assert indexing._index_messages_sql(ids) == 1  # now the first, and only it
    assert indexing._index_messages_sql(ids) == 0
    assert Memory.objects.filter(conversation=conversation).count() == len(FILLER)


def test_no_summary_waiting_is_one_read_and_a_later_message_is_taken_by_a_later_batch(alice, settings):
    use_lane(settings, "sql")
    conversation = waiting_messages(alice, tool_call=False)
    with CaptureQueriesContext(connection) as queries:
        assert indexing.index_pending_summaries() == 0
    assert len(queries) == 1, "no summary waiting: one read, no transaction"
    assert indexing.index_pending_messages() == len(FILLER) + 1
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=3, index=0, role="user", content="A later line about tides.")
    assert indexing.index_pending_messages() == 1
    assert Memory.objects.filter(conversation=conversation).count() == len(FILLER) + 1


@pytest.mark.parametrize("lane", ["sql", "orm"])
def test_a_pass_goes_on_while_its_batches_are_full_and_stops_after_a_short_one(alice, settings, monkeypatch, lane):
    from memory import tasks

    use_lane(settings, lane)
    waiting_messages(alice, tool_call=False)  # 9 messages
    monkeypatch.setattr(indexing, "MESSAGE_BATCH", 4)
    taken: list[int] = []
    batch = indexing.index_pending_messages
    monkeypatch.setattr(indexing, "index_pending_messages", lambda limit: taken.append(batch(limit)) or taken[-1])
    assert tasks.index_memories() == len(FILLER) + 1
    assert taken == [4, 4, 1], "two full batches, then the short one ends the pass without a round that finds nothing"
    assert not Message.objects.filter(embedded=False).exists()


@pytest.mark.parametrize("lane", ["sql", "orm"])
def test_an_agent_given_its_first_memories_is_no_longer_memoryless_in_the_cached_lookup(alice, settings, lane):
    """The web reads agents through config_cache and sends a turn's recall hint (its query embedded
    while the worker claims it) only for an agent with memories: a flag flipped by indexing that the
    cache kept from before made every turn of a new agent embed its query late (HISTORY row 52)."""
    from agents.admission import find_agent

    use_lane(settings, lane)
    settings.SENTINEL = {**settings.SENTINEL, "CONFIG_CACHE_SECONDS": 60.0, "CONFIG_CHECK_SECONDS": 0}
    waiting_messages(alice, tool_call=False)  # saves the agent: a change the cache is told of
    assert find_agent(alice.tenant, alice.agent.name).has_memories is False
    assert indexing.index_pending_messages() == len(FILLER) + 1
    assert find_agent(alice.tenant, alice.agent.name).has_memories is True
