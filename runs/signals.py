"""A step's turn ended: its run's dispatcher is woken (the beat sweep is the backstop if this is lost)."""

from __future__ import annotations

from typing import Any

from runs.models import Step
from runs.tasks import enqueue_dispatch


def on_turn_ended(sender: Any, turn_id: Any, status: str, idempotency_key: str | None = None, **kwargs: Any) -> None:
    """A step's turn is admitted with the key `run:<run>:<step>:<attempt>`: any other turn is not a
    step's, and costs no query; a step's asks one indexed question for its run."""
    if not (idempotency_key or "").startswith("run:"):
        return
    run_id = Step.objects.filter(turn_id=turn_id).values_list("run_id", flat=True).first()
    if run_id is not None:
        enqueue_dispatch(run_id)
