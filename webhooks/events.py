"""What is told to webhooks: a turn, run, response or batch ended. Receivers of the apps' signals, sent after
the commit that decided each; they write deliveries only for tenants with endpoints (cached)."""

from __future__ import annotations

import logging
from typing import Any

from agents.models import Turn, TurnStatus
from responses.models import Response
from runs.models import RunStatus
from webhooks import outbox, tasks

log = logging.getLogger(__name__)


def on_turn_ended(sender: Any, turn_id: Any, status: str, idempotency_key: str | None = None, **kwargs: Any) -> None:
    """A batch line's turn is told of by its batch's end, not one by one."""
    if (idempotency_key or "").startswith("batch:"):
        return
    tenants = outbox.subscribed_tenants()
    if not tenants:
        return
    turn = Turn.objects.filter(id=turn_id).values("tenant_id", "conversation_id").first()
    if turn is None or turn["tenant_id"] not in tenants:
        return
    tenant_id = turn["tenant_id"]
    kind = {TurnStatus.SUCCEEDED: "completed", TurnStatus.CANCELLED: "cancelled"}.get(status, "failed")
    outbox.emit(tenant_id, f"turn.{kind}", {"id": str(turn_id), "conversation": str(turn["conversation_id"]), "status": status}, tasks.wake)
    response = Response.objects.filter(turn_id=turn_id, store=True).values("id", "cancelled_at").first()
    if response is not None:
        kind = "cancelled" if response["cancelled_at"] else kind
        outbox.emit(tenant_id, f"response.{kind}", {"id": f"resp_{response['id'].hex}"}, tasks.wake)


def on_run_ended(sender: Any, run_id: Any, tenant_id: Any, status: str, **kwargs: Any) -> None:
    """A run's step turns are told of one by one as turns; the run's end is its own event."""
    kind = {RunStatus.SUCCEEDED: "completed", RunStatus.CANCELLED: "cancelled"}.get(status, "failed")
    outbox.emit(tenant_id, f"run.{kind}", {"id": str(run_id), "status": status}, tasks.wake)


def on_batch_ended(sender: Any, batch_id: Any, tenant_id: Any, status: str, **kwargs: Any) -> None:
    outbox.emit(tenant_id, f"batch.{status}", {"id": f"batch_{batch_id.hex}"}, tasks.wake)
