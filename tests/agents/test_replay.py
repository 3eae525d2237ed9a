"""Replay: recorded turns re-executed against their provider I/O report no divergence, and a change
to context assembly or to the store is reported field by field (agents/replay.py)."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents import replay, runner
from agents.admission import admit
from agents.models import Message, Turn, TurnStatus
from budgets.models import Price
from memory import context as memory_context
from memory import dreamer, embeddings, forget, indexing
from memory.asof import AsOf
from memory.models import Summary
from tests.memory.helpers import FILLER, conversation_with
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db

WEATHER = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def admit_turn(actor, content="hi", *, conversation=None, **params):
    data = {"model": actor.agent.name, "messages": [{"role": "user", "content": content}], **params}
    if conversation is not None:
        data["conversation"] = str(conversation)
    return admit(tenant=actor.tenant, api_key=actor.api_key, data=data, idempotency_key=None, enqueue=lambda turn: None).turn


def run(turn) -> Turn:
    recorder = runner.claim(turn.id)
    assert recorder is not None, "the turn should have been claimable"
    runner.execute(recorder)
    return Turn.objects.select_related("agent", "conversation").get(id=turn.id)


def replayed(turn):
    turn = Turn.objects.select_related("agent", "conversation").get(id=turn.id)
    return replay.replay(turn, embed=embeddings.embed_query)


def test_it_replays_a_hundred_recorded_turns_with_no_divergence(alice, stub_llm):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("1.5"), output_per_mtok=Decimal("6"))
    turns = []
    for conversation_number in range(10):
        conversation = None
        for number in range(10):
            kind = (conversation_number + number) % 5
            params = {}
            if kind == 1:
                params = {"temperature": 0.3, "max_tokens": 64, "stop": ["\n\n"]}
            elif kind == 2:
                params = {"tools": WEATHER}
                stub_llm.script(Reply(tool_calls=[CALL]))
            elif kind == 3:
                stub_llm.script(Reply(content="no usage from this provider", usage=False))
            elif kind == 4:
                stub_llm.script(Reply(content="a longer answer " * 20, report_usage=(321, 45)))
            turn = run(admit_turn(alice, f"question {conversation_number}.{number}", conversation=conversation, **params))
            assert turn.status == TurnStatus.SUCCEEDED
            conversation = turn.conversation_id
            turns.append(turn)
    reports = [replayed(turn) for turn in turns]
    assert len(reports) == 100
    divergent = {str(report.turn_id): [d.as_dict() for d in report.divergences] for report in reports if not report.identical}
    assert divergent == {}, "a recorded turn must replay to the same request and outcome"
    assert all(report.outcome_checked for report in reports)
    assert any(turn.finish_reason == "tool_calls" for turn in turns), "tool calls are among the replayed turns"
    assert any(turn.cost > 0 for turn in turns), "priced turns are among them"


def test_the_command_prints_a_summary_and_exits_zero_when_all_are_identical(alice, stub_llm, capsys):
    first = run(admit_turn(alice, "one"))
    run(admit_turn(alice, "two", conversation=first.conversation_id))
    admit_turn(alice, "queued, not run")
    call_command("replay", "--agent", str(alice.agent.id), "--from", "2000-01-01T00:00:00Z")
    out = capsys.readouterr().out
    assert "2 replayed, 2 identical, 0 diverged, 0 unreproducible" in out


def test_a_changed_system_prompt_is_reported_field_by_field(alice, stub_llm, capsys):
    turn = run(admit_turn(alice, "hello"))
    alice.agent.system_prompt = "You are terse, and you answer every question in one word only."
    alice.agent.save()
    report = replayed(turn)
    assert not report.identical
    changed = {d.path: d.as_dict() for d in report.divergences}
    assert changed["body.messages[0].content"] == {
        "field": "body.messages[0].content",
        "recorded": "You help alice.",
        "replayed": "You are terse, and you answer every question in one word only.",
    }
    assert "context.pieces[0].tokens" in changed, "the explanation's token count of the system piece moved with it"
    assert any("agent was changed after this turn" in note for note in report.notes), "an edited agent is named as a cause"
    with pytest.raises(CommandError, match="1 turn\\(s\\) diverged"):
        call_command("replay", "--agent", str(alice.agent.id))
    out = capsys.readouterr().out
    assert "body.messages[].content: 1" in out, "the summary counts divergences by field"


def test_a_change_to_context_assembly_is_reported(alice, stub_llm, monkeypatch):
    first = run(admit_turn(alice, "one"))
    second = run(admit_turn(alice, "two", conversation=first.conversation_id))
    assert replayed(second).identical
    original = memory_context._window

    def forgetful(agent, history, upto_seq, remaining, system):
        loaded, own, window = original(agent, history, upto_seq, remaining, system)
        return loaded, own, window[1:]  # drops the oldest message of the recent window

    monkeypatch.setattr(memory_context, "_window", forgetful)
    report = replayed(second)
    paths = [d.path for d in report.divergences]
    assert "body.messages[1].content" in paths and "body.messages[3]" in paths, paths
    dropped = next(d for d in report.divergences if d.path == "body.messages[3]")
    assert dropped.as_dict() == {"field": "body.messages[3]", "recorded": {"role": "user", "content": "two"}}
    assert "outcome.prompt_tokens" not in paths, "the stub reported usage: the outcome does not depend on the context"


def test_an_outcome_computed_differently_is_reported(alice, stub_llm):
    turn = run(admit_turn(alice, "price me"))
    Price.objects.create(model="stub-model", input_per_mtok=Decimal("1000"), output_per_mtok=Decimal("1000"))
    report = replayed(turn)
    cost = next(d for d in report.divergences if d.path == "outcome.cost")
    assert cost.recorded == "0.00000000" and Decimal(cost.replayed) > 0
    assert any("price changed" in note for note in report.notes)
    assert [d.path for d in report.divergences] == ["outcome.cost"], "nothing else differs"


def test_turns_with_recall_and_summaries_replay_identically_after_the_store_moved_on(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_SPAN_TOKENS": 150}
    texts = [FILLER[i % len(FILLER)] + f" ({i})" for i in range(40)]
    texts[2] = "Remember: the wifi password at the cabin is 'blue-heron-77'."
    conversation = conversation_with(alice, texts, consolidation_threshold=300, short_term_messages=6, recall_limit=4)
    stub_llm.script(*[Reply(content=f"- summary {i}: talk about weather, novels and porridge") for i in range(20)])
    assert dreamer.consolidate(conversation.id)
    indexing.index_pending()
    turns = []
    for question in ["What is the wifi password at the cabin?", "Tell me about the hinge.", "And the wifi again, please?"]:
        turns.append(run(admit_turn(alice, question, conversation=conversation.id)))
        # the store moves on after each turn: the reply is indexed, the agent's other conversations grow
        conversation_with(alice, [f"Another talk: the cabin wifi password was changed ({len(turns)})."])
        indexing.index_pending()
    stub_llm.script(*[Reply(content=f"- later summary {i}") for i in range(20)])
    dreamer.consolidate(conversation.id, force=True)
    indexing.index_pending()
    pieces = [piece["kind"] for turn in turns for piece in turn.events.get(kind="provider_request").payload["context"]["pieces"]]
    assert "recalled" in pieces and "summary" in pieces, "the turns used recall and summaries"
    assert Summary.objects.filter(conversation=conversation, created_at__gt=turns[0].finished_at).exists(), "summaries came later"
    reports = [replayed(turn) for turn in turns]
    assert [[d.as_dict() for d in report.divergences] for report in reports] == [[], [], []]
    assert all(report.identical for report in reports)
    # Hiding only the turn's reply, not what memory gained since, the same assembly sends something else:
    # the check can fail, and it is the store as it was that makes these identical.
    first = turns[0]
    request = first.events.get(kind="provider_request")
    reply_only = AsOf(at=timezone.now(), hidden_message_ids=frozenset([first.output_id]))
    now = memory_context.assemble(first.conversation, upto_seq=first.seq, embed=embeddings.embed_query, as_of=reply_only)
    assert now.explain()["pieces"] != request.payload["context"]["pieces"]


def test_a_message_gone_since_is_reported_as_unreproducible(alice, stub_llm):
    first = run(admit_turn(alice, "remember this"))
    second = run(admit_turn(alice, "and now?", conversation=first.conversation_id))
    gone = Message.objects.get(conversation=first.conversation, seq=first.seq, role="user")
    Message.objects.filter(id=gone.id).delete()
    report = replayed(second)
    assert not report.identical
    why = "the message the turn's context carried no longer exists (forgotten or deleted)"
    assert {"what": f"context.message:{gone.id}", "why": why} in report.unreproducible


def test_a_turn_whose_log_was_redacted_by_forgetting_is_unreproducible(alice, stub_llm):
    turn = run(admit_turn(alice, "my secret is 1234"))
    message = Message.objects.get(turn=turn, role="user")
    forget.forget_message(turn.conversation, message.id, actor="test")
    report = replayed(turn)
    assert report.divergences == [] and not report.identical
    assert report.unreproducible[0]["what"] == "request" and str(message.id) in report.unreproducible[0]["why"]


def test_a_failed_turn_replays_its_request_only(alice, stub_llm):
    stub_llm.script(Reply(status=500))
    turn = run(admit_turn(alice, "this fails"))
    assert turn.status == TurnStatus.FAILED
    report = replayed(turn)
    assert report.identical and not report.outcome_checked
    assert any("provider_error" in note for note in report.notes)


def test_an_unfinished_turn_is_not_replayable(alice):
    turn = admit_turn(alice, "still queued")
    with pytest.raises(replay.NotReplayable) as refused:
        replayed(turn)
    assert refused.value.code == "turn_in_progress"


def test_a_turn_taken_over_replays_the_attempt_that_answered(alice, stub_llm):
    turn = admit_turn(alice, "who answers?")
    first = runner.claim(turn.id)
    Turn.objects.filter(id=turn.id).update(status=TurnStatus.QUEUED)  # the Supervisor requeued it
    second = runner.claim(turn.id)
    assert first is not None and second is not None and second.attempt == first.attempt + 1
    with pytest.raises(runner.LostClaim):
        runner.execute(first)  # asked the model, then lost the finish to the new attempt
    runner.execute(second)
    report = replayed(turn)
    assert report.attempt == second.attempt and report.identical, [d.as_dict() for d in report.divergences]
    assert Turn.objects.get(id=turn.id).events.filter(kind="provider_request").count() == 2
