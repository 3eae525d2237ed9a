"""Context assembly reads no more than it needs: no summary query before anything was consolidated
(the ORM lane; the SQL lane's statements: test_context_reads.py), and a scope lately far below
EXACT_SEARCH_MAX is not counted again for every turn, nor one near or past it."""

from types import SimpleNamespace

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
    search._scope_verdicts.clear()
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
    search._scope_verdicts.clear()
    conversation_with(alice, FILLER[:2])
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            search.search(alice.tenant.id, [0.1] * 384, agent_id=alice.agent.id)
        assert sum(1 for q in queries.captured_queries if "COUNT(" in q["sql"].upper()) == 1


def counted(count: int, calls: list[int]):
    """A bounded counter over a scope of `count` memories that records each call."""

    def count_upto(upto: int) -> int:
        calls.append(upto)
        return min(count, upto)

    return count_upto


@pytest.mark.parametrize("count, exact", [(600, True), (1000, True), (1001, False), (50_000, False)])
def test_a_scopes_verdict_is_kept_whatever_its_size(count, exact):
    """Near or past the bound a count reads as many rows as the exact scan: it is not repeated every turn."""
    search._scope_verdicts.clear()
    calls: list[int] = []
    scope = ("tenant", "agent", None, 1000)
    assert [search._exact(counted(count, calls), 1000, scope) for _ in range(3)] == [exact] * 3
    assert calls == [1001], "counted once, bounded at the limit + 1"


def test_a_verdict_expires_and_the_scope_is_counted_again(monkeypatch):
    search._scope_verdicts.clear()
    calls: list[int] = []
    clock = [100.0]
    monkeypatch.setattr(search, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    scope = ("tenant", "agent", None, 1000)
    assert search._exact(counted(900, calls), 1000, scope) is True
    clock[0] += search.EXACT_CACHE_SECONDS + 0.1
    assert search._exact(counted(1200, calls), 1000, scope) is False, "grown past the bound: the next count sees it"
    assert len(calls) == 2
    assert search._exact(counted(1200, calls), 1000, None) is False and len(calls) == 3, "no scope key (a replay): counted every time"
