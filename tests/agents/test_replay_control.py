"""Replaying turns that control of running work reshaped: interrupted and resumed, held for approval
(approved with edited arguments, or denied and answered again), cancelled mid-stream."""

import threading

import pytest

from agents import approvals, control, heartbeat
from agents.models import Approval, Stop, Turn, TurnStatus
from tests.agents.test_replay import CALL, WEATHER, admit_turn, replayed, run
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


def stop_on_arrival(stub_llm, marker: str, kind: str) -> None:
    """The running turn is asked to stop while its answer streams (slowly), a few words in."""

    def stop() -> None:
        for tracked in heartbeat.running_here():
            tracked.request_stop(kind)

    def action(body):
        threading.Timer(0.3, stop).start()
        return Reply(content="once upon a time there was a very long story indeed", chunk_delay=0.1)

    stub_llm.when(marker, action)


def test_an_interrupted_and_resumed_turn_replays_identically(alice, stub_llm):
    stop_on_arrival(stub_llm, "story", Stop.INTERRUPT)
    turn = run(admit_turn(alice, "tell me a story"))
    assert turn.status == TurnStatus.INTERRUPTED
    stub_llm.reset()
    control.resume(turn.id, tenant_id=alice.tenant.id, actor="test", input="and make it short")
    turn = run(turn)
    assert turn.status == TurnStatus.SUCCEEDED and turn.attempt == 2
    report = replayed(turn)
    assert report.identical, ([d.as_dict() for d in report.divergences], report.unreproducible)
    assert report.outcome_checked and any("checked as origin" in note for note in report.notes)


def test_a_resumed_request_that_differs_from_its_persisted_state_is_reported(alice, stub_llm):
    stop_on_arrival(stub_llm, "story", Stop.INTERRUPT)
    turn = run(admit_turn(alice, "tell me a story"))
    stub_llm.reset()
    control.resume(turn.id, tenant_id=alice.tenant.id, actor="test", input="and make it short")
    params = Turn.objects.get(id=turn.id).params
    params["resume"]["add"] = [{"role": "user", "content": "something else"}]  # what the runner will send
    Turn.objects.filter(id=turn.id).update(params=params)
    turn = run(turn)
    params["resume"]["add"] = [{"role": "user", "content": "and make it short"}]  # what the resume had asked for
    Turn.objects.filter(id=turn.id).update(params=params)
    report = replayed(turn)
    changed = {d.path: d.as_dict() for d in report.divergences}
    last = len(turn.events.filter(kind="provider_request").last().payload["body"]["messages"]) - 1
    assert changed[f"body.messages[{last}].content"]["recorded"] == "something else"
    assert changed[f"body.messages[{last}].content"]["replayed"] == "and make it short"


def test_an_approved_call_with_edited_arguments_replays_identically_and_says_who_decided(alice, stub_llm):
    alice.agent.requires_approval = ["get_weather"]
    alice.agent.save()
    stub_llm.script(Reply(tool_calls=[CALL]))
    turn = run(admit_turn(alice, "weather in Oslo?", tools=WEATHER))
    assert turn.status == TurnStatus.AWAITING_APPROVAL
    approval = Approval.objects.get(turn=turn)
    approvals.decide(approval.id, tenant_id=alice.tenant.id, approve=True, actor="user:ops", arguments={"call_1": {"city": "Bergen"}})
    report = replayed(Turn.objects.get(id=turn.id))
    assert report.identical, [d.as_dict() for d in report.divergences]
    assert report.outcome_checked and any("approved by user:ops" in note for note in report.notes)


def test_a_denied_call_answered_again_replays_identically(alice, stub_llm):
    alice.agent.requires_approval = ["get_weather"]
    alice.agent.save()
    stub_llm.script(Reply(tool_calls=[CALL]), Reply(content="I cannot check the weather, sorry."))
    turn = run(admit_turn(alice, "weather in Oslo?", tools=WEATHER))
    approval = Approval.objects.get(turn=turn)
    approvals.decide(approval.id, tenant_id=alice.tenant.id, approve=False, actor="user:ops", reason="not today")
    turn = run(turn)
    assert turn.status == TurnStatus.SUCCEEDED and turn.output.content == "I cannot check the weather, sorry."
    report = replayed(turn)
    assert report.identical, [d.as_dict() for d in report.divergences]
    assert report.attempt == 2 and report.outcome_checked


def test_a_cancelled_turn_replays_its_request_and_says_it_was_stopped(alice, stub_llm):
    stop_on_arrival(stub_llm, "story", Stop.CANCEL)
    turn = run(admit_turn(alice, "tell me a story"))
    assert turn.status == TurnStatus.CANCELLED
    report = replayed(turn)
    assert report.identical and not report.outcome_checked
    assert any("stopped (cancel)" in note for note in report.notes)
