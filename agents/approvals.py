"""Human approval of tool calls (an agent's `requires_approval`): held, then approved, denied or expired.

When the model asks for a tool the agent lists, the turn does not hand the call back: its call is
settled, its answer recorded, and the turn waits (`awaiting_approval`, agent state tool_call) with
an Approval. Its conversation waits too (later turns queue behind it). A decision ends the wait:
- approved: the calls, with any edited arguments, are the turn's answer, as if the model had just
  returned them (tools run on the client, OpenAI's contract); no model call is made;
- denied, or expired (the Supervisor's sweep, past SENTINEL_APPROVAL_TTL_SECONDS): the turn is
  queued again and resumes from its persisted request, the model's tool call and a tool message per
  call saying it was denied and why, so the model answers otherwise; the client waiting gets that answer.
Every decision is a conditional update of a pending approval (two deciders: one wins) and audited.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents import openai_format, providers
from agents.models import Agent, Approval, ApprovalStatus, EventKind, Message, Turn, TurnStatus
from agents.outcomes import Request, actor_of, announce, next_queued, tell_ended
from agents.recorder import LostClaim, Recorder, fenced, record_outside_attempt, state_events
from agents.streams import StreamKind
from agents.turns import Trigger
from budgets import audit, spend


class ApprovalNotPending(Exception):
    """The approval was already decided (or expired)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"This approval is already {status}.")
        self.status = status


class BadEditedArguments(Exception):
    """Edited arguments name a call the approval does not hold, or are not a JSON object."""


def needs_approval(agent: Agent, tool_calls: list[dict] | None) -> bool:
    names = set(agent.requires_approval or [])
    return bool(names) and any((call.get("function") or {}).get("name") in names for call in tool_calls or [])


def hold(recorder: Recorder, result: providers.Completion, request: Request, *, config: providers.ProviderConfig) -> None:
    """The model asked for a tool that needs approval: settle its call, keep its answer, hold the turn."""
    turn = recorder.turn
    prompt_tokens, completion_tokens = result.usage(request.prompt_tokens)
    model = request.body["model"]
    actual = spend.cost(turn.tenant_id, model, config.endpoint, prompt_tokens, completion_tokens)
    recorder.record(
        EventKind.PROVIDER_RESPONSE,
        {"content": result.content, "tool_calls": result.tool_calls, "finish_reason": "tool_calls", "model": result.model,
         "usage": openai_format.usage(prompt_tokens, completion_tokens), "latency_ms": result.latency_ms},
    )  # fmt: skip
    recorder.move(Trigger.LLM_RESPONSE, wants_tools=True)
    now = timezone.now()
    expires = now + timedelta(seconds=settings.SENTINEL["APPROVAL_TTL_SECONDS"])
    with transaction.atomic():
        held = fenced(recorder).update(
            status=TurnStatus.AWAITING_APPROVAL, agent_state=recorder.state, heartbeat_at=now, model=result.model,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=F("cost") + actual,
        )  # fmt: skip
        if not held:
            raise LostClaim
        approval = Approval.objects.create(tenant_id=turn.tenant_id, turn_id=turn.id, tool_calls=result.tool_calls, expires_at=expires)
        assistant = {"role": "assistant", "content": result.content or None, "tool_calls": result.tool_calls}
        resume = {"body": request.body, "prompt_tokens": request.prompt_tokens, "reply_index": request.reply_index, "assistant": assistant}
        recorder.record(EventKind.APPROVAL_REQUESTED, {"approval_id": str(approval.id), "tool_calls": result.tool_calls, "resume": resume})
        written = recorder.flush()
        audit.record(
            "approval.requested", actor=actor_of(turn), tenant_id=turn.tenant_id, target=str(approval.id),
            data={"turn": str(turn.id), "tools": [call["function"]["name"] for call in result.tool_calls]},
        )  # fmt: skip
        if recorder.reservation is not None:  # the windows last, after the audit head (outcomes.end_failed says why)
            spend.settle(
                recorder.reservation, turn_id=turn.id, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                actual=actual,
            )  # fmt: skip
    notice = {"approval_id": str(approval.id), "tool_calls": result.tool_calls, "expires_at": expires.isoformat()}
    announce(turn.id, [*state_events(written), (StreamKind.APPROVAL, notice)])


@dataclass(frozen=True)
class Decision:
    approval: Approval
    following: uuid.UUID | None  # the conversation's next turn, once the approved turn ended
    requeued: uuid.UUID | None  # the turn, queued again to answer a denial


