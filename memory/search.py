"""Semantic search over long-term memory, tenant-scoped, by cosine similarity.

A search is scoped (tenant, and often agent or conversation). Up to EXACT_SEARCH_MAX scoped memories
it scans them exactly: a few milliseconds, and perfect recall. Past that it uses the HNSW index for
what it holds of the scope and scans the rest (memory/hnsw.py says which memories it holds). The
benchmark measured why: on chat history, where many texts repeat word for word, HNSW at the default
ef_search found 4 of 10 planted facts among 8,000 memories that an exact scan found all of.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Expression, Value
from pgvector.django import CosineDistance

from memory import embeddings, held_vectors, hnsw, search_sql
from memory.asof import AsOf
from memory.models import Memory
from memory.search_sql import FoundMemory


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float  # cosine similarity, 1 = identical


# {scope: (when it was counted, its size counted up to EXACT_SEARCH_MAX + 1)}: a scope's size is kept
# EXACT_CACHE_SECONDS, per process, so a turn's recall does not count its scope first (a bounded count
# reads up to EXACT_SEARCH_MAX + 1 rows: near the bound, as much as the exact scan itself).
_scope_verdicts: dict[tuple, tuple[float, int]] = {}
EXACT_CACHE_SECONDS = 10.0
EXACT_CACHE_MIN_LIMIT = 1000  # a small limit (tests, tiny deployments) is counted every time

# Full text leaves out a word that COMMON_WORD_SHARE or more of the scope's memories say, in a scope of
# COMMON_WORD_MIN_SCOPE memories or more. Such a word tells no memory from another (its inverse
# document frequency is near nothing), and the OR of a question's words ranks every memory that says
# any of them: a word every soak message says made full text rank half the scope on every turn, 38 of
# the hybrid statement's 60 ms at 11,578 memories (bench/HISTORY.md row 42). Each of the question's
# words is counted in the scope through the GIN index, up to the share and no further; a smaller scope
# ranks every word, as a scan of it costs a few milliseconds. Past EXACT_SEARCH_MAX the share is of
# that bound (the size is counted no further).
COMMON_WORD_SHARE = 0.2
COMMON_WORD_MIN_SCOPE = 2000


def _counter(queryset) -> Callable[[int], int]:
    return lambda upto: queryset[:upto].count()


def _scope_size(count_upto: Callable[[int], int], limit: int, scope: tuple | None) -> int:
    """The scoped set's size, up to limit + 1 (a bounded count: `count_upto(limit + 1)` counts at most
    limit + 1 rows), remembered a few seconds: a scope grows by a few messages a second at most, so
    one that crosses the bound is scanned exactly a few seconds too long, or (shrunk by a purge)
    searched through the index a few seconds too long; either gives the same kind of answer as the
    other."""
    now = time.monotonic()
    if scope is not None and (seen := _scope_verdicts.get(scope)) is not None and now - seen[0] < EXACT_CACHE_SECONDS:
        return seen[1]
    size = count_upto(limit + 1)
    if scope is not None and limit >= EXACT_CACHE_MIN_LIMIT:
        if len(_scope_verdicts) > 10_000:
            _scope_verdicts.clear()
        _scope_verdicts[scope] = (now, size)
    return size


def _exact(count_upto: Callable[[int], int], limit: int, scope: tuple | None) -> bool:
    """Whether the scoped set is small enough to scan exactly (`_scope_size`)."""
    return _scope_size(count_upto, limit, scope) <= limit


def _common_word_bound(size: int) -> int | None:
    """How many of the scope's memories make a word too common to rank by (COMMON_WORD_SHARE), or None
    below COMMON_WORD_MIN_SCOPE."""
    return max(1, int(size * COMMON_WORD_SHARE)) if size >= COMMON_WORD_MIN_SCOPE else None


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
    queryset = scoped_memories(
        tenant_id,
        agent_id=agent_id,
        conversation_id=conversation_id,
        exclude_memory_ids=exclude_memory_ids,
        exclude_message_ids=exclude_message_ids,
        exclude_conversation_ids=exclude_conversation_ids,
        as_of=as_of,
    )
    limit = settings.SENTINEL["EXACT_SEARCH_MAX"]
    exact = _exact(_counter(queryset), limit, (tenant_id, agent_id, conversation_id, limit) if as_of is None else None)
    distance: Expression = CosineDistance("embedding", vector)
    # A scan of the scope (the btree index finds it; "+ 0" keeps the planner off the HNSW index,
    # which would search the whole table and filter afterwards).
    scanned = queryset.annotate(distance=distance + Value(0.0)).order_by("distance").defer("embedding")
    if exact:
        rows = list(scanned[:k])  # one statement: no transaction round trips around it
    else:
        if as_of is None:
            hnsw.want(tenant_id)
        indexed = queryset.filter(in_hnsw=True).annotate(distance=distance).order_by("distance").defer("embedding")
        with transaction.atomic(), connection.cursor() as cursor:
            # Filters apply after the index scan; iterative scans keep going until k rows pass
            # them (pgvector 0.8). A wide candidate list keeps recall up on repetitive data.
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(200, 4 * k)])
            # The index's nearest and the nearest of what it does not hold yet (memory/hnsw.py).
            rows = list(indexed[:k]) + list(scanned.filter(in_hnsw=False)[:k])
    hits = [Hit(memory=row, score=1.0 - float(row.distance)) for row in rows]
    hits.sort(key=lambda hit: hit.score, reverse=True)  # relaxed order: re-sort the final few
    return hits[:k]


# Reciprocal-rank fusion's constant (Cormack et al. 2009): a memory ranked r by a retriever scores
# 1 / (RRF_K + r); 60 keeps the first few ranks of either retriever from drowning the other.
RRF_K = 60


@dataclass(frozen=True)
class FusedHit:
    """A memory found by hybrid search, with why: its rank in each retriever and after fusion."""

    memory: Memory | FoundMemory  # FoundMemory: the fields context assembly reads (SENTINEL_SEARCH_READS=sql)
    fused: float  # the RRF score
    fused_rank: int  # 1-based, after fusion (neighbours and updates: their hit's rank)
    similarity: float | None  # cosine similarity, when the vector retriever ranked it
    vector_rank: int | None
    text_score: float | None  # SENTINEL_TEXT_RANK's score (ts_rank_cd or ts_rank), when the full-text retriever ranked it
    text_rank: int | None
    via: str = ""  # "" for a hit; "neighbour" (a message next to a hit) or "update" (a later fact replacing a hit)
    of: str | None = None  # the hit's memory id, for a neighbour or an update


# Each retriever ranks distinct texts: of the DEPTH * k nearest (or best by full text), one memory
# per text (the newest), the first k of those. Chat repeats itself ("Mm, fair enough.", "Thanks!"),
# and every copy of a line scores alike: on the dialogue benchmark (issue 16) the 130 nearest
# messages to "How does Mara spend her free time lately?" were 34 texts, "I spent Sunday doing the
# spare room, very exciting." four times at the top, and recall, which takes a text once, was left
# with a fraction of its k candidates. DEPTH 4 keeps within the index's ef_search (4 * k).
DEPTH = 4

# One statement: the scoped candidates (the ORM's filters, inlined), the k nearest to each query
# vector and the k best by full text (distinct texts), fused by RRF (every list a memory is in adds 1 / (60 + rank));
# then, for the fused top k, the messages just before and after a message hit (a fact often spans
# two turns) and the later facts that supersede a fact hit. Those are checked to be in scope one by one,
# by primary key (OFFSET 0 keeps the check from becoming a join: with a low estimate of the scope, as
# before a table's first ANALYZE, the join ran the whole scope times every hit: bench/HISTORY.md row 51).
_HYBRID = """
WITH scoped AS NOT MATERIALIZED ({scoped}),
query AS MATERIALIZED (SELECT CASE WHEN %(common)s::int IS NULL
    THEN replace(replace(plainto_tsquery('english', %(text)s)::text, ' & ', ' | '), ' <-> ', ' | ')::tsquery
    ELSE (
        SELECT coalesce(string_agg(word, ' | '), '')::tsquery FROM (
            SELECT '''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''' AS word
            FROM unnest(tsvector_to_array(to_tsvector('english', %(text)s))) lexeme
        ) words
        WHERE (SELECT count(*) FROM (SELECT 1 FROM scoped WHERE scoped.search_vector @@ words.word::tsquery LIMIT %(common)s) saying)
              < %(common)s
    ) END AS q),
{vec},
txt AS (
    SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank, score FROM (
        SELECT DISTINCT ON (text) id, score FROM (
            SELECT scoped.id, scoped.text, scoped.occurred_at, {rank}(scoped.search_vector, query.q) AS score
            FROM scoped, query WHERE query.q::text <> '' AND scoped.search_vector @@ query.q
            ORDER BY 4 DESC LIMIT %(depth)s
        ) matched ORDER BY text, score DESC, occurred_at DESC, id
    ) best ORDER BY score DESC, id LIMIT %(k)s
),
fused AS (
    SELECT id, min(vector_rank) AS vector_rank, max(similarity) AS similarity, min(text_rank) AS text_rank,
           max(text_score) AS text_score, sum(1.0 / (%(rrf)s + coalesce(vector_rank, text_rank))) AS fused
    FROM (
        SELECT id, rank AS vector_rank, similarity, NULL::bigint AS text_rank, NULL::float4 AS text_score FROM vec
        UNION ALL SELECT id, NULL, NULL, rank, score FROM txt
    ) ranked GROUP BY id
),
top AS (SELECT *, row_number() OVER (ORDER BY fused DESC, id) AS fused_rank FROM fused ORDER BY fused DESC, id LIMIT %(k)s),
hits AS (SELECT top.*, '' AS via, NULL::uuid AS of FROM top),
near AS (
    SELECT nm.id, NULL::bigint, NULL::float8, NULL::bigint, NULL::float4, top.fused, top.fused_rank, 'neighbour', top.id
    FROM top JOIN memory_memory hm ON hm.id = top.id JOIN agents_message msg ON msg.id = hm.message_id
    CROSS JOIN LATERAL (
        (SELECT b.id FROM agents_message b WHERE b.conversation_id = msg.conversation_id AND (b.seq, b.index) < (msg.seq, msg.index)
         ORDER BY b.seq DESC, b.index DESC LIMIT 1)
        UNION ALL
        (SELECT a.id FROM agents_message a WHERE a.conversation_id = msg.conversation_id AND (a.seq, a.index) > (msg.seq, msg.index)
         ORDER BY a.seq, a.index LIMIT 1)
    ) adjacent
    JOIN memory_memory nm ON nm.message_id = adjacent.id
    WHERE %(neighbours)s AND EXISTS (SELECT 1 FROM scoped WHERE scoped.id = nm.id OFFSET 0)
),
updates AS (
    SELECT newer.id, NULL::bigint, NULL::float8, NULL::bigint, NULL::float4, top.fused, top.fused_rank, 'update', top.id
    FROM top JOIN memory_memory newer ON newer.supersedes_id = top.id
    WHERE EXISTS (SELECT 1 FROM scoped WHERE scoped.id = newer.id OFFSET 0)
),
found AS (SELECT * FROM hits UNION ALL SELECT * FROM near UNION ALL SELECT * FROM updates)
SELECT {columns}, {ranks}
FROM found JOIN memory_memory m ON m.id = found.id
ORDER BY {order}
"""

_NEAREST = """(SELECT id, row_number() OVER (ORDER BY distance, id) AS rank, 1 - distance AS similarity FROM (
        SELECT DISTINCT ON (text) id, distance FROM ({candidates}) nearest ORDER BY text, distance, occurred_at DESC, id
    ) nearest{n} ORDER BY distance, id LIMIT %(k)s)"""
# The DEPTH * k nearest: a scan of the scope ("+ 0" keeps the planner off the HNSW index, which would
# search the whole table and filter afterwards); past the exact bound, the nearest the HNSW index
# holds and the nearest of the rest (memory/hnsw.py: memories it has not taken in yet), whose union
# holds the DEPTH * k nearest of all.
_CANDIDATE = "SELECT id, text, occurred_at, {distance} AS distance FROM scoped{where} ORDER BY 4 LIMIT %(depth)s"
_SCANNED = "(embedding <=> %(vector{n})s::vector) + 0"
_EXACT_CANDIDATES = _CANDIDATE.format(distance=_SCANNED, where="")
# Those a process holds the scope's vectors for (memory/held_vectors.py): its nearest held and
# whatever was written at or past the frontier it read them at.
_HELD_CANDIDATES = _CANDIDATE.format(distance=_SCANNED, where=" WHERE (id = ANY(%(held{n})s::uuid[]) OR written_xid >= %(frontier)s::xid8)")
_INDEXED_CANDIDATES = (
    f"({_CANDIDATE.format(distance='embedding <=> %(vector{n})s::vector', where=' WHERE in_hnsw')})"
    f" UNION ALL ({_CANDIDATE.format(distance=_SCANNED, where=' WHERE NOT in_hnsw')})"
)


def _nearest(vectors: int, exact: bool, held: bool = False) -> str:
    """The vector retriever's ranks, for each query vector (`_NEAREST`)."""
    candidates = _INDEXED_CANDIDATES if not exact else _HELD_CANDIDATES if held else _EXACT_CANDIDATES
    return " UNION ALL ".join(_NEAREST.format(n=n, candidates=candidates.format(n=n)) for n in range(vectors))


