"""Forking a conversation at a turn: a new conversation with the history up to there, its summaries and
memories scoped to it, answering from that history only; the original unchanged (agents/forking.py)."""

import uuid

import pytest
from django.test import Client
from django.urls import resolve

from agents.models import Conversation, Message, Turn
from budgets.models import AuditEntry
from memory import indexing
from memory.models import Memory, Summary
from tests.agents.test_replay import admit_turn, replayed, run
from tests.conftest import make_actor

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client()


def fork(client, actor, conversation_id, at_turn):
    return client.post(
        f"/v1/conversations/{conversation_id}/fork", {"at_turn": str(at_turn)}, content_type="application/json", **actor.auth
    )


def three_turns(actor, texts=("one", "two", "three")):
    turns = [run(admit_turn(actor, texts[0]))]
    for text in texts[1:]:
        turns.append(run(admit_turn(actor, text, conversation=turns[0].conversation_id)))
    return turns


def history(conversation_id):
    return [(m.role, m.content) for m in Message.objects.filter(conversation_id=conversation_id).order_by("seq", "index")]


def test_a_fork_holds_the_history_up_to_and_including_the_turn(client, alice, stub_llm):
    first, second, _ = three_turns(alice)
    before = list(Message.objects.filter(conversation_id=first.conversation_id).values_list("id", "seq", "index", "content"))
    response = fork(client, alice, first.conversation_id, second.id)
    assert response.status_code == 201, response.content
    forked = response.json()
    assert forked["agent"] == alice.agent.name and forked["last_seq"] == second.seq
    assert forked["copied"] == {"messages": 4, "summaries": 0, "memories": 0}
    assert forked["metadata"]["forked_from"] == {
        "conversation": str(first.conversation_id),
        "turn": str(second.id),
        "seq": second.seq,
        "lineage": [str(first.conversation_id)],
    }
    assert history(forked["id"]) == [("user", "one"), ("assistant", "echo: one"), ("user", "two"), ("assistant", "echo: two")]
    copy = Conversation.objects.get(id=forked["id"])
    assert copy.tenant_id == alice.tenant.id and not Turn.objects.filter(conversation=copy).exists()
    after = list(Message.objects.filter(conversation_id=first.conversation_id).values_list("id", "seq", "index", "content"))
    assert after == before, "nothing of the original changes"
    entry = AuditEntry.objects.get(action="conversation.forked")
    assert entry.target == forked["id"] and entry.data["at_turn"] == str(second.id)


def test_a_fork_answers_the_next_message_from_the_forked_history_only(client, alice, stub_llm):
    first, second, _ = three_turns(alice)
    forked = fork(client, alice, first.conversation_id, second.id).json()
    turn = run(admit_turn(alice, "four", conversation=forked["id"]))
    sent = [m["content"] for m in stub_llm.requests[-1]["messages"]]
    assert sent == ["You help alice.", "one", "echo: one", "two", "echo: two", "four"], "the fork's history, not the original's"
    assert turn.seq == second.seq + 1
    assert history(first.conversation_id)[-1] == ("assistant", "echo: three"), "the original goes on as it was"
    assert replayed(turn).identical, "a fork's turn replays like any other"


def test_a_fork_recalls_its_own_past_and_nothing_said_after_the_fork_point(client, alice, stub_llm):
    alice.agent.short_term_messages = 2
    alice.agent.recall_limit = 4
    alice.agent.save()
    first, second, _ = three_turns(alice, ("The code word is alpha.", "Nice weather today.", "The secret fruit is pineapple."))
    indexing.index_pending()
    forked = fork(client, alice, first.conversation_id, second.id).json()
    assert forked["copied"]["memories"] == 4, "the memories of the four copied messages come along"
    assert set(Memory.objects.filter(conversation_id=forked["id"]).values_list("message__conversation_id", flat=True)) == {
        uuid.UUID(forked["id"])
    }
    question = "What is the code word, and what is the secret fruit?"
    turn = run(admit_turn(alice, question, conversation=forked["id"]))
    system = stub_llm.requests[-1]["messages"][0]["content"]
    assert "alpha" in system, "the fork recalls its own past beyond the recent window"
    assert "pineapple" not in str(stub_llm.requests[-1]["messages"]), "nothing said in the original after the fork point"
    recalled = [p["memory_id"] for p in turn.events.get(kind="provider_request").payload["context"]["pieces"] if p["kind"] == "recalled"]
    assert set(Memory.objects.filter(id__in=recalled).values_list("conversation_id", flat=True)) == {uuid.UUID(forked["id"])}
    # The control: any other conversation of the agent recalls what the original said last.
    run(admit_turn(alice, question))
    assert "pineapple" in stub_llm.requests[-1]["messages"][0]["content"]


