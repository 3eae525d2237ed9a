"""Memory search at size (issue 6.5): p50/p95 through the API against raw SQL on the same database,
at 10k and 100k memories, and the HNSW index's recall@10 against an exact scan.

Embedding 100k texts would take longer than the whole benchmark may, so the memories are real
all-MiniLM-L6-v2 embeddings of 1,000 generated chat lines, each copied with its own noise (every
vector distinct, neighbourhoods like real text's). Queries are embeddings of real questions.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx
import numpy as np
from django.db import connection, transaction

from agents.models import Agent, Conversation, Message
from bench.harness import Stack, percentile
from bench.memory_bench import FACTS, TOPICS, USER_LINES
from budgets.models import Tenant
from memory import embeddings
from memory.models import Memory

BASE_TEXTS = 1000
QUERIES = 50
BATCH = 5000


@dataclass
class SearchResult:
    memories: int
    index_build_s: float
    api_ms: list[float]
    sql_hnsw_ms: list[float]
    sql_exact_ms: list[float]
    recall_at_10: float
    api_path: str


def _texts(rng: random.Random, n: int) -> list[str]:
    things = [thing for group in TOPICS.values() for thing in group]
    lines = [line.format(x=rng.choice(things)) + f" ({i})" for i, line in enumerate(rng.choices(USER_LINES, k=n))]
    return lines


def _vectors(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    picks = base[rng.integers(0, len(base), n)]
    noisy = picks + rng.normal(0, 0.35 / np.sqrt(base.shape[1]), picks.shape)
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def _grow(tenant: Tenant, agent: Agent, conversation: Conversation, base: np.ndarray, texts: list[str], start: int, end: int) -> float:
    """Add memories [start, end) with the HNSW index dropped, then rebuild it; returns the build time."""
    rng = np.random.default_rng(start)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'memory_embedding_hnsw'")
        definition = cursor.fetchone()[0]
        cursor.execute("DROP INDEX memory_embedding_hnsw")
    for lo in range(start, end, BATCH):
        hi = min(end, lo + BATCH)
        vectors = _vectors(base, hi - lo, rng)
        with transaction.atomic():
            messages = Message.objects.bulk_create(
                Message(tenant=tenant, conversation=conversation, seq=1_000_000 + i, index=0, role="user", content=texts[i % len(texts)])
                for i in range(lo, hi)
            )
            Memory.objects.bulk_create(
                Memory(
                    tenant=tenant,
                    agent=agent,
                    conversation=conversation,
                    kind="message",
                    message=message,
                    role="user",
                    text=message.content,
                    source_message_ids=[message.id],
                    embedding=vector.tolist(),
                    in_hnsw=True,  # a tenant this large is one the HNSW index is for (memory/hnsw.py)
                )
                for message, vector in zip(messages, vectors, strict=True)
            )
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute(definition)
        cursor.execute("ANALYZE memory_memory")
    return time.monotonic() - started


def _sql(tenant_id, vector: list[float], exact: bool) -> tuple[float, list]:
    literal = "[" + ",".join(f"{x:.7f}" for x in vector) + "]"
    distance = "(embedding <=> %s::vector) + 0" if exact else "embedding <=> %s::vector"
    indexed = "" if exact else " AND in_hnsw"  # the index is partial on it
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        if not exact:
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = 200")
        cursor.execute(f"SELECT id FROM memory_memory WHERE tenant_id = %s{indexed} ORDER BY {distance} LIMIT 10", [tenant_id, literal])
        ids = [row[0] for row in cursor.fetchall()]
    return (time.perf_counter() - started) * 1000, ids


def run(stack: Stack, sizes: tuple[int, ...]) -> list[SearchResult]:
    from django.conf import settings

    rng = random.Random(6)
    tenant = Tenant.objects.get(name="bench")
    agent = Agent.objects.get(tenant=tenant, name="bench")
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, title="search benchmark")
    texts = _texts(rng, BASE_TEXTS)
    base = np.array(embeddings.embed(texts), dtype=np.float64)
    questions = [q for _, q, _ in FACTS] + [line.format(x=rng.choice(list(TOPICS))) for line in USER_LINES]
    questions = (questions * (QUERIES // len(questions) + 1))[:QUERIES]
    query_vectors = embeddings.embed(questions)
    results = []
    have = 0
    headers = {"Authorization": f"Bearer {stack.key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as client:
        for size in sizes:
            build_s = _grow(tenant, agent, conversation, base, texts, have, size)
            have = size
            total = Memory.objects.filter(tenant=tenant).count()
            api_ms, hnsw_ms, exact_ms, overlap = [], [], [], []
            for q in questions[:3]:  # warm: the web process loads its embedding model on first use
                client.get("/v1/memory/search", params={"q": q, "k": 10})
            for question, vector in zip(questions, query_vectors, strict=True):
                started = time.perf_counter()
                response = client.get("/v1/memory/search", params={"q": question, "k": 10})
                api_ms.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                t_hnsw, approx = _sql(tenant.id, vector, exact=False)
                t_exact, truth = _sql(tenant.id, vector, exact=True)
                hnsw_ms.append(t_hnsw)
                exact_ms.append(t_exact)
                overlap.append(len(set(approx) & set(truth)) / max(1, len(truth)))
            path = "exact scan" if total <= settings.SENTINEL["EXACT_SEARCH_MAX"] else "HNSW index"
            results.append(SearchResult(total, build_s, api_ms, hnsw_ms, exact_ms, sum(overlap) / len(overlap), path))
    return results


def report(results: list[SearchResult]) -> list[str]:
    def pp(values: list[float]) -> str:
        return f"{percentile(values, 50):.1f} / {percentile(values, 95):.1f} ms"

    lines = [
        "## Memory search at size (issue 6.5)",
        "",
        f"{QUERIES} real questions against one tenant's memories, k = 10. The API time includes HTTP, authentication and "
        "embedding the query in the web process; the SQL times are the bare query on the same database with a precomputed "
        "query vector. The API scans exactly up to `SENTINEL_EXACT_SEARCH_MAX` (20,000) scoped memories and uses the HNSW "
        "index (ef_search 200, iterative scan) past that. See the module docstring of `bench/search_bench.py` for the data.",
        "",
        "| memories | API p50 / p95 (path it took) | raw SQL, HNSW p50 / p95 | raw SQL, exact scan p50 / p95 "
        "| HNSW recall@10 vs exact | index build |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.memories:,} | {pp(r.api_ms)} ({r.api_path}) | {pp(r.sql_hnsw_ms)} | {pp(r.sql_exact_ms)} | {r.recall_at_10:.3f} | "
            f"{r.index_build_s:.1f} s |"
        )
    return [*lines, ""]
