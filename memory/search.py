"""Semantic search over long-term memory, tenant-scoped, by cosine similarity.

A search is scoped (tenant, and often agent or conversation). Up to EXACT_SEARCH_MAX scoped memories
it scans them exactly: a few milliseconds, and perfect recall. Past that it uses the HNSW index. The
benchmark measured why: on chat history, where many texts repeat word for word, HNSW at the default
ef_search found 4 of 10 planted facts among 8,000 memories that an exact scan found all of.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Expression, Value
from pgvector.django import CosineDistance

from memory import embeddings
from memory.asof import AsOf
from memory.models import Memory


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float  # cosine similarity, 1 = identical


# {scope: when it was counted}: scopes lately far below EXACT_SEARCH_MAX, scanned exactly
# without counting them again for EXACT_CACHE_SECONDS (a count is one more query for every turn).
_small_scopes: dict[tuple, float] = {}
EXACT_CACHE_SECONDS = 10.0
EXACT_CACHE_MIN_LIMIT = 1000  # a small limit (tests, tiny deployments) is counted every time


def _exact(queryset, limit: int, scope: tuple | None) -> bool:
    """Whether the scoped set is small enough to scan exactly (a bounded count: at most limit + 1
    rows). A scope counted at half the limit or less cannot pass it within seconds: that is
    remembered a few seconds, per process."""
    now = time.monotonic()
    if scope is not None and now - _small_scopes.get(scope, -EXACT_CACHE_SECONDS) < EXACT_CACHE_SECONDS:
        return True
    count = queryset[: limit + 1].count()
    if scope is not None and limit >= EXACT_CACHE_MIN_LIMIT and count <= limit // 2:
        if len(_small_scopes) > 10_000:
            _small_scopes.clear()
        _small_scopes[scope] = now
    return count <= limit


def search(
    tenant_id,
    vector: list[float],
    *,
    k: int = 10,
    agent_id=None,
    conversation_id=None,
    exclude_memory_ids: Iterable = (),
    exclude_message_ids: Iterable = (),
    exclude_conversation_ids: Iterable = (),
    as_of: AsOf | None = None,
) -> list[Hit]:
    """The k memories nearest to `vector` within a tenant (optionally one agent or conversation),
    among those embedded by the configured model, the one `vector` comes from. `as_of`: only those a
    replayed turn could have found (memory/asof.py)."""
    queryset = Memory.objects.filter(tenant_id=tenant_id, embedding_model=embeddings.model_name())
    if as_of is not None:
        queryset = as_of.memories(queryset)
    if agent_id is not None:
        queryset = queryset.filter(agent_id=agent_id)
    if conversation_id is not None:
        queryset = queryset.filter(conversation_id=conversation_id)
    exclude_memory_ids = list(exclude_memory_ids)
    exclude_message_ids = list(exclude_message_ids)
    exclude_conversation_ids = list(exclude_conversation_ids)
    if exclude_conversation_ids:
        queryset = queryset.exclude(conversation_id__in=exclude_conversation_ids)
    if exclude_memory_ids:
        queryset = queryset.exclude(id__in=exclude_memory_ids)
    if exclude_message_ids:
        queryset = queryset.exclude(message_id__in=exclude_message_ids)
    limit = settings.SENTINEL["EXACT_SEARCH_MAX"]
    exact = _exact(queryset, limit, (tenant_id, agent_id, conversation_id, limit) if as_of is None else None)
    distance: Expression = CosineDistance("embedding", vector)
    if exact:
        # A small scoped set: scan it exactly (the btree index finds it; "+ 0" keeps the planner
        # off the HNSW index, which would search the whole table and filter afterwards).
        distance = distance + Value(0.0)
    queryset = queryset.annotate(distance=distance).order_by("distance").defer("embedding")[:k]
    if exact:
        rows = list(queryset)  # one statement: no transaction round trips around it
    else:
        with transaction.atomic(), connection.cursor() as cursor:
            # Filters apply after the index scan; iterative scans keep going until k rows pass
            # them (pgvector 0.8). A wide candidate list keeps recall up on repetitive data.
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(200, 4 * k)])
            rows = list(queryset)
    hits = [Hit(memory=row, score=1.0 - float(row.distance)) for row in rows]
    hits.sort(key=lambda hit: hit.score, reverse=True)  # relaxed order: re-sort the final few
    return hits
