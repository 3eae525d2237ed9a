"""What the batches app tells: a batch ended (webhooks listen)."""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: batch_id (UUID), tenant_id, status (completed | failed | expired | cancelled). Sent after the commit.
batch_ended = Signal()