# The scope's columns the statement reads (whether the HNSW index holds a memory only past the bound).
_SCOPED_COLUMNS = "id, embedding, search_vector, text, occurred_at"
_SCOPED_COLUMNS_INDEXED = f"{_SCOPED_COLUMNS}, in_hnsw"
_SCOPED_COLUMNS_HELD = f"{_SCOPED_COLUMNS}, written_xid"

_ORDER = "found.fused_rank, found.via, m.occurred_at DESC"  # then `_newer_first`
# `_newer_first` in SQL: a fact that supersedes another at the better rank of the two, neighbours
# after their hit, newer first; ties as `_ORDER` (Python's sort is stable).
_ORDER_NEWER_FIRST = (
    "least(found.fused_rank, (SELECT min(older.fused_rank) FROM found older WHERE older.id = m.supersedes_id)), "
    "found.via = 'neighbour', m.occurred_at DESC, found.fused_rank, found.via"
)
_RANKS = "found.vector_rank, found.similarity, found.text_rank, found.text_score, found.fused, found.fused_rank, found.via, found.of"
# The same, but the fused score as float8 and `of` as text: no Decimal or UUID for Python to build.
_RANKS_CAST = _RANKS.replace("found.fused,", "found.fused::float8,").replace("found.of", "found.of::text")

