"""Filling long-term memory: count tokens and embed messages and summaries, in batches.

Runs in a Celery task, never in the request path. Concurrent indexers split the work (rows are
locked with SKIP LOCKED) and the one-to-one links make a second write of the same memory a no-op.

A batch of messages is shared fairly between tenants: every tenant with messages waiting gets up
to an equal share of it, oldest first, so a tenant importing 100,000 messages cannot delay another
tenant's fresh message by more than one batch. Finding those tenants and their oldest messages is
a walk over the partial index `message_pending_by_tenant` (memory migration 0003), a few index
probes per tenant whatever the size of the backlog.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection, transaction

from agents.models import Agent, Message
from memory import embeddings, tokens
from memory.context_reads import MESSAGE_COLUMNS, WindowMessage
from memory.models import Memory, MemoryKind, Summary
from sentinel_site import config_cache, db, metrics


def message_text(message: Message | WindowMessage) -> str:
    text = message.content or ""
    for call in message.tool_calls or []:
        function = call.get("function", {})
        text += f"\n[tool call {function.get('name', '')}({function.get('arguments', '')})]"
    return text.strip()


# The tenants with messages waiting (a loose index scan: one probe per tenant), then each one's
# oldest, at most an equal share of the batch each; the batch is the oldest of those.
_FAIR_BATCH = """
WITH RECURSIVE tenants(id) AS (
    (SELECT tenant_id FROM agents_message WHERE embedded IS NOT TRUE ORDER BY tenant_id, created_at LIMIT 1)
    UNION ALL
    SELECT (
        SELECT m.tenant_id FROM agents_message m
        WHERE m.embedded IS NOT TRUE AND m.tenant_id > t.id
        ORDER BY m.tenant_id, m.created_at LIMIT 1
    )
    FROM tenants t WHERE t.id IS NOT NULL
),
pending AS (SELECT id FROM tenants WHERE id IS NOT NULL),
share AS (SELECT ceil(%(limit)s::numeric / greatest(count(*), 1))::int AS n FROM pending)
SELECT head.id FROM pending CROSS JOIN LATERAL (
    SELECT m.id, m.created_at FROM agents_message m
    WHERE m.tenant_id = pending.id AND m.embedded IS NOT TRUE
    ORDER BY m.created_at LIMIT (SELECT n FROM share)
) head
ORDER BY head.created_at LIMIT %(limit)s
"""


def fair_batch(limit: int) -> list:
    """Ids of up to `limit` messages waiting to be embedded, shared fairly between tenants."""
    with connection.cursor() as cursor:
        cursor.execute(_FAIR_BATCH, {"limit": limit})
        return [row[0] for row in cursor.fetchall()]


MESSAGE_BATCH = 256


def index_pending_messages(limit: int = MESSAGE_BATCH) -> int:
    """Embed up to `limit` messages waiting (`fair_batch`), each as a memory of its agent, and mark
    them embedded with their token counts. Returns how many messages it took."""
    ids = fair_batch(limit)
    if not ids:
        return 0
    if settings.SENTINEL["INDEX_WRITES"] == "sql":
        return _index_messages_sql(ids)
    with transaction.atomic():
        batch = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("conversation")
            .filter(id__in=ids, embedded=False)
        )
        if not batch:
            return 0
        with_text = [(message, message_text(message)) for message in batch]
        with_text = [(message, text) for message, text in with_text if text]
        vectors = embeddings.embed([text for _, text in with_text], tenant=[message.tenant_id for message, _ in with_text])
        model = embeddings.embedder().name
        Memory.objects.bulk_create(
            [
                Memory(
                    tenant_id=message.tenant_id,
                    agent_id=message.conversation.agent_id,
                    conversation_id=message.conversation_id,
                    kind=MemoryKind.MESSAGE,
                    message=message,
                    role=message.role,
                    text=text,
                    source_message_ids=[message.id],
                    occurred_at=message.occurred_at,
                    embedding=vector,
                    embedding_model=model,
                )
                for (message, text), vector in zip(with_text, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
        note_memories({message.conversation.agent_id for message, _ in with_text})
        for message in batch:
            message.token_count = tokens.count_message(message.as_openai())
            message.embedded = True
        Message.objects.bulk_update(batch, ["token_count", "embedded"])
    metrics.MEMORY_INDEXED.inc(len(with_text))
    return len(batch)


# SENTINEL_INDEX_WRITES=sql: the batch locked and read as light rows, then its memories, its agents'
# has_memories and its messages' token counts written by one statement (data-modifying CTEs, each
# row's columns from the message and its conversation), where the ORM lane compiled and ran five.
# It returns how many agents it gave their first memory: the web's cached agents (config_cache) must
# learn of it, or the web keeps sending their turns without a recall hint (HISTORY row 52).
# A memory of a tenant the HNSW index is for (memory/hnsw.py) enters the index as it is written.
# created_at is the clock's (as the ORM lane's timezone.now()), not the transaction's start: a
# replay's as_of reads it as when the memory came to be.
_LOCK_MESSAGES = (
    f"SELECT tenant_id, {MESSAGE_COLUMNS} FROM agents_message WHERE id = ANY(%(ids)s::uuid[]) AND embedded = false FOR UPDATE SKIP LOCKED"
)
_WRITE_MEMORIES = f"""
WITH batch AS (SELECT * FROM {db.recordset("b", "message_id uuid, text text, vector vector", "%(batch)s")}),
sources AS (
    SELECT batch.*, m.tenant_id, c.agent_id, m.conversation_id, m.role, m.occurred_at
    FROM batch JOIN agents_message m ON m.id = batch.message_id JOIN agents_conversation c ON c.id = m.conversation_id
),
memories AS (
    INSERT INTO memory_memory (id, tenant_id, agent_id, conversation_id, kind, message_id, summary_id, role, text,
                               source_message_ids, occurred_at, embedding, embedding_model, scope, fact_key, supersedes_id, created_at,
                               in_hnsw)
    SELECT gen_random_uuid(), tenant_id, agent_id, conversation_id, %(kind)s, message_id, NULL, role, text,
           ARRAY[message_id], occurred_at, vector, %(model)s, '', '', NULL, clock_timestamp(),
           %(hnsw_all)s OR EXISTS (SELECT 1 FROM memory_hnswtenant h WHERE h.tenant_id = sources.tenant_id)
    FROM sources
    ON CONFLICT DO NOTHING
),
noted AS (UPDATE agents_agent SET has_memories = true WHERE NOT has_memories AND id IN (SELECT agent_id FROM sources) RETURNING id),
marked AS (
    UPDATE agents_message m SET token_count = counted.tokens, embedded = true
    FROM {db.recordset("counted", "id uuid, tokens int", "%(counted)s")} WHERE m.id = counted.id
)
SELECT count(*) FROM noted
"""


def _index_messages_sql(ids: list) -> int:
    """`index_pending_messages` in two hand-written statements and the embedding between them; the
    same rows as the ORM lane writes (tests/memory/test_index_writes.py)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_MESSAGES, {"ids": ids})
        rows = cursor.fetchall()
        batch: list[Any] = [WindowMessage(row[1:]) for row in rows]  # Any: as_openai is Message's, typed so
        if not batch:
            return 0
        tenants = {message.id: row[0] for message, row in zip(batch, rows, strict=True)}
        with_text = [(message, text) for message in batch if (text := message_text(message))]
        vectors = embeddings.embed([text for _, text in with_text], tenant=[tenants[message.id] for message, _ in with_text])
        params: dict[str, Any] = {
            "batch": db.json_rows(
                [
                    {"message_id": message.id, "text": text, "vector": vector}
                    for (message, text), vector in zip(with_text, vectors, strict=True)
                ]
            ),
            "kind": MemoryKind.MESSAGE,
            "model": embeddings.embedder().name,
            "hnsw_all": settings.SENTINEL["HNSW"] == "all",
            "counted": db.json_rows([{"id": message.id, "tokens": tokens.count_message(message.as_openai())} for message in batch]),
        }
        cursor.execute(_WRITE_MEMORIES, params)
        if cursor.fetchone()[0]:
            config_cache.changed()  # agents cached with has_memories false: the web sends recall hints now
    metrics.MEMORY_INDEXED.inc(len(with_text))
    return len(batch)


