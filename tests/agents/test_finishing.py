"""Turns that end together are written together (agents/finishing.py through the group commit), and
each is held to what one turn at a time was: fenced, settled once, audited, nothing half-written."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from agents import finishing, outcomes, providers, runner
from agents.models import Message, Turn, TurnEventRecord, TurnStatus
from budgets import audit, spend
from budgets.models import AuditEntry, Budget, BudgetWindow, Price, Reservation, SpendEntry
from sentinel_site.groupcommit import GroupCommit
from tests.agents.test_turn_runner import admit_turn, run
from tests.stub_llm import Reply

# The group commit's thread has its own connection: it sees only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True, params=["merged", "steps"])
def statements(request, settings) -> str:
    """Each test on both shapes of a finish's statements (SENTINEL_FINISH_STATEMENTS)."""
    settings.SENTINEL = {**settings.SENTINEL, "FINISH_STATEMENTS": request.param}
    return request.param


@pytest.fixture
def priced(alice):
    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))
    budget, _ = Budget.objects.update_or_create(tenant=alice.tenant, api_key=None, period="daily", defaults={"limit": Decimal(100)})
    return budget


@pytest.fixture
def one_batch(monkeypatch):
    """A group commit that waits long enough for every finish of a test to join its first batch."""
    committer = GroupCommit("finish-test", finishing.write, wait_seconds=0.5)
    monkeypatch.setattr(finishing, "committer", lambda: committer)
    return committer


def in_threads(jobs):
    """Run each job on its own thread, all released together; what each returned or raised."""
    barrier = threading.Barrier(len(jobs))

    def go(job):
        try:
            barrier.wait(timeout=10)
            return job()
        except Exception as error:
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(go, jobs))


def test_turns_that_end_together_share_one_commit_and_each_is_complete(alice, stub_llm, priced, one_batch):
    stub_llm.script(*[Reply(content=f"answer {n}") for n in range(4)])
    turns = [admit_turn(alice, f"question {n}") for n in range(4)]
    in_threads([lambda turn=turn: run(turn) for turn in turns])
    assert (one_batch.batches, one_batch.items) == (1, 4), "four finishes within the window: one commit"
    for turn in Turn.objects.filter(id__in=[t.id for t in turns]):
        assert turn.status == TurnStatus.SUCCEEDED and turn.agent_state == "idle"
        assert turn.output.content.startswith("answer") and turn.cost > 0
        assert list(turn.events.filter(kind="completed").values_list("payload__message_id", flat=True)) == [str(turn.output_id)]
        assert SpendEntry.objects.filter(turn_id=turn.id).get().cost == turn.cost
    assert AuditEntry.objects.filter(action="turn.succeeded").count() == 4
    assert audit.verify() is None, "the batch's entries continue the chain in order"
    window = BudgetWindow.objects.get(budget=priced)
    assert window.reserved == 0 and window.settled == sum(t.cost for t in Turn.objects.all())
    assert spend.reconcile() == []


def test_a_batch_with_one_bad_row_commits_the_others(alice, stub_llm, priced, one_batch):
    # PostgreSQL's text cannot hold NUL: that reply fails the batch's multi-row insert
    stub_llm.script(Reply(content="fine"), Reply(content="bad \x00 byte"), Reply(content="also fine"))
    turns = [admit_turn(alice, f"question {n}") for n in range(3)]
    results = in_threads([lambda turn=turn: run(turn) for turn in turns])
    failed = [turn for turn, result in zip(turns, results, strict=True) if isinstance(result, Exception)]
    assert len(failed) == 1, results
    bad = Turn.objects.get(id=failed[0].id)
    assert bad.status == TurnStatus.RUNNING and not Message.objects.filter(turn=bad, role="assistant").exists()
    assert not SpendEntry.objects.filter(turn_id=bad.id).exists(), "nothing of the bad finish is kept"
    assert Reservation.objects.get(turn_id=bad.id).status == Reservation.Status.HELD
    good = Turn.objects.exclude(id=bad.id)
    assert all(turn.status == TurnStatus.SUCCEEDED for turn in good) and good.count() == 2
    assert SpendEntry.objects.count() == 2 and audit.verify() is None and spend.reconcile() == []
    recorder = runner.Recorder(turn=bad, attempt=bad.attempt, next_seq=bad.events.filter(attempt=bad.attempt).count())
    outcomes.crash(recorder)  # what the task does with a turn whose run raised
    assert Turn.objects.get(id=bad.id).status == TurnStatus.FAILED
    assert Reservation.objects.get(turn_id=bad.id).status == Reservation.Status.RELEASED and spend.reconcile() == []