_COLUMNS = ", ".join(
    f"m.{column}"
    for column in (
        "id",
        "tenant_id",
        "agent_id",
        "conversation_id",
        "kind",
        "message_id",
        "summary_id",
        "role",
        "text",
        "source_message_ids",
        "occurred_at",
        "embedding_model",
        "scope",
        "fact_key",
        "supersedes_id",
        "created_at",
    )
)


def scoped_memories(
    tenant_id,
    *,
    agent_id=None,
    conversation_id=None,
    exclude_memory_ids: Iterable = (),
    exclude_message_ids: Iterable = (),
    exclude_conversation_ids: Iterable = (),
    as_of: AsOf | None = None,
):
    """The memories a search may find: the tenant's, of the configured embedding model, narrowed."""
    queryset = Memory.objects.filter(tenant_id=tenant_id, embedding_model=embeddings.model_name())
    if as_of is not None:
        queryset = as_of.memories(queryset)
    if agent_id is not None:
        queryset = queryset.filter(agent_id=agent_id)
    if conversation_id is not None:
        queryset = queryset.filter(conversation_id=conversation_id)
    if exclude_conversation_ids := list(exclude_conversation_ids):
        queryset = queryset.exclude(conversation_id__in=exclude_conversation_ids)
    if exclude_memory_ids := list(exclude_memory_ids):
        queryset = queryset.exclude(id__in=exclude_memory_ids)
    if exclude_message_ids := list(exclude_message_ids):
        queryset = queryset.exclude(message_id__in=exclude_message_ids)
    return queryset


