"""Re-driving dead letters: the turn goes back to the queue. Its attempt count goes on (attempts
number its event log), so it gets one more attempt before the Supervisor gives up again."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from agents.models import DeadLetter, Turn, TurnStatus
from agents.turns import AgentState
from budgets import audit


def redrive(letter: DeadLetter, *, actor: str) -> bool:
    """Queue the dead turn again (the caller enqueues it after this returns). False if not dead now."""
    with transaction.atomic():
        if not DeadLetter.objects.filter(id=letter.id, redriven_at__isnull=True).update(redriven_at=timezone.now()):
            return False
        if not Turn.objects.filter(id=letter.turn_id, status=TurnStatus.FAILED).update(
            status=TurnStatus.QUEUED, agent_state=AgentState.IDLE, error=None, finished_at=None
        ):
            transaction.set_rollback(True)
            return False
        audit.record("turn.redriven", actor=actor, tenant_id=letter.tenant_id, target=str(letter.turn_id))
    return True
