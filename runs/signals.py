"""A step's turn ended: its run's dispatcher is woken (the beat sweep is the backstop if this is lost)."""

from __future__ import annotations

import uuid
from typing import Any

from runs.tasks import enqueue_dispatch


def on_turn_ended(sender: Any, turn_id: Any, status: str, idempotency_key: str | None = None, **kwargs: Any) -> None:
    """A step's turn is admitted with the key `run:<run>:<step>:<attempt>` (runs.dispatcher.idempotency_key):
    any other turn is not a step's, and none costs a query. The run is named by the key, so a turn its
    step no longer waits for (timed out, retried, or the run ended) still wakes it: what it spent counts."""
    if not (idempotency_key or "").startswith("run:"):
        return
    try:
        run_id = uuid.UUID(idempotency_key.split(":")[1])  # type: ignore[union-attr]
    except (IndexError, ValueError):
        return  # a client's own key that happens to start with "run:"
    enqueue_dispatch(run_id)