def hybrid(
    tenant_id,
    vector: list[float],
    text: str,
    *,
    k: int = 10,
    extra_vectors: list[list[float]] = (),  # type: ignore[assignment]
    neighbours: bool = True,
    as_of: AsOf | None = None,
    **scope,
) -> list[FusedHit]:
    """Hybrid search: the k best memories by RRF of vector similarity (to `vector` and to each of
    `extra_vectors`, say the clauses of a two-part question) and full-text rank, each hit followed by
    its neighbouring messages (`neighbours`) and the facts that supersede it, in one statement.
    Scope keywords as `scoped_memories`.

    SENTINEL_SEARCH_READS=sql (the default): the scope hand-written and the statement's text cached
    (memory/search_sql.py), the memories as `FoundMemory`; `orm`: the scope compiled by the ORM, the
    memories as `Memory` instances (the reference lane; the same hits)."""
    if settings.SENTINEL["SEARCH_READS"] == "orm":
        return _orm_hybrid(tenant_id, vector, text, k=k, extra_vectors=extra_vectors, neighbours=neighbours, as_of=as_of, **scope)
    condition, params = search_sql.scope(tenant_id, embeddings.model_name(), as_of=as_of, **scope)
    limit = settings.SENTINEL["EXACT_SEARCH_MAX"]
    scope_key = (tenant_id, scope.get("agent_id"), scope.get("conversation_id"), limit)
    size = _scope_size(lambda upto: search_sql.count(condition, params, upto), limit, scope_key if as_of is None else None)
    exact = size <= limit
    if not exact and as_of is None:
        hnsw.want(tenant_id)
    vectors = [vector, *extra_vectors]
    params.update(text=text[:2000], k=k, depth=DEPTH * k, rrf=RRF_K, neighbours=neighbours, common=_common_word_bound(size))
    params.update({f"vector{n}": search_sql.QueryVector(v) for n, v in enumerate(vectors)})
    held = None
    if exact and as_of is None and scope.get("agent_id") is not None and scope.get("conversation_id") is None:
        held = held_vectors.nearest(
            tenant_id,
            scope["agent_id"],
            params["model"],
            vectors,
            size=size,
            n=DEPTH * k + held_vectors.MARGIN,
            exclude_memory_ids=scope.get("exclude_memory_ids", ()),
            exclude_message_ids=scope.get("exclude_message_ids", ()),
            exclude_conversation_ids=scope.get("exclude_conversation_ids", ()),
        )
    if held is not None:
        params.update({f"held{n}": ids for n, ids in enumerate(held[0])}, frontier=held[1])
    with search_sql.binding_cursor() as cursor:
        statement = _statement(condition, len(vectors), exact, settings.SENTINEL["TEXT_RANK"], held is not None)
        rows = _run(cursor, statement, params, exact, k)
    return [_found_hit(row) for row in rows]  # in `_newer_first`'s order already


