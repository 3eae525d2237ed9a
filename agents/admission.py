"""Admitting a chat request: one transaction stores its messages and a queued turn.

Nothing is written unless everything is valid; the turn is enqueued only after the commit, so a
worker never sees a turn that is not in the database yet.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from agents import providers
from agents.models import Agent, Conversation, Message, Turn, TurnEventRecord
from budgets import audit, spend
from budgets.models import ApiKey, Tenant
from sentinel_site import logs, metrics, tracing
from sentinel_site.errors import ApiError


@dataclass(frozen=True)
class Admission:
    turn: Turn
    created: bool  # False when an Idempotency-Key replayed an earlier request


def request_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_agent(tenant: Tenant, name: str) -> Agent:
    agent = Agent.objects.live().filter(tenant=tenant, name=name).first()
    if agent is None:
        raise ApiError(404, f"The model `{name}` does not exist or you do not have access to it.", param="model", code="model_not_found")
    return agent


def _replayed(tenant: Tenant, idempotency_key: str, digest: str) -> Turn | None:
    turn = Turn.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if turn is not None and turn.request_hash != digest:
        raise ApiError(422, "This Idempotency-Key was already used with a different request body.", code="idempotency_key_reused")
    return turn


def admit(
    *,
    tenant: Tenant,
    api_key: ApiKey | None,
    data: dict[str, Any],
    idempotency_key: str | None,
    enqueue: Callable[[uuid.UUID], None],
) -> Admission:
    """Store the request's messages and a queued turn, atomically; enqueue it after commit."""
    digest = request_hash(data)
    if idempotency_key:
        existing = _replayed(tenant, idempotency_key, digest)
        if existing is not None:
            return Admission(existing, created=False)
    agent = find_agent(tenant, data["model"])
    params = {key: data[key] for key in providers.PASSTHROUGH_PARAMS if data.get(key) is not None}
    for key, value in (agent.default_params or {}).items():
        if key in providers.PASSTHROUGH_PARAMS:
            params.setdefault(key, value)
    if params.get("max_tokens") is None and params.get("max_completion_tokens") is None:
        params["max_tokens"] = settings.SENTINEL["DEFAULT_MAX_TOKENS"]  # so the reserved worst case is a true bound
    api_key_id = api_key.id if api_key else None
    budgets = spend.applicable_budgets(tenant.id, api_key_id)
    fallback = spend.fallback_model(tenant.id, api_key_id, budgets)
    if fallback:
        params["model_override"] = fallback
    try:
        amount = worst_case_cost(tenant, agent, data["messages"], params)
    except spend.UnpricedModel as unpriced:
        raise ApiError(400, str(unpriced), param="model", code="model_not_priced") from None
    try:
        with transaction.atomic():
            conversation = _conversation_for(tenant, agent, data.get("conversation"))
            seq = conversation.last_seq
            turn = Turn.objects.create(
                tenant=tenant,
                conversation=conversation,
                agent=agent,
                api_key=api_key,
                seq=seq,
                stream=data.get("stream", False),
                params=params,
                idempotency_key=idempotency_key or None,
                request_hash=digest,
                trace_id=logs.trace_id.get() if logs.trace_id.get() != "-" else "",
                traceparent=tracing.current_traceparent(),
            )
            Message.objects.bulk_create(
                Message(
                    tenant=tenant,
                    conversation=conversation,
                    turn=turn,
                    seq=seq,
                    index=index,
                    role=m["role"],
                    content=m.get("content") or "",
                    name=m.get("name", ""),
                    tool_calls=m.get("tool_calls") or None,
                    tool_call_id=m.get("tool_call_id", ""),
                )
                for index, m in enumerate(data["messages"])
            )
            TurnEventRecord.objects.create(
                turn=turn,
                attempt=0,
                seq=0,
                kind="queued",
                payload={"message_count": len(data["messages"]), "params": params, "stream": turn.stream},
            )
            # BudgetExceeded rolls the whole admission back, so no savepoint is needed around it.
            spend.reserve(tenant.id, api_key_id, amount, turn_id=turn.id, budgets=budgets, savepoint=False)
            transaction.on_commit(lambda: enqueue(turn.id))
    except spend.BudgetExceeded as exceeded:
        budget = exceeded.budget
        metrics.BUDGET_EXCEEDED.labels(budget.period).inc()
        audit.record(
            "budget.exceeded",
            actor=principal_name(api_key),
            tenant_id=tenant.id,
            target=str(budget.id),
            data={"period": budget.period, "limit": str(budget.limit), "requested": str(amount)},
        )
        raise ApiError(
            503,
            f"{exceeded} It resets in {exceeded.retry_after} seconds.",
            type="budget_exceeded",
            code="budget_exceeded",
            headers={"Retry-After": str(exceeded.retry_after)},
        ) from None
    except IntegrityError:
        # Two requests raced with one Idempotency-Key: the loser answers with the winner's turn.
        if idempotency_key:
            existing = _replayed(tenant, idempotency_key, digest)
            if existing is not None:
                return Admission(existing, created=False)
        raise
    return Admission(turn, created=True)


def principal_name(api_key: ApiKey | None) -> str:
    return f"key:{api_key.key_id}" if api_key else "system"


def worst_case_cost(tenant: Tenant, agent: Agent, messages: list[dict], params: dict) -> Decimal:
    """What the call can cost at most: a full context, plus what rides beside the messages (tools,
    a response format's schema), plus every token it may generate, at price. UnpricedModel if the
    deployment would pay for a model it has no price for (SENTINEL_UNPRICED_MODELS=refuse)."""
    config = providers.ProviderConfig.for_agent(agent)
    model = params.get("model_override") or config.model
    input_bound = sum(len(json.dumps(m, separators=(",", ":"))) for m in messages) // 3 + 8 * len(messages)
    prompt_tokens = max(agent.context_budget, input_bound) + spend.request_overhead_tokens(params)
    return spend.cost(tenant.id, model, config.endpoint, prompt_tokens, spend.output_bound(params), refuse_unpriced=config.deployment_key)


def _conversation_for(tenant: Tenant, agent: Agent, conversation_id: uuid.UUID | None) -> Conversation:
    """The conversation to append to, with its next sequence number reserved (row-locked)."""
    if conversation_id is None:
        return Conversation.objects.create(tenant=tenant, agent=agent, last_seq=1)
    updated = Conversation.objects.filter(id=conversation_id, tenant=tenant).update(last_seq=F("last_seq") + 1)
    if not updated:
        raise ApiError(404, "No such conversation.", param="conversation", code="conversation_not_found")
    conversation = Conversation.objects.get(id=conversation_id)
    if conversation.agent_id != agent.id:
        raise ApiError(
            400,
            f"This conversation belongs to the agent `{conversation.agent.name}`, not `{agent.name}`.",
            param="conversation",
            code="conversation_agent_mismatch",
        )
    return conversation