SUMMARY_BATCH = 64
# Most passes find no summary waiting: one read says so, without the ORM or a transaction.
_ANY_SUMMARY_PENDING = (
    "SELECT EXISTS (SELECT 1 FROM memory_summary s WHERE NOT EXISTS (SELECT 1 FROM memory_memory m WHERE m.summary_id = s.id))"
)


def index_pending_summaries(limit: int = SUMMARY_BATCH) -> int:
    """Embed up to `limit` summaries without a memory yet; returns how many it took."""
    with connection.cursor() as cursor:
        cursor.execute(_ANY_SUMMARY_PENDING)
        if not cursor.fetchone()[0]:
            return 0
    with transaction.atomic():
        batch = list(
            Summary.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("conversation")
            .filter(memory__isnull=True)
            .order_by("created_at")[:limit]
        )
        if not batch:
            return 0
        vectors = embeddings.embed([summary.text for summary in batch], tenant=[summary.tenant_id for summary in batch])
        model = embeddings.embedder().name
        Memory.objects.bulk_create(
            [
                Memory(
                    tenant_id=summary.tenant_id,
                    agent_id=summary.conversation.agent_id,
                    conversation_id=summary.conversation_id,
                    kind=MemoryKind.SUMMARY,
                    summary=summary,
                    role="summary",
                    text=summary.text,
                    source_message_ids=summary.source_message_ids,
                    occurred_at=summary.last_at or summary.created_at,  # the span's date: what it remembers
                    embedding=vector,
                    embedding_model=model,
                )
                for summary, vector in zip(batch, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
        note_memories({summary.conversation.agent_id for summary in batch})
    return len(batch)


# Agent.has_memories: set here, in the transaction that writes an agent's memories, and cleared by
# whoever deletes memories (forget_memories_of). No lost update between the two: inserting a memory
# takes a key-share lock on its agent's row (the foreign key) until commit, and forget_memories_of
# locks that row for update before it looks, so it waits for a concurrent indexer and then sees its
# memory; an indexer that comes after sees the flag cleared and sets it again.
def note_memories(agent_ids: set) -> None:
    """These agents have memories: their turns recall from now on."""
    if agent_ids and Agent.objects.filter(id__in=agent_ids, has_memories=False).update(has_memories=True):
        config_cache.changed()  # an update sends no signal


def forget_memories_of(tenant_id, agent_id) -> None:
    """After memories of the agent were deleted (last, inside the same transaction): if none is
    left, its turns stop recalling."""
    Agent.objects.select_for_update().filter(id=agent_id).values_list("id", flat=True).first()
    left = Memory.objects.filter(tenant_id=tenant_id, agent_id=agent_id).exists()
    if not left and Agent.objects.filter(id=agent_id, has_memories=True).update(has_memories=False):
        config_cache.changed()  # an update sends no signal


_none_stale: set[str] = set()  # models this process found every memory embedded by (no second scan)


def reembed_stale(limit: int = 256) -> int:
    """Re-embed up to `limit` memories another model embedded (after SENTINEL_EMBEDDINGS changed):
    until then search leaves them out, as their vectors cannot be compared with the new model's.
    Returns how many were re-embedded. Once a scan finds none, this process does not scan again
    (nothing writes another model's vectors while this one is configured)."""
    model = embeddings.embedder().name
    if model in _none_stale:
        return 0
    with transaction.atomic():
        batch = list(Memory.objects.select_for_update(skip_locked=True).exclude(embedding_model=model).order_by()[:limit])
        if not batch:
            _none_stale.add(model)
            return 0
        vectors = embeddings.embed([memory.text for memory in batch], tenant=[memory.tenant_id for memory in batch])
        for memory, vector in zip(batch, vectors, strict=True):
            memory.embedding, memory.embedding_model = vector, model
        Memory.objects.bulk_update(batch, ["embedding", "embedding_model"])
        # A new vector: a process holding the scope reads it as written since (memory/held_vectors.py).
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE memory_memory SET written_xid = pg_current_xact_id() WHERE id = ANY(%s)", [[memory.id for memory in batch]]
            )
    return len(batch)


def index_pending(limit: int = 256) -> int:
    """Index until nothing is pending; returns how many rows were indexed."""
    done = 0
    while True:
        step = index_pending_summaries() + index_pending_messages(limit)
        done += step
        if step == 0:
            return done
