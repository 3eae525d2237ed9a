"""Running one turn: claim it, call the model through the state machine, persist, publish.

Safe to run twice for the same turn: the claim is a conditional update (only a queued turn whose
earlier turns in the conversation are finished can be claimed), and every later write is fenced on
the attempt number the claim produced, so a worker that lost its claim cannot overwrite anything.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import breaker, heartbeat, openai_format, outcomes, providers
from agents.models import UNFINISHED, Conversation, Message, Turn, TurnEventRecord, TurnStatus
from agents.outcomes import announce
from agents.turns import AgentState, TurnEvent, transition_state
from budgets import audit, spend
from budgets.models import Reservation
from memory import context as memory_context
from memory import embeddings, tokens
from sentinel_site import logs, metrics
from sentinel_site.db import release_connection

log = logging.getLogger(__name__)


class LostClaim(Exception):
    """Another attempt owns this turn now; stop without writing anything more."""


@dataclass
class Recorder:
    """Buffers a turn's events and writes them (PostgreSQL, then Redis) in batches."""

    turn: Turn
    attempt: int
    state: AgentState = AgentState.IDLE
    next_seq: int = 0
    pending: list[TurnEventRecord] = field(default_factory=list)
    reservation: Reservation | None = None

    def record(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        self.pending.append(
            TurnEventRecord(turn_id=self.turn.id, attempt=self.attempt, seq=self.next_seq, kind=kind, payload=payload or {})
        )
        self.next_seq += 1

    def move(self, event: TurnEvent, *, wants_tools: bool = False) -> AgentState:
        """Apply a state machine event; the transition becomes an event in the log."""
        target = transition_state(self.state, event, wants_tools=wants_tools)
        self.pending.append(
            TurnEventRecord(
                turn_id=self.turn.id,
                attempt=self.attempt,
                seq=self.next_seq,
                kind="state",
                from_state=self.state.value,
                to_state=target.value,
                payload={"event": event.value},
            )
        )
        self.next_seq += 1
        self.state = target
        return target

    def flush(self) -> list[TurnEventRecord]:
        """Write buffered events to PostgreSQL; call inside the transaction they belong to."""
        written, self.pending = self.pending, []
        if written:
            TurnEventRecord.objects.bulk_create(written)
        return written


def state_events(events: list[TurnEventRecord]) -> list[tuple[str, dict]]:
    """The state transitions among written events, as stream events."""
    return [("state", {"from": event.from_state, "to": event.to_state}) for event in events if event.kind == "state"]


def claim(turn_id: Any) -> Recorder | None:
    """Claim a queued turn for this worker, or None if it is not ours to run (yet)."""
    with transaction.atomic():
        # The turn row is locked as it is read, so what the claim writes below is what it holds.
        turn = Turn.objects.select_related("agent", "conversation", "api_key").select_for_update(of=("self",)).filter(id=turn_id).first()
        if turn is None or turn.status != TurnStatus.QUEUED:
            return None
        turn.conversation.agent = turn.agent  # one agent per conversation (admission checks it)
        # One turn per conversation at a time, in order: the conversation row is the lock, and a
        # turn with an unfinished predecessor is left queued; the predecessor enqueues it when done.
        Conversation.objects.select_for_update().filter(id=turn.conversation_id).first()
        if Turn.objects.filter(conversation_id=turn.conversation_id, seq__lt=turn.seq, status__in=UNFINISHED).exists():
            return None
        now = timezone.now()
        claimed = {
            "status": TurnStatus.RUNNING,
            "attempt": turn.attempt + 1,
            "started_at": now,
            "heartbeat_at": now,
            "agent_state": AgentState.THINKING,
        }
        Turn.objects.filter(id=turn.id).update(**claimed)
        for name, value in claimed.items():
            setattr(turn, name, value)
        logs.trace_id.set(turn.trace_id or "-")
        logs.tenant_id.set(str(turn.tenant_id))
        recorder = Recorder(turn=turn, attempt=turn.attempt)
        recorder.record("claimed", {"attempt": turn.attempt})
        recorder.move(TurnEvent.MESSAGE_RECEIVED)
        written = recorder.flush()
    announce(turn.id, state_events(written))
    return recorder


def _fenced(recorder: Recorder):
    return Turn.objects.filter(id=recorder.turn.id, attempt=recorder.attempt, status=TurnStatus.RUNNING)


def execute(recorder: Recorder) -> Turn | None:
    """Run a claimed turn to its end. Returns the next queued turn of the conversation, if any.
    Its heartbeat beats from claim to end, whatever it waits on (agents/heartbeat.py)."""
    beating = heartbeat.track(recorder.turn.id, recorder.attempt)
    try:
        return _execute(recorder, beating)
    finally:
        heartbeat.untrack(beating)


def _execute(recorder: Recorder, beating: heartbeat.Tracked) -> Turn | None:
    turn = recorder.turn
    config = providers.ProviderConfig.for_agent(turn.agent)
    if turn.params.get("model_override"):
        config = providers.ProviderConfig(**{**config.__dict__, "model": turn.params["model_override"]})
    try:
        ctx = memory_context.assemble(turn.conversation, upto_seq=turn.seq, embed=embeddings.embed_query)
    except memory_context.ContextLengthExceeded as error:  # the agent's budget shrank after admission
        return fail(recorder, outcomes.Refused(error))
    metrics.CONTEXT_TOKENS.observe(ctx.total_tokens)
    body = providers.request_body(config, ctx.messages, turn.params, stream=True)
    recorder.record("provider_request", {"endpoint": config.endpoint, "body": body, "context": ctx.explain()})
    recorder.flush()  # what was asked is on record before the call, whatever happens during it
    try:
        recorder.reservation = hold_budget(turn, config, body, ctx.total_tokens)
        release_connection()
        result = call_provider(recorder, config, body, beating)
    except (providers.ProviderError, outcomes.Refused) as error:
        return fail(recorder, error)
    return succeed(recorder, result, prompt_estimate=ctx.total_tokens, config=config, body=body, reply_index=ctx.next_index)


def call_provider(recorder: Recorder, config: providers.ProviderConfig, body: dict, beating: heartbeat.Tracked) -> providers.Completion:
    """Stream from the provider through the circuit breaker, retrying retryable failures with
    exponential backoff and jitter, but only while nothing has reached the client yet. Stops at
    the next token (or try) once the heartbeat finds the claim gone."""
    turn = recorder.turn
    conf = settings.SENTINEL
    sent = False

    def on_delta(delta: dict) -> None:
        nonlocal sent
        if beating.lost.is_set():
            raise LostClaim
        sent = True
        announce(turn.id, [("delta", delta)])

    for attempt in range(conf["PROVIDER_RETRIES"] + 1):
        breaker.before_call(config)
        started = time.monotonic()
        try:
            result = providers.stream(config, body, on_delta)
        except providers.ProviderError as error:
            metrics.LLM_REQUESTS.labels(config.endpoint, body["model"], error.code).inc()
            breaker.record_failure(config, error)
            if not error.retryable or sent or attempt == conf["PROVIDER_RETRIES"]:
                raise
            delay = conf["PROVIDER_RETRY_BASE_SECONDS"] * 2**attempt * random.uniform(0.5, 1.5)
            recorder.record("provider_retry", {"try": attempt + 1, "error": error.as_dict(), "delay_s": round(delay, 3)})
            metrics.RETRIES.labels(error.code).inc()
            recorder.flush()
            release_connection()
            time.sleep(delay)
            if beating.lost.is_set():
                raise LostClaim
            continue
        breaker.record_success(config)
        metrics.LLM_REQUESTS.labels(config.endpoint, body["model"], "ok").inc()
        metrics.LLM_DURATION.labels(config.endpoint, body["model"]).observe(time.monotonic() - started)
        return result
    raise AssertionError("unreachable")


def hold_budget(turn: Turn, config: providers.ProviderConfig, body: dict, prompt_tokens: int) -> Reservation:
    """The budget check before every provider call: the admission's reservation if it still holds
    (a first attempt), else a new one, else the turn fails with budget_exceeded. Every attempt
    settles a reservation of its own: an earlier attempt that was taken over but still finishes its
    call then finds its hold released, and its spend is charged late instead of lost."""
    held = list(Reservation.objects.filter(turn_id=turn.id, status=Reservation.Status.HELD))
    if held and turn.attempt == 1:
        return held[0]
    for earlier in held:
        spend.release(earlier.id)
    try:
        amount = spend.cost(
            turn.tenant_id,
            body["model"],
            config.endpoint,
            prompt_tokens + spend.request_overhead_tokens(body),
            spend.output_bound(body),
            refuse_unpriced=config.deployment_key,
        )
        return spend.reserve(turn.tenant_id, turn.api_key_id, amount, turn_id=turn.id)
    except (spend.UnpricedModel, spend.BudgetExceeded) as refusal:
        raise outcomes.Refused(refusal) from None


def succeed(recorder: Recorder, result: providers.Completion, *, prompt_estimate: int, config, body: dict, reply_index: int) -> Turn | None:
    turn = recorder.turn
    wants_tools = bool(result.tool_calls)
    prompt_tokens = result.prompt_tokens if result.prompt_tokens is not None else prompt_estimate
    completion_tokens = result.completion_tokens if result.completion_tokens is not None else tokens.count(result.content)
    finish_reason = "tool_calls" if wants_tools else result.finish_reason
    actual = spend.cost(turn.tenant_id, body["model"], config.endpoint, prompt_tokens, completion_tokens)
    recorder.record(
        "provider_response",
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
    recorder.move(TurnEvent.LLM_RESPONSE, wants_tools=wants_tools)
    if wants_tools:
        # Tools run on the client (OpenAI's contract): the call is handed back in the answer, and
        # the client's `tool` messages arrive as the conversation's next turn.
        recorder.move(TurnEvent.TOOL_RESULT)
    recorder.move(TurnEvent.COMPLETE)
    now = timezone.now()
    settlement = {"model": body["model"], "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "actual": actual}
    try:
        written, following = _finish(recorder, result, now, reply_index, finish_reason, settlement)
    except LostClaim:
        # Another attempt owns the turn now, and this answer is discarded; but the call was made
        # and the provider paid for it, so its cost goes on the ledger all the same.
        if recorder.reservation is not None:
            spend.settle(recorder.reservation, turn_id=turn.id, **settlement)
        raise
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
    announce(turn.id, [*state_events(written), ("done", {"response": response})])  # one round trip
    metrics.TURNS.labels("succeeded").inc()
    metrics.TURN_DURATION.observe((now - turn.created_at).total_seconds())
    metrics.LLM_TOKENS.labels(config.endpoint, body["model"], "input").inc(prompt_tokens)
    metrics.LLM_TOKENS.labels(config.endpoint, body["model"], "output").inc(completion_tokens)
    metrics.LLM_COST.labels(config.endpoint, body["model"]).inc(float(actual))
    log.info("turn succeeded", extra={"turn": str(turn.id), "latency_ms": _ms_since(turn.created_at, now)})
    return following


def _finish(
    recorder: Recorder, result: providers.Completion, now, reply_index: int, finish_reason: str, settlement: dict
) -> tuple[list[TurnEventRecord], Turn | None]:
    """The reply, the turn's outcome, its events, its settlement and its audit entry: one commit."""
    turn = recorder.turn
    with transaction.atomic():
        message = Message.objects.create(
            tenant_id=turn.tenant_id,
            conversation_id=turn.conversation_id,
            turn=turn,
            seq=turn.seq,
            index=reply_index,
            role="assistant",
            content=result.content,
            tool_calls=result.tool_calls or None,
        )
        updated = _fenced(recorder).update(
            status=TurnStatus.SUCCEEDED,
            agent_state=recorder.state,
            finished_at=now,
            heartbeat_at=now,
            model=result.model,
            prompt_tokens=settlement["prompt_tokens"],
            completion_tokens=settlement["completion_tokens"],
            latency_ms=_ms_since(turn.created_at, now),
            provider_latency_ms=result.latency_ms,
            first_token_ms=result.first_token_ms,
            finish_reason=finish_reason,
            output=message,
            error=None,
            cost=settlement["actual"],
        )
        if not updated:
            raise LostClaim  # rolls the transaction back: nothing of this attempt is kept
        recorder.record("completed", {"message_id": str(message.id), "cost": str(settlement["actual"])})
        written = recorder.flush()
        following = outcomes.next_queued(turn)
        # The shared rows last, so their locks are held for the fewest round trips before the
        # commit: the tenant's budget windows, then the audit chain's head (every turn's).
        if recorder.reservation is not None:
            spend.settle(recorder.reservation, turn_id=turn.id, **settlement)
        audit.record(
            "turn.succeeded",
            actor=outcomes.actor_of(turn),
            tenant_id=turn.tenant_id,
            target=str(turn.id),
            data={
                "agent": turn.agent.name,
                "model": settlement["model"],
                "tokens": settlement["prompt_tokens"] + settlement["completion_tokens"],
                "cost": str(settlement["actual"]),
                "attempt": recorder.attempt,
            },
        )
    return written, following


def fail(recorder: Recorder, error: providers.ProviderError | outcomes.Refused) -> Turn | None:
    """The provider failed for good: the turn fails; one whose retries ran out on a failure that
    might pass (timeouts, 5xx) stays re-drivable as a dead letter."""
    turn = recorder.turn
    recorder.record("provider_error", error.as_dict())
    failure = outcomes.Failure(
        error=error.as_dict(),
        audit_action="turn.failed",
        actor=outcomes.actor_of(turn),
        dead_letter=error.code if error.retryable else None,
        attempt=recorder.attempt,
    )

    def write_events() -> None:
        recorder.record("failed", {"code": error.code})
        recorder.flush()

    try:
        return outcomes.fail(
            turn, _fenced(recorder), failure, agent_state=recorder.state, write_events=write_events, reservation=recorder.reservation
        )
    except outcomes.Fenced:
        raise LostClaim from None


def crash(recorder: Recorder) -> Turn | None:
    """Fail a turn after an unexpected error in Sentinel itself (not the provider's fault)."""
    recorder.pending.clear()
    error = providers.ProviderError(500, "internal_error", "Sentinel failed while running this turn.", retryable=False, type="server_error")
    try:
        return fail(recorder, error)
    except LostClaim:
        return None


def _ms_since(start, end) -> int:
    return max(0, int((end - start) / timedelta(milliseconds=1)))
