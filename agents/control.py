"""Control of a turn from outside its worker: cancel, interrupt, resume.

A turn not yet running (queued, or waiting for an approval) is ended here at once, in one
transaction with the turn's row locked, so a worker's claim (a conditional update of a queued turn)
either came first, and the turn is running, or finds it no longer queued and never starts it. A
running turn is asked to stop: the flag goes on its row (durable) and in Redis (fast, agents/stops.py),
and its worker ends it at the next token, or at once, closing its provider stream (agents/heartbeat.py,
agents/outcomes.stop). Asking again, or asking a turn already stopped that way, changes nothing.

A resume queues an interrupted turn again: the worker continues from the request it was making
(its persisted state), with the client's new or edited input, on whichever worker claims it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from django.db import transaction
from django.utils import timezone

from agents import openai_format, stops
from agents.models import UNFINISHED, Approval, ApprovalStatus, EventKind, Message, Stop, Turn, TurnEventRecord, TurnStatus
from agents.outcomes import announce, next_queued, tell_ended
from agents.recorder import record_outside_attempt
from agents.streams import StreamKind
from budgets import audit, spend
from budgets.models import Reservation

log = logging.getLogger(__name__)

# What each stop leaves the turn as, once it has stopped.
STOPPED_AS = {
    Stop.CANCEL: TurnStatus.CANCELLED,
    Stop.ROLLBACK: TurnStatus.CANCELLED,
    Stop.INTERRUPT: TurnStatus.INTERRUPTED,
    Stop.SHUTDOWN: TurnStatus.INTERRUPTED,
}


class TurnAlreadyFinished(Exception):
    """The turn ended otherwise before the stop could reach it."""

    def __init__(self, status: str) -> None:
        super().__init__(f"The turn already ended ({status}).")
        self.status = status


class NotResumable(Exception):
    """Only an interrupted turn can be resumed."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Only an interrupted turn can be resumed; this one is {status}.")
        self.status = status


@dataclass(frozen=True)
class Control:
    turn: Turn
    following: uuid.UUID | None = None  # the conversation's next turn, when this one ended here


def request_stop(turn_id: Any, *, tenant_id: Any, kind: Stop, actor: str) -> Control:
    """Cancel, interrupt or roll back a turn (see the module docstring). Turn.DoesNotExist for
    another tenant's; TurnAlreadyFinished if it ended otherwise."""
    with transaction.atomic():
        turn = Turn.objects.select_for_update(of=("self",)).select_related("agent").get(id=turn_id, tenant_id=tenant_id)
        if turn.status == STOPPED_AS[kind] or (turn.status == TurnStatus.RUNNING and turn.stop_requested):
            return Control(turn)  # asked before: nothing more to do
        if turn.status not in UNFINISHED:
            raise TurnAlreadyFinished(turn.status)
        record_outside_attempt(turn, EventKind.STOP_REQUESTED, {"stop": kind, "by": actor, "status": turn.status})
        audit.record(f"turn.{kind}_requested", actor=actor, tenant_id=turn.tenant_id, target=str(turn.id), data={"status": turn.status})
        if turn.status == TurnStatus.RUNNING:
            Turn.objects.filter(id=turn.id).update(stop_requested=kind)
            turn.stop_requested = kind
            transaction.on_commit(lambda: _flag(turn.id, kind))
            return Control(turn)
        following = _end_unstarted(turn, kind, actor)
    return Control(turn, following)


def _flag(turn_id: uuid.UUID, kind: str) -> None:
    try:
        stops.flag_stop(turn_id, kind)
    except redis.RedisError as error:  # the row's flag reaches the worker with its next heartbeat
        log.warning("could not flag a stop in Redis: %s", type(error).__name__)


