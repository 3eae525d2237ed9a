"""Recall's exact scan over vectors the process holds (memory/held_vectors.py): the same hits as
PostgreSQL's scan of every scoped vector, whatever was written, committed or deleted since the
scope was read.

These tests commit (transaction=True): a test's own transaction is younger than any snapshot's
xmin it reads, so everything it wrote would be scanned as written "since", and nothing held."""

import time

import psycopg
import pytest
from django.db import connection

from memory import embeddings, held_vectors, indexing, search
from memory.models import Memory
from tests.memory.helpers import FILLER, conversation_with
from tests.memory.test_hybrid_search import BEAGLE, GOLDFISH, REVENUE

pytestmark = pytest.mark.django_db(transaction=True)

QUESTIONS = ["Which dog breed did we get?", "How did the shop's sales go?", "What is the weather like?", "Tell me about sailing."]
DOGS = [
    "The beagle chewed my left shoe this morning.",
    "Our puppy loves the park by the river.",
    "We took the dog to the vet for her shots.",
    "The beagle barks at every cyclist.",
]


# Enough memories that the held candidates (4 * k + MARGIN: 40 at k 2) are a choice among them.
MANY = [f"{FILLER[i % len(FILLER)]} (day {i}, {['dog', 'shop', 'rain', 'boat'][i % 4]} notes)" for i in range(140)]


@pytest.fixture(autouse=True)
def held(settings, monkeypatch):
    settings.SENTINEL = {**settings.SENTINEL, "HELD_VECTORS_MB": 128}
    held_vectors.forget_all()
    yield
    held_vectors.forget_all()


def hits_of(conversation, question: str, settings, *, held_mb: int, k: int = 2, **scope) -> list[tuple]:
    settings.SENTINEL = {**settings.SENTINEL, "HELD_VECTORS_MB": held_mb}
    vector = embeddings.embed([question])[0]
    hits = search.hybrid(conversation.tenant_id, vector, question, k=k, agent_id=conversation.agent_id, **scope)
    return [(hit.memory.id, hit.via, hit.fused_rank, hit.vector_rank, hit.text_rank) for hit in hits]


def written_since_frontier(tenant_id) -> int:
    scope = next(iter(held_vectors._scopes.values()))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM memory_memory WHERE tenant_id = %s AND written_xid >= %s::xid8", [tenant_id, scope.frontier])
        return cursor.fetchone()[0]


def held_once_the_frontier_passes(conversation, settings, monkeypatch) -> None:
    """Search until the scope's frontier is past everything written: the snapshot's xmin is the
    cluster's oldest open transaction, and the suite's other processes hold theirs open a moment."""
    monkeypatch.setattr(held_vectors, "REFRESH_SECONDS", 0.0)
    deadline = time.monotonic() + 30
    while True:
        hits_of(conversation, QUESTIONS[0], settings, held_mb=128)
        if not written_since_frontier(conversation.tenant_id) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    monkeypatch.setattr(held_vectors, "REFRESH_SECONDS", 1e9)


def test_recall_finds_the_same_memories_with_the_vectors_held_as_with_them_scanned(alice, settings, monkeypatch):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE, *MANY])
    other = conversation_with(alice, DOGS)  # the nearest to the dog question: excluded below, they must not crowd it out
    window = list(conversation.messages.order_by("index").values_list("id", flat=True)[:3])
    summary_like = Memory.objects.filter(conversation=conversation, text=BEAGLE).values_list("id", flat=True)[0]
    scopes = [
        {},
        {"exclude_conversation_ids": [other.id]},
        {"exclude_message_ids": window, "exclude_memory_ids": [summary_like]},
    ]
    held_once_the_frontier_passes(conversation, settings, monkeypatch)
    for question in QUESTIONS:
        for scope in scopes:
            scanned = hits_of(conversation, question, settings, held_mb=0, **scope)
            assert hits_of(conversation, question, settings, held_mb=128, **scope) == scanned, (question, scope)
    assert written_since_frontier(alice.tenant.id) == 0, "every memory came from the held vectors"


def test_an_exclusion_list_holding_none_excludes_as_the_statement_does(alice, settings, monkeypatch):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE, *MANY])
    beagle = Memory.objects.filter(conversation=conversation, text=BEAGLE).values_list("id", flat=True)[0]
    held_once_the_frontier_passes(conversation, settings, monkeypatch)
    scope = {"exclude_memory_ids": [None, beagle], "exclude_message_ids": [None], "exclude_conversation_ids": [None]}
    held = hits_of(conversation, QUESTIONS[0], settings, held_mb=128, **scope)
    assert beagle not in [hit[0] for hit in held]
    assert held == hits_of(conversation, QUESTIONS[0], settings, held_mb=0, **scope)


def test_a_memory_written_after_the_scope_was_read_is_found_before_any_refresh(alice, settings, monkeypatch):
    monkeypatch.setattr(held_vectors, "REFRESH_SECONDS", 1e9)
    conversation = conversation_with(alice, [*REVENUE, *FILLER])
    assert BEAGLE not in texts(hits_of(conversation, QUESTIONS[0], settings, held_mb=128))
    later = conversation_with(alice, [BEAGLE])
    found = hits_of(later, QUESTIONS[0], settings, held_mb=128)
    assert BEAGLE in texts(found)
    assert found == hits_of(later, QUESTIONS[0], settings, held_mb=0)