def test_two_attempts_of_a_turn_in_one_batch_keep_one_answer_and_charge_both_calls_once(alice, priced, one_batch):
    turn = admit_turn(alice, "raced")
    config = providers.ProviderConfig.for_agent(turn.agent)
    body = {"model": "stub-model", "max_tokens": 64}
    first = runner.claim(turn.id)
    first.reservation = runner.hold_budget(first.turn, config, body, 10)
    # The Supervisor took the turn back from the first attempt; a second one claims it
    Turn.objects.filter(id=turn.id).update(status=TurnStatus.QUEUED)
    second = runner.claim(turn.id)
    second.reservation = runner.hold_budget(second.turn, config, body, 10)
    assert Reservation.objects.get(id=first.reservation.id).status == Reservation.Status.RELEASED

    def finish(recorder, content):
        result = providers.Completion(content=content, prompt_tokens=10, completion_tokens=5, model="stub-model")
        return outcomes.succeed(recorder, result, prompt_estimate=10, config=config, body=body, reply_index=1)

    results = in_threads([lambda: finish(first, "stale"), lambda: finish(second, "owner")])
    assert isinstance(results[0], runner.LostClaim) and results[1] is None
    assert (one_batch.batches, one_batch.items) == (1, 2)
    stored = Turn.objects.get(id=turn.id)
    assert (stored.status, stored.attempt, stored.output.content) == (TurnStatus.SUCCEEDED, 2, "owner")
    assert Message.objects.filter(turn=turn, role="assistant").count() == 1
    charged = SpendEntry.objects.filter(turn_id=turn.id)
    assert charged.count() == 2, "the stale attempt's call was paid for: charged late, once"
    assert {r.status for r in Reservation.objects.filter(turn_id=turn.id)} == {Reservation.Status.SETTLED}
    window = BudgetWindow.objects.get(budget=priced)
    assert window.reserved == 0 and window.settled == sum(e.cost for e in charged)
    assert spend.reconcile() == []
    assert AuditEntry.objects.filter(action="turn.succeeded").count() == 1


def a_finish(recorder, content: str) -> finishing.Finish:
    """A succeeded attempt's finish, as outcomes.succeed builds it: 10 + 5 tokens at a cost of 1."""
    turn = recorder.turn
    return finishing.Finish(
        turn_id=turn.id,
        attempt=recorder.attempt,
        tenant_id=turn.tenant_id,
        conversation_id=turn.conversation_id,
        seq=turn.seq,
        at=turn.created_at,
        reply_id=uuid.uuid4(),
        reply_index=1,
        content=content,
        tool_calls=None,
        outcome={
            "agent_state": "idle",
            "model": "stub-model",
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "latency_ms": 1,
            "provider_latency_ms": 1,
            "first_token_ms": 1,
            "finish_reason": "stop",
            "cost": Decimal(1),
        },
        events=[TurnEventRecord(turn_id=turn.id, attempt=recorder.attempt, seq=99, kind="completed", payload={"n": content})],
        settlement=finishing.Settlement(recorder.reservation.id, "stub-model", 10, 5, Decimal(1)),
        audit_entry={"action": "turn.succeeded", "actor": "test", "tenant_id": turn.tenant_id, "target": str(turn.id)},
    )


def test_a_finish_written_again_after_the_turn_ended_changes_nothing_and_charges_nothing(alice, priced):
    turn = admit_turn(alice, "twice")
    recorder = runner.claim(turn.id)
    config = providers.ProviderConfig.for_agent(turn.agent)
    body = {"model": "stub-model", "max_tokens": 64}
    recorder.reservation = runner.hold_budget(recorder.turn, config, body, 10)
    result = providers.Completion(content="once", prompt_tokens=10, completion_tokens=5, model="stub-model")
    outcomes.succeed(recorder, result, prompt_estimate=10, config=config, body=body, reply_index=1)
    again = a_finish(recorder, "once more")  # the same turn and attempt, written a second time
    (done,) = finishing.write([again])
    assert (done.won, done.settled) == (False, False), "the turn ended already and its reservation is settled"
    assert SpendEntry.objects.filter(turn_id=turn.id).count() == 1
    assert Turn.objects.get(id=turn.id).output.content == "once"


def test_a_batch_is_written_in_a_fixed_number_of_statements_and_hands_each_conversation_its_next_turn(alice, priced, statements):
    config = providers.ProviderConfig.for_agent(alice.agent)
    body = {"model": "stub-model", "max_tokens": 64}
    recorders = []
    for n in range(3):
        recorder = runner.claim(admit_turn(alice, f"batched {n}").id)
        recorder.reservation = runner.hold_budget(recorder.turn, config, body, 10)
        recorders.append(recorder)
    waiting = admit_turn(alice, "after the first", conversation=str(recorders[0].turn.conversation_id))
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        done = finishing.write([a_finish(recorder, f"answer {n}") for n, recorder in enumerate(recorders)])
    # BEGIN and COMMIT besides; merged: the outcome, the head's lock, the entries, the settlement
    expected = {"merged": 6, "steps": 11}[statements]
    assert len(queries) == expected, [q["sql"][:80] for q in queries]
    assert [(d.won, d.settled) for d in done] == [(True, True)] * 3
    assert [d.following for d in done] == [waiting.id, None, None]
    for n, recorder in enumerate(recorders):
        turn = Turn.objects.get(id=recorder.turn.id)
        assert turn.status == TurnStatus.SUCCEEDED and turn.output.content == f"answer {n}"
        assert turn.events.filter(kind="completed", payload__n=f"answer {n}").count() == 1
        assert SpendEntry.objects.filter(turn_id=turn.id).get().cost == Decimal(1)
    assert {r.status for r in Reservation.objects.filter(turn_id__in=[r.turn.id for r in recorders])} == {Reservation.Status.SETTLED}
    window = BudgetWindow.objects.get(budget=priced)
    assert window.settled == Decimal(3) and window.tokens == 45
    assert audit.verify() is None and spend.reconcile() == []