@lru_cache(maxsize=256)
def _statement(condition: str, vectors: int, exact: bool, rank: str, held: bool = False) -> str:
    """The hybrid statement for a scope's condition (memory/search_sql.py `where`), with named placeholders;
    `held`: its vector candidates from the vectors this process holds (memory/held_vectors.py)."""
    columns = _SCOPED_COLUMNS_INDEXED if not exact else _SCOPED_COLUMNS_HELD if held else _SCOPED_COLUMNS
    scoped = f"SELECT {columns} FROM memory_memory WHERE {condition}"
    nearest = f"vec AS ({_nearest(vectors, exact, held)})"
    sql = _HYBRID.format(scoped=scoped, vec=nearest, columns=search_sql.COLUMNS, ranks=_RANKS_CAST, order=_ORDER_NEWER_FIRST, rank=rank)
    # Its indentation collapsed: psycopg keeps its parse of a statement up to 4,096 bytes only, and
    # splits a longer one again on every call (4% of a loaded worker; the statement's literals hold
    # single spaces only and it has no -- comments, so a run of whitespace is one space).
    return " ".join(sql.split())


def _run(cursor, sql: str, params, exact: bool, k: int) -> list:
    if exact:  # one statement: no transaction round trips around it
        cursor.execute(sql, params)
        return cursor.fetchall()
    with transaction.atomic():
        # Filters apply after the index scan; iterative scans keep going until k rows pass them
        # (pgvector 0.8). A wide candidate list keeps recall up on repetitive data.
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(f"SET LOCAL hnsw.ef_search = {max(200, 4 * int(k))}")  # SET takes no bound parameter
        cursor.execute(sql, params)
        return cursor.fetchall()


def _found_hit(row) -> FusedHit:
    vector_rank, similarity, text_rank, text_score, fused, fused_rank, via, of = row[search_sql.FIELDS :]
    return FusedHit(
        memory=FoundMemory(row),
        fused=fused,
        fused_rank=fused_rank,
        similarity=similarity,
        vector_rank=vector_rank,
        text_score=text_score,
        text_rank=text_rank,
        via=via,
        of=of,
    )