def _end_unstarted(turn: Turn, kind: Stop, actor: str) -> uuid.UUID | None:
    """End a turn no worker runs (queued, or waiting for an approval): no model call is cut off.
    Its reservation is released; an approval it waited on is denied; a rollback removes its messages."""
    now = timezone.now()
    status = STOPPED_AS[kind]
    finish_reason = "interrupted" if status == TurnStatus.INTERRUPTED else "cancelled"
    Turn.objects.filter(id=turn.id).update(
        status=status, finished_at=now, finish_reason=finish_reason, stop_requested="",
        latency_ms=max(0, int((now - turn.created_at).total_seconds() * 1000)),
    )  # fmt: skip
    Approval.objects.filter(turn_id=turn.id, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.DENIED, reason=f"The turn was {status}.", decided_by=actor, decided_at=now
    )
    if kind == Stop.ROLLBACK:
        Message.delete_locked(Message.objects.filter(turn_id=turn.id))
    record_outside_attempt(turn, EventKind.INTERRUPTED if status == TurnStatus.INTERRUPTED else EventKind.CANCELLED,
                           {"stop": kind, "partial": "", "before_start": True})  # fmt: skip
    data = {"agent": turn.agent.name, "stop": kind}
    audit.record(f"turn.{status}", actor=actor, tenant_id=turn.tenant_id, target=str(turn.id), data=data)
    following = next_queued(turn)
    for reservation in Reservation.objects.filter(turn_id=turn.id, status=Reservation.Status.HELD):
        spend.release(reservation.id)  # the windows last, after the audit head (outcomes.end_failed says why)
    turn.status, turn.finish_reason = status, finish_reason
    response = openai_format.completion(
        turn_id=turn.id, created=int(turn.created_at.timestamp()), model=turn.agent.name, content="", tool_calls=[],
        finish_reason=finish_reason, prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens,
    )  # fmt: skip

    def tell() -> None:
        announce(turn.id, [(StreamKind.DONE, {"response": response})])
        tell_ended(turn, status)

    transaction.on_commit(tell)
    return following.id if following else None


def resume(turn_id: Any, *, tenant_id: Any, actor: str, input: str | None = None, replace: bool = False) -> Turn:
    """Queue an interrupted turn again. `input`: a user message added to it, or (`replace`) the
    text that replaces its last user message. NotResumable unless it is interrupted."""
    with transaction.atomic():
        turn = Turn.objects.select_for_update(of=("self",)).get(id=turn_id, tenant_id=tenant_id)
        if turn.status != TurnStatus.INTERRUPTED:
            raise NotResumable(turn.status)
        state = _interrupted_state(turn)
        params = dict(turn.params)
        if state.get("message_id"):
            # The partial answer gives way to the whole one, written where it stood.
            Message.delete_locked(Message.objects.filter(id=state["message_id"], turn_id=turn.id))
        if state.get("resume"):
            params["resume"] = {**state["resume"], "add": list(state["resume"].get("add", []))}
        if input is not None:
            _apply_input(turn, params, input, replace)
        Turn.objects.filter(id=turn.id).update(
            status=TurnStatus.QUEUED, agent_state="idle", finished_at=None, heartbeat_at=timezone.now(), finish_reason="",
            output=None, params=params, stop_requested="",
        )  # fmt: skip
        record_outside_attempt(turn, EventKind.RESUMED, {"by": actor, "input": input is not None, "replace": replace})
        audit.record("turn.resumed", actor=actor, tenant_id=turn.tenant_id, target=str(turn.id), data={"input": input is not None})
    _unflag(turn.id)  # the stop that interrupted it must not stop its next attempt too
    turn.refresh_from_db()
    return turn


def _unflag(turn_id: uuid.UUID) -> None:
    try:
        stops.clear_stop(turn_id)
    except redis.RedisError as error:  # the resumed attempt would stop at once: say so loudly
        log.error("could not clear a resumed turn's stop flag in Redis: %s", type(error).__name__)


def _interrupted_state(turn: Turn) -> dict[str, Any]:
    """What the interrupt persisted: the partial answer's message and the request to resume with."""
    event = TurnEventRecord.objects.filter(turn_id=turn.id, kind=EventKind.INTERRUPTED).order_by("-created_at", "-id").first()
    return dict(event.payload) if event is not None else {}


def _apply_input(turn: Turn, params: dict[str, Any], text: str, replace: bool) -> None:
    """Add or edit the turn's pending user message, in the history and in the request it resumes with."""
    message = {"role": "user", "content": text}
    inputs = Message.objects.filter(turn_id=turn.id, role="user").order_by("-index")
    last = inputs.first()
    if replace and last is not None:
        Message.objects.filter(id=last.id).update(content=text)
    else:
        index = (Message.objects.filter(turn_id=turn.id).order_by("-index").values_list("index", flat=True).first() or 0) + 1
        Message.objects.create(
            tenant_id=turn.tenant_id, conversation_id=turn.conversation_id, turn=turn, seq=turn.seq, index=index, role="user", content=text
        )
    resume = params.get("resume")
    if resume is None:
        return  # never started: the worker assembles its context from the messages as they are now
    if replace and last is not None:
        messages = list(resume["body"]["messages"])
        for position in range(len(messages) - 1, -1, -1):
            if messages[position].get("role") == "user":
                messages[position] = {**messages[position], "content": text}
                break
        resume["body"] = {**resume["body"], "messages": messages}
    else:
        resume["add"] = [*resume.get("add", []), message]
        resume["reply_index"] = resume["reply_index"] + 1  # the added message takes the reply's place
