"""The static embedding model: distilled once and offline, model2vec's vectors, no cache; vectors of
different models never compared; recall skipped for agents with nothing in long-term memory."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.test import Client

from agents.models import Agent, Message
from memory import context, embeddings, indexing, search
from memory.models import EmbeddingCache, Memory
from tests.memory.conftest import use_embeddings
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db

FACT = "My sister Ingrid lives in Trondheim and works as a marine biologist."


@pytest.fixture
def static_embeddings(settings):
    use_embeddings(settings, "static")
    yield embeddings.embedder()
    embeddings.embedder.cache_clear()


def test_the_static_model_gives_model2vecs_own_vectors(static_embeddings):
    from model2vec import StaticModel

    reference = StaticModel.from_pretrained(embeddings.static_model(Path(django_settings.SENTINEL["STATIC_EMBEDDINGS_DIR"])))
    texts = [FACT, "Where does Ingrid live?", "ok", "word " * 2000]
    ours = np.array(static_embeddings.embed(texts))
    assert ours.shape == (len(texts), 384)
    assert np.allclose(ours, reference.encode(texts).astype(np.float32), atol=2e-3)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert static_embeddings.name == embeddings.model_name() and static_embeddings.name.startswith("minilm-static-")
    assert os.environ["HF_HUB_OFFLINE"] == "1", "nothing may download weights"


def test_a_text_of_no_known_token_still_gets_a_unit_vector(static_embeddings):
    (vector,) = static_embeddings.embed(["\u2603\u2603"])
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5), "a zero vector has no cosine distance to anything"


def test_the_static_model_ranks_the_relevant_memory_first(alice, static_embeddings):
    conversation_with(alice, [*FILLER, FACT])
    hits = search.search(alice.tenant.id, embeddings.embed_query(["Where does Ingrid live?"])[0], k=3)
    assert "Trondheim" in hits[0].memory.text
    assert Memory.objects.filter(embedding_model=static_embeddings.name).count() == len(FILLER) + 1


def test_static_embeddings_skip_the_cache_and_the_database(static_embeddings, django_assert_num_queries):
    with django_assert_num_queries(0):
        embeddings.embed(["never seen before", "nor this"], tenant="a tenant")
        embeddings.prefetch(["a prefetch is for slow models"], "a tenant")
    assert not EmbeddingCache.objects.exists()


def test_the_model_is_distilled_once_by_one_process_at_a_time(tmp_path, monkeypatch):
    built = []

    def fake_distill(target: Path) -> None:
        built.append(target)
        threading.Event().wait(0.2)  # long enough for the others to find no model and wait on the lock
        (target / "model.safetensors").write_text("weights")

    monkeypatch.setattr(embeddings, "_distill", fake_distill)
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(embeddings.static_model(tmp_path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1, "the others waited for the first build and used it"
    assert paths == [tmp_path / embeddings.static_model_name()] * 4
    assert (paths[0] / "model.safetensors").read_text() == "weights"
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [embeddings.static_model_name()], "no staging folder left"


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(target: Path) -> None:
        (target / "half.bin").write_text("x")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embeddings, "_distill", broken)
    with pytest.raises(RuntimeError):
        embeddings.static_model(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "the next process builds from scratch"


def test_the_static_models_name_changes_with_its_recipe(monkeypatch):
    before = embeddings.static_model_name()
    embeddings.static_model_name.cache_clear()
    monkeypatch.setitem(embeddings.STATIC_RECIPE, "common_directions", 4)
    try:
        assert embeddings.static_model_name() != before, "another recipe is another model, never new vectors under an old name"
    finally:
        monkeypatch.undo()
        embeddings.static_model_name.cache_clear()
    assert embeddings.static_model_name() == before


def test_search_compares_only_vectors_of_the_configured_model_until_they_are_reembedded(alice, settings, static_embeddings):
    conversation_with(alice, [*FILLER, FACT], index=False)
    use_embeddings(settings, "local")
    indexing.index_pending()  # MiniLM's vectors
    use_embeddings(settings, "static")
    query = embeddings.embed_query(["Where does Ingrid live?"])[0]
    assert search.search(alice.tenant.id, query, k=3) == [], "MiniLM's vectors are not compared with the static model's"
    indexing._none_stale.clear()
    assert indexing.reembed_stale(limit=4) == 4, "a batch at a time"
    while indexing.reembed_stale():
        pass
    assert not Memory.objects.exclude(embedding_model=embeddings.model_name()).exists()
    assert "Trondheim" in search.search(alice.tenant.id, query, k=3)[0].memory.text
    assert indexing.reembed_stale() == 0


def test_an_agent_with_no_memories_embeds_no_query(alice, static_embeddings):
    conversation = conversation_with(alice, ["Where does Ingrid live?"], index=False)
    asked: list[list[str]] = []
    context.assemble(conversation, embed=lambda texts: asked.append(texts) or embeddings.embed_query(texts))
    assert asked == [], "nothing to recall: no query embedding, no search"


def test_an_agent_with_memories_still_recalls(alice, static_embeddings):
    conversation_with(alice, [FACT, *FILLER])
    later = conversation_with(alice, ["Where does Ingrid live?"], index=False)
    asked: list[list[str]] = []
    ctx = context.assemble(later, embed=lambda texts: asked.append(texts) or embeddings.embed_query(texts))
    assert asked == [["Where does Ingrid live?"]]
    assert any(piece.kind == "recalled" and "Trondheim" in piece.text for piece in ctx.pieces)


def test_indexing_flags_the_agent_and_forgetting_its_last_memory_clears_the_flag(alice, bob, static_embeddings):
    conversation_with(bob, FILLER[:1])
    conversation = conversation_with(alice, FILLER[:2], index=False)
    assert not Agent.objects.get(id=alice.agent.id).has_memories
    indexing.index_pending()
    assert Agent.objects.get(id=alice.agent.id).has_memories
    client = Client()
    first, last = Memory.objects.filter(conversation=conversation)
    assert client.delete(f"/v1/memory/{first.id}", **alice.auth).status_code == 204
    assert Agent.objects.get(id=alice.agent.id).has_memories, "one memory left"
    message = Message.objects.get(id=last.message_id)
    assert client.delete(f"/v1/conversations/{conversation.id}/messages/{message.id}", **alice.auth).status_code == 200
    assert not Agent.objects.get(id=alice.agent.id).has_memories, "the last one forgotten: its turns stop recalling"
    assert Agent.objects.get(id=bob.agent.id).has_memories, "another tenant's agent keeps its own"
    conversation_with(alice, FILLER[2:3])
    assert Agent.objects.get(id=alice.agent.id).has_memories, "new memories turn recall back on"


def test_saving_an_agent_loaded_before_its_first_memory_keeps_recall_on(alice, static_embeddings):
    loaded = Agent.objects.get(id=alice.agent.id)
    conversation_with(alice, FILLER[:2])
    loaded.system_prompt = "Be brief."
    loaded.save()  # an admin's edit of a row read before the indexer set the flag
    agent = Agent.objects.get(id=alice.agent.id)
    assert agent.system_prompt == "Be brief." and agent.has_memories, "a configuration save never writes the flag back"
