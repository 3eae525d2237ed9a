"""The steps that are not turns, run by the dispatcher's task itself: llm, embed, vector_search,
transform and route. Each takes its rendered input and gives an Outcome; none writes anything but
what a step's own call writes (an llm step's reservation and settlement on the spend ledger)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from agents import admission, providers
from agents.models import Agent
from budgets import spend
from memory import embeddings, search
from runs.models import Run, Step, StepKind
from sentinel_site.errors import turn_error

SEARCH_K = 5


@dataclass
class Outcome:
    output: str = ""
    result: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    error: dict[str, Any] | None = None  # {"status", "type", "code", "message"}: the attempt failed
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # run events to record with it


def execute(run: Run, step: Step, text: str, vectors: dict[str, list[float]]) -> Outcome:
    """Run one claimed step. `vectors`: the embeddings of the embed steps it depends on."""
    try:
        if step.kind == StepKind.TRANSFORM:
            return Outcome(output=text)
        if step.kind == StepKind.EMBED:
            (vector,) = embeddings.embed_query([text], run.tenant_id)
            return Outcome(output=text, result={"model": embeddings.model_name(), "dimensions": len(vector), "vector": vector})
        if step.kind == StepKind.VECTOR_SEARCH:
            return _vector_search(run, step, text, vectors)
        if step.kind == StepKind.ROUTE:
            return _route(run, step, text)
        if step.kind == StepKind.LLM:
            return _llm(run, step, text)
    except providers.ProviderError as error:
        return Outcome(error=error.as_dict())
    except (spend.BudgetExceeded, spend.UnpricedModel) as refusal:
        return Outcome(error=turn_error(refusal))
    raise ValueError(f"step kind {step.kind} does not run inline")


def _vector_search(run: Run, step: Step, text: str, vectors: dict[str, list[float]]) -> Outcome:
    source = step.config.get("embedding")
    vector = vectors[source] if source else embeddings.embed_query([text], run.tenant_id)[0]
    agent_id = None
    if step.config.get("scope_agent"):
        agent = Agent.objects.live().filter(tenant_id=run.tenant_id, name=step.config["scope_agent"]).first()
        agent_id = agent.id if agent else None
    hits = search.search(run.tenant_id, vector, k=int(step.config.get("k") or SEARCH_K), agent_id=agent_id)
    ranked = [
        {
            "rank": rank,
            "text": hit.memory.text,
            "score": round(hit.score, 4),
            "source": {
                "memory": str(hit.memory.id),
                "kind": hit.memory.kind,
                "conversation": str(hit.memory.conversation_id),
                "message": str(hit.memory.message_id) if hit.memory.message_id else None,
                "summary": str(hit.memory.summary_id) if hit.memory.summary_id else None,
            },
        }
        for rank, hit in enumerate(hits, start=1)
    ]
    lines = [f"[{rank}] {hit.memory.text} (source: memory {hit.memory.id})" for rank, hit in enumerate(hits, start=1)]
    return Outcome(output="\n".join(lines), result={"hits": ranked})


def _route(run: Run, step: Step, text: str) -> Outcome:
    """The router agent's choice when one was asked and named a candidate; else the candidate whose
    specialization is nearest the input (cosine of unit vectors). Every score is kept either way."""
    candidates = step.config["candidates"]
    vectors = np.asarray(embeddings.embed_query([text] + [c["specialization"] for c in candidates], run.tenant_id))
    scores = vectors[1:] @ vectors[0]
    best = int(np.argmax(scores))
    ranked = {c["agent"]: round(float(score), 4) for c, score in zip(candidates, scores, strict=True)}
    result: dict[str, Any] = {"chosen": candidates[best]["agent"], "scores": ranked, "by": "embedding", "model": embeddings.model_name()}
    router_step = step.config.get("router_step")
    if router_step:
        asked = Step.objects.filter(run_id=run.id, key=router_step).select_related("agent").first()
        answer = asked.output if asked is not None else ""
        chosen, reason = parse_choice(answer, [c["agent"] for c in candidates])
        result["router"] = {"agent": asked.agent.name if asked is not None and asked.agent else None, "answer": answer[:500]}
        if chosen is not None:
            result.update(chosen=chosen, by="router")
        else:
            result["fallback_reason"] = f"the router's answer {reason}: chosen by embedding similarity instead"
    return Outcome(output=result["chosen"], result=result, events=[("route_chosen", result)])


_DECORATION = " \t\r\n\"'`*_.,;:!?()[]<>"


def parse_choice(answer: str, names: list[str]) -> tuple[str | None, str]:
    """The candidate a router's answer names, or (None, why not). Taken: the name alone (any case,
    quoted, bold, with a full stop), a JSON object's `agent` (or `name`), or a sentence that mentions
    exactly one candidate as a word; several candidates or none is no choice."""
    by_lower = {name.lower(): name for name in names}
    bare = answer.strip().strip(_DECORATION).lower()
    if bare in by_lower:
        return by_lower[bare], ""
    try:
        parsed = json.loads(answer.strip().strip("`").removeprefix("json").strip())
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        value = parsed.get("agent", parsed.get("name"))
        if isinstance(value, str) and value.strip().lower() in by_lower:
            return by_lower[value.strip().lower()], ""
    mentioned = [name for name in names if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", answer, re.IGNORECASE)]
    if len(mentioned) == 1:
        return mentioned[0], ""
    if mentioned:
        return None, f"names several candidates ({', '.join(mentioned)})"
    return None, "names no candidate" if answer.strip() else "is empty"


def _llm(run: Run, step: Step, text: str) -> Outcome:
    """One completion through the agent's provider settings, no memory, reserved and settled like a turn's call."""
    agent = step.agent
    assert agent is not None, "an llm step names its agent (runs.plans)"
    messages = ([{"role": "system", "content": step.config["system"]}] if step.config.get("system") else []) + [
        {"role": "user", "content": text}
    ]
    params = admission.call_params(agent, {})
    config = providers.ProviderConfig.for_agent(agent)
    body = providers.request_body(config, messages, params, stream=False)
    worst = admission.worst_case_cost(run.tenant, agent, messages, params)
    reservation = spend.reserve(run.tenant_id, run.api_key_id, worst)
    try:
        completion = providers.complete(config, body)
    except BaseException:
        spend.release(reservation.id)
        raise
    prompt_tokens, completion_tokens = completion.prompt_tokens or 0, completion.completion_tokens or 0
    cost = spend.cost(run.tenant_id, body["model"], config.endpoint, prompt_tokens, completion_tokens)
    spend.settle(reservation, model=body["model"], prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, actual=cost)
    return Outcome(output=completion.content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost)
