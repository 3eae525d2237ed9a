"""Context assembly reads no more than it needs: no summary query before anything was consolidated
(the ORM lane; the SQL lane's statements: test_context_reads.py), and a scope lately far below
EXACT_SEARCH_MAX is not counted again for every turn."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from memory import context, search
from memory.models import Summary
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db


def summary_reads(queries) -> int:
    return sum(1 for q in queries if 'FROM "memory_summary"' in q["sql"])


def test_no_summary_is_read_while_nothing_is_consolidated(alice, local_embeddings, settings):
    settings.SENTINEL = {**settings.SENTINEL, "CONTEXT_READS": "orm"}
    conversation = conversation_with(alice, FILLER)
    with CaptureQueriesContext(connection) as queries:
        context.assemble(conversation)
    assert summary_reads(queries.captured_queries) == 0


def test_summaries_are_read_once_messages_are_consolidated(alice, local_embeddings, settings):
    settings.SENTINEL = {**settings.SENTINEL, "CONTEXT_READS": "orm"}
    conversation = conversation_with(alice, FILLER)
    summary = Summary.objects.create(tenant=alice.tenant, conversation=conversation, text="They talked.", first_seq=1, last_seq=1,
                                     token_count=3)  # fmt: skip
    conversation.messages.filter(index__lt=2).update(summary=summary)
    with CaptureQueriesContext(connection) as queries:
        built = context.assemble(conversation)
    assert summary_reads(queries.captured_queries) == 1
    assert any(piece.kind == "summary" for piece in built.pieces)


def test_a_small_scope_is_counted_once_within_the_cache_window(alice, local_embeddings, settings):
    settings.SENTINEL = {**settings.SENTINEL, "EXACT_SEARCH_MAX": 20000}
    search._small_scopes.clear()
    conversation_with(alice, FILLER)
    vector = [0.1] * 384
    counts = []
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            search.search(alice.tenant.id, vector, agent_id=alice.agent.id)
        counts.append(sum(1 for q in queries.captured_queries if "COUNT(" in q["sql"].upper()))
    assert counts == [1, 0]


def test_a_small_limit_is_counted_every_time(alice, local_embeddings, settings):
    settings.SENTINEL = {**settings.SENTINEL, "EXACT_SEARCH_MAX": 4}
    search._small_scopes.clear()
    conversation_with(alice, FILLER[:2])
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            search.search(alice.tenant.id, [0.1] * 384, agent_id=alice.agent.id)
        assert sum(1 for q in queries.captured_queries if "COUNT(" in q["sql"].upper()) == 1
