"""OpenAI's Conversations API shapes on Sentinel's conversations, through the official client."""

import uuid

import openai
import pytest

from agents.models import Agent, Conversation, Message, Turn
from budgets.models import AuditEntry
from tests.conftest import make_actor, wait_for
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


def test_the_client_updates_a_conversations_metadata_and_sentinels_shape_stays(client, live, alice):
    conversation = client.conversations.create(metadata={"topic": "names"})
    updated = client.conversations.update(conversation.id, metadata={"topic": "colours", "tier": "vip"})
    assert updated.id == conversation.id and updated.metadata == {"topic": "colours", "tier": "vip"}
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "colours", "tier": "vip"}
    assert client.conversations.update(conversation.id, metadata=None).metadata == {}, "null clears it"
    titled = client.post(f"/conversations/{conversation.id}", body={"title": "Ada"}, cast_to=object)
    assert (titled["title"], titled["agent"], titled["metadata"]) == ("Ada", "helper", {}), "Sentinel's fields stay"
    assert client.post(f"/conversations/{conversation.id}", body={}, cast_to=object)["title"] == "Ada", "a field left out stays"
    assert AuditEntry.objects.filter(action="conversation.updated", target=conversation.id).count() == 3, "and nothing changed is audited"
    with pytest.raises(openai.BadRequestError) as refused:
        client.conversations.update(conversation.id, metadata="not a dict")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "metadata"


def test_deleting_a_conversation_removes_it_and_what_was_kept_of_it(client, stub_llm):
    stub_llm.script(Reply(content="Hello Ada."))
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Remember me."}])
    response = client.responses.create(model="helper", input="My name is Ada.", conversation=conversation.id)
    deleted = client.conversations.delete(conversation.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (conversation.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert not Message.objects.filter(conversation_id=conversation.id).exists()
    assert not Turn.objects.filter(conversation_id=conversation.id).exists()
    entry = AuditEntry.objects.get(action="conversation.deleted", target=conversation.id)
    assert entry.data == {"messages": 3, "turns": 1}
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(conversation.id)


def test_a_conversation_with_a_turn_in_flight_is_not_deleted(client, stub_llm):
    stub_llm.script(Reply(content="slowly", delay=1.5))
    conversation = client.conversations.create()
    queued = client.responses.create(model="helper", input="hi", conversation=conversation.id, background=True)
    with pytest.raises(openai.ConflictError) as refused:
        client.conversations.delete(conversation.id)
    assert refused.value.body["code"] == "conversation_busy"
    wait_for(lambda: client.responses.retrieve(queued.id).status == "completed", timeout=30, message="the response to complete")
    assert client.conversations.delete(conversation.id).deleted


def test_one_item_is_read_and_deleted_by_its_id(client):
    conversation = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "Keep this."},
            {"type": "message", "role": "user", "content": "Forget this."},
        ]
    )
    keep, drop = client.conversations.items.list(conversation.id, order="asc").data
    read = client.conversations.items.retrieve(drop.id, conversation_id=conversation.id)
    assert (read.id, read.type, read.role, read.content[0].text) == (drop.id, "message", "user", "Forget this.")
    after = client.conversations.items.delete(drop.id, conversation_id=conversation.id)
    assert (after.object, after.id) == ("conversation", conversation.id), "OpenAI answers the conversation"
    assert texts(client.conversations.items.list(conversation.id)) == [("user", "Keep this.")]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(drop.id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete(drop.id, conversation_id=conversation.id)
    for bad in ("msg_nothex", "rs_123", f"msg_{uuid.uuid4().hex}"):
        with pytest.raises(openai.NotFoundError):
            client.conversations.items.retrieve(bad, conversation_id=conversation.id)
    assert AuditEntry.objects.filter(action="memory.message_forgotten", target=str(uuid.UUID(drop.id.removeprefix("msg_")))).exists()
    assert client.conversations.items.retrieve(keep.id, conversation_id=conversation.id).content[0].text == "Keep this."


def test_another_tenant_can_neither_update_nor_delete_a_conversation_or_its_items(client, live):
    conversation = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Mine."}])
    item = client.conversations.items.list(conversation.id).data[0]
    bob = openai.OpenAI(base_url=live.api, api_key=make_actor("bob").key, max_retries=0)
    for call in (
        lambda: bob.conversations.update(conversation.id, metadata={"x": "y"}),
        lambda: bob.conversations.delete(conversation.id),
        lambda: bob.conversations.items.retrieve(item.id, conversation_id=conversation.id),
        lambda: bob.conversations.items.delete(item.id, conversation_id=conversation.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert client.conversations.retrieve(conversation.id).metadata == {}
    assert texts(client.conversations.items.list(conversation.id)) == [("user", "Mine.")]
