"""Replay: a recorded turn run again against its recorded provider I/O, to check Sentinel is deterministic.

A turn's log holds the exact body sent to the model (PROVIDER_REQUEST, with the `context` that
explains it piece by piece) and what came back (PROVIDER_RESPONSE). `replay` does what the worker
did (agents/runner.py `_execute`), without calling the model or spending anything:

1. assemble the context from the stored state, with the function the worker uses
   (memory/context.py `assemble(conversation, upto_seq=turn.seq)`), but as the store was then
   (memory/asof.py): without the turn's own reply and the messages written at its position since,
   without the summaries and long-term memories created after its request was recorded, and with
   every row its recorded context names;
2. build the provider request body the way the worker does (agents/providers.py `request_body`) and
   compare it with the recorded one field by field (`body.messages[1].content`, recorded vs
   replayed), and the context's explanation with the recorded one (`context.pieces[2].memory_id`);
3. feed the recorded response through the outcome computation (`outcome`, what agents/outcomes.py
   `succeed` computes) and compare it with the turn's recorded outcome: the reply, finish_reason,
   tokens, cost, model, the final agent state and the state transitions.

What cannot be reproduced is reported as such, never hidden: rows the recorded context names that
are gone (a forgotten message, a deleted summary or memory), a log redacted by forgetting, an agent
edited since (its current system prompt and settings are what a replay reads), prices changed since,
recall through the approximate index (whose answers depend on everything indexed since).

`transitions` reads the same log the other way: seed 000's `replay(agent, from, to)`, every state
transition of an agent's turns in a time range. The other use of the log, the recorded request sent
to the model again, is agents/rerun.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, QuerySet

from agents import openai_format, providers
from agents.models import EventKind, Message, Turn, TurnEventRecord, TurnStatus
from agents.turns import AgentState, Trigger, transition_state
from budgets import spend
from budgets.models import Price, SpendEntry
from memory import context as memory_context
from memory import tokens
from memory.asof import AsOf
from memory.models import Memory, Summary

EmbedTexts = Callable[[list[str]], list[list[float]]]
_ABSENT: Any = object()


class NotReplayable(Exception):
    """The turn has no recorded exchange to replay: it has not finished, or it ended before calling the model."""

    def __init__(self, message: str, code: str = "not_replayable") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Divergence:
    """One field that differs: its JSON path, what was recorded and what the replay produced (a side
    missing from the dict form means the field was absent there)."""

    path: str
    recorded: Any = _ABSENT
    replayed: Any = _ABSENT

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"field": self.path}
        if self.recorded is not _ABSENT:
            data["recorded"] = self.recorded
        if self.replayed is not _ABSENT:
            data["replayed"] = self.replayed
        return data

    @property
    def kind(self) -> str:
        """The field without list positions, for summaries: `body.messages[].content`."""
        return re.sub(r"\[\d+\]", "[]", self.path)


@dataclass
class Report:
    """What a replay found. `identical`: every compared field equal and nothing unreproducible."""

    turn_id: uuid.UUID
    attempt: int
    divergences: list[Divergence] = field(default_factory=list)
    unreproducible: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcome_checked: bool = False

    @property
    def identical(self) -> bool:
        return not self.divergences and not self.unreproducible

    def cannot(self, what: str, why: str) -> None:
        self.unreproducible.append({"what": what, "why": why})

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "turn.replay",
            "turn": str(self.turn_id),
            "attempt": self.attempt,
            "identical": self.identical,
            "outcome_checked": self.outcome_checked,
            "divergences": [d.as_dict() for d in self.divergences],
            "unreproducible": self.unreproducible,
            "notes": self.notes,
        }


# --- comparing ---------------------------------------------------------------------------------
def diff(recorded: Any, replayed: Any, path: str) -> list[Divergence]:
    """Every difference between two JSON values, each with its path, in document order."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        found = []
        keys = [*recorded, *(key for key in replayed if key not in recorded)]
        for key in keys:
            child = f"{path}.{key}"
            if key not in replayed:
                found.append(Divergence(child, recorded=recorded[key]))
            elif key not in recorded:
                found.append(Divergence(child, replayed=replayed[key]))
            else:
                found += diff(recorded[key], replayed[key], child)
        return found
    if isinstance(recorded, list) and isinstance(replayed, list):
        found = []
        for index in range(max(len(recorded), len(replayed))):
            child = f"{path}[{index}]"
            if index >= len(replayed):
                found.append(Divergence(child, recorded=recorded[index]))
            elif index >= len(recorded):
                found.append(Divergence(child, replayed=replayed[index]))
            else:
                found += diff(recorded[index], replayed[index], child)
        return found
    if (recorded == replayed and type(recorded) is type(replayed)) or _same_number(recorded, replayed):
        return []
    return [Divergence(path, recorded=recorded, replayed=replayed)]


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool) and a == b


