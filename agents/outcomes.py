"""How a turn fails: the one place, whoever fails it and why.

A worker fails the turn it runs (the provider failed for good, or Sentinel itself crashed); the
Supervisor gives up on a turn whose attempts ran out. Both end the same way, in one transaction:
the turn marked failed (a conditional update, fenced so only the party that owns the turn can end
it), its held budget released, a dead letter when it should stay re-drivable, its events, an audit
entry, and the next queued turn of the conversation found; then, best effort, the error on the
turn's live stream. Publishing is best effort everywhere (`announce`): PostgreSQL holds the record,
so a Redis blip never fails a turn or aborts a sweep halfway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents import streams
from agents.models import DeadLetter, Turn, TurnStatus
from budgets import audit, spend
from budgets.models import Reservation
from sentinel_site import errors, metrics

log = logging.getLogger(__name__)


class Fenced(Exception):
    """The turn moved on (another attempt owns it, or it already ended): nothing was written."""


class Refused(Exception):
    """Sentinel's own rules end the call before the provider sees it (the budget ran out, the model
    has no price, the input no longer fits the context budget): a failure of its own type, recorded
    as the domain error it is, never passed off as a provider's (a ProviderError)."""

    retryable = False  # the same request meets the same rule: no retry, no dead letter

    def __init__(self, cause: Exception) -> None:
        self.error = errors.turn_error(cause)  # the status, type and code sentinel_site/errors.py gives it
        super().__init__(self.error["message"])
        self.code = self.error["code"]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.error)


@dataclass(frozen=True)
class Failure:
    """Why a turn failed, as its client sees it, and what is kept of it."""

    error: dict[str, Any]  # {"status", "type", "code", "message"}
    audit_action: str  # turn.failed | turn.dead_lettered
    actor: str
    dead_letter: str | None = None  # the reason, when the turn stays re-drivable
    attempt: int = 0


def announce(turn_id: Any, events: list[tuple[str, dict]]) -> None:
    """Publish to the turn's live stream, best effort: PostgreSQL already holds the record, so a
    Redis blip must not fail a turn (a reader of the lost stream falls back to the turn's log)."""
    try:
        streams.publish_many(turn_id, events)
    except redis.RedisError as error:
        metrics.STREAM_PUBLISH_FAILURES.inc()
        log.warning("could not publish %d event(s) to the turn's stream: %s", len(events), type(error).__name__)


def fail(
    turn: Turn,
    fence: QuerySet[Turn],
    failure: Failure,
    *,
    agent_state: str,
    write_events: Callable[[], object],
    reservation: Reservation | None = None,
) -> Turn | None:
    """End `turn` as failed if `fence` (the turn's row, filtered on what its owner saw) still holds;
    Fenced otherwise. Returns the conversation's next queued turn, for the caller to enqueue."""
    now = timezone.now()
    with transaction.atomic():
        ended = fence.update(
            status=TurnStatus.FAILED,
            finished_at=now,
            heartbeat_at=now,
            error=failure.error,
            latency_ms=max(0, int((now - turn.created_at) / timedelta(milliseconds=1))),
            agent_state=agent_state,
        )
        if not ended:
            raise Fenced
        held = [reservation] if reservation is not None else Reservation.objects.filter(turn_id=turn.id, status=Reservation.Status.HELD)
        for each in held:
            spend.release(each.id)
        if failure.dead_letter:
            DeadLetter.objects.update_or_create(
                turn_id=turn.id,
                defaults={
                    "tenant_id": turn.tenant_id,
                    "reason": failure.dead_letter,
                    "attempts": failure.attempt,
                    "last_error": failure.error,
                    "redriven_at": None,
                },
            )
        write_events()
        audit.record(
            failure.audit_action,
            actor=failure.actor,
            tenant_id=turn.tenant_id,
            target=str(turn.id),
            data={"agent": turn.agent.name, "code": failure.error.get("code"), "status": failure.error.get("status"),
                  "attempt": failure.attempt},
        )  # fmt: skip
        following = next_queued(turn)
    announce(turn.id, [("error", failure.error)])
    if failure.dead_letter:
        metrics.DEAD_LETTERED.labels(failure.dead_letter).inc()
    metrics.TURNS.labels("failed").inc()
    metrics.TURN_DURATION.observe((now - turn.created_at).total_seconds())
    log.warning("turn failed", extra={"turn": str(turn.id), "code": failure.error.get("code"), "status": failure.error.get("status")})
    return following


def next_queued(turn: Turn) -> Turn | None:
    """The conversation's next turn waiting for this one to end."""
    return Turn.objects.filter(conversation_id=turn.conversation_id, seq__gt=turn.seq, status=TurnStatus.QUEUED).order_by("seq").first()


def actor_of(turn: Turn) -> str:
    return audit.actor_for_key(turn.api_key if turn.api_key_id else None)