def test_summaries_of_copied_messages_only_are_copied_and_relinked(client, alice, stub_llm):
    first, second, third = three_turns(alice)
    messages = {m.content: m for m in Message.objects.filter(conversation_id=first.conversation_id)}
    early = Summary.objects.create(
        tenant=alice.tenant,
        conversation=first.conversation,
        text="They said one.",
        token_count=4,
        source_message_ids=[messages["one"].id, messages["echo: one"].id],
        first_seq=first.seq,
        last_seq=first.seq,
    )
    spanning = Summary.objects.create(
        tenant=alice.tenant,
        conversation=first.conversation,
        text="They said two and three.",
        token_count=6,
        source_message_ids=[messages["two"].id, messages["three"].id],
        first_seq=second.seq,
        last_seq=third.seq,
    )
    Message.objects.filter(id__in=early.source_message_ids).update(summary=early)
    Message.objects.filter(id__in=spanning.source_message_ids).update(summary=spanning)
    indexing.index_pending()
    forked = fork(client, alice, first.conversation_id, second.id).json()
    assert forked["copied"] == {"messages": 4, "summaries": 1, "memories": 5}
    copied = Summary.objects.get(conversation_id=forked["id"])
    assert copied.text == "They said one." and copied.id != early.id
    sources = {m.content: m for m in Message.objects.filter(conversation_id=forked["id"])}
    assert copied.source_message_ids == [sources["one"].id, sources["echo: one"].id], "re-linked to the copies"
    assert sources["one"].summary_id == copied.id and sources["echo: one"].summary_id == copied.id
    assert sources["two"].summary_id is None, "its summary tells what came after the fork point: unconsolidated in the fork"
    summary_memory = Memory.objects.get(conversation_id=forked["id"], kind="summary")
    assert summary_memory.summary_id == copied.id and summary_memory.source_message_ids == copied.source_message_ids
    assert Summary.objects.filter(conversation=first.conversation).count() == 2, "the original's summaries stay"


def test_forking_refuses_what_it_cannot_fork(client, alice, stub_llm):
    first, second, _ = three_turns(alice)
    other = run(admit_turn(alice, "elsewhere"))
    wrong = fork(client, alice, first.conversation_id, other.id)
    assert wrong.status_code == 404 and wrong.json()["error"] == {
        "message": "No such turn in this conversation.",
        "type": "invalid_request_error",
        "param": "at_turn",
        "code": "turn_not_found",
    }
    queued = admit_turn(alice, "not yet", conversation=first.conversation_id)
    busy = fork(client, alice, first.conversation_id, queued.id)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "turn_in_progress"
    missing = client.post(f"/v1/conversations/{first.conversation_id}/fork", {}, content_type="application/json", **alice.auth)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "at_turn"
    viewer = make_actor("alice", role="viewer")
    assert fork(client, viewer, first.conversation_id, second.id).status_code == 403
    assert Conversation.objects.filter(tenant=alice.tenant).count() == 2, "no refusal wrote anything"


def test_another_tenants_conversation_or_turn_is_a_404(client, alice, bob, stub_llm):
    first, second, _ = three_turns(alice)
    theirs = run(admit_turn(bob, "bob's"))
    assert fork(client, bob, first.conversation_id, second.id).status_code == 404
    assert fork(client, alice, first.conversation_id, theirs.id).status_code == 404
    assert fork(client, bob, theirs.conversation_id, second.id).status_code == 404
    assert not Conversation.objects.filter(tenant=bob.tenant).exclude(id=theirs.conversation_id).exists()


def test_the_history_routes_do_not_shadow_the_conversation_resources():
    some = uuid.uuid4()
    assert resolve(f"/v1/conversations/{some}/fork").func.cls.__module__ == "agents.api.history"
    assert resolve(f"/v1/conversations/{some}").func.cls.__module__ == "agents.api.resources"
    assert resolve(f"/v1/conversations/{some}/messages").func.cls.__module__ == "memory.api"
    assert resolve(f"/v1/turns/{some}/replay").func.cls.__module__ == "agents.api.history"
    assert resolve(f"/v1/turns/{some}").func.cls.__module__ == "agents.api.resources"
    assert resolve(f"/v1/agents/{some}/transitions").func.cls.__module__ == "agents.api.history"
    assert resolve(f"/v1/agents/{some}").func.cls.__module__ == "agents.api.resources"


def test_options_describes_the_fork_route(client, alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    response = client.options(f"/v1/conversations/{conversation.id}/fork", **alice.auth)
    assert response.status_code == 200, response.content