def _as_json(value: Any) -> Any:
    """The value as the log holds it (JSON): what was recorded went through jsonb."""
    return json.loads(json.dumps(value, default=str))


def money(value: Decimal | str | None) -> str | None:
    return None if value is None else f"{Decimal(value):.8f}"


# --- the outcome -------------------------------------------------------------------------------
def _moves(wants_tools: bool, *, held: bool = False) -> tuple[AgentState, list[dict]]:
    """The state machine's moves for an answer: through ToolCall when tools are asked for, to Idle
    (or, `held` for an approval, stopping in ToolCall)."""
    triggers: list[tuple[Trigger, bool]] = [(Trigger.MESSAGE_RECEIVED, False), (Trigger.LLM_RESPONSE, wants_tools)]
    if not held:
        if wants_tools:
            triggers.append((Trigger.TOOL_RESULT, False))
        triggers.append((Trigger.COMPLETE, False))
    state, moves = AgentState.IDLE, []
    for trigger, tools in triggers:
        target = transition_state(state, trigger, wants_tools=tools)
        moves.append({"from": state.value, "to": target.value, "event": trigger.value})
        state = target
    return state, moves


def outcome(
    turn: Turn, result: providers.Completion, *, prompt_estimate: int, config: providers.ProviderConfig, body: dict, held: bool = False
) -> dict:
    """A call's outcome, given the provider's answer: what agents/outcomes.py `succeed` computes (or,
    `held`, agents/approvals.py `hold`), without their writes (keep them in step)."""
    wants_tools = bool(result.tool_calls)
    prompt_tokens, completion_tokens = result.usage(prompt_estimate)
    state, moves = _moves(wants_tools, held=held)
    cost = spend.cost(turn.tenant_id, body["model"], config.endpoint, prompt_tokens, completion_tokens)
    computed = {
        "content": result.content,
        "tool_calls": result.tool_calls,
        "finish_reason": "tool_calls" if wants_tools else result.finish_reason,
        "model": result.model,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost": money(cost),
        "agent_state": state.value,
        "transitions": moves,
    }
    if held:  # the answer is a person's to give: the call's numbers and states are what is computed
        for key in ("content", "finish_reason", "agent_state"):
            computed.pop(key)
    return computed


def recorded_outcome(turn: Turn, attempt_events: list[TurnEventRecord], *, held: bool = False) -> dict:
    """The same fields as the turn and its log hold them. The cost is the call's (the COMPLETED
    event's): a turn interrupted or held before pays for each of its calls (Turn.cost is their sum)."""
    output = Message.objects.filter(id=turn.output_id).first() if turn.output_id else None
    completed = next((e for e in attempt_events if e.kind == EventKind.COMPLETED), None)
    requested = next((e for e in attempt_events if e.kind == EventKind.APPROVAL_REQUESTED), None)
    recorded = {
        "content": output.content if output else None,
        "tool_calls": (output.tool_calls or []) if output else None,
        "finish_reason": turn.finish_reason,
        "model": turn.model,
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "cost": money(completed.payload.get("cost")) if completed and completed.payload.get("cost") is not None else money(turn.cost),
        "agent_state": turn.agent_state,
        "transitions": [
            {"from": e.from_state, "to": e.to_state, "event": e.payload.get("event")} for e in attempt_events if e.kind == EventKind.STATE
        ],
    }
    if held:
        recorded["tool_calls"] = requested.payload.get("tool_calls") if requested else None
        recorded["cost"] = _held_cost(turn, attempt_events)
        for key in ("content", "finish_reason", "agent_state"):
            recorded.pop(key)
    return recorded


def _held_cost(turn: Turn, attempt_events: list[TurnEventRecord]) -> str | None:
    """What the held call was charged: its reservation's entry on the turn's ledger."""
    reserved_at = attempt_events[0].created_at if attempt_events else turn.created_at
    entry = (
        SpendEntry.objects.filter(turn_id=turn.id, reservation__turn_id=turn.id, created_at__gte=reserved_at).order_by("created_at").first()
    )
    return money(entry.cost) if entry else None


