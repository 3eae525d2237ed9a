"""Shared memory: conversations (of any agents of one tenant) that read and write one memory scope.

A conversation joins a scope through its metadata (`{"memory_scope": "<scope>"}`, set by whoever
creates it: a run's dispatcher for the steps of a `shared_memory` run). What was said in it is
remembered into the scope (`remember`: its messages embedded at once into long-term memory, tagged
with the scope, so the next conversation of the scope recalls them without waiting for the indexer),
and every turn of a scoped conversation recalls the scope's memories of the *other* conversations
(memory/context.py: `shared` pieces, nearest to the turn's query first). Reading a conversation's
scope costs nothing (the turn's claim loads the conversation); everything else is filtered on the
tenant first, so a scope named by another tenant's conversation finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from pgvector.django import CosineDistance

from agents.models import Message
from memory import embeddings, tokens
from memory.asof import AsOf
from memory.indexing import message_text, note_memories
from memory.models import Memory, MemoryKind

SCOPE_KEY = "memory_scope"
MAX_RECALLED = 50  # shared memories one turn may be given at most (a run has at most 100 steps)
MAX_REMEMBERED = 16  # of one turn, its newest messages (a step given a long conversation as input adds its end)


def scope_of(conversation: Any) -> str:
    """The conversation's shared memory scope, or "" (no query: the metadata is on the row)."""
    scope = (getattr(conversation, "metadata", None) or {}).get(SCOPE_KEY)
    return scope if isinstance(scope, str) else ""


def remember(tenant_id: Any, scope: str, message_ids: Iterable[Any]) -> int:
    """Put these messages into the scope's memory now (embedded, if the indexer has not yet), so a
    turn that starts next recalls them. Idempotent: a message is one memory, tagged once."""
    with transaction.atomic():
        # Locked as the indexer locks them (it skips locked rows): otherwise each could wait on the
        # other, one for a message's row, the other for the memory being inserted for it.
        locked = list(
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .filter(id__in=list(message_ids), tenant_id=tenant_id)
            .order_by("id")
        )
        ids = [message.id for message in locked]
        indexed = set(Memory.objects.filter(tenant_id=tenant_id, message_id__in=ids).values_list("message_id", flat=True))
        fresh = [(message, text) for message in locked if message.id not in indexed and (text := message_text(message))]
        if fresh:
            vectors = embeddings.embed([text for _, text in fresh], tenant=tenant_id)
            model = embeddings.embedder().name
            Memory.objects.bulk_create(
                [
                    Memory(
                        tenant_id=tenant_id,
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
                        scope=scope,
                    )
                    for (message, text), vector in zip(fresh, vectors, strict=True)
                ]
            )
            note_memories({message.conversation.agent_id for message, _ in fresh})
        Memory.objects.filter(tenant_id=tenant_id, message_id__in=ids).exclude(scope=scope).update(scope=scope)
        unindexed = [message for message in locked if not message.embedded]
        for message in unindexed:  # what the indexer would do for them, done: it has nothing left to do
            message.token_count, message.embedded = tokens.count_message(message.as_openai()), True
        Message.objects.bulk_update(unindexed, ["token_count", "embedded"])
    return len(locked)


@dataclass(frozen=True)
class SharedHit:
    memory: Memory
    score: float | None  # cosine similarity to the query; None when recalled by recency


def recall(
    tenant_id: Any,
    scope: str,
    *,
    vector: list[float] | None,
    exclude_conversation_id: Any,
    k: int = MAX_RECALLED,
    as_of: AsOf | None = None,
) -> list[SharedHit]:
    """The scope's memories from the other conversations: nearest to `vector` first (an exact scan:
    a scope is small), or newest first without one. Of the configured embedding model only; `as_of`:
    those there were when a replayed turn ran (memory/asof.py)."""
    queryset = (
        Memory.objects.filter(tenant_id=tenant_id, scope=scope, embedding_model=embeddings.model_name())
        .exclude(conversation_id=exclude_conversation_id)
        .select_related("agent")
        .defer("embedding")
    )
    if as_of is not None:
        queryset = as_of.memories(queryset)
    if vector is None:
        return [SharedHit(memory, None) for memory in queryset.order_by("-occurred_at")[:k]]
    rows = queryset.annotate(distance=CosineDistance("embedding", vector)).order_by("distance")[:k]
    return [SharedHit(memory, round(1.0 - float(memory.distance), 4)) for memory in rows]


def contents(tenant_id: Any, scope: str, limit: int = 100) -> tuple[int, list[dict]]:
    """(how many memories the scope holds, the oldest `limit` of them) for showing it: whose, what,
    from which conversation (its metadata says which step of a run it was)."""
    queryset = Memory.objects.filter(tenant_id=tenant_id, scope=scope)
    count = queryset.count()
    rows = queryset.select_related("agent", "conversation").defer("embedding").order_by("occurred_at", "created_at")[:limit]
    items = [
        {
            "memory": str(memory.id),
            "message": str(memory.message_id) if memory.message_id else None,
            "conversation": str(memory.conversation_id),
            "conversation_metadata": memory.conversation.metadata,
            "agent": memory.agent.name,
            "role": memory.role,
            "text": memory.text,
            "occurred_at": memory.occurred_at.isoformat(),
        }
        for memory in rows
    ]
    return count, items


def remember_turn(tenant_id: Any, scope: str, turn_id: Any) -> int:
    """`remember` what a turn was given and answered (its newest MAX_REMEMBERED messages)."""
    newest = Message.objects.filter(tenant_id=tenant_id, turn_id=turn_id).order_by("-seq", "-index").values_list("id", flat=True)
    return remember(tenant_id, scope, list(newest[:MAX_REMEMBERED]))
