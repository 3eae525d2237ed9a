"""Running turns in-process against the stub model server: claims, fencing, order, errors, replay log."""

import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import admission, providers, runner, streams
from agents.admission import admit
from agents.models import Conversation, Message, Turn, TurnEventRecord, TurnStatus
from budgets import spend
from budgets.models import BudgetWindow, Reservation
from sentinel_site.redis import sync_client
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


def admit_turn(actor, content="hi", *, conversation=None, **params):
    data = {"model": actor.agent.name, "messages": [{"role": "user", "content": content}], **params}
    if conversation is not None:
        data["conversation"] = conversation
    enqueued = []
    admission = admit(tenant=actor.tenant, api_key=actor.api_key, data=data, idempotency_key=None, enqueue=enqueued.append)
    return admission.turn


def run(turn):
    recorder = runner.claim(turn.id)
    assert recorder is not None, "the turn should have been claimable"
    return runner.execute(recorder)


def test_a_turn_runs_through_the_state_machine_and_persists_the_answer(alice, stub_llm):
    stub_llm.script(Reply(content="Paris is the capital."))
    turn = admit_turn(alice, "capital of France?")
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.SUCCEEDED
    assert turn.agent_state == "idle"
    assert turn.output.content == "Paris is the capital."
    assert turn.prompt_tokens > 0 and turn.completion_tokens > 0
    assert turn.latency_ms is not None and turn.first_token_ms is not None
    transitions = [(e.from_state, e.to_state) for e in turn.events.filter(kind="state").order_by("attempt", "seq")]
    assert transitions == [("idle", "thinking"), ("thinking", "reflecting"), ("reflecting", "idle")]


def test_the_log_holds_what_was_sent_and_what_came_back(alice, stub_llm):
    stub_llm.script(Reply(content="42"))
    turn = admit_turn(alice, "meaning of life?", temperature=0.2)
    run(turn)
    request = turn.events.get(kind="provider_request").payload
    assert request["body"] == stub_llm.requests[0], "the recorded request must be exactly what the provider received"
    assert request["body"]["messages"][0] == {"role": "system", "content": "You help alice."}
    assert request["body"]["temperature"] == 0.2
    response = turn.events.get(kind="provider_response").payload
    assert response["content"] == "42" and response["finish_reason"] == "stop"


def test_a_second_delivery_of_the_same_turn_does_nothing(alice, stub_llm):
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    assert runner.claim(turn.id) is None, "a running turn must not be claimed again"
    runner.execute(recorder)
    assert runner.claim(turn.id) is None, "a finished turn must not be claimed again"
    assert len(stub_llm.requests) == 1
    assert Message.objects.filter(turn=turn, role="assistant").count() == 1


def test_a_worker_that_lost_its_claim_cannot_write(alice, stub_llm):
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    Turn.objects.filter(id=turn.id).update(attempt=recorder.attempt + 1)  # another attempt took over
    with pytest.raises(runner.LostClaim):
        runner.execute(recorder)
    assert not Message.objects.filter(turn=turn, role="assistant").exists(), "a fenced-out worker must leave no reply"
    assert Turn.objects.get(id=turn.id).status == TurnStatus.RUNNING


def test_a_later_turn_waits_for_the_earlier_one_in_its_conversation(alice, stub_llm):
    first = admit_turn(alice, "one")
    second = admit_turn(alice, "two", conversation=first.conversation_id)
    assert runner.claim(second.id) is None, "the second turn must wait while the first is unfinished"
    following = run(first)
    assert following == second.id, "finishing a turn hands over to the next queued one"
    run(second)
    history = [(m.role, m.content) for m in Message.objects.filter(conversation_id=first.conversation_id)]
    assert history == [("user", "one"), ("assistant", "echo: one"), ("user", "two"), ("assistant", "echo: two")]
    # the second turn saw the first turn's answer, and only what came before it
    sent = [m["content"] for m in stub_llm.requests[1]["messages"]]
    assert sent == ["You help alice.", "one", "echo: one", "two"]