def recorded_completion(payload: dict) -> providers.Completion:
    """The provider's answer as the worker had it, from its PROVIDER_RESPONSE event (`usage_reported`
    says whether the usage is the provider's or Sentinel's estimate; a held call's is taken as given)."""
    usage = payload.get("usage") or {}
    reported = bool(payload.get("usage_reported", True))
    return providers.Completion(
        content=payload.get("content") or "",
        tool_calls=payload.get("tool_calls") or [],
        finish_reason=payload.get("finish_reason") or "stop",
        prompt_tokens=usage.get("prompt_tokens") if reported else None,
        completion_tokens=usage.get("completion_tokens") if reported else None,
        model=payload.get("model") or "",
    )


# --- replay ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exchange:
    """The recorded exchange a replay works from: the last attempt that called the model."""

    attempt: int
    request: TurnEventRecord
    response: TurnEventRecord | None
    events: list[TurnEventRecord]  # of that attempt, in order
    log: list[TurnEventRecord]  # the turn's whole log, in order

    def ended_by(self, *kinds: str) -> TurnEventRecord | None:
        return next((event for event in self.events if event.kind in kinds), None)


def recorded_exchange(turn: Turn) -> Exchange:
    if turn.status in (TurnStatus.QUEUED, TurnStatus.RUNNING):
        raise NotReplayable("This turn has not finished yet; only a finished turn can be replayed.", code="turn_in_progress")
    events = list(TurnEventRecord.objects.filter(turn=turn).order_by("attempt", "seq"))
    requests = [event for event in events if event.kind == EventKind.PROVIDER_REQUEST]
    if not requests:
        raise NotReplayable("This turn ended before calling the model: its log holds no provider request to replay.")
    # The attempt that ended the turn with an answer, else the last that asked: an attempt taken over
    # may still have appended to its own (older) attempt afterwards.
    completed = [event.attempt for event in events if event.kind == EventKind.COMPLETED and event.attempt]
    request = next((r for r in reversed(requests) if r.attempt == completed[-1]), requests[-1]) if completed else requests[-1]
    attempt_events = [event for event in events if event.attempt == request.attempt]
    response = next((e for e in attempt_events if e.kind == EventKind.PROVIDER_RESPONSE and e.seq > request.seq), None)
    return Exchange(attempt=request.attempt, request=request, response=response, events=attempt_events, log=events)


def config_for(turn: Turn) -> providers.ProviderConfig:
    """Where the turn's call went, as the worker decides it (agents/runner.py `_execute`)."""
    config = providers.ProviderConfig.for_agent(turn.agent)
    if turn.params.get("model_override"):
        config = providers.ProviderConfig(**{**config.__dict__, "model": turn.params["model_override"]})
    return config


def replay(turn: Turn, *, embed: EmbedTexts | None) -> Report:
    """Re-execute a finished turn against its recorded provider I/O and report every divergence.
    `embed` embeds recall queries (the worker's embeddings.embed_query; the web process asks a worker).
    NotReplayable if there is nothing to replay."""
    exchange = recorded_exchange(turn)
    report = Report(turn_id=turn.id, attempt=exchange.attempt)
    turn.conversation.agent = turn.agent  # one agent per conversation, as the claim sets it
    forgotten = sorted({mid for e in exchange.log for mid in (e.payload.get("redacted") or {}).get("message_ids", [])})
    if forgotten:
        report.cannot("request", f"messages it carried were forgotten and redacted from its log: {', '.join(forgotten)}")
        return report
    config = config_for(turn)
    if exchange.request.payload.get("resumed"):
        body, prompt_estimate = _check_resumed(turn, exchange, report)
        origin = next((e for e in reversed(exchange.log) if e.kind == EventKind.PROVIDER_REQUEST and e.payload.get("context")), None)
        if any(e.kind == EventKind.RESUMED and e.payload.get("replace") for e in exchange.log):
            report.cannot("origin.body", "a resume replaced the turn's input: the history no longer holds what the first request sent")
        if origin is not None and _check_assembled(turn, origin, config, embed, report, prefix="origin.") is not None:
            report.notes.append(f"Resumed: its request continues the one assembled in attempt {origin.attempt} (checked as origin).")
    else:
        assembled = _check_assembled(turn, exchange.request, config, embed, report)
        if assembled is None:
            return report
        body, prompt_estimate = assembled
    _check_outcome(turn, exchange, report, config=config, body=body, prompt_estimate=prompt_estimate)
    return report