def test_a_memory_of_a_transaction_open_while_the_scope_was_read_is_found_once_it_commits(alice, settings, monkeypatch):
    monkeypatch.setattr(held_vectors, "REFRESH_SECONDS", 0.0)  # each search reads what was written since
    conversation = conversation_with(alice, [*REVENUE, *FILLER])
    params = connection.get_connection_params()
    other = psycopg.connect(**{key: params[key] for key in ("dbname", "user", "password", "host", "port") if params.get(key)})
    try:
        other.execute(
            "INSERT INTO memory_memory (id, tenant_id, agent_id, conversation_id, kind, role, text, source_message_ids, occurred_at,"
            " embedding, embedding_model, scope, fact_key, created_at, in_hnsw)"
            " VALUES (gen_random_uuid(), %s, %s, %s, 'fact', '', %s, '{}', now(), %s::vector, %s, '', '', now(), false)",
            [alice.tenant.id, alice.agent.id, conversation.id, BEAGLE, str(embeddings.embed([BEAGLE])[0]), embeddings.model_name()],
        )  # open: the scope is read while it is in flight
        assert BEAGLE not in texts(hits_of(conversation, QUESTIONS[0], settings, held_mb=128))
        other.commit()
        monkeypatch.setattr(held_vectors, "REFRESH_SECONDS", 1e9)
        assert BEAGLE in texts(hits_of(conversation, QUESTIONS[0], settings, held_mb=128)), "past the frontier: scanned"
        assert written_since_frontier(alice.tenant.id) >= 1
        held_once_the_frontier_passes(conversation, settings, monkeypatch)
        assert BEAGLE in texts(hits_of(conversation, QUESTIONS[0], settings, held_mb=128)), "and held, once read"
    finally:
        other.close()
    assert written_since_frontier(alice.tenant.id) == 0


def test_a_memory_deleted_after_the_scope_was_read_is_not_found(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, GOLDFISH, BEAGLE, *DOGS, *MANY])
    before = hits_of(conversation, QUESTIONS[0], settings, held_mb=128)
    nearest = Memory.objects.get(id=before[0][0])
    nearest.delete()
    after = hits_of(conversation, QUESTIONS[0], settings, held_mb=128)
    assert nearest.id not in [hit[0] for hit in after]
    assert after == hits_of(conversation, QUESTIONS[0], settings, held_mb=0)


def test_a_scope_too_large_for_the_budget_is_scanned_and_not_held(alice, settings):
    conversation = conversation_with(alice, [*REVENUE, BEAGLE, *FILLER])
    settings.SENTINEL = {**settings.SENTINEL, "HELD_VECTORS_MB": 0}
    assert BEAGLE in texts(hits_of(conversation, QUESTIONS[0], settings, held_mb=0))
    assert not held_vectors._scopes
    vector = embeddings.embed(["dog"])[0]
    assert held_vectors.nearest(alice.tenant.id, alice.agent.id, "m", [vector], size=100, n=8) is None, "0 MiB holds nothing"
    settings.SENTINEL = {**settings.SENTINEL, "HELD_VECTORS_MB": 1}
    assert held_vectors.nearest(alice.tenant.id, alice.agent.id, "m", [vector], size=100, n=8) is not None
    assert held_vectors.nearest(alice.tenant.id, alice.agent.id, "m", [vector], size=200_000, n=8) is None, "past a quarter of 1 MiB"


def test_the_least_recently_searched_scope_is_let_go_past_the_budget(alice, bob, settings):
    conversation_with(alice, [*REVENUE, *FILLER])
    conversation_with(bob, [*REVENUE, *FILLER])
    settings.SENTINEL = {**settings.SENTINEL, "HELD_VECTORS_MB": 1}
    vector = embeddings.embed(["dog"])[0]
    model = embeddings.model_name()
    for actor in (alice, bob):
        held_vectors.nearest(actor.tenant.id, actor.agent.id, model, [vector], size=20, n=8)
    assert len(held_vectors._scopes) == 2
    held_vectors._evict(sum(scope.nbytes for scope in held_vectors._scopes.values()) - 1)
    assert [key[0] for key in held_vectors._scopes] == [bob.tenant.id]


def test_a_re_embedded_memory_counts_as_written_again(alice):
    conversation = conversation_with(alice, [BEAGLE])
    Memory.objects.filter(conversation=conversation).update(embedding_model="an-older-model")
    before = written_xid(conversation)
    indexing._none_stale.clear()
    assert indexing.reembed_stale() == 1
    assert written_xid(conversation) > before, "a process holding the scope reads its new vector as written since"


def written_xid(conversation) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT written_xid::text::bigint FROM memory_memory WHERE conversation_id = %s", [conversation.id])
        return cursor.fetchone()[0]


def texts(hits: list[tuple]) -> list[str]:
    return list(Memory.objects.filter(id__in=[hit[0] for hit in hits]).values_list("text", flat=True))
