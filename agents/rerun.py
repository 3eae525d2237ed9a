"""Rerun: a recorded turn's exact provider request sent to the model again, as a new call, and the new
answer compared with the recorded one (agents/replay.py replays without calling the model).

The call is budgeted and audited like any other: its worst case is reserved against the caller's
budgets before anything is sent (BudgetExceeded, UnpricedModel), its cost settled after on the turn's
ledger, the reservation released if the call fails, and an audit entry `turn.rerun` either way. It
goes through the provider's circuit breaker, without retries. A request redacted by forgetting is
never sent again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from agents import breaker, openai_format, providers
from agents.models import Turn
from agents.replay import Divergence, Exchange, NotReplayable, config_for, diff, money, recorded_exchange
from budgets import audit, spend
from sentinel_site import metrics


@dataclass(frozen=True)
class Rerun:
    """The recorded request answered again: the new answer, the recorded one, and how they differ."""

    turn_id: uuid.UUID
    recorded: dict
    answer: dict
    divergences: list[Divergence]

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "turn.rerun",
            "turn": str(self.turn_id),
            "identical": not self.divergences,
            "recorded": self.recorded,
            "answer": self.answer,
            "diff": [d.as_dict() for d in self.divergences],
        }


def _answer(content: str, tool_calls: list, finish_reason: str, model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "content": content,
        "tool_calls": tool_calls,
        "finish_reason": "tool_calls" if tool_calls else finish_reason,
        "model": model,
        "usage": openai_format.usage(prompt_tokens, completion_tokens),
    }


def rerun(turn: Turn, *, api_key_id: Any, actor: str) -> Rerun:
    """Send the turn's recorded request to the model again, as a new call: its worst case reserved
    against the caller's budgets first (BudgetExceeded, UnpricedModel), its cost settled after (on
    the turn's ledger), released if the call fails (ProviderError); audited either way."""
    exchange = recorded_exchange(turn)
    if exchange.request.payload.get("redacted"):
        raise NotReplayable("Messages this turn sent were forgotten: its redacted request is not sent again.", code="forgotten")
    body = exchange.request.payload["body"]
    config = config_for(turn)
    estimate = (exchange.request.payload.get("context") or {}).get("total_tokens") or 0
    amount = spend.cost(
        turn.tenant_id,
        body["model"],
        config.endpoint,
        estimate + spend.request_overhead_tokens(body),
        spend.output_bound(body),
        refuse_unpriced=config.deployment_key,
    )
    reservation = spend.reserve(turn.tenant_id, api_key_id, amount)
    try:
        breaker.before_call(config)
        try:
            result = providers.stream(config, body, lambda delta: None)
        except providers.ProviderError as error:
            breaker.record_failure(config, error)
            raise
    except providers.ProviderError as error:
        spend.release(reservation.id)
        metrics.LLM_REQUESTS.labels(config.endpoint, body["model"], error.code).inc()
        audit.record("turn.rerun", actor=actor, tenant_id=turn.tenant_id, target=str(turn.id), data={"code": error.code, "cost": "0"})
        raise
    breaker.record_success(config)
    metrics.LLM_REQUESTS.labels(config.endpoint, body["model"], "ok").inc()
    prompt_tokens, completion_tokens = result.usage(estimate)
    actual = spend.cost(turn.tenant_id, body["model"], config.endpoint, prompt_tokens, completion_tokens)
    spend.settle(
        reservation, model=body["model"], prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, actual=actual, turn_id=turn.id
    )
    audit.record(
        "turn.rerun",
        actor=actor,
        tenant_id=turn.tenant_id,
        target=str(turn.id),
        data={"agent": turn.agent.name, "model": body["model"], "tokens": prompt_tokens + completion_tokens, "cost": str(actual)},
    )
    answer = {
        **_answer(result.content, result.tool_calls, result.finish_reason, result.model, prompt_tokens, completion_tokens),
        "cost": money(actual),
    }
    recorded = _recorded_answer(turn, exchange)
    compared = {key: value for key, value in answer.items() if key != "cost"}
    return Rerun(turn_id=turn.id, recorded=recorded, answer=answer, divergences=diff(_strip_cost(recorded), compared, "answer"))


def _recorded_answer(turn: Turn, exchange: Exchange) -> dict:
    if exchange.response is None:
        return {"error": turn.error}
    payload = exchange.response.payload
    usage = payload.get("usage") or {}
    return {
        **_answer(
            payload.get("content") or "",
            payload.get("tool_calls") or [],
            payload.get("finish_reason") or "stop",
            payload.get("model") or "",
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
        ),
        "cost": money(turn.cost),
    }


def _strip_cost(answer: dict) -> dict:
    return {key: value for key, value in answer.items() if key != "cost"}
