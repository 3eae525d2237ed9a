"""How a turn ends: the one place, whoever ends it and why.

A worker succeeds the turn it runs (`succeed`: the reply, the outcome, its settlement and audit in
one commit), stops it when a cancel or interrupt reaches it (`stop`: the partial answer kept, what
was spent settled), or fails it (`fail`: the provider failed for good; `crash`: Sentinel itself did); the
Supervisor gives up on a turn whose attempts ran out (`give_up`). Every failure ends the same way
(`end_failed`), in one transaction:
the turn marked failed (a conditional update, fenced so only the party that owns the turn can end
it), its held budget released, a dead letter when it should stay re-drivable, its events, an audit
entry, and the next queued turn of the conversation found; then, best effort, the error on the
turn's live stream. Publishing is best effort everywhere (`announce`): PostgreSQL holds the record,
so a Redis blip never fails a turn or aborts a sweep halfway.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from agents import finishing, openai_format, providers, signals, stops, streams
from agents.models import UNFINISHED, DeadLetter, EventKind, Message, Stop, Turn, TurnEventRecord, TurnStatus
from agents.recorder import LostClaim, Recorder, fenced, state_events
from agents.streams import StreamKind
from agents.turns import Trigger
from budgets import audit, spend
from budgets.models import Reservation
from memory import tokens
from sentinel_site import errors, metrics

if TYPE_CHECKING:
    from agents.runner import Stopped

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


@dataclass(frozen=True)
class Request:
    """What a turn's provider call is made of: its body, the context's size, where the reply goes."""

    body: dict[str, Any]
    prompt_tokens: int
    reply_index: int


def announce(turn_id: Any, events: list[tuple[str, dict]], also: Callable[[Any], None] | None = None) -> None:
    """Publish to the turn's live stream, best effort: PostgreSQL already holds the record, so a
    Redis blip must not fail a turn (a reader of the lost stream falls back to the turn's log)."""
    try:
        streams.publish_many(turn_id, events, also)
    except redis.RedisError as error:
        metrics.STREAM_PUBLISH_FAILURES.inc()
        log.warning("could not publish %d event(s) to the turn's stream: %s", len(events), type(error).__name__)


def end_failed(
    turn: Turn,
    fence: QuerySet[Turn],
    failure: Failure,
    *,
    agent_state: str,
    write_events: Callable[[], object],
    reservation: Reservation | None = None,
) -> uuid.UUID | None:
    """End `turn` as failed if `fence` (the turn's row, filtered on what its owner saw) still holds;
    Fenced otherwise. Returns the id of the conversation's next queued turn, for the caller to enqueue."""
    now = timezone.now()
    with transaction.atomic():
        ended = fence.update(
            status=TurnStatus.FAILED,
            finished_at=now,
            heartbeat_at=now,
            error=failure.error,
            latency_ms=_ms_since(turn.created_at, now),
            agent_state=agent_state,
        )
        if not ended:
            raise Fenced
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
        # The budget windows last, after the audit head, in the order the group commit takes them
        # (agents/finishing.py): the other order deadlocked against it under load.
        held = [reservation] if reservation is not None else Reservation.objects.filter(turn_id=turn.id, status=Reservation.Status.HELD)
        for each in held:
            spend.release(each.id)
    announce(turn.id, [(StreamKind.ERROR, failure.error)])
    tell_ended(turn, TurnStatus.FAILED)
    if failure.dead_letter:
        metrics.DEAD_LETTERED.labels(failure.dead_letter).inc()
    metrics.TURNS.labels("failed").inc()
    metrics.TURN_DURATION.observe((now - turn.created_at).total_seconds())
    log.warning("turn failed", extra={"turn": str(turn.id), "code": failure.error.get("code"), "status": failure.error.get("status")})
    return following.id if following else None


def next_queued(turn: Turn) -> Turn | None:
    """The conversation's next turn waiting for this one to end: the first queued (a resumed turn
    may come before the one that ended)."""
    return Turn.objects.filter(conversation_id=turn.conversation_id, status=TurnStatus.QUEUED).exclude(id=turn.id).order_by("seq").first()


def actor_of(turn: Turn) -> str:
    return audit.actor_for_key(turn.api_key if turn.api_key_id else None)


def succeed(
    recorder: Recorder, result: providers.Completion, *, prompt_estimate: int, config, body: dict, reply_index: int
) -> uuid.UUID | None:
    """End the turn with its reply; the id of the conversation's next queued turn, if one waited."""
    turn = recorder.turn
    wants_tools = bool(result.tool_calls)
    prompt_tokens, completion_tokens = result.usage(prompt_estimate)
    finish_reason = "tool_calls" if wants_tools else result.finish_reason
    actual = spend.cost(turn.tenant_id, body["model"], config.endpoint, prompt_tokens, completion_tokens)
    recorder.record(
        EventKind.PROVIDER_RESPONSE,
        {
            "content": result.content,
            "tool_calls": result.tool_calls,
            "finish_reason": finish_reason,
            "model": result.model,
            "usage": openai_format.usage(prompt_tokens, completion_tokens),
            "usage_reported": result.prompt_tokens is not None,
            "latency_ms": result.latency_ms,
            "first_token_ms": result.first_token_ms,
        },
    )
    recorder.move(Trigger.LLM_RESPONSE, wants_tools=wants_tools)
    if wants_tools:
        # Tools run on the client (OpenAI's contract): the call is handed back in the answer, and
        # the client's `tool` messages arrive as the conversation's next turn.
        recorder.move(Trigger.TOOL_RESULT)
    recorder.move(Trigger.COMPLETE)
    now = timezone.now()
    settlement = {"model": body["model"], "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "actual": actual}
    written, following = _finish(recorder, result, now, reply_index, finish_reason, settlement)
    response = openai_format.completion(
        turn_id=turn.id,
        created=int(turn.created_at.timestamp()),
        model=turn.agent.name,
        content=result.content,
        tool_calls=result.tool_calls,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    announce(turn.id, [*state_events(written), (StreamKind.DONE, {"response": response})])  # one round trip
    tell_ended(turn, TurnStatus.SUCCEEDED)
    metrics.TURNS.labels("succeeded").inc()
    metrics.TURN_DURATION.observe((now - turn.created_at).total_seconds())
    metrics.LLM_TOKENS.labels(config.endpoint, body["model"], "input").inc(prompt_tokens)
    metrics.LLM_TOKENS.labels(config.endpoint, body["model"], "output").inc(completion_tokens)
    metrics.LLM_COST.labels(config.endpoint, body["model"]).inc(float(actual))
    log.info("turn succeeded", extra={"turn": str(turn.id), "latency_ms": _ms_since(turn.created_at, now)})
    return following


def _audit_succeeded(recorder: Recorder, settlement: dict) -> dict[str, Any]:
    turn = recorder.turn
    return {
        "action": "turn.succeeded",
        "actor": actor_of(turn),
        "tenant_id": turn.tenant_id,
        "target": str(turn.id),
        "data": {
            "agent": turn.agent.name,
            "model": settlement["model"],
            "tokens": settlement["prompt_tokens"] + settlement["completion_tokens"],
            "cost": str(settlement["actual"]),
            "attempt": recorder.attempt,
        },
    }


def _finish(
    recorder: Recorder, result: providers.Completion, now, reply_index: int, finish_reason: str, settlement: dict
) -> tuple[list[TurnEventRecord], uuid.UUID | None]:
    """The reply, the turn's outcome, its events, its settlement and its audit entry, as one Finish
    committed with the other turns ending at the same time (agents/finishing.py)."""
    turn = recorder.turn
    reply_id = uuid.uuid4()
    recorder.record(EventKind.COMPLETED, {"message_id": str(reply_id), "cost": str(settlement["actual"])})
    events, recorder.pending = recorder.pending, []
    reservation = recorder.reservation
    done = finishing.finish(
        finishing.Finish(
            turn_id=turn.id,
            attempt=recorder.attempt,
            tenant_id=turn.tenant_id,
            conversation_id=turn.conversation_id,
            seq=turn.seq,
            at=now,
            reply_id=reply_id,
            reply_index=reply_index,
            content=result.content,
            tool_calls=result.tool_calls or None,
            outcome={
                "agent_state": recorder.state.value,
                "model": result.model,
                "prompt_tokens": settlement["prompt_tokens"],
                "completion_tokens": settlement["completion_tokens"],
                "latency_ms": _ms_since(turn.created_at, now),
                "provider_latency_ms": result.latency_ms,
                "first_token_ms": result.first_token_ms,
                "finish_reason": finish_reason,
                "cost": settlement["actual"],
            },
            events=events,
            settlement=finishing.Settlement(reservation.id, **settlement) if reservation is not None else None,
            audit_entry=_audit_succeeded(recorder, settlement),
        )
    )
    if not done.won:
        # Another attempt owns the turn now, and this answer is discarded; its cost was charged all
        # the same (the provider was paid), in the same commit.
        raise LostClaim
    return events, done.following


def stop(recorder: Recorder, stopped: Stopped, request: Request, *, config) -> uuid.UUID | None:
    """End a running turn as its cancel or interrupt asked: what was streamed kept as its partial
    answer (a rollback removes the turn's messages instead), the tokens it used settled, and, for an
    interrupt, the state a resume continues from (the request it was making, where the reply goes)."""
    turn = recorder.turn
    interrupted = stopped.kind in (Stop.INTERRUPT, Stop.SHUTDOWN)
    status = TurnStatus.INTERRUPTED if interrupted else TurnStatus.CANCELLED
    finish_reason = "interrupted" if interrupted else "cancelled"
    prompt_tokens = request.prompt_tokens if stopped.called else 0
    completion_tokens = tokens.count(stopped.partial) if stopped.partial else 0
    model = request.body["model"]
    actual = spend.cost(turn.tenant_id, model, config.endpoint, prompt_tokens, completion_tokens) if stopped.called else Decimal(0)
    keep = bool(stopped.partial) and stopped.kind != Stop.ROLLBACK
    now = timezone.now()
    with transaction.atomic():
        message = None
        if keep:
            message = Message.objects.create(
                tenant_id=turn.tenant_id, conversation_id=turn.conversation_id, turn=turn, seq=turn.seq, index=request.reply_index,
                role="assistant", content=stopped.partial,
            )  # fmt: skip
        updated = fenced(recorder).update(
            status=status, agent_state=recorder.state, finished_at=now, heartbeat_at=now, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost=F("cost") + actual, finish_reason=finish_reason,
            latency_ms=_ms_since(turn.created_at, now), output=message, error=None,
            # A shutdown's interrupt stays marked: the Supervisor resumes it when a worker is back.
            stop_requested=Stop.SHUTDOWN if stopped.kind == Stop.SHUTDOWN else "",
        )  # fmt: skip
        if not updated:
            raise LostClaim  # rolls back the partial answer too
        if stopped.kind == Stop.ROLLBACK:
            Message.delete_locked(Message.objects.filter(turn_id=turn.id))
        payload: dict[str, Any] = {
            "stop": stopped.kind,
            "partial": stopped.partial,
            "message_id": str(message.id) if message else None,
            "cost": str(actual),
            "agent_state": recorder.state.value,
        }
        if interrupted:
            payload["resume"] = {"body": request.body, "prompt_tokens": request.prompt_tokens, "reply_index": request.reply_index}
        recorder.record(EventKind.INTERRUPTED if interrupted else EventKind.CANCELLED, payload)
        written = recorder.flush()
        audit.record(
            f"turn.{status}",
            actor=actor_of(turn),
            tenant_id=turn.tenant_id,
            target=str(turn.id),
            data={"agent": turn.agent.name, "stop": stopped.kind, "cost": str(actual), "attempt": recorder.attempt},
        )
        following = next_queued(turn)
        # The windows last, after the audit head (the group commit's order: see end_failed).
        _settle_stopped(recorder, stopped, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, actual=actual)
    response = openai_format.completion(
        turn_id=turn.id, created=int(turn.created_at.timestamp()), model=turn.agent.name, content=stopped.partial if keep else "",
        tool_calls=[], finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
    )  # fmt: skip
    try:
        stops.clear_stop(turn.id)  # it has stopped: a later attempt (a resume) must not see the flag
    except redis.RedisError as error:
        log.warning("could not clear a stopped turn's stop flag: %s", type(error).__name__)
    announce(turn.id, [*state_events(written), (StreamKind.DONE, {"response": response})])
    tell_ended(turn, status)
    metrics.TURNS.labels(str(status)).inc()
    log.info("turn stopped", extra={"turn": str(turn.id), "stop": stopped.kind})
    return following.id if following else None


def _settle_stopped(
    recorder: Recorder, stopped: Stopped, *, model: str, prompt_tokens: int, completion_tokens: int, actual: Decimal
) -> None:
    """A stopped call pays for what it used; a turn stopped before its call pays nothing."""
    held = [recorder.reservation] if recorder.reservation is not None else []
    held += [r for r in Reservation.objects.filter(turn_id=recorder.turn.id, status=Reservation.Status.HELD) if r not in held]
    for index, reservation in enumerate(held):
        if stopped.called and index == 0:
            spend.settle(
                reservation, turn_id=recorder.turn.id, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                actual=actual,
            )  # fmt: skip
        else:
            spend.release(reservation.id)


def fail(recorder: Recorder, error: providers.ProviderError | Refused) -> uuid.UUID | None:
    """The provider failed for good, or Sentinel's own rules refused the call (`Refused`): the turn
    fails; one whose retries ran out on a failure that might pass (timeouts, 5xx) stays re-drivable
    as a dead letter."""
    turn = recorder.turn
    recorder.record(EventKind.PROVIDER_ERROR, error.as_dict())
    failure = Failure(
        error=error.as_dict(),
        audit_action="turn.failed",
        actor=actor_of(turn),
        dead_letter=error.code if error.retryable else None,
        attempt=recorder.attempt,
    )

    def write_events() -> None:
        recorder.record(EventKind.FAILED, {"code": error.code})
        recorder.flush()

    try:
        return end_failed(
            turn, fenced(recorder), failure, agent_state=recorder.state, write_events=write_events, reservation=recorder.reservation
        )
    except Fenced:
        raise LostClaim from None


def crash(recorder: Recorder) -> uuid.UUID | None:
    """Fail a turn after an unexpected error in Sentinel itself (not the provider's fault)."""
    recorder.pending.clear()
    error = providers.ProviderError(500, "internal_error", "Sentinel failed while running this turn.", retryable=False, type="server_error")
    try:
        return fail(recorder, error)
    except LostClaim:
        return None


def give_up(turn: Turn, reason: str, error: dict | None, *, write_events: Callable[[], object]) -> bool:
    """The Supervisor ends a turn for good, whatever attempt holds it, and keeps it re-drivable.
    False if the turn had already moved on."""
    failure = Failure(
        error={"status": 500, "type": "server_error", "code": reason, "message": f"The turn was given up after {turn.attempt} attempts.",
               **(error or {})},
        audit_action="turn.dead_lettered",
        actor=audit.SUPERVISOR,
        dead_letter=reason,
        attempt=turn.attempt,
    )  # fmt: skip
    fence = Turn.objects.filter(id=turn.id, attempt=turn.attempt, status__in=UNFINISHED)
    try:
        end_failed(turn, fence, failure, agent_state=turn.agent_state, write_events=write_events)
    except Fenced:
        return False
    return True


def tell_ended(turn: Turn, status: str) -> None:
    """Best effort, like announce: the Turn row already holds the outcome."""
    for receiver, result in signals.turn_ended.send_robust(
        sender=Turn, turn_id=turn.id, status=status, idempotency_key=turn.idempotency_key, tenant_id=turn.tenant_id
    ):
        if isinstance(result, Exception):
            log.warning("a turn_ended receiver failed: %s (%s)", type(result).__name__, getattr(receiver, "__qualname__", receiver))


def _ms_since(start, end) -> int:
    return max(0, int((end - start) / timedelta(milliseconds=1)))
