"""Memory as it was when a turn ran: the view context assembly reads through when a turn is replayed.

A turn's context depends on what the store held at that moment, and the store moves on: the turn's
own reply is written, the indexer embeds later messages (of this and of the agent's other
conversations), the Dreamer writes summaries. Replaying (agents/replay.py) hands `assemble` an
`AsOf`, which hides exactly those: the messages written at the turn's own position after its request
was recorded (its reply), and the summaries and memories created after it. Rows the turn's recorded
context names are visible whatever their timestamps say (clocks of the machines that wrote them may
disagree by a little). Without an `AsOf` (every real turn) nothing is filtered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q, QuerySet


@dataclass(frozen=True)
class AsOf:
    """What a turn saw: the store at `at`, without `hidden_message_ids`, with the recorded rows."""

    at: datetime
    hidden_message_ids: frozenset = field(default_factory=frozenset)
    known_summary_ids: frozenset = field(default_factory=frozenset)
    known_memory_ids: frozenset = field(default_factory=frozenset)

    def messages(self, queryset: QuerySet) -> QuerySet:
        return queryset.exclude(id__in=self.hidden_message_ids) if self.hidden_message_ids else queryset

    def summaries(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(Q(created_at__lte=self.at) | Q(id__in=self.known_summary_ids))

    def memories(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(Q(created_at__lte=self.at) | Q(id__in=self.known_memory_ids))

    def unconsolidated(self) -> Q:
        """Messages not consolidated then: none yet, or only by a summary written since."""
        return Q(summary__isnull=True) | Q(summary__created_at__gt=self.at)
