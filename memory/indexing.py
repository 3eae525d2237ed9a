"""Filling long-term memory: count tokens and embed messages and summaries, in batches.

Runs in a Celery task, never in the request path. Concurrent indexers split the work (rows are
locked with SKIP LOCKED) and the one-to-one links make a second write of the same memory a no-op.
"""

from __future__ import annotations

from django.db import transaction

from agents.models import Message
from memory import embeddings, tokens
from memory.models import Memory, MemoryKind, Summary
from sentinel_site import metrics


def _message_text(message: Message) -> str:
    text = message.content or ""
    for call in message.tool_calls or []:
        function = call.get("function", {})
        text += f"\n[tool call {function.get('name', '')}({function.get('arguments', '')})]"
    return text.strip()


def index_pending_messages(limit: int = 256) -> int:
    with transaction.atomic():
        batch = list(
            Message.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("conversation")
            .filter(embedded=False)
            .order_by("created_at")[:limit]
        )
        if not batch:
            return 0
        with_text = [(message, _message_text(message)) for message in batch]
        with_text = [(message, text) for message, text in with_text if text]
        vectors = embeddings.embed([text for _, text in with_text])
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
                )
                for (message, text), vector in zip(with_text, vectors, strict=True)
            ],
            ignore_conflicts=True,
        )
        for message in batch:
            message.token_count = tokens.count_message(message.as_openai())
            message.embedded = True
        Message.objects.bulk_update(batch, ["token_count", "embedded"])
    metrics.MEMORY_INDEXED.inc(len(with_text))
    return len(batch)


def index_pending_summaries(limit: int = 64) -> int:
    with transaction.atomic():
        batch = list(
            Summary.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("conversation")
            .filter(memory__isnull=True)
            .order_by("created_at")[:limit]
        )
        if not batch:
            return 0
        vectors = embeddings.embed([summary.text for summary in batch])
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
                    occurred_at=summary.created_at,
                    embedding=vector,
                )
                for summary, vector in zip(batch, vectors, strict=True)
            ],
            ignore_conflicts=True,
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
