"""The agent state machine of seed 000 section 6.2.2.2, and the turn lifecycle around it.

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


class TurnEvent(enum.StrEnum):
    """What happened to the agent; the seed's MessageEvent."""

    MESSAGE_RECEIVED = "message_received"
    LLM_RESPONSE = "llm_response"  # carries whether the model asked for tools
    TOOL_RESULT = "tool_result"
    COMPLETE = "complete"


class InvalidStateTransition(Exception):
    """A transition the state machine does not allow."""

    def __init__(self, current: AgentState, attempted: AgentState | TurnEvent) -> None:
        super().__init__(f"invalid state transition from {current.value} by {attempted.value}")
        self.current = current
        self.attempted = attempted


# (state, event) -> next state. LLM_RESPONSE has two targets, chosen by `wants_tools`.
_TRANSITIONS: dict[tuple[AgentState, TurnEvent], AgentState] = {
    (AgentState.IDLE, TurnEvent.MESSAGE_RECEIVED): AgentState.THINKING,
    (AgentState.THINKING, TurnEvent.LLM_RESPONSE): AgentState.REFLECTING,
    (AgentState.TOOL_CALL, TurnEvent.TOOL_RESULT): AgentState.REFLECTING,
    (AgentState.REFLECTING, TurnEvent.COMPLETE): AgentState.IDLE,
}

ALLOWED: frozenset[tuple[AgentState, AgentState]] = frozenset(
    {
        (AgentState.IDLE, AgentState.THINKING),
        (AgentState.THINKING, AgentState.TOOL_CALL),
        (AgentState.THINKING, AgentState.REFLECTING),
        (AgentState.TOOL_CALL, AgentState.REFLECTING),
        (AgentState.REFLECTING, AgentState.IDLE),
    }
)


def transition_state(current: AgentState, event: TurnEvent, *, wants_tools: bool = False) -> AgentState:
    """The next state after `event` in `current`, or InvalidStateTransition."""
    if current is AgentState.THINKING and event is TurnEvent.LLM_RESPONSE and wants_tools:
        return AgentState.TOOL_CALL
    try:
        return _TRANSITIONS[(current, event)]
    except KeyError:
        raise InvalidStateTransition(current, event) from None


def check_transition(current: AgentState, target: AgentState) -> None:
    """Raise InvalidStateTransition unless current -> target is one of the seed's transitions."""
    if (current, target) not in ALLOWED:
        raise InvalidStateTransition(current, target)
