"""Long-term memory: token counts and embeddings filled in batches, deduplicated, searched per tenant."""

import pytest

from agents.models import Message
from memory import embeddings, indexing, search, tokens
from memory.models import EmbeddingCache, Memory
from tests.memory.helpers import FILLER, conversation_with, model_calls

pytestmark = pytest.mark.django_db

TENANT, OTHER_TENANT = "6f1c0a52-7d0e-4f57-9a51-2c6f3b8e9d10", "0b9e4d37-1a2f-4c86-b7d3-5e8a9f0c1b24"


def test_tokens_are_counted_with_the_local_models_tokenizer():
    assert tokens.tokenizer_name() == "smollm2-gguf"
    assert tokens.count("") == 0
    assert 3 <= tokens.count("The capital of France is Paris.") <= 10
    assert tokens.count("word " * 200) > tokens.count("word " * 20)


def test_indexing_counts_tokens_and_embeds_every_message(alice):
    conversation = conversation_with(alice, FILLER, index=False)
    assert Message.objects.filter(embedded=False).count() == len(FILLER)
    assert indexing.index_pending() == len(FILLER)
    assert not Message.objects.filter(embedded=False).exists()
    assert not Message.objects.filter(token_count__isnull=True).exists()
    memories = Memory.objects.filter(conversation=conversation)
    assert memories.count() == len(FILLER)
    memory = memories.get(message__index=0)
    assert memory.tenant_id == alice.tenant.id and memory.agent_id == alice.agent.id and memory.role == "user"
    assert [str(i) for i in memory.source_message_ids] == [str(memory.message_id)]
    assert len(memory.embedding) == 384
    assert indexing.index_pending() == 0, "a second pass finds nothing to do"


def test_one_indexing_pass_runs_at_a_time_and_a_dead_ones_flag_expires(alice):
    from memory import tasks
    from sentinel_site.redis import sync_client

    conversation_with(alice, FILLER, index=False)
    client = sync_client()
    client.set(tasks._INDEX_RUNNING, "1", ex=tasks._INDEX_RUNNING_TTL)  # a pass is running elsewhere
    try:
        assert tasks.index_memories() == 0, "a second pass leaves the work to the running one"
        assert Message.objects.filter(embedded=False).count() == len(FILLER)
        assert 0 < client.ttl(tasks._INDEX_RUNNING) <= 30, "a pass that died blocks others for at most 30 s"
    finally:
        client.delete(tasks._INDEX_RUNNING)
    assert tasks.index_memories() == len(FILLER)
    assert not client.exists(tasks._INDEX_RUNNING), "the flag is cleared when the pass ends"


def test_identical_texts_are_embedded_once_per_tenant(alice, bob, monkeypatch, local_embeddings):
    calls = []
    model = embeddings.embedder()
    original = model.embed
    monkeypatch.setattr(model, "embed", lambda texts, urgent=False: calls.append(list(texts)) or original(texts, urgent))
    conversation_with(alice, ["the same words", "other words", "the same words"])
    conversation_with(bob, ["the same words"])
    embedded = [text for call in calls for text in call]
    assert embedded.count("the same words") == 2, "once for alice's two, once again for bob: no vector crosses tenants"
    for tenant in (alice.tenant.id, bob.tenant.id):
        assert EmbeddingCache.objects.filter(content_hash=embeddings.content_hash("the same words", tenant)).count() == 1
    assert not EmbeddingCache.objects.filter(content_hash=embeddings.content_hash("the same words")).exists()
    assert Memory.objects.filter(text="the same words").count() == 3, "each message still gets its own memory"


def test_a_text_another_tenant_cached_is_embedded_again_and_one_of_no_tenant_is_not_cached(alice, bob, monkeypatch, local_embeddings):
    calls = model_calls(monkeypatch)
    secret = "The merger with Initech closes on the 14th."
    conversation_with(alice, [secret])
    calls.clear()
    embeddings.embed_query([secret], bob.tenant.id)  # bob searches for alice's words: as slow as any new text
    assert calls == [[secret]], "bob's query ran the model: a cache hit would have answered sooner"
    embeddings.embed_query([secret], alice.tenant.id)
    assert calls == [[secret]], "alice's own query is a cache hit"
    embeddings.embed_query(["a warm-up of nobody's"])
    embeddings.embed_query(["a warm-up of nobody's"])
    assert calls[1:] == [["a warm-up of nobody's"]] * 2, "no tenant: neither cached nor read from the cache"
    assert EmbeddingCache.objects.count() == 2, "alice's secret, once for alice and once for bob; nothing for no tenant"