def _check_assembled(
    turn: Turn, request: TurnEventRecord, config: providers.ProviderConfig, embed: EmbedTexts | None, report: Report, *, prefix: str = ""
) -> tuple[dict, int] | None:
    """Assemble the context as the worker did for `request` and compare; the replayed body and the
    context's size, or None if the context could not be assembled."""
    recorded_context = request.payload.get("context") or {}
    as_of = store_as_of(turn, request, recorded_context, report)
    try:
        ctx = memory_context.assemble(turn.conversation, upto_seq=turn.seq, embed=embed, as_of=as_of)
    except memory_context.ContextLengthExceeded as error:
        report.divergences.append(Divergence(f"{prefix}context", recorded="assembled", replayed=f"refused: {error.message}"))
        return None
    body = providers.request_body(config, ctx.messages, turn.params, stream=True)
    if request.payload.get("endpoint") != config.endpoint:
        report.divergences.append(Divergence(f"{prefix}endpoint", recorded=request.payload.get("endpoint"), replayed=config.endpoint))
    report.divergences += diff(request.payload.get("body"), _as_json(body), f"{prefix}body")
    report.divergences += diff(recorded_context, _as_json(ctx.explain()), f"{prefix}context")
    return body, ctx.total_tokens


def _check_resumed(turn: Turn, exchange: Exchange, report: Report) -> tuple[dict, int]:
    """A resumed attempt sends the request it was stopped (or held) in, plus what the resume added
    (agents/runner.py `_request`): compare with that persisted state. The recorded body, and its size."""
    recorded = exchange.request.payload.get("body") or {}
    saved = [e for e in exchange.log if e.kind in (EventKind.INTERRUPTED, EventKind.APPROVAL_REQUESTED) and e.attempt < exchange.attempt]
    persisted = next((e.payload["resume"] for e in reversed(saved) if e.payload.get("resume")), None)
    if persisted is None:
        report.cannot("body", "the turn was resumed, but its log holds no persisted request it resumed from")
        return recorded, 0
    pending = turn.params.get("resume") or {}
    if pending.get("body") == persisted["body"]:
        added = list(pending.get("add") or [])
    else:  # resumed again since: what this resume added is only in the request itself
        added = recorded.get("messages", [])[len(persisted["body"].get("messages", [])) :]
        report.notes.append("The input a resume added is read from the request itself (a later resume replaced it).")
    expected = {**persisted["body"], "messages": persisted["body"].get("messages", []) + added}
    report.divergences += diff(recorded, _as_json(expected), "body")
    endpoint = config_for(turn).endpoint
    if exchange.request.payload.get("endpoint") != endpoint:
        report.divergences.append(Divergence("endpoint", recorded=exchange.request.payload.get("endpoint"), replayed=endpoint))
    return recorded, int(persisted.get("prompt_tokens") or 0)


def _check_outcome(
    turn: Turn, exchange: Exchange, report: Report, *, config: providers.ProviderConfig, body: dict, prompt_estimate: int
) -> None:
    """Put the recorded answer through the outcome computation and compare it with the turn's outcome."""
    stopped = exchange.ended_by(EventKind.CANCELLED, EventKind.INTERRUPTED)
    if exchange.response is None:
        if stopped is not None:
            report.notes.append(
                f"The call was stopped ({stopped.payload.get('stop')}): its partial answer is what was streamed, nothing to compute."
            )
        else:
            failed = exchange.ended_by(EventKind.PROVIDER_ERROR)
            why = (failed.payload.get("code") if failed else None) or "no answer recorded"
            report.notes.append(f"The call failed ({why}): only the request was checked, there is no answer to compute from.")
        return
    held = exchange.ended_by(EventKind.APPROVAL_REQUESTED) is not None
    computed = outcome(
        turn, recorded_completion(exchange.response.payload), prompt_estimate=prompt_estimate, config=config, body=body, held=held
    )
    report.divergences += diff(recorded_outcome(turn, exchange.events, held=held), computed, "outcome")
    report.divergences += diff(exchange.response.payload.get("usage"), _usage(computed), "response.usage")
    report.outcome_checked = True
    if held:
        _note_decision(turn, report)
    _note_prices(body, exchange.request, report)


