"""What the batches app tells and hears: a batch ended (for webhooks); a batch line's turn ended."""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

# kwargs: batch_id (UUID), tenant_id, status (completed | failed | expired | cancelled). Sent after the commit.
batch_ended = Signal()


def on_turn_ended(sender: Any, turn_id: Any, status: str, idempotency_key: str | None = None, **kwargs: Any) -> None:
    """A batch line's turn carries its batch in its Idempotency-Key: any other turn costs nothing."""
    from batches import processing, tasks  # the app registry is ready only after this module loads

    batch_id = processing.batch_of(idempotency_key)
    if batch_id is not None:
        tasks.wake(batch_id)
