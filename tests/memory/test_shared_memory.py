"""Shared memory (memory/shared.py): conversations of different agents in one scope recall what the
others were given and said, nearest to the query first, never what their own window carries, and
only within their tenant."""

import pytest

from agents.models import Agent, Conversation, Message
from memory import embeddings, shared
from memory.context import assemble
from memory.models import Memory

pytestmark = pytest.mark.django_db

SCOPE = "run:test"


def scoped(actor, agent_name: str, texts: list[str], scope: str = SCOPE) -> Conversation:
    agent = Agent.objects.create(tenant=actor.tenant, name=agent_name, system_prompt=f"You are {agent_name}.")
    conversation = Conversation.objects.create(tenant=actor.tenant, agent=agent, last_seq=1, metadata={shared.SCOPE_KEY: scope})
    Message.objects.bulk_create(
        Message(tenant=actor.tenant, conversation=conversation, seq=1, index=i, role="user" if i % 2 == 0 else "assistant", content=text)
        for i, text in enumerate(texts)
    )
    return conversation


def remember_all(actor, conversation: Conversation, scope: str = SCOPE) -> None:
    shared.remember(actor.tenant.id, scope, Message.objects.filter(conversation=conversation).values_list("id", flat=True))


def test_it_recalls_what_another_agent_said_into_a_shared_section(alice):
    scout = scoped(alice, "scout", ["Find the code.", "The code is 7741."])
    remember_all(alice, scout)
    writer = scoped(alice, "writer", ["Write up what the code is."])
    context = assemble(writer, upto_seq=1, embed=embeddings.embed_query)
    pieces = [piece for piece in context.pieces if piece.kind == "shared"]
    assert [piece.text for piece in pieces] == ["[scout, user] Find the code.", "[scout, assistant] The code is 7741."], "oldest first"
    assert all(piece.agent == "scout" and piece.memory_id and piece.score is not None for piece in pieces)
    assert "- [scout, assistant] The code is 7741." in context.messages[0]["content"]
    assert [piece["kind"] for piece in context.explain()["pieces"]] == ["system", "shared", "shared", "recent"]


def test_remembering_is_idempotent_and_tags_what_the_indexer_wrote(alice):
    from memory import indexing

    scout = scoped(alice, "scout", ["Find the code.", "The code is 7741."])
    indexing.index_pending()
    assert set(Memory.objects.values_list("scope", flat=True)) == {""}
    remember_all(alice, scout)
    remember_all(alice, scout)
    assert Memory.objects.count() == 2 and set(Memory.objects.values_list("scope", flat=True)) == {SCOPE}
    assert not Message.objects.filter(embedded=False).exists(), "the indexer has nothing left to do for them"


def test_a_conversation_outside_the_scope_or_in_another_tenant_recalls_none_of_it(alice, bob):
    remember_all(alice, scoped(alice, "scout", ["Find the code.", "The code is 7741."]))
    elsewhere = scoped(alice, "other", ["What is the code?"], scope="run:another")
    intruder = scoped(bob, "writer", ["What is the code?"])  # Bob names Alice's scope
    unscoped = scoped(alice, "plain", ["What is the code?"])
    Conversation.objects.filter(id=unscoped.id).update(metadata={})
    unscoped.refresh_from_db()
    for conversation in (elsewhere, intruder, unscoped):
        context = assemble(conversation, upto_seq=1, embed=embeddings.embed_query)
        assert not [piece for piece in context.pieces if piece.kind == "shared"], conversation.agent.name
        assert "7741" not in str(context.messages)
    assert shared.contents(bob.tenant.id, SCOPE) == (0, [])


def test_forgetting_a_message_redacts_it_from_what_another_agent_of_the_scope_was_sent(alice, stub_llm):
    import json

    from django.test import Client

    from agents import runner
    from agents.admission import admit
    from agents.models import TurnEventRecord
    from tests.stub_llm import Reply

    secret = "The vault opens with the word marmalade."
    scout = scoped(alice, "scout", ["What opens the vault?", secret])
    remember_all(alice, scout)
    writer = scoped(alice, "writer", [])
    data = {"model": "writer", "messages": [{"role": "user", "content": "How does the vault open?"}], "conversation": writer.id}
    turn = admit(tenant=alice.tenant, api_key=alice.api_key, data=data, idempotency_key=None, enqueue=lambda _: None).turn
    stub_llm.script(Reply(content="I cannot say."))
    runner.execute(runner.claim(turn.id))
    sent = TurnEventRecord.objects.get(turn=turn, kind="provider_request")
    assert secret in json.dumps(sent.payload), "the writer was sent the scout's words"

    message = Message.objects.get(conversation=scout, content=secret)
    response = Client().delete(f"/v1/conversations/{scout.id}/messages/{message.id}", **alice.auth)
    assert response.status_code == 200, response.content
    assert response.json()["redacted"]["turns"] == 1, "the writer's turn"
    sent.refresh_from_db()
    assert secret not in json.dumps(sent.payload), "redacted in the other agent's recorded request too"
