"""The seed's state machine: exactly four transitions are allowed, every other pair is rejected."""

import itertools

import pytest

from agents.turns import ALLOWED, AgentState, InvalidStateTransition, TurnEvent, check_transition, transition_state

S = AgentState
SEED_TRANSITIONS = {
    (S.IDLE, S.THINKING),
    (S.THINKING, S.TOOL_CALL),
    (S.THINKING, S.REFLECTING),
    (S.TOOL_CALL, S.REFLECTING),
    (S.REFLECTING, S.IDLE),
}


def test_the_allowed_set_is_exactly_the_seeds():
    assert ALLOWED == SEED_TRANSITIONS


@pytest.mark.parametrize("current,target", sorted(itertools.product(S, S)))
def test_every_pair_of_states_is_allowed_or_rejected(current, target):
    if (current, target) in SEED_TRANSITIONS:
        check_transition(current, target)
    else:
        with pytest.raises(InvalidStateTransition) as info:
            check_transition(current, target)
        assert info.value.current is current and info.value.attempted is target


@pytest.mark.parametrize(
    "current,event,wants_tools,expected",
    [
        (S.IDLE, TurnEvent.MESSAGE_RECEIVED, False, S.THINKING),
        (S.THINKING, TurnEvent.LLM_RESPONSE, False, S.REFLECTING),
        (S.THINKING, TurnEvent.LLM_RESPONSE, True, S.TOOL_CALL),
        (S.TOOL_CALL, TurnEvent.TOOL_RESULT, False, S.REFLECTING),
        (S.REFLECTING, TurnEvent.COMPLETE, False, S.IDLE),
    ],
)
def test_events_move_the_machine_as_the_seed_says(current, event, wants_tools, expected):
    assert transition_state(current, event, wants_tools=wants_tools) is expected


VALID_EVENTS = {
    (S.IDLE, TurnEvent.MESSAGE_RECEIVED),
    (S.THINKING, TurnEvent.LLM_RESPONSE),
    (S.TOOL_CALL, TurnEvent.TOOL_RESULT),
    (S.REFLECTING, TurnEvent.COMPLETE),
}


@pytest.mark.parametrize("current,event", sorted(set(itertools.product(S, TurnEvent)) - VALID_EVENTS))
def test_an_event_in_the_wrong_state_is_rejected(current, event):
    with pytest.raises(InvalidStateTransition):
        transition_state(current, event)


def test_a_full_tool_turn_walks_idle_thinking_toolcall_reflecting_idle():
    state = S.IDLE
    path = [state]
    for event, tools in [
        (TurnEvent.MESSAGE_RECEIVED, False),
        (TurnEvent.LLM_RESPONSE, True),
        (TurnEvent.TOOL_RESULT, False),
        (TurnEvent.COMPLETE, False),
    ]:
        state = transition_state(state, event, wants_tools=tools)
        path.append(state)
    assert path == [S.IDLE, S.THINKING, S.TOOL_CALL, S.REFLECTING, S.IDLE]
