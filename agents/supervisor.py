"""The Supervisor (seed 000 section 6.2.2.3): finds stuck turns and gets them moving, or gives up.

A running turn whose heartbeat is older than ZOMBIE_SECONDS is a zombie (its worker died or hung).
Taking it back is a conditional update from running to queued on the attempt it was seen with: the
zombie's own late writes are fenced on (attempt, running) and fail from then on. It is re-enqueued
with exponential backoff until MAX_ATTEMPTS, then dead-lettered with the reason. Turns committed
but never enqueued (a crash between commit and publish) are found by age and enqueued; running a
turn twice is harmless, so a duplicate enqueue is too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents import approvals, control, outcomes
from agents.models import UNFINISHED, EventKind, Stop, Turn, TurnStatus
from agents.recorder import record_outside_attempt
from agents.turns import AgentState
from budgets import audit

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    requeued: list[tuple[str, int]] = field(default_factory=list)  # (turn id, delay seconds)
    dead: list[str] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # interrupted by a worker's shutdown, or denied by an expired approval


def backoff_seconds(attempt: int) -> int:
    return min(settings.SENTINEL["RETRY_BACKOFF_MAX"], settings.SENTINEL["RETRY_BACKOFF_BASE"] * 2 ** max(0, attempt - 1))


def _event(turn: Turn, kind: EventKind, payload: dict) -> None:
    """Supervisor events: lane 0, with the attempt they concern in the payload."""
    record_outside_attempt(turn, kind, {"attempt": turn.attempt, **payload})


def dead_letter(turn: Turn, reason: str, error: dict | None) -> bool:
    """Fail a turn for good and keep it re-drivable. False if it had already moved on."""
    return outcomes.give_up(turn, reason, error, write_events=lambda: _event(turn, EventKind.DEAD_LETTERED, {"reason": reason}))


def resume_shut_down(limit: int = 500) -> list[str]:
    """Queue again the turns a worker's graceful shutdown interrupted (agents/tasks.py): they
    continue from their persisted state on whichever worker claims them."""
    resumed = []
    shut_down = Turn.objects.filter(status=TurnStatus.INTERRUPTED, stop_requested=Stop.SHUTDOWN).values_list("id", "tenant_id")
    for turn_id, tenant_id in shut_down[:limit]:
        try:
            control.resume(turn_id, tenant_id=tenant_id, actor=audit.SUPERVISOR)
        except control.NotResumable:
            continue  # resumed by another sweep meanwhile
        resumed.append(str(turn_id))
    return resumed


def sweep(now=None) -> Sweep:
    now = now or timezone.now()
    conf = settings.SENTINEL
    result = Sweep()
    cutoff = now - timedelta(seconds=conf["ZOMBIE_SECONDS"])
    for turn in Turn.objects.filter(status=TurnStatus.RUNNING, heartbeat_at__lt=cutoff).select_related("agent")[:500]:
        if turn.attempt >= conf["MAX_ATTEMPTS"]:
            if dead_letter(turn, "heartbeat_lost", {"message": "The worker running this turn stopped responding."}):
                result.dead.append(str(turn.id))
                following = outcomes.next_queued(turn)  # it waited for this one: it can run now
                if following is not None:
                    result.unsent.append(str(following.id))
            continue
        with transaction.atomic():
            taken = Turn.objects.filter(id=turn.id, attempt=turn.attempt, status=TurnStatus.RUNNING, heartbeat_at__lt=cutoff).update(
                status=TurnStatus.QUEUED, agent_state=AgentState.IDLE, heartbeat_at=now
            )
            if taken:
                _event(
                    turn,
                    EventKind.ZOMBIE_REQUEUED,
                    {"heartbeat_at": turn.heartbeat_at.isoformat() if turn.heartbeat_at else None, "attempt": turn.attempt},
                )
                audit.record(
                    "turn.requeued", actor=audit.SUPERVISOR, tenant_id=turn.tenant_id, target=str(turn.id), data={"attempt": turn.attempt}
                )
        if taken:
            result.requeued.append((str(turn.id), backoff_seconds(turn.attempt)))
            log.warning("requeued a zombie turn", extra={"turn": str(turn.id), "attempt": turn.attempt})
    result.resumed = [str(turn_id) for turn_id in approvals.expire_due(now)] + resume_shut_down()
    # Never enqueued: fresh turns older than UNSENT_SECONDS, or requeued ones whose delayed task
    # should long have started. Either way only the head of a conversation's queue can run.
    unsent_cutoff = now - timedelta(seconds=conf["UNSENT_SECONDS"])
    requeued_cutoff = unsent_cutoff - timedelta(seconds=conf["RETRY_BACKOFF_MAX"])
    queued = (
        Turn.objects.filter(status=TurnStatus.QUEUED)
        .filter(Q(attempt=0, created_at__lt=unsent_cutoff) | Q(attempt__gt=0, heartbeat_at__lt=requeued_cutoff))
        .order_by("conversation_id", "seq")
    )
    seen_conversations = set()
    for turn in queued[:1000]:
        if turn.conversation_id in seen_conversations:
            continue  # only the head of each conversation's queue can run
        seen_conversations.add(turn.conversation_id)
        if not Turn.objects.filter(conversation_id=turn.conversation_id, seq__lt=turn.seq, status__in=UNFINISHED).exists():
            result.unsent.append(str(turn.id))
    return result
