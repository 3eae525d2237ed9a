"""The web sends the turns admitted at the same moment as one message (agents/outbox.py), and a
worker runs such a batch's turns side by side, each exactly as a message of its own would."""

import threading
import time

import pytest
from django.db import connection

from agents import outbox, tasks
from agents.models import Message, Turn, TurnStatus
from memory import embeddings
from sentinel_site.metrics import EMBEDDED_TEXTS
from tests.agents.test_turn_runner import admit_turn
from tests.memory.conftest import use_embeddings
from tests.memory.helpers import FILLER, conversation_with, model_calls
from tests.stub_llm import Reply


def test_what_is_put_while_a_message_goes_out_goes_as_the_next_one():
    sent: list[list] = []
    first_going = threading.Event()
    release = threading.Event()

    def send(batch):
        sent.append(batch)
        if len(sent) == 1:
            first_going.set()
            release.wait(5)

    box = outbox.Outbox(send, max_batch=4)
    box.put("t1", "hint", "a tenant")
    assert first_going.wait(5), "a lone turn goes at once"
    for n in range(2, 8):
        box.put(f"t{n}")
    release.set()
    deadline = time.monotonic() + 5
    while sum(map(len, sent)) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent == [
        [["t1", "hint", "a tenant"]],
        [["t2", None, None], ["t3", None, None], ["t4", None, None], ["t5", None, None]],
        [["t6", None, None], ["t7", None, None]],
    ]


def test_a_message_that_cannot_be_sent_is_logged_and_the_outbox_goes_on(caplog):
    sent: list[list] = []

    def send(batch):
        if batch[0][0] == "bad":
            raise ConnectionError("broker down")
        sent.append(batch)

    box = outbox.Outbox(send, max_batch=1)
    box.put("bad")
    box.put("good")
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent == [[["good", None, None]]]
    assert "could not send 1 turn(s) to the workers: ConnectionError" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_batch_runs_each_turn_once_and_delivered_again_does_nothing(alice, stub_llm):
    stub_llm.script(*[Reply(content=f"answer {n}") for n in range(3)])
    turns = [admit_turn(alice, f"question {n}") for n in range(3)]
    batch = [[str(turn.id), None] for turn in turns]  # as a message sent before turns carried their tenant
    assert tasks.run_turns(batch) == "3 turns: done"
    connection.close()
    assert all(turn.status == TurnStatus.SUCCEEDED for turn in Turn.objects.filter(id__in=[t.id for t in turns]))
    assert tasks.run_turns(batch) == "3 turns: skipped", "a redelivered batch finds its turns ended"
    assert Message.objects.filter(turn__in=turns, role="assistant").count() == 3
    assert len(stub_llm.requests) == 3


@pytest.mark.django_db(transaction=True)
def test_a_turn_recalls_by_the_query_its_worker_prefetched_for_its_tenant(alice, bob, stub_llm, settings, monkeypatch):
    use_embeddings(settings, "local")  # a model worth a prefetch
    conversation_with(alice, FILLER)  # alice's agent has memories: its turns recall
    calls = model_calls(monkeypatch)
    question = "Where did my sister move to?"
    stub_llm.script(Reply(content="To Trondheim."))
    turn = admit_turn(alice, question)
    prefetched = EMBEDDED_TEXTS.labels("prefetch")._value.get()
    embeddings.prefetch([question], bob.tenant.id)  # bob's identical words, prefetched first in the same process
    assert tasks.run_turns([[str(turn.id), question, str(alice.tenant.id)]]) == "1 turns: done"
    assert EMBEDDED_TEXTS.labels("prefetch")._value.get() == prefetched + 1, "alice's turn took alice's prefetch"
    assert calls[:2] == [[question], [question]], "one prefetch for bob, one for alice: neither takes the other's"
    assert calls.count([question]) == 2, "and the turn's recall query did not run the model again"
    embeddings._prefetched.clear()
    embeddings.embedder.cache_clear()
