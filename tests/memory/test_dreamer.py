"""The Dreamer: consolidates once per span even when racing, never deletes, loses nothing on failure."""

import threading
import time

import pytest
from django.db import connection

from agents.models import Message
from memory import dreamer, indexing
from memory.models import ConsolidationRun, Memory, Summary
from tests.memory.helpers import FILLER, conversation_with
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def span_tokens(settings):
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_SPAN_TOKENS": 150}


def over_threshold(actor, n=60):
    texts = [FILLER[i % len(FILLER)] + f" ({i})" for i in range(n)]
    texts[2] = "Remember: the wifi password at the cabin is 'blue-heron-77'."
    return conversation_with(actor, texts, consolidation_threshold=300, short_term_messages=6)


def test_a_conversation_over_its_threshold_is_due(alice, bob):
    due = over_threshold(alice)
    conversation_with(bob, FILLER, consolidation_threshold=100000)
    assert dreamer.due_conversations() == [due.id]


def test_consolidation_summarises_the_oldest_span_and_deletes_nothing(alice, stub_llm, span_tokens):
    conversation = over_threshold(alice)
    stub_llm.script(*[Reply(content=f"- summary {i}: the cabin wifi password is blue-heron-77") for i in range(20)])
    runs = dreamer.consolidate(conversation.id)
    assert runs and all(run.status == "succeeded" for run in runs)
    assert Message.objects.filter(conversation=conversation).count() == 60, "consolidation never deletes messages"
    # Every message of these conversations is of one turn (seq 1): the summaries are told apart by when
    # they were written, oldest span first.
    summaries = list(Summary.objects.filter(conversation=conversation).order_by("first_seq", "created_at"))
    covered = [mid for s in summaries for mid in s.source_message_ids]
    assert len(covered) == len(set(covered)), "no message is in two summaries"
    oldest = list(Message.objects.filter(conversation=conversation).order_by("index").values_list("id", flat=True)[: len(covered)])
    assert covered == oldest, "spans are taken oldest first, in order"
    recent = Message.objects.filter(conversation=conversation).order_by("-index")[:6]
    assert all(m.summary_id is None for m in recent), "the recent window stays verbatim"
    assert dreamer.unconsolidated_tokens(conversation) <= 300 or not dreamer.plan_span(conversation)
    prompt = stub_llm.requests[0]["messages"]
    assert prompt[0]["role"] == "system" and "blue-heron-77" in prompt[1]["content"]
    indexing.index_pending()
    assert Memory.objects.filter(kind="summary", conversation=conversation).count() == len(summaries)


