"""Full-text recall leaves out a word that a large share of the scope's memories say: it tells no
memory from another, and ranking every memory that says it made each recall cost a scan of the scope
(HISTORY row 42: a word in every soak message, 38 ms of a 60 ms statement at 11,578 memories)."""

import pytest

from memory import embeddings, search
from tests.memory.helpers import conversation_with

pytestmark = pytest.mark.django_db

# Every memory says "acme"; one of them also says "zeppelin".
ACME = [f"Acme order {n}: the parcel left the depot on time." for n in range(23)] + ["Acme sent the zeppelin model kit today."]


def text_hits(conversation, question: str) -> list[search.FusedHit]:
    vector = embeddings.embed([question])[0]
    hits = search.hybrid(conversation.tenant_id, vector, question, k=30, agent_id=conversation.agent_id, neighbours=False)
    return [hit for hit in hits if hit.text_rank is not None]


@pytest.fixture
def small_scopes_count(monkeypatch):
    """The share applies from a scope of 20 memories (the product's bound is in the thousands)."""
    monkeypatch.setattr(search, "COMMON_WORD_MIN_SCOPE", 20)
    search._scope_verdicts.clear()
    yield
    search._scope_verdicts.clear()


def test_a_word_most_memories_say_is_left_out_of_the_full_text_query(alice, small_scopes_count):
    conversation = conversation_with(alice, ACME)
    found = text_hits(conversation, "Did acme send the zeppelin?")
    assert [hit.memory.text for hit in found] == [ACME[-1]], "only the memory with the rare word ranks by text"


def test_a_query_of_only_common_words_leaves_the_full_text_retriever_empty_and_vectors_answer(alice, small_scopes_count):
    conversation = conversation_with(alice, ACME)
    vector = embeddings.embed(["acme"])[0]
    hits = search.hybrid(conversation.tenant_id, vector, "acme", k=5, agent_id=conversation.agent_id, neighbours=False)
    assert hits, "the vector retriever still finds the nearest memories"
    assert all(hit.text_rank is None for hit in hits)


def test_a_small_scope_ranks_every_word(alice):
    """Below COMMON_WORD_MIN_SCOPE ranking every match is cheap: the query stays as asked."""
    search._scope_verdicts.clear()
    conversation = conversation_with(alice, ACME)
    found = text_hits(conversation, "Did acme send the zeppelin?")
    assert len(found) == len(ACME)
    assert found[0].memory.text == ACME[-1], "the memory with both words first"


def test_a_word_below_the_share_still_counts(alice, small_scopes_count):
    texts = [f"Shipment {n} left the depot on time." for n in range(20)] + [f"Acme shipment {n} was late." for n in range(3)]
    conversation = conversation_with(alice, texts)
    found = text_hits(conversation, "Which acme shipments were there?")
    assert {hit.memory.text for hit in found} == {t for t in texts if t.startswith("Acme")}, "acme (3 of 23) counts, shipment (23) not"