def test_turns_of_different_conversations_do_not_wait_for_each_other(alice):
    first = admit_turn(alice, "a")
    other = admit_turn(alice, "b")
    assert runner.claim(first.id) is not None
    assert runner.claim(other.id) is not None


def test_tool_calls_go_through_the_toolcall_state_and_back_to_the_client(alice, stub_llm):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    stub_llm.script(Reply(tool_calls=[call]))
    turn = admit_turn(alice, "weather in Oslo?", tools=[{"type": "function", "function": {"name": "get_weather"}}])
    run(turn)
    turn.refresh_from_db()
    assert turn.finish_reason == "tool_calls"
    assert turn.output.tool_calls == [call]
    transitions = [(e.from_state, e.to_state) for e in turn.events.filter(kind="state").order_by("attempt", "seq")]
    assert ("thinking", "tool_call") in transitions and ("tool_call", "reflecting") in transitions
    assert stub_llm.requests[0]["tools"] == [{"type": "function", "function": {"name": "get_weather"}}]


@pytest.mark.parametrize(
    "reply,status,code",
    [
        (Reply(status=401), 401, "provider_auth_failed"),
        (Reply(status=429), 429, "provider_rate_limited"),
        (Reply(status=500), 502, "provider_error"),
        (Reply(status=503), 502, "provider_error"),
        (Reply(status=400), 400, "provider_rejected_request"),
        (Reply(hang=5), 504, "provider_timeout"),
    ],
)
def test_provider_failures_fail_the_turn_with_the_seeds_status(alice, stub_llm, reply, status, code):
    stub_llm.script(reply)
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED
    assert turn.error["status"] == status and turn.error["code"] == code
    assert not Message.objects.filter(turn=turn, role="assistant").exists()
    assert turn.events.filter(kind="provider_error").exists()


def test_an_unreachable_provider_is_a_502(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "LLM_BASE_URL": "http://127.0.0.1:9/v1"}
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.error["status"] == 502 and turn.error["code"] == "provider_unreachable"


def test_a_malformed_provider_body_is_a_502(alice, stub_llm):
    stub_llm.script(Reply(malformed=True))
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.error["status"] == 502 and turn.error["code"] == "provider_bad_response"


def test_an_agent_can_have_its_own_provider_and_model(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "LLM_BASE_URL": "http://127.0.0.1:9/v1"}  # the default is down
    alice.agent.provider_base_url = stub_llm.base_url
    alice.agent.model = "special-model"
    alice.agent.save()
    run(admit_turn(alice))
    assert stub_llm.requests[0]["model"] == "special-model"


def test_the_stream_carries_states_deltas_and_the_outcome(alice, stub_llm):
    stub_llm.script(Reply(content="one two three"))
    turn = admit_turn(alice)
    run(turn)
    entries = sync_client().xrange(streams.key(turn.id))
    kinds = [fields[b"k"].decode() for _, fields in entries]
    assert kinds == ["state", "delta", "delta", "delta", "state", "state", "done"]
    states = [json.loads(fields[b"d"]) for _, fields in entries if fields[b"k"] == b"state"]
    assert [(s["from"], s["to"]) for s in states] == [("idle", "thinking"), ("thinking", "reflecting"), ("reflecting", "idle")]


def test_a_turn_whose_live_stream_is_out_of_reach_still_succeeds(alice, stub_llm, settings):
    # Redis restarting mid-turn: the stream and the breaker's state are unreachable, PostgreSQL is fine.
    stub_llm.script(Reply(content="safe and sound"))
    turn = admit_turn(alice)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    sync_client.cache_clear()
    try:
        run(turn)
    finally:
        sync_client.cache_clear()
    turn.refresh_from_db()
    assert turn.status == TurnStatus.SUCCEEDED
    assert Message.objects.get(turn=turn, role="assistant").content == "safe and sound"


def test_a_failed_turn_ends_its_stream_with_an_error(alice, stub_llm):
    stub_llm.script(Reply(status=401))
    turn = admit_turn(alice)
    run(turn)
    entries = sync_client().xrange(streams.key(turn.id))
    assert entries[-1][1][b"k"] == b"error"


