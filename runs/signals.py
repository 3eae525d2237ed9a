"""A step's turn ended: its run's dispatcher is woken (the beat sweep is the backstop if this is lost)."""

from __future__ import annotations

import uuid
from typing import Any

from runs.models import Run
from runs.tasks import enqueue_dispatch


def on_turn_ended(sender: Any, turn_id: Any, status: str, idempotency_key: str | None = None, tenant_id: Any = None, **kwargs: Any) -> None:
    """A step's turn is admitted with the key `run:<run>:<step>:<attempt>` (runs.dispatcher.idempotency_key):
    any other turn is not a step's, and none costs a query. The run is named by the key, so a turn its
    step no longer waits for (timed out, retried, or the run ended) still wakes it: what it spent counts.
    A client may choose any key, so the run must be the turn's tenant's: one query, for step turns only."""
    if not (idempotency_key or "").startswith("run:"):
        return
    try:
        run_id = uuid.UUID(idempotency_key.split(":")[1])  # type: ignore[union-attr]
    except (IndexError, ValueError):
        return  # a client's own key that happens to start with "run:"
    if not Run.objects.filter(id=run_id, tenant_id=tenant_id).exists():
        return  # another tenant's run named in a client's key: not this turn's to wake
    enqueue_dispatch(run_id)
