"""Admission's write lanes (SENTINEL_ADMISSION_WRITES): the same rows, all or nothing, in each."""

import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from agents import admission
from agents.admission import admit
from agents.models import Conversation, Message, Turn, TurnEventRecord
from budgets.models import AuditEntry, Budget, BudgetWindow, Price, Reservation
from budgets.spend import BudgetExceeded

pytestmark = pytest.mark.django_db

LANES = ["statement", "hold-first", "sql"]


@pytest.fixture(params=LANES)
def lane(request, settings) -> str:
    settings.SENTINEL = {**settings.SENTINEL, "ADMISSION_WRITES": request.param}
    return request.param


@pytest.fixture(autouse=True)
def priced(db) -> None:
    """A price for the stub's model, so each hold holds money."""
    Price.objects.create(model="stub-model", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1))


def body(actor, content="hi", **extra) -> dict:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    return {"model": actor.agent.name, "messages": messages, **extra}


def admit_as(actor, data, idempotency_key=None, enqueued=None):
    return admit(
        tenant=actor.tenant, api_key=actor.api_key, data=data, idempotency_key=idempotency_key,
        enqueue=(enqueued if enqueued is not None else []).append,
    )  # fmt: skip


def written() -> list[int]:
    """Rows of each kind admission writes, and the holds (a released one stays, as a record)."""
    holds = Reservation.objects.filter(status=Reservation.Status.HELD).count()
    return [model.objects.count() for model in (Conversation, Turn, Message, TurnEventRecord)] + [holds]


def reserved() -> list[Decimal]:
    return sorted(window.reserved for window in BudgetWindow.objects.all())


def test_each_lane_writes_the_same_rows(alice, lane, django_capture_on_commit_callbacks):
    enqueued = []
    with django_capture_on_commit_callbacks(execute=True):
        turn = admit_as(alice, body(alice, "hello there"), idempotency_key="k1", enqueued=enqueued).turn
    assert enqueued == [turn], "enqueued once, after the rows are written"
    stored = Turn.objects.select_related("conversation").get(id=turn.id)
    assert (stored.seq, stored.status, stored.idempotency_key, stored.request_hash) == (1, "queued", "k1", turn.request_hash)
    assert stored.conversation.last_seq == 1 and stored.conversation.agent_id == alice.agent.id
    assert stored.conversation.tenant_id == alice.tenant.id
    messages = list(Message.objects.filter(turn=turn).order_by("index").values_list("role", "content", "seq", "index", "tenant_id"))
    assert messages == [("system", "Be brief.", 1, 0, alice.tenant.id), ("user", "hello there", 1, 1, alice.tenant.id)]
    event = TurnEventRecord.objects.get(turn=turn)
    assert (event.kind, event.attempt, event.seq, event.payload["message_count"]) == ("queued", 0, 0, 2)
    hold = Reservation.objects.get(turn=turn)
    assert hold.status == Reservation.Status.HELD and hold.amount > 0
    assert hold.windows.count() == Budget.objects.filter(tenant=alice.tenant).count() > 0
    assert all(window.reserved == hold.amount for window in hold.windows.all())


def test_each_lane_continues_a_conversation_at_its_next_seq(alice, lane):
    first = admit_as(alice, body(alice, "one")).turn
    second = admit_as(alice, body(alice, "two", conversation=first.conversation_id)).turn
    assert second.conversation_id == first.conversation_id
    assert Turn.objects.get(id=second.id).seq == 2
    assert Conversation.objects.get(id=first.conversation_id).last_seq == 2


def test_an_admission_over_budget_writes_nothing_in_any_lane(alice, lane):
    admit_as(alice, body(alice, "cheap enough"))  # the windows exist, and this process knows them
    for budget in Budget.objects.filter(tenant=alice.tenant):
        budget.limit = Decimal("0.0001")
        budget.save()  # as the admin and the API save it: every process's cached budgets are read again
    before, held = written(), reserved()
    with pytest.raises(BudgetExceeded):
        admit_as(alice, body(alice, "too expensive"))
    assert written() == before, "no conversation, turn, message, event or reservation"
    assert reserved() == held, "no window holds more"
    assert AuditEntry.objects.filter(action="budget.exceeded").count() == 1