def test_events_are_append_only(alice):
    turn = admit_turn(alice)
    event = TurnEventRecord.objects.get(turn=turn, kind="queued")
    event.kind = "tampered"
    with pytest.raises(Exception, match="cannot be changed"):
        event.save()
    with pytest.raises(Exception, match="cannot be deleted"):
        event.delete()


def test_admitting_a_turn_costs_a_bounded_number_of_queries(alice):
    admit_turn(alice)  # the first request of the day creates the budget windows
    with CaptureQueriesContext(connection) as queries:
        admit_turn(alice)
    # agent, budgets; conversation, turn, messages, event; windows, reservation, its links, one
    # update per budget window (2 here); a savepoint and its release (the test's own transaction)
    assert len(queries) <= 13, [q["sql"] for q in queries]


def test_an_admission_over_budget_writes_nothing_but_its_audit_entry(alice):
    from budgets.models import AuditEntry, Budget, Price, Reservation
    from budgets.spend import BudgetExceeded
    from sentinel_site.errors import classify

    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1000), output_per_mtok=Decimal(1000))
    Budget.objects.filter(tenant=alice.tenant).update(limit=Decimal("0.01"))
    counts = [model.objects.count() for model in (Conversation, Turn, Message, TurnEventRecord, Reservation)]
    with pytest.raises(BudgetExceeded) as refused:
        admit_turn(alice, "too expensive")
    refused = classify(refused.value)  # how the client sees the domain error (sentinel_site/errors.py)
    assert refused.status == 503 and refused.code == "budget_exceeded"
    assert [model.objects.count() for model in (Conversation, Turn, Message, TurnEventRecord, Reservation)] == counts
    assert AuditEntry.objects.filter(action="budget.exceeded").count() == 1


def test_claiming_costs_a_handful_of_queries(alice):
    turn = admit_turn(alice)
    with CaptureQueriesContext(connection) as queries:
        recorder = runner.claim(turn.id)
    # savepoint, the turn (locked), the conversation (locked), earlier unfinished turns, the claim,
    # its events, release: what the claim wrote is known without reading it back
    assert len(queries) <= 7, [q["sql"] for q in queries]
    stored = Turn.objects.get(id=turn.id)
    claimed = recorder.turn
    assert (claimed.status, claimed.attempt, claimed.started_at, claimed.agent_state) == (
        stored.status,
        stored.attempt,
        stored.started_at,
        stored.agent_state,
    )


def test_a_turn_in_a_running_conversation_costs_a_bounded_number_of_queries(alice, stub_llm):
    stub_llm.script(Reply(content="Noted."), Reply(content="Paris."))
    first = admit_turn(alice, "I am planning a trip.")
    run(first)
    turn = admit_turn(alice, "What is the capital of France?", conversation=str(first.conversation_id))
    with CaptureQueriesContext(connection) as queries:
        run(turn)
    # claim 7; context: window, summaries, embedding cache read and write, memory count and search,
    # totals; the request event, the budget hold; the reply: its message, the turn, its events, the
    # next turn, settlement 5, audit 3; savepoints around the claim and the reply (this test's)
    assert len(queries) <= 30, "\n".join(q["sql"][:120] for q in queries)
    reply = Message.objects.get(turn=turn, role="assistant")
    assert (reply.seq, reply.index) == (turn.seq, 1), "the reply follows the turn's one input message"


def test_a_stream_cut_short_is_a_502_and_keeps_no_partial_answer(alice, stub_llm):
    stub_llm.script(Reply(content="one two three four", cut_after=2))
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED and turn.error["status"] == 502
    assert not Message.objects.filter(turn=turn, role="assistant").exists()