def decide(
    approval_id: Any, *, tenant_id: Any, approve: bool, actor: str, reason: str = "", arguments: dict[str, Any] | None = None,
    expired: bool = False,
) -> Decision:  # fmt: skip
    """Approve or deny a pending approval. `arguments`: {tool call id: edited arguments object}.
    ApprovalNotPending if someone decided first; Approval.DoesNotExist for another tenant's."""
    now = timezone.now()
    with transaction.atomic():
        approval = Approval.objects.select_for_update().get(id=approval_id, tenant_id=tenant_id)
        if approval.status != ApprovalStatus.PENDING:
            raise ApprovalNotPending(approval.status)
        turn = Turn.objects.select_for_update().select_related("agent").get(id=approval.turn_id)
        calls = _edited(approval.tool_calls, arguments) if approve else approval.tool_calls
        status = ApprovalStatus.APPROVED if approve else (ApprovalStatus.EXPIRED if expired else ApprovalStatus.DENIED)
        approval.status, approval.reason, approval.decided_by, approval.decided_at = status, reason, actor, now
        approval.edited_tool_calls = calls if arguments else None
        approval.save(update_fields=["status", "reason", "decided_by", "decided_at", "edited_tool_calls"])
        record_outside_attempt(turn, EventKind.APPROVAL_DECIDED, {"approval_id": str(approval.id), "status": status, "by": actor,
                                                                  "reason": reason, "edited": bool(arguments)})  # fmt: skip
        audit.record(f"approval.{status}", actor=actor, tenant_id=turn.tenant_id, target=str(approval.id),
                     data={"turn": str(turn.id), "reason": reason, "edited": bool(arguments)})  # fmt: skip
        if turn.status != TurnStatus.AWAITING_APPROVAL:
            return Decision(approval, None, None)  # the turn was cancelled meanwhile: the decision is only recorded
        if approve:
            following = _answer_with_calls(turn, calls, now)
            audit.record("turn.succeeded", actor=actor, tenant_id=turn.tenant_id, target=str(turn.id),
                         data={"agent": turn.agent.name, "approved": str(approval.id), "cost": str(turn.cost)})  # fmt: skip
            response = _completion(turn, calls)

            def tell() -> None:
                announce(turn.id, [(StreamKind.DONE, {"response": response})])
                tell_ended(turn, TurnStatus.SUCCEEDED)

            transaction.on_commit(tell)
            return Decision(approval, following, None)
        _requeue_denied(turn, approval, reason or ("The approval expired." if expired else "Denied."))
        return Decision(approval, None, turn.id)


def _edited(calls: list[dict], arguments: dict[str, Any] | None) -> list[dict]:
    if not arguments:
        return calls
    known = {call.get("id") for call in calls}
    unknown = sorted(set(arguments) - known)
    if unknown:
        raise BadEditedArguments(f"No held tool call has the id {unknown[0]!r}.")
    edited = []
    for call in calls:
        if call.get("id") in arguments:
            value = arguments[call["id"]]
            if not isinstance(value, dict):
                raise BadEditedArguments(f"The arguments for {call['id']!r} must be a JSON object.")
            call = {**call, "function": {**call["function"], "arguments": json.dumps(value)}}
        edited.append(call)
    return edited


def _answer_with_calls(turn: Turn, calls: list[dict], now) -> uuid.UUID | None:
    """The approved calls are the turn's answer: its reply message, the turn succeeded."""
    index = (Message.objects.filter(turn_id=turn.id).order_by("-index").values_list("index", flat=True).first() or 0) + 1
    reply = Message.objects.create(
        tenant_id=turn.tenant_id, conversation_id=turn.conversation_id, turn=turn, seq=turn.seq, index=index, role="assistant",
        content="", tool_calls=calls,
    )  # fmt: skip
    Turn.objects.filter(id=turn.id).update(
        status=TurnStatus.SUCCEEDED, agent_state="idle", finished_at=now, heartbeat_at=now, finish_reason="tool_calls", output=reply,
        latency_ms=max(0, int((now - turn.created_at).total_seconds() * 1000)),
    )  # fmt: skip
    record_outside_attempt(turn, EventKind.COMPLETED, {"message_id": str(reply.id), "approved": True})
    following = next_queued(turn)
    return following.id if following else None


def _requeue_denied(turn: Turn, approval: Approval, reason: str) -> None:
    """The model is told the calls were denied: the turn runs again from where it was held."""
    requests = turn.events.filter(kind=EventKind.APPROVAL_REQUESTED, payload__approval_id=str(approval.id))
    requested = requests.values_list("payload", flat=True).first()
    resume = dict(requested["resume"])
    told = [{"role": "tool", "tool_call_id": call.get("id", ""), "content": f"The call was denied by a person: {reason}"}
            for call in approval.tool_calls]  # fmt: skip
    resume["add"] = [resume.pop("assistant"), *told]
    Turn.objects.filter(id=turn.id).update(
        status=TurnStatus.QUEUED, agent_state="idle", heartbeat_at=timezone.now(), params={**turn.params, "resume": resume}
    )
    record_outside_attempt(turn, EventKind.RESUMED, {"after": "approval_denied", "approval_id": str(approval.id)})


def _completion(turn: Turn, calls: list[dict]) -> dict:
    return openai_format.completion(
        turn_id=turn.id, created=int(turn.created_at.timestamp()), model=turn.agent.name, content="", tool_calls=calls,
        finish_reason="tool_calls", prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens,
    )  # fmt: skip


def expire_due(now=None, limit: int = 200) -> list[uuid.UUID]:
    """Deny every pending approval past its TTL (the Supervisor's sweep); the turns queued again."""
    now = now or timezone.now()
    requeued = []
    for approval in Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lt=now).order_by("expires_at")[:limit]:
        try:
            decision = decide(approval.id, tenant_id=approval.tenant_id, approve=False, actor=audit.SUPERVISOR,
                              reason="The approval expired.", expired=True)  # fmt: skip
        except ApprovalNotPending:
            continue
        if decision.requeued is not None:
            requeued.append(decision.requeued)
    return requeued