@pytest.mark.django_db(transaction=True)
def test_two_dreamers_racing_consolidate_each_span_once(alice, stub_llm, span_tokens):
    conversation = over_threshold(alice)
    stub_llm.script(*[Reply(content=f"- summary {i}", delay=0.2) for i in range(40)])
    barrier = threading.Barrier(2)
    results = []

    def dream():
        try:
            barrier.wait()
            results.append(dreamer.consolidate(conversation.id))
        finally:
            connection.close()

    threads = [threading.Thread(target=dream) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    made = [run for runs in results for run in runs]
    assert made and sum(1 for runs in results if runs) == 1, "only one Dreamer may hold the conversation"
    covered = [mid for s in Summary.objects.filter(conversation=conversation) for mid in s.source_message_ids]
    assert len(covered) == len(set(covered))


def test_a_provider_failure_mid_consolidation_loses_nothing(alice, stub_llm, span_tokens):
    conversation = over_threshold(alice)
    stub_llm.script(Reply(content="- first span"), Reply(status=500))
    runs = dreamer.consolidate(conversation.id)
    assert [run.status for run in runs] == ["succeeded", "failed"]
    assert runs[1].error["status"] == 502
    first = Summary.objects.get(conversation=conversation)
    unconsolidated = Message.objects.filter(conversation=conversation, summary__isnull=True)
    assert unconsolidated.count() == 60 - len(first.source_message_ids), "the failed span stays unconsolidated"
    conversation.refresh_from_db()
    assert conversation.consolidation_lease is None, "a failure releases the conversation for the next run"
    stub_llm.script(*[Reply(content="- retried") for _ in range(20)])
    assert dreamer.consolidate(conversation.id)[0].status == "succeeded"


def test_a_dry_run_changes_nothing(alice, stub_llm):
    conversation = over_threshold(alice)
    runs = dreamer.consolidate(conversation.id, dry_run=True)
    assert [run.status for run in runs] == ["dry_run"] and runs[0].message_count > 0
    assert not Summary.objects.exists() and not Message.objects.filter(summary__isnull=False).exists()
    assert stub_llm.requests == []


def test_the_per_run_token_cap_stops_the_dreamer(alice, bob, stub_llm, settings, span_tokens):
    over_threshold(alice)
    over_threshold(bob)
    settings.SENTINEL = {**settings.SENTINEL, "DREAMER_MAX_TOKENS_PER_RUN": 1000}
    stub_llm.script(*[Reply(content="- s " * 50, report_usage=(300, 100)) for _ in range(40)])
    result = dreamer.dream()
    assert (result["runs"], result["tokens"]) == (3, 1200), "it stops at the first run that reaches the cap"
    assert ConsolidationRun.objects.filter(status="succeeded").count() == 3
    assert dreamer.due_conversations(), "work was left for the next run"


def test_unindexed_messages_are_not_consolidated(alice, stub_llm):
    conversation = conversation_with(alice, FILLER * 5, index=False, consolidation_threshold=10)
    assert dreamer.plan_span(conversation) is None
    assert dreamer.consolidate(conversation.id, force=True) == []


def test_a_held_lease_keeps_other_dreamers_out(alice, stub_llm):
    conversation = over_threshold(alice)
    assert dreamer._claim(conversation.id)
    assert dreamer.consolidate(conversation.id) == []
    assert dreamer.due_conversations() == []


def test_the_transcript_dates_each_day_once_and_keeps_every_message():
    from datetime import UTC, datetime

    day_one, day_two = datetime(2026, 3, 1, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 18, 30, tzinfo=UTC)
    messages = [
        Message(role="user", content="My sister Ingrid moved to Trondheim.", occurred_at=day_one),
        Message(role="assistant", content="Noted.", occurred_at=day_one.replace(minute=5)),
        Message(role="user", content="She starts at the aquarium on Monday.", occurred_at=day_two),
        Message(role="assistant", content="", tool_calls=[{"function": {"name": "calendar"}}], occurred_at=day_two),
    ]
    assert dreamer._transcript(messages).splitlines() == [
        "[2026-03-01]",
        "user: My sister Ingrid moved to Trondheim.",
        "assistant: Noted.",
        "[2026-03-02]",
        "user: She starts at the aquarium on Monday.",
        "assistant:  [called calendar]",
    ]


@pytest.mark.django_db(transaction=True)
def test_due_conversations_of_different_tenants_are_consolidated_at_once(alice, bob, stub_llm, span_tokens):
    conversations = [over_threshold(alice), over_threshold(bob)]
    lock, calls = threading.Lock(), {"now": 0, "most": 0}

    def summarise(body):  # the model's side: how many consolidations it serves at once
        with lock:
            calls["now"] += 1
            calls["most"] = max(calls["most"], calls["now"])
        time.sleep(0.2)
        with lock:
            calls["now"] -= 1
        return Reply(content="- summary")

    stub_llm.when("", summarise)  # every request
    result = dreamer.dream(concurrency=2)
    assert all(Summary.objects.filter(conversation=c).exists() for c in conversations)
    assert result["runs"] // 2 >= 1, "spans of both conversations"
    assert calls["most"] == 2, f"the two tenants' conversations were consolidated side by side, not one after the other ({calls})"


def test_a_model_that_goes_on_with_the_conversation_is_stopped_and_its_echo_left_out(alice, stub_llm, span_tokens):
    conversation = over_threshold(alice)
    echo = f"{FILLER[0]} (0)\nassistant: {FILLER[1]} (1)\n- the user talked about the weather"
    stub_llm.script(*[Reply(content=echo) for _ in range(20)])
    dreamer.consolidate(conversation.id)
    assert stub_llm.requests[0]["stop"] == ["\nassistant:", "\nuser:"], "the server stops where a transcript line begins"
    first = Summary.objects.filter(conversation=conversation).order_by("first_seq", "created_at").first()
    assert first.text == "- the user talked about the weather", "lines copied from the transcript are no summary"


def test_the_transcript_says_a_repeated_line_once():
    from datetime import UTC, datetime

    day_one, day_two = datetime(2026, 3, 1, 9, 0, tzinfo=UTC), datetime(2026, 3, 2, 18, 30, tzinfo=UTC)
    messages = [
        Message(role="user", content="My sister Ingrid moved to Trondheim.", occurred_at=day_one),
        Message(role="assistant", content="Mm, fair enough.", occurred_at=day_one),
        Message(role="user", content="Mm, fair enough.", occurred_at=day_one),
        Message(role="assistant", content="Mm, fair enough.", occurred_at=day_two),
        Message(role="user", content="She starts on Monday.", occurred_at=day_two),
    ]
    assert dreamer._transcript(messages).splitlines() == [
        "[2026-03-01]",
        "user: My sister Ingrid moved to Trondheim.",
        "assistant: Mm, fair enough.",
        "[2026-03-02]",
        "user: She starts on Monday.",
    ]