@pytest.mark.django_db(transaction=True)
def test_a_prefetched_query_is_computed_once_and_cached_by_whoever_takes_it(monkeypatch, local_embeddings):
    calls = model_calls(monkeypatch)
    text = "Where did Ingrid move to last spring?"
    expected = embeddings.embedder().embed([text], urgent=True)
    calls.clear()
    embeddings.prefetch([text], TENANT)
    assert calls == [[text]], "the prefetch starts the model without waiting for anyone to ask"
    assert not EmbeddingCache.objects.filter(content_hash=embeddings.content_hash(text, TENANT)).exists()
    embeddings.embed_query([text], OTHER_TENANT)
    assert calls == [[text], [text]], "another tenant's identical query does not take the prefetch"
    vector = embeddings.embed_query([text, "an earlier reply"], TENANT)[0]
    assert calls == [[text], [text], ["an earlier reply"]], "the prefetched text is not computed a second time"
    assert vector == pytest.approx(expected[0], abs=1e-6)
    assert EmbeddingCache.objects.filter(content_hash=embeddings.content_hash(text, TENANT)).count() == 1, "taken, then cached"
    calls.clear()
    assert embeddings.embed_query([text], TENANT)[0] == pytest.approx(vector, abs=1e-6)
    assert calls == [], "a prefetch is taken once; after that the cache answers"


@pytest.mark.django_db(transaction=True)
def test_prefetching_a_cached_text_costs_no_model_call_and_unclaimed_prefetches_are_bounded(monkeypatch, local_embeddings):
    embeddings.embed(["already known"], tenant=TENANT)
    calls = model_calls(monkeypatch)
    embeddings.prefetch(["already known"], TENANT)
    assert embeddings.embed_query(["already known"], TENANT) and calls == []
    embeddings.prefetch(["for no tenant"], None)
    assert calls == [] and not embeddings._prefetched, "nothing to take it by: not started"
    for i in range(embeddings.PREFETCH_KEEP + 10):  # turns that were never claimed leave their prefetch behind
        embeddings.prefetch([f"never asked for {i}"], TENANT)
    assert len(embeddings._prefetched) == embeddings.PREFETCH_KEEP
    embeddings._prefetched.clear()


def test_the_recall_hint_is_the_text_the_turn_recalls_by():
    from memory.context import RECALL_HINT_MAX_CHARS, recall_hint

    assert (
        recall_hint([{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "last"}])
        == "last"
    )
    assert recall_hint([{"role": "user", "content": "asked"}, {"role": "tool", "content": "42", "tool_call_id": "c"}]) == "asked"
    assert recall_hint([{"role": "system", "content": "be brief"}]) is None
    assert recall_hint([{"role": "user", "content": ""}]) is None
    assert recall_hint([{"role": "user", "content": "x" * (RECALL_HINT_MAX_CHARS + 1)}]) is None, "long texts stay out of the broker"


def test_search_ranks_the_relevant_memory_first(alice):
    conversation_with(alice, [*FILLER, "My sister Ingrid lives in Trondheim and works as a marine biologist."])
    hits = search.search(alice.tenant.id, embeddings.embed(["Where does Ingrid live?"])[0], k=3)
    assert "Trondheim" in hits[0].memory.text
    assert hits[0].score > hits[-1].score


def test_search_never_crosses_tenants(alice, bob):
    conversation_with(bob, ["Bob's bank PIN is 4242."])
    conversation_with(alice, FILLER)
    hits = search.search(alice.tenant.id, embeddings.embed(["bank PIN"])[0], k=50)
    assert hits and all(hit.memory.tenant_id == alice.tenant.id for hit in hits)
    assert not any("4242" in hit.memory.text for hit in hits)


def test_search_filters_by_conversation_and_still_returns_k(alice):
    first = conversation_with(alice, FILLER)
    second = conversation_with(alice, FILLER)
    hits = search.search(alice.tenant.id, embeddings.embed(["sailing"])[0], k=5, conversation_id=second.id)
    assert len(hits) == 5 and {hit.memory.conversation_id for hit in hits} == {second.id}
    assert first.id != second.id


def test_a_deleted_message_leaves_no_embedding(alice):
    conversation = conversation_with(alice, FILLER[:2])
    message = Message.objects.filter(conversation=conversation).first()
    message.delete()
    assert not Memory.objects.filter(message_id=message.id).exists()
