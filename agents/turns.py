"""The agent state machine of seed 000 section 6.2.2.2: its states, the triggers that move it, and
the only transitions. (A turn's status, queued to succeeded or failed, is agents.models.TurnStatus.)

An agent turn moves Idle -> Thinking -> (ToolCall ->) Reflecting -> Idle. Any other step is a
bug in the caller and raises InvalidStateTransition; nothing in here touches Celery or HTTP.
"""

from __future__ import annotations

import enum


class AgentState(enum.StrEnum):
    IDLE = "idle"
    THINKING = "thinking"
    TOOL_CALL = "tool_call"
    REFLECTING = "reflecting"


class Trigger(enum.StrEnum):
    """What happened to the agent and moves its state: the seed's MessageEvent. (Not to be confused
    with agents.models.TurnEventRecord, a row of a turn's log.)"""

    MESSAGE_RECEIVED = "message_received"
    LLM_RESPONSE = "llm_response"  # carries whether the model asked for tools
    TOOL_RESULT = "tool_result"
    COMPLETE = "complete"


class InvalidStateTransition(Exception):
    """A transition the state machine does not allow."""

    def __init__(self, current: AgentState, attempted: Trigger) -> None:
        super().__init__(f"invalid state transition from {current.value} by {attempted.value}")
        self.current = current
        self.attempted = attempted


# (state, trigger) -> next state, the seed's only transitions. LLM_RESPONSE has two targets,
# chosen by `wants_tools`.
_TRANSITIONS: dict[tuple[AgentState, Trigger], AgentState] = {
    (AgentState.IDLE, Trigger.MESSAGE_RECEIVED): AgentState.THINKING,
    (AgentState.THINKING, Trigger.LLM_RESPONSE): AgentState.REFLECTING,
    (AgentState.TOOL_CALL, Trigger.TOOL_RESULT): AgentState.REFLECTING,
    (AgentState.REFLECTING, Trigger.COMPLETE): AgentState.IDLE,
}


def transition_state(current: AgentState, trigger: Trigger, *, wants_tools: bool = False) -> AgentState:
    """The next state after `trigger` in `current`, or InvalidStateTransition."""
    if current is AgentState.THINKING and trigger is Trigger.LLM_RESPONSE and wants_tools:
        return AgentState.TOOL_CALL
    try:
        return _TRANSITIONS[(current, trigger)]
    except KeyError:
        raise InvalidStateTransition(current, trigger) from None
