"""The seed's state machine: exactly four transitions are allowed, every other pair is rejected."""

import itertools

import pytest

from agents.turns import AgentState, InvalidStateTransition, Trigger, transition_state

S = AgentState
SEED_TRANSITIONS = {
    (S.IDLE, S.THINKING),
    (S.THINKING, S.TOOL_CALL),
    (S.THINKING, S.REFLECTING),
    (S.TOOL_CALL, S.REFLECTING),
    (S.REFLECTING, S.IDLE),
}


def moves() -> set[tuple[AgentState, AgentState]]:
    """Every (state, next state) pair some trigger makes, with or without tools asked for."""
    found = set()
    for current, trigger, wants_tools in itertools.product(S, Trigger, (False, True)):
        try:
            found.add((current, transition_state(current, trigger, wants_tools=wants_tools)))
        except InvalidStateTransition as refused:
            assert refused.current is current and refused.attempted is trigger
    return found


def test_the_allowed_set_is_exactly_the_seeds():
    assert moves() == SEED_TRANSITIONS


@pytest.mark.parametrize("current,target", sorted(itertools.product(S, S)))
def test_every_pair_of_states_is_allowed_or_rejected(current, target):
    assert ((current, target) in moves()) == ((current, target) in SEED_TRANSITIONS)


@pytest.mark.parametrize(
    "current,event,wants_tools,expected",
    [
        (S.IDLE, Trigger.MESSAGE_RECEIVED, False, S.THINKING),
        (S.THINKING, Trigger.LLM_RESPONSE, False, S.REFLECTING),
        (S.THINKING, Trigger.LLM_RESPONSE, True, S.TOOL_CALL),
        (S.TOOL_CALL, Trigger.TOOL_RESULT, False, S.REFLECTING),
        (S.REFLECTING, Trigger.COMPLETE, False, S.IDLE),
    ],
)
def test_events_move_the_machine_as_the_seed_says(current, event, wants_tools, expected):
    assert transition_state(current, event, wants_tools=wants_tools) is expected


VALID_EVENTS = {
    (S.IDLE, Trigger.MESSAGE_RECEIVED),
    (S.THINKING, Trigger.LLM_RESPONSE),
    (S.TOOL_CALL, Trigger.TOOL_RESULT),
    (S.REFLECTING, Trigger.COMPLETE),
}


@pytest.mark.parametrize("current,event", sorted(set(itertools.product(S, Trigger)) - VALID_EVENTS))
def test_an_event_in_the_wrong_state_is_rejected(current, event):
    with pytest.raises(InvalidStateTransition):
        transition_state(current, event)


def test_a_full_tool_turn_walks_idle_thinking_toolcall_reflecting_idle():
    state = S.IDLE
    path = [state]
    for event, tools in [
        (Trigger.MESSAGE_RECEIVED, False),
        (Trigger.LLM_RESPONSE, True),
        (Trigger.TOOL_RESULT, False),
        (Trigger.COMPLETE, False),
    ]:
        state = transition_state(state, event, wants_tools=tools)
        path.append(state)
    assert path == [S.IDLE, S.THINKING, S.TOOL_CALL, S.REFLECTING, S.IDLE]