def _note_decision(turn: Turn, report: Report) -> None:
    """A held call's answer is a person's decision: said, and the approved calls checked against the reply."""
    approval = turn.approvals.order_by("-created_at").first()
    if approval is None:
        return
    report.notes.append(f"The tool calls were held for approval: {approval.status} by {approval.decided_by or 'nobody yet'}.")
    if approval.status == "approved":
        output = Message.objects.filter(id=turn.output_id).first() if turn.output_id else None
        approved = approval.edited_tool_calls or approval.tool_calls
        report.divergences += diff(approved, output.tool_calls if output else None, "approval.tool_calls")


def _usage(computed: dict) -> dict:
    return openai_format.usage(computed["prompt_tokens"], computed["completion_tokens"])


def store_as_of(turn: Turn, request: TurnEventRecord, recorded_context: dict, report: Report) -> AsOf:
    """The store as the turn's context was assembled from it, and what of it is gone since."""
    pieces = recorded_context.get("pieces") or []
    recent = {mid for piece in pieces if piece.get("kind") == "recent" for mid in piece.get("source_message_ids", [])}
    later = Message.objects.filter(conversation_id=turn.conversation_id, seq=turn.seq).filter(created_at__gt=request.created_at)
    if turn.output_id:
        later = later | Message.objects.filter(id=turn.output_id)
    hidden = frozenset(mid for mid in later.values_list("id", flat=True) if str(mid) not in recent)
    summary_ids = {piece["summary_id"] for piece in pieces if piece.get("summary_id")}
    memory_ids = {piece["memory_id"] for piece in pieces if piece.get("memory_id")}
    _missing(report, "message", recent, Message.objects.filter(conversation_id=turn.conversation_id))
    _missing(report, "summary", summary_ids, Summary.objects.filter(tenant_id=turn.tenant_id))
    _missing(report, "memory", memory_ids, Memory.objects.filter(tenant_id=turn.tenant_id))
    agent = turn.agent
    if agent.updated_at and agent.updated_at > request.created_at:
        report.notes.append(
            f"The agent was changed after this turn ({agent.updated_at.isoformat()}): a replay reads its system prompt, "
            "model and memory settings as they are now."
        )
    if recorded_context.get("tokenizer") not in (None, tokens.tokenizer_name()):
        report.cannot("context.tokenizer", f"tokens were counted by {recorded_context['tokenizer']}, now by {tokens.tokenizer_name()}")
    as_of = AsOf(
        at=request.created_at,
        hidden_message_ids=hidden,
        known_summary_ids=frozenset(map(uuid.UUID, summary_ids)),
        known_memory_ids=frozenset(map(uuid.UUID, memory_ids)),
    )
    if agent.has_memories and agent.recall_limit:
        visible = as_of.memories(Memory.objects.filter(tenant_id=turn.tenant_id, agent_id=agent.id))
        limit = settings.SENTINEL["EXACT_SEARCH_MAX"]
        if visible[: limit + 1].count() > limit:
            report.notes.append(
                "Recall searched the approximate (HNSW) index, whose answers depend on everything indexed since: "
                "a divergence among recalled pieces may come from it."
            )
    return as_of


def _missing(report: Report, what: str, ids: set[str], rows) -> None:
    if not ids:
        return
    there = {str(found) for found in rows.filter(id__in=list(ids)).values_list("id", flat=True)}
    for gone in sorted(ids - there):
        report.cannot(f"context.{what}:{gone}", f"the {what} the turn's context carried no longer exists (forgotten or deleted)")


def _note_prices(body: dict, request: TurnEventRecord, report: Report) -> None:
    if Price.objects.filter(model=body.get("model", ""), updated_at__gt=request.created_at).exists():
        report.notes.append("The model's price changed after this turn: the cost is computed at today's price.")


# --- transitions -------------------------------------------------------------------------------
def transitions(tenant_id: Any, agent_id: Any, start: datetime | None, end: datetime) -> QuerySet:
    """Seed 000's `replay(agent, from, to)`: every state transition of the agent's turns recorded in
    [start, end), as rows (the turn, its conversation, the attempt, the states, the trigger, the
    instant), for the caller to order and page. A turn's events come after it was created, so only
    turns created before `end` are looked at."""
    events = TurnEventRecord.objects.filter(
        kind=EventKind.STATE, turn__tenant_id=tenant_id, turn__agent_id=agent_id, turn__created_at__lt=end, created_at__lt=end
    )
    if start is not None:
        events = events.filter(created_at__gte=start)
    return events.values("id", "turn_id", "attempt", "seq", "from_state", "to_state", "payload", "created_at").annotate(
        conversation_id=F("turn__conversation_id")
    )
