"""Running one turn: claim it, call the model through the state machine, persist, publish.

Safe to run twice for the same turn: the claim is a conditional update (only a queued turn whose
earlier turns in the conversation are finished can be claimed), and every later write is fenced on
the attempt number the claim produced, so a worker that lost its claim cannot overwrite anything.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction

from agents import activity, approvals, breaker, claims, heartbeat, outcomes, providers
from agents.models import EventKind, Turn
from agents.outcomes import announce, crash, fail
from agents.recorder import LostClaim, Recorder, state_events
from agents.streams import StreamKind
from agents.turns import Trigger
from budgets import spend
from budgets.models import Reservation
from memory import context as memory_context
from memory import embeddings
from routing.route import route_of
from sentinel_site import logs, metrics
from sentinel_site.db import release_connection

__all__ = ["LostClaim", "Recorder", "Stopped", "call_provider", "claim", "crash", "execute", "hold_budget"]

log = logging.getLogger(__name__)


class Stopped(Exception):
    """A cancel or interrupt reached the turn mid-call: what was streamed before it is kept."""

    def __init__(self, kind: str, partial: str, called: bool) -> None:
        super().__init__(kind)
        self.kind = kind
        self.partial = partial
        self.called = called  # the provider was called (its tokens are paid for)


def claim(turn_id: Any) -> Recorder | None:
    """Claim a queued turn for this worker, or None if it is not ours to run (yet)."""
    with transaction.atomic():
        turn = claims.claim(turn_id)
        if turn is None:
            return None
        recorder = _claimed(turn)
        written = recorder.flush()
    # A real-time turn running: batch lines yield the machine to it for a moment (agents/activity.py).
    announce(turn.id, state_events(written), also=activity.mark if activity.is_realtime(turn) else None)
    return recorder


def _claimed(turn: Turn) -> Recorder:
    """The claimed turn's recorder, its first events recorded (not yet written)."""
    logs.trace_id.set(turn.trace_id or "-")
    logs.tenant_id.set(str(turn.tenant_id))
    recorder = Recorder(turn=turn, attempt=turn.attempt)
    recorder.record(EventKind.CLAIMED, {"attempt": turn.attempt})
    recorder.move(Trigger.MESSAGE_RECEIVED)
    return recorder


def execute(recorder: Recorder) -> uuid.UUID | None:
    """Run a claimed turn to its end. Returns the id of the conversation's next queued turn, if any.
    Its heartbeat beats from claim to end, whatever it waits on (agents/heartbeat.py)."""
    beating = heartbeat.track(recorder.turn.id, recorder.attempt)
    try:
        return _execute(recorder, beating)
    finally:
        heartbeat.untrack(beating)


def _execute(recorder: Recorder, beating: heartbeat.Tracked) -> uuid.UUID | None:
    turn = recorder.turn
    config = providers.ProviderConfig.for_agent(turn.agent)
    if turn.params.get("model_override"):
        config = providers.ProviderConfig(**{**config.__dict__, "model": turn.params["model_override"]})
    try:
        request = _request(recorder, config)
    except memory_context.ContextLengthExceeded as error:  # the agent's budget shrank after admission
        return fail(recorder, outcomes.Refused(error))
    # What was asked is on record before the call, whatever happens during it; no client is told of
    # it, and the finish's synchronous commit flushes it too.
    recorder.flush(lazily=True)
    try:
        if beating.stop:
            raise Stopped(beating.stop, "", called=False)
        recorder.reservation = hold_budget(turn, config, request.body, request.prompt_tokens)
        release_connection()
        result = call_provider(recorder, config, request.body, beating)
    except (providers.ProviderError, outcomes.Refused) as error:
        return fail(recorder, error)
    except Stopped as stopped:
        return outcomes.stop(recorder, stopped, request, config=config)
    if approvals.needs_approval(turn.agent, result.tool_calls):
        approvals.hold(recorder, result, request, config=config)
        return None  # the conversation waits for the decision
    return outcomes.succeed(
        recorder, result, prompt_estimate=request.prompt_tokens, config=config, body=request.body, reply_index=request.reply_index
    )


