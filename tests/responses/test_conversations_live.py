"""OpenAI's Conversations API shapes on Sentinel's conversations, through the official client."""

import openai
import pytest

from agents.models import Agent, Conversation
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def texts(page) -> list[tuple[str, str]]:
    return [(item.role, item.content[0].text) for item in page.data if item.type == "message"]


def test_a_conversation_created_by_the_client_remembers_the_earlier_exchange(client, stub_llm):
    stub_llm.script(Reply(content="Hello Ada."), Reply(content="You are Ada."))
    conversation = client.conversations.create(metadata={"topic": "names"})
    assert conversation.object == "conversation" and conversation.metadata == {"topic": "names"}
    first = client.responses.create(model="helper", input="My name is Ada.", conversation=conversation.id)
    second = client.responses.create(model="helper", input="Who am I?", conversation=conversation.id)
    assert second.conversation.id == conversation.id and first.conversation.id == conversation.id
    sent = [m["content"] for m in stub_llm.requests[-1]["messages"] if m["role"] in ("user", "assistant")]
    assert sent[-3:] == ["My name is Ada.", "Hello Ada.", "Who am I?"]
    assert texts(client.conversations.items.list(conversation.id, order="asc")) == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "Who am I?"),
        ("assistant", "You are Ada."),
    ]
    newest = client.conversations.items.list(conversation.id, limit=1)
    assert texts(newest) == [("assistant", "You are Ada.")] and newest.has_more
    following = client.conversations.items.list(conversation.id, limit=2, after=newest.data[0].id)
    assert texts(following) == [("user", "Who am I?"), ("assistant", "Hello Ada.")]
    assert client.conversations.retrieve(conversation.id).id == conversation.id


def test_items_given_at_creation_or_added_later_are_remembered(client, stub_llm):
    stub_llm.script(Reply(content="Blue, you said."))
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "My favourite colour is blue."}])
    added = client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Noted."}]}]
    )
    assert [item.content[0].text for item in added.data] == ["Noted."]
    client.responses.create(model="helper", input="What is my favourite colour?", conversation=conversation.id)
    sent = [m["content"] for m in stub_llm.requests[-1]["messages"] if m["role"] in ("user", "assistant")]
    assert sent[-3:] == ["My favourite colour is blue.", "Noted.", "What is my favourite colour?"]


def test_a_tenant_with_several_agents_names_the_conversations_agent(client, alice, stub_llm):
    Agent.objects.create(tenant=alice.tenant, name="other")
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.create()
    assert refused.value.body["code"] == "agent_required"
    conversation = client.conversations.create(extra_body={"agent": "other"})
    assert Conversation.objects.get(id=conversation.id).agent.name == "other"


def test_bad_items_and_other_tenants_conversations_are_refused(client, live, stub_llm):
    from tests.conftest import make_actor

    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.items.create(conversation.id, items=[{"type": "reasoning", "summary": []}])
    assert refused.value.body["param"] == "items[0].type"
    bob = openai.OpenAI(base_url=live.api, api_key=make_actor("bob").key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        bob.conversations.items.list(conversation.id)
    with pytest.raises(openai.NotFoundError):
        bob.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="helper", input="x", conversation=conversation.id)