def test_only_writes_no_client_was_told_of_commit_without_waiting_for_the_disk(alice, stub_llm):
    stub_llm.script(Reply(content="durable"))
    data = {"model": alice.agent.name, "messages": [{"role": "user", "content": "hi"}]}

    def lazy_statements(work) -> int:
        with CaptureQueriesContext(connection) as queries:
            work()
        return sum("set_config('synchronous_commit', 'off', true)" in q["sql"] for q in queries)

    def admit_as(lazily: bool):
        return admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda turn: None, lazily=lazily)

    assert lazy_statements(lambda: admit_as(lazily=False)) == 0, "a 202 or a stream tells the client at once: on disk first"
    assert lazy_statements(lambda: admit_as(lazily=True)) == 1
    turn = Turn.objects.order_by("-created_at").first()
    recorder = runner.claim(turn.id)
    assert recorder is not None
    assert lazy_statements(lambda: runner.execute(recorder)) == 1, "the provider request's event; the finish waits for the disk"
    assert Turn.objects.get(id=turn.id).status == TurnStatus.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_an_admission_that_fails_after_its_hold_releases_it(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ADMISSION_WRITES": "hold-first"}
    data = {"model": "helper", "messages": [{"role": "user", "content": "hi"}], "conversation": uuid.uuid4()}
    with pytest.raises(admission.ConversationNotFound):
        admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda turn: None)
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists(), "the hold was given back"
    assert all(w.reserved == 0 for w in BudgetWindow.objects.all())


@pytest.mark.django_db(transaction=True)
def test_a_cancel_that_lands_before_the_stream_opens_ends_the_turn_cancelled(alice, stub_llm):
    from agents import control
    from agents.models import Stop

    turn = admit_turn(alice, "stop me early")

    def cancel_on_arrival(body: dict) -> Reply:
        control.request_stop(turn.id, tenant_id=alice.tenant.id, kind=Stop.CANCEL, actor="test")
        connection.close()  # the stub's own thread: its connection would outlive the test database
        return Reply(content="never read", delay=0.6)  # headers come after the worker has heard of the stop

    stub_llm.when("stop me early", cancel_on_arrival)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.CANCELLED and turn.finish_reason == "cancelled"
    assert not Reservation.objects.filter(turn_id=turn.id, status=Reservation.Status.HELD).exists()


def test_a_first_call_takes_the_reservation_its_claim_read_and_later_calls_read_afresh(alice):
    turn = admit_turn(alice)
    admitted = Reservation.objects.get(turn_id=turn.id, status=Reservation.Status.HELD)
    recorder = runner.claim(turn.id)
    config = providers.ProviderConfig.for_agent(recorder.turn.agent)
    body = {"model": "stub-model", "max_tokens": 64}
    with CaptureQueriesContext(connection) as queries:
        first = runner.hold_budget(recorder.turn, config, body, 10)
    assert first.id == admitted.id and len(queries) == 0, "the claim read the admission's hold already"
    with CaptureQueriesContext(connection) as queries:
        again = runner.hold_budget(recorder.turn, config, body, 10)
    assert again.id == admitted.id and len(queries) == 1, "a later call of the attempt reads the holds again"


def test_a_hold_released_after_the_claim_is_not_taken_by_a_later_call(alice):
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    config = providers.ProviderConfig.for_agent(recorder.turn.agent)
    body = {"model": "stub-model", "max_tokens": 64}
    runner.hold_budget(recorder.turn, config, body, 10)  # takes the claim's read
    released = Reservation.objects.get(turn_id=turn.id)
    assert spend.release(released.id)
    fresh = runner.hold_budget(recorder.turn, config, body, 10)
    assert fresh.id != released.id and fresh.status == Reservation.Status.HELD


def test_a_second_attempt_releases_the_first_attempts_hold_and_holds_anew(alice):
    turn = admit_turn(alice)
    first = runner.claim(turn.id)
    assert first.turn.held_at_claim is not None
    Turn.objects.filter(id=turn.id).update(status=TurnStatus.QUEUED)  # the Supervisor took the turn back
    second = runner.claim(turn.id)
    config = providers.ProviderConfig.for_agent(second.turn.agent)
    held = runner.hold_budget(second.turn, config, {"model": "stub-model", "max_tokens": 64}, 10)
    assert held.id != first.turn.held_at_claim.id
    assert Reservation.objects.get(id=first.turn.held_at_claim.id).status == Reservation.Status.RELEASED
