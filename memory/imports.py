"""How far a history import got: the messages one import stored, and how many reached long-term memory.

An import (POST /v1/conversations/{id}/messages) writes its messages into the history in one
transaction, under one new `seq` of the conversation, so they are readable and in the next turn's
window at once. The long part is embedding them: the indexer does it in the background, a fair
share per batch (memory/indexing.py), and marks each message `embedded`. An import is therefore
named by its conversation and seq, and its progress is counted from its messages; it needs no row
of its own, and it cannot disagree with what the indexer did. A seq that has a turn is a turn's,
not an import.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q

from agents.models import Message, Turn

INDEXING, COMPLETED = "indexing", "completed"


@dataclass(frozen=True)
class ImportProgress:
    """One import: `processed` of its `total` messages are in long-term memory."""

    conversation_id: uuid.UUID
    seq: int
    total: int
    processed: int

    @property
    def state(self) -> str:
        return COMPLETED if self.processed >= self.total else INDEXING

    def as_dict(self) -> dict:
        return {
            "object": "conversation.import",
            "id": self.seq,
            "conversation": str(self.conversation_id),
            "state": self.state,
            "total": self.total,
            "processed": self.processed,
            "url": f"/v1/conversations/{self.conversation_id}/imports/{self.seq}",
        }


def _imports(conversation_id: uuid.UUID):
    turn_seq = Turn.objects.filter(conversation_id=OuterRef("conversation_id"), seq=OuterRef("seq"))
    return (
        Message.objects.filter(conversation_id=conversation_id)
        .exclude(Exists(turn_seq))
        .values("seq")
        .annotate(total=Count("id"), processed=Count("id", filter=Q(embedded=True)))
    )


def progress(conversation_id: uuid.UUID, seq: int) -> ImportProgress | None:
    """The import stored under `seq`, or None when that seq is no import of this conversation."""
    row = _imports(conversation_id).filter(seq=seq).order_by("seq").first()
    return ImportProgress(conversation_id, row["seq"], row["total"], row["processed"]) if row else None


def recent(conversation_id: uuid.UUID, limit: int = 10) -> list[ImportProgress]:
    """The conversation's latest imports, newest first (the admin shows them on its page)."""
    rows = _imports(conversation_id).order_by("-seq")[:limit]
    return [ImportProgress(conversation_id, row["seq"], row["total"], row["processed"]) for row in rows]
