"""Forking a conversation at a turn (time travel): a new conversation holding its history up to there.

The fork is a conversation of the same agent and tenant, with copies (new ids, the same order) of
every message up to and including the turn; nothing of the original changes. What memory keeps of
those messages comes along, scoped to the fork:

    summaries       a summary every source message of which was copied is copied, re-linked to the
                    copies; one that also covers later messages is not (it would tell the fork what
                    happened after the fork point), and its copied messages count as unconsolidated
                    again, for the Dreamer to summarise within the fork
    long-term       the memories (embeddings) of the copied messages and summaries are copied, with
                    the fork as their conversation and the copies as their sources, so the fork
                    recalls its own past at once, without waiting for the indexer

Recall is agent-wide, and the conversations a fork descends from hold both what it copied and what
was said there after the fork point: a fork's turns leave their memories out (memory/context.py, by
`ancestors`), so the fork answers from its own history only. The lineage lives in the fork's
metadata (`forked_from`), beside what the client put there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from agents.models import Conversation, Message, Turn
from budgets import audit
from memory.models import Memory, MemoryKind, Summary

FORKED_FROM = "forked_from"
MAX_LINEAGE = 100  # ancestors kept (and left out of recall) at most: a fork of a fork of ...


class TurnNotFinished(Exception):
    """A conversation is forked only at a finished turn: a queued or running one has no settled history yet."""

    def __init__(self) -> None:
        super().__init__("This turn has not finished yet; a conversation can be forked at a finished turn only.")


@dataclass(frozen=True)
class Forked:
    conversation: Conversation
    messages: int
    summaries: int
    memories: int


def ancestors(conversation: Any) -> list[uuid.UUID]:
    """The ids of the conversations this one was forked from, nearest last ([] for any other). Read
    from its metadata without a query; anything there that is not a list of ids counts as none."""
    forked = (getattr(conversation, "metadata", None) or {}).get(FORKED_FROM)
    lineage = forked.get("lineage") if isinstance(forked, dict) else None
    if not isinstance(lineage, list):
        return []
    ids = []
    for value in lineage[-MAX_LINEAGE:]:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return ids


def fork(conversation: Conversation, turn: Turn, *, actor: str) -> Forked:
    """A new conversation holding `conversation`'s history up to and including `turn` (one of its
    turns, finished: TurnNotFinished otherwise), in one transaction; audited."""
    if not turn.is_finished:
        raise TurnNotFinished
    with transaction.atomic():
        lineage = [str(ancestor) for ancestor in ancestors(conversation)] + [str(conversation.id)]
        metadata = {
            **(conversation.metadata or {}),
            FORKED_FROM: {"conversation": str(conversation.id), "turn": str(turn.id), "seq": turn.seq, "lineage": lineage[-MAX_LINEAGE:]},
        }
        copy = Conversation.objects.create(
            tenant_id=conversation.tenant_id, agent_id=conversation.agent_id, title=conversation.title, metadata=metadata, last_seq=turn.seq
        )
        originals = list(Message.objects.filter(conversation=conversation, seq__lte=turn.seq).order_by("seq", "index"))
        new_ids = {message.id: uuid.uuid4() for message in originals}
        summaries = _copy_summaries(conversation, copy, new_ids)
        Message.objects.bulk_create(
            [
                Message(
                    id=new_ids[message.id],
                    tenant_id=message.tenant_id,
                    conversation=copy,
                    seq=message.seq,
                    index=message.index,
                    role=message.role,
                    content=message.content,
                    name=message.name,
                    tool_calls=message.tool_calls,
                    tool_call_id=message.tool_call_id,
                    client_id=message.client_id,
                    occurred_at=message.occurred_at,
                    token_count=message.token_count,
                    embedded=message.embedded,
                    summary_id=summaries.get(message.summary_id) if message.summary_id else None,
                )
                for message in originals
            ],
            batch_size=1000,
        )
        memories = _copy_memories(conversation, copy, new_ids, summaries)
        audit.record(
            "conversation.forked",
            actor=actor,
            tenant_id=conversation.tenant_id,
            target=str(copy.id),
            data={"from": str(conversation.id), "at_turn": str(turn.id), "messages": len(originals), "summaries": len(summaries),
                  "memories": memories},
        )  # fmt: skip
    return Forked(conversation=copy, messages=len(originals), summaries=len(summaries), memories=memories)


def _copy_summaries(conversation: Conversation, copy: Conversation, new_ids: dict) -> dict:
    """Copy the summaries that cover copied messages only; {original summary id: copy's id}."""
    copied = {}
    rows = []
    for summary in Summary.objects.filter(conversation=conversation).order_by("first_seq"):
        sources = summary.source_message_ids
        if not sources or any(source not in new_ids for source in sources):
            continue
        copied[summary.id] = uuid.uuid4()
        rows.append(
            Summary(
                id=copied[summary.id],
                tenant_id=summary.tenant_id,
                conversation=copy,
                text=summary.text,
                token_count=summary.token_count,
                source_message_ids=[new_ids[source] for source in sources],
                first_seq=summary.first_seq,
                last_seq=summary.last_seq,
                source_tokens=summary.source_tokens,
                model=summary.model,
            )
        )
    Summary.objects.bulk_create(rows)
    return copied


def _copy_memories(conversation: Conversation, copy: Conversation, new_ids: dict, summaries: dict) -> int:
    """Copy the long-term memories of the copied messages and summaries into the fork; how many."""
    found = Memory.objects.filter(tenant_id=conversation.tenant_id, conversation=conversation)
    rows = []
    for memory in found.filter(kind=MemoryKind.MESSAGE, message_id__in=list(new_ids)).iterator(chunk_size=500):
        rows.append(_memory_copy(memory, copy, new_ids, message_id=new_ids[memory.message_id]))
    for memory in found.filter(kind=MemoryKind.SUMMARY, summary_id__in=list(summaries)).iterator(chunk_size=500):
        rows.append(_memory_copy(memory, copy, new_ids, summary_id=summaries[memory.summary_id]))
    Memory.objects.bulk_create(rows, batch_size=500)
    return len(rows)


def _memory_copy(memory: Memory, copy: Conversation, new_ids: dict, **source: Any) -> Memory:
    return Memory(
        tenant_id=memory.tenant_id,
        agent_id=memory.agent_id,
        conversation=copy,
        kind=memory.kind,
        role=memory.role,
        text=memory.text,
        source_message_ids=[new_ids.get(mid, mid) for mid in memory.source_message_ids],
        occurred_at=memory.occurred_at,
        embedding=memory.embedding,
        embedding_model=memory.embedding_model,
        **source,
    )