def test_a_lost_idempotency_key_race_writes_nothing_of_the_loser(alice, lane):
    """The race's loser reaches the write after the winner committed: the unique index fails it whole."""
    data = body(alice, "once")
    admit_as(alice, data, idempotency_key="race")
    before, held = written(), reserved()
    agent = admission.find_agent(alice.tenant, data["model"])
    params = admission.call_params(agent, data)
    plan = admission.plan_budget(alice.tenant, alice.api_key, agent, data["messages"], params)
    store = admission._STORES[lane]
    with pytest.raises(IntegrityError):
        store(admission.Asked(alice.tenant, alice.api_key, agent, data, params, plan, "race", "x", lambda turn: None, False))
    assert written() == before
    assert reserved() == held, "the loser's hold went with its rows"
    again = admit_as(alice, data, idempotency_key="race")
    assert not again.created, "and admit() answers the loser with the winner's turn"


def test_a_deleted_budget_whose_window_this_process_knew_is_read_afresh(alice, lane):
    admit_as(alice, body(alice, "first"))
    Budget.objects.filter(tenant=alice.tenant).first().delete()  # its window goes with it
    turn = admit_as(alice, body(alice, "second")).turn
    assert Reservation.objects.get(turn=turn).windows.count() == Budget.objects.filter(tenant=alice.tenant).count()


@pytest.mark.django_db(transaction=True)
def test_the_statement_lane_admits_a_new_conversation_in_one_statement(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ADMISSION_WRITES": "statement"}
    admit_as(alice, body(alice, "warm"))  # the agent, its budgets, their windows and the price, cached
    with CaptureQueriesContext(connection) as queries:
        turn = admit_as(alice, body(alice, "counted")).turn
    assert len(queries) == 1, [q["sql"][:200] for q in queries]
    assert Message.objects.filter(turn=turn).count() == 2 and Reservation.objects.filter(turn=turn).exists()


@pytest.mark.django_db(transaction=True)
def test_the_statement_lane_commits_lazily_only_when_the_client_hears_of_the_turn_with_its_answer(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ADMISSION_WRITES": "statement"}

    def lazy(lazily: bool) -> bool:
        with CaptureQueriesContext(connection) as queries:
            data = body(alice, str(uuid.uuid4()))
            admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda t: None, lazily=lazily)
        return any("set_config('synchronous_commit', 'off', true)" in q["sql"] for q in queries)

    assert lazy(True)
    assert not lazy(False), "a 202 or a stream's first bytes tell the client of the turn: on disk first"


def test_a_conversation_that_is_not_the_callers_is_refused_in_every_lane_and_nothing_is_held(alice, bob, lane):
    from agents.models import Agent

    theirs = admit_as(bob, body(bob, "bob's")).turn.conversation_id
    other_agent = Agent.objects.create(tenant=alice.tenant, name="other", system_prompt="")
    other = admit(
        tenant=alice.tenant, api_key=alice.api_key, data={**body(alice), "model": "other"}, idempotency_key=None, enqueue=lambda t: None
    ).turn.conversation_id
    before, held = written(), reserved()
    with pytest.raises(admission.ConversationNotFound):
        admit_as(alice, body(alice, "into bob's", conversation=theirs))
    with pytest.raises(admission.ConversationNotFound):
        admit_as(alice, body(alice, "into nothing", conversation=uuid.uuid4()))
    with pytest.raises(admission.ConversationAgentMismatch, match=f"belongs to the agent `{other_agent.name}`"):
        admit_as(alice, body(alice, "into the other agent's", conversation=other))
    assert written() == before and reserved() == held
    assert Conversation.objects.get(id=theirs).last_seq == 1 and Conversation.objects.get(id=other).last_seq == 1


def test_a_rejecting_conversation_still_refuses_a_second_message_while_its_turn_runs(alice, lane):
    first = admit_as(alice, body(alice, "one")).turn
    with pytest.raises(admission.ConversationBusy):
        admit_as(alice, body(alice, "two", conversation=first.conversation_id, multitask_strategy="reject"))
    assert Turn.objects.filter(conversation_id=first.conversation_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_statement_lane_continues_a_conversation_in_one_statement_and_reads_back_its_seq(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ADMISSION_WRITES": "statement"}
    first = admit_as(alice, body(alice, "warm")).turn
    with CaptureQueriesContext(connection) as queries:
        turn = admit_as(alice, body(alice, "counted", conversation=first.conversation_id)).turn
    assert len(queries) == 2, [q["sql"][:200] for q in queries]
    assert turn.seq == 2 == Turn.objects.get(id=turn.id).seq
    assert list(Message.objects.filter(turn=turn).values_list("seq", flat=True)) == [2, 2]
    assert Reservation.objects.filter(turn=turn).exists()