def _orm_hybrid(
    tenant_id,
    vector: list[float],
    text: str,
    *,
    k: int,
    extra_vectors: list[list[float]],
    neighbours: bool,
    as_of: AsOf | None,
    **scope,
) -> list[FusedHit]:
    """`hybrid` as it was: the scope compiled by the ORM, the rows as Memory instances (SENTINEL_SEARCH_READS=orm)."""
    queryset = scoped_memories(tenant_id, as_of=as_of, **scope)
    limit = settings.SENTINEL["EXACT_SEARCH_MAX"]
    scope_key = (tenant_id, scope.get("agent_id"), scope.get("conversation_id"), limit)
    size = _scope_size(_counter(queryset), limit, scope_key if as_of is None else None)
    exact = size <= limit
    if not exact and as_of is None:
        hnsw.want(tenant_id)
    columns = (_SCOPED_COLUMNS if exact else _SCOPED_COLUMNS_INDEXED).split(", ")
    scoped_sql, scoped_params = queryset.order_by().values(*columns).query.sql_with_params()
    vectors = [vector, *extra_vectors]
    sql = _HYBRID.format(
        scoped=scoped_sql.replace("%s", "%%s"),
        vec=f"vec AS ({_nearest(len(vectors), exact)})",
        columns=_COLUMNS,
        ranks=_RANKS,
        order=_ORDER,
        rank=settings.SENTINEL["TEXT_RANK"],
    )
    params = {"text": text[:2000], "k": k, "depth": DEPTH * k, "rrf": RRF_K, "neighbours": neighbours, "common": _common_word_bound(size)}
    params.update({f"vector{n}": _vector_literal(v) for n, v in enumerate(vectors)})
    sql, args = _positional(sql, scoped_params, params)
    if exact:
        with connection.cursor() as cursor:  # one statement: no transaction round trips around it
            cursor.execute(sql, args)
            rows = cursor.fetchall()
    else:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(200, 4 * k)])
            cursor.execute(sql, args)
            rows = cursor.fetchall()
    return _newer_first([_fused_hit(row) for row in rows])


def _newer_first(hits: list[FusedHit]) -> list[FusedHit]:
    """A fact that supersedes another ranks where the better of the two ranked, just before it;
    neighbours follow their hit. A memory may come twice (a hit, and a neighbour of a better hit):
    whoever uses the list takes it once, as the first that fits."""
    best: dict = {}
    for hit in hits:
        best[hit.memory.id] = min(best.get(hit.memory.id, hit.fused_rank), hit.fused_rank)

    def rank(hit: FusedHit) -> int:
        older = hit.memory.supersedes_id
        return min(hit.fused_rank, best[older]) if older in best else hit.fused_rank

    return sorted(hits, key=lambda hit: (rank(hit), hit.via == "neighbour", -hit.memory.occurred_at.timestamp()))


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _positional(sql: str, scoped_params: tuple, named: dict) -> tuple[str, list]:
    """The statement with %s placeholders only, and its arguments in order: the ORM's (the scoped
    part's "%%s") and ours (named)."""
    args: list = []
    scoped = iter(scoped_params)
    parts = _PLACEHOLDER.split(sql)
    for i, part in enumerate(parts):
        if part == "%%s":
            parts[i] = "%s"
            args.append(next(scoped))
        elif part.startswith("%("):
            parts[i] = "%s"
            args.append(named[part[2:-2]])
    return "".join(parts), args


_PLACEHOLDER = re.compile(r"(%%s|%\([a-z_0-9]+\)s)")
_FIELDS = [column.split(".", 1)[1] for column in _COLUMNS.split(", ")]


def _fused_hit(row) -> FusedHit:
    vector_rank, similarity, text_rank, text_score, fused, fused_rank, via, of = row[len(_FIELDS) :]
    memory = Memory.from_db("default", _FIELDS, row[: len(_FIELDS)])  # the embedding stays deferred
    return FusedHit(
        memory=memory,
        fused=float(fused),
        fused_rank=int(fused_rank),
        similarity=None if similarity is None else float(similarity),
        vector_rank=vector_rank,
        text_score=None if text_score is None else float(text_score),
        text_rank=text_rank,
        via=via,
        of=None if of is None else str(of),
    )