def _request(recorder: Recorder, config: providers.ProviderConfig) -> outcomes.Request:
    """The provider request: the context assembled for the turn, or, for a turn resumed after an
    interrupt or an approval, the one it was running with (its persisted state) and what the resume
    added. Recorded as the attempt's provider_request event."""
    turn = recorder.turn
    resume = turn.params.get("resume")
    if resume:
        body = {**resume["body"], "messages": resume["body"]["messages"] + resume.get("add", [])}
        request = outcomes.Request(body=body, prompt_tokens=resume["prompt_tokens"], reply_index=resume["reply_index"])
        recorder.record(EventKind.PROVIDER_REQUEST, {"endpoint": config.endpoint, "body": body, "resumed": True})
        return request
    ctx = memory_context.assemble(turn.conversation, upto_seq=turn.seq, embed=partial(embeddings.embed_query, tenant=turn.tenant_id))
    metrics.CONTEXT_TOKENS.observe(ctx.total_tokens)
    body = providers.request_body(config, ctx.messages, turn.params, stream=True)
    recorder.record(EventKind.PROVIDER_REQUEST, {"endpoint": config.endpoint, "body": body, "context": ctx.explain()})
    return outcomes.Request(body=body, prompt_tokens=ctx.total_tokens, reply_index=ctx.next_index)


def call_provider(recorder: Recorder, config: providers.ProviderConfig, body: dict, beating: heartbeat.Tracked) -> providers.Completion:
    """Stream from the provider through the circuit breaker, retrying retryable failures with
    exponential backoff and jitter, but only while nothing has reached the client yet. Stops at
    the next token (or try) once the heartbeat finds the claim gone."""
    turn = recorder.turn
    conf = settings.SENTINEL
    sent = False
    streamed: list[str] = []

    def on_delta(delta: dict) -> None:
        nonlocal sent
        if beating.lost.is_set():
            raise LostClaim
        if beating.stop:
            raise Stopped(beating.stop, "".join(streamed), called=True)
        sent = True
        if delta.get("content"):
            streamed.append(delta["content"])
        announce(turn.id, [(StreamKind.DELTA, delta)])

    def on_open(close: Callable[[], None]) -> None:
        beating.abort = close
        if beating.stop:  # asked while the request was being sent
            close()

    route = route_of(config)  # a model group's: each attempt goes where its route says (routing/route.py)
    for attempt in itertools.count():
        if route is not None:
            route.start(recorder, body)
        try:
            breaker.before_call(config)
        except providers.ProviderError as error:
            if route is None or not route.fall_back(error):
                raise
            continue
        started = time.monotonic()
        try:
            try:
                result = providers.stream(config, body, on_delta, on_open)
            except (Stopped, LostClaim):
                raise
            except Exception:
                if beating.stop:  # its stream was closed by the stop (heartbeat.Tracked.request_stop), however it broke
                    raise Stopped(beating.stop, "".join(streamed), called=True) from None
                raise
        except providers.ProviderError as error:
            metrics.LLM_REQUESTS.labels(config.endpoint, body["model"], error.code).inc()
            breaker.record_failure(config, error)
            if route is not None:
                route.ended()
                if sent or not route.fall_back(error):  # never resend what reached the client
                    raise
                continue
            if not error.retryable or sent or attempt == conf["PROVIDER_RETRIES"]:
                raise
            delay = conf["PROVIDER_RETRY_BASE_SECONDS"] * 2**attempt * random.uniform(0.5, 1.5)
            recorder.record(EventKind.PROVIDER_RETRY, {"try": attempt + 1, "error": error.as_dict(), "delay_s": round(delay, 3)})
            metrics.RETRIES.labels(error.code).inc()
            recorder.flush()
            release_connection()
            time.sleep(delay)
            if beating.lost.is_set():
                raise LostClaim
            if beating.stop:
                raise Stopped(beating.stop, "".join(streamed), called=True)
            continue
        finally:
            beating.abort = None
            if route is not None:
                route.ended()
        breaker.record_success(config)
        if route is not None:
            route.succeeded(result)
        metrics.LLM_REQUESTS.labels(config.endpoint, body["model"], "ok").inc()
        metrics.LLM_DURATION.labels(config.endpoint, body["model"]).observe(time.monotonic() - started)
        return result
    raise AssertionError("unreachable")


_UNREAD = object()  # no claim's read of the turn's reservation to take


def hold_budget(turn: Turn, config: providers.ProviderConfig, body: dict, prompt_tokens: int) -> Reservation:
    """The budget check before every provider call: the admission's reservation if it still holds
    (a first attempt), else a new one, else the turn fails with budget_exceeded. Every attempt
    settles a reservation of its own: an earlier attempt that was taken over but still finishes its
    call then finds its hold released, and its spend is charged late instead of lost."""
    # A first attempt's first call takes the reservation its claim read (agents/claims.py); any
    # later call, or a later attempt (which releases what earlier ones held), reads them afresh.
    at_claim = turn.__dict__.pop("held_at_claim", _UNREAD)
    if turn.attempt == 1 and isinstance(at_claim, Reservation):
        return at_claim
    held = [] if turn.attempt == 1 and at_claim is None else spend.held_for(turn.id)
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
