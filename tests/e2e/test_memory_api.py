"""The memory API through a live server and worker: import, context, search, summaries, forget."""

import json

import httpx
import pytest
import redis
from django.conf import settings

from agents.models import Agent, Conversation, Message
from memory import remote
from memory.models import Memory, Summary
from memory.tasks import consolidate as consolidate_task
from tests.conftest import make_actor, wait_for
from tests.memory.helpers import FILLER
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def http(live_stack, actor):
    return httpx.Client(base_url=live_stack.api, headers={"Authorization": f"Bearer {actor.key}"}, timeout=60)


def new_conversation(h, agent="helper"):
    response = h.post("/conversations", json={"agent": agent, "title": "imported"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def history(n, fact_at=None, fact="My dog is called Biscuit and he is a beagle."):
    messages = []
    for i in range(n):
        content = fact if i == fact_at else f"{FILLER[i % len(FILLER)]} (entry {i})"
        messages.append(
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": content,
                "client_id": f"c{i}",
                "timestamp": f"2026-01-{1 + i % 28:02d}T10:00:00Z",
            }
        )
    return messages


def indexed(conversation_id):
    return not Message.objects.filter(conversation_id=conversation_id, embedded=False).exists()


def test_importing_a_thousand_messages_gives_a_bounded_context_with_sources(live_stack, alice):
    with http(live_stack, alice) as h:
        conversation = new_conversation(h)
        response = h.post(f"/conversations/{conversation}/messages", json={"messages": history(1000, fact_at=10)})
        assert response.status_code == 201, response.text
        assert len(response.json()["data"]) == 1000 and response.json()["data"][0]["client_id"] == "c0"
        wait_for(lambda: indexed(conversation), timeout=60, message="the import to be indexed")
        context = h.get(f"/conversations/{conversation}/context", params={"query": "What is my dog called?"}).json()
    assert context["total_tokens"] <= context["budget"] == 2048
    assert context["history_tokens"] > 10 * context["total_tokens"]
    kinds = [piece["kind"] for piece in context["pieces"]]
    assert kinds[0] == "system" and "recent" in kinds and "recalled" in kinds
    fact = next(piece for piece in context["pieces"] if "Biscuit" in (piece["text"] or ""))
    assert fact["kind"] == "recalled" and fact["client_ids"] == ["c10"] and fact["score"] > 0.3
    assert all(piece["source_message_ids"] for piece in context["pieces"] if piece["kind"] != "system")
    assert Message.objects.get(client_id="c10").occurred_at.isoformat().startswith("2026-01-11")


def test_import_errors_write_nothing(live_stack, alice):
    with http(live_stack, alice) as h:
        conversation = new_conversation(h)
        assert h.post(f"/conversations/{conversation}/messages", json={"messages": history(1001)}).status_code == 400
        bad = h.post(f"/conversations/{conversation}/messages", json={"messages": [{"role": "user", "content": 5}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages[0].content"
        dupes = [{"role": "user", "content": "a", "client_id": "x"}, {"role": "user", "content": "b", "client_id": "x"}]
        assert h.post(f"/conversations/{conversation}/messages", json={"messages": dupes}).status_code == 400
        assert h.post(f"/conversations/{conversation}/messages", json={"messages": dupes[:1]}).status_code == 201
        again = h.post(
            f"/conversations/{conversation}/messages", json={"messages": [{"role": "user", "content": "c", "client_id": "y"}, dupes[0]]}
        )
        assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_client_id"
    assert list(Message.objects.filter(conversation_id=conversation).values_list("client_id", flat=True)) == ["x"]


def test_search_ranks_memories_and_never_crosses_tenants(live_stack, alice, bob):
    with http(live_stack, alice) as h:
        conversation = new_conversation(h)
        h.post(
            f"/conversations/{conversation}/messages", json={"messages": history(20, fact_at=4, fact="I was born in Reykjavik in 1990.")}
        )
        wait_for(lambda: indexed(conversation), timeout=60, message="indexing")
        found = h.get("/memory/search", params={"q": "Where was I born?", "k": 3}).json()["data"]
        assert len(found) == 3 and "Reykjavik" in found[0]["text"]
        assert found[0]["score"] >= found[1]["score"] >= found[2]["score"]
        assert found[0]["source_message_ids"] == [str(Message.objects.get(content__startswith="I was born").id)]
        assert h.get("/memory/search", params={"q": "born", "conversation": conversation}).status_code == 200
        assert h.get("/memory/search", params={"q": ""}).status_code == 400
        assert h.get("/memory/search", params={"q": "x", "k": "500"}).json()["error"]["param"] == "k"
        assert h.get("/memory/search", params={"q": "x", "agent": "\u0000"}).json()["error"]["param"] == "agent"
    with http(live_stack, bob) as h:
        assert h.get("/memory/search", params={"q": "Where was I born?"}).json()["data"] == []
        assert h.get("/memory/search", params={"q": "born", "conversation": conversation}).status_code == 404
        assert h.get(f"/conversations/{conversation}/context").status_code == 404
        assert h.post(f"/conversations/{conversation}/messages", json={"messages": history(1)}).status_code == 404
        assert h.get(f"/conversations/{conversation}/summaries").status_code == 404
        assert h.post(f"/conversations/{conversation}/consolidate").status_code == 404
        memory_id = Memory.objects.filter(conversation_id=conversation).first().id
        assert h.delete(f"/memory/{memory_id}").status_code == 404
    assert Memory.objects.filter(id=memory_id).exists()


def test_forgetting_a_message_removes_its_embedding(live_stack, alice):
    with http(live_stack, alice) as h:
        conversation = new_conversation(h)
        ids = [m["id"] for m in h.post(f"/conversations/{conversation}/messages", json={"messages": history(4)}).json()["data"]]
        wait_for(lambda: indexed(conversation), timeout=60, message="indexing")
        forgotten = h.delete(f"/conversations/{conversation}/messages/{ids[0]}")
        assert forgotten.status_code == 200 and forgotten.json()["deleted"]["memories"] == 1, forgotten.text
        assert h.delete(f"/conversations/{conversation}/messages/{ids[0]}").status_code == 404
        memory = Memory.objects.get(message_id=ids[1])
        assert h.delete(f"/memory/{memory.id}").status_code == 204
    assert not Message.objects.filter(id=ids[0]).exists() and not Memory.objects.filter(message_id__in=ids[:2]).exists()
    assert Message.objects.filter(id=ids[1]).exists(), "forgetting a memory keeps the message in the history"


def test_consolidation_on_demand_and_its_dry_run(live_stack, alice, stub_llm):
    with http(live_stack, alice) as h:
        conversation = new_conversation(h)
        h.post(f"/conversations/{conversation}/messages", json={"messages": history(40, fact_at=3)})
        wait_for(lambda: indexed(conversation), timeout=60, message="indexing")
        plan = h.post(f"/conversations/{conversation}/consolidate", params={"dry_run": "true"}).json()
        assert plan["dry_run"] is True and plan["next_span"]["message_count"] > 0
        assert not Summary.objects.exists()
        stub_llm.script(Reply(content="- The user's dog is a beagle named Biscuit."))
        assert h.post(f"/conversations/{conversation}/consolidate").status_code == 202
        summaries = wait_for(lambda: h.get(f"/conversations/{conversation}/summaries").json()["data"], timeout=30, message="a summary")
        assert "Biscuit" in summaries[0]["text"] and summaries[0]["source_message_ids"]
        wait_for(lambda: Memory.objects.filter(kind="summary").exists(), timeout=30, message="the summary to be embedded")
        context = h.get(f"/conversations/{conversation}/context").json()
        assert "summary" in [piece["kind"] for piece in context["pieces"]]
        assert context["unconsolidated_tokens"] < context["history_tokens"]


def test_a_turn_uses_memory_imported_before_it(live_stack, alice, stub_llm):
    with http(live_stack, alice) as h:
        conversation = new_conversation(h)
        h.post(f"/conversations/{conversation}/messages", json={"messages": history(200, fact_at=7)})
        wait_for(lambda: indexed(conversation), timeout=60, message="indexing")
        reply = h.post(
            "/chat/completions",
            json={"model": "helper", "conversation": conversation, "messages": [{"role": "user", "content": "What is my dog's name?"}]},
        )
        assert reply.status_code == 200
    sent = stub_llm.requests[-1]["messages"]
    assert "Biscuit" in sent[0]["content"], "the recalled fact reaches the model"
    assert len(sent) < 20, "only the recent window is sent verbatim"


def test_memory_endpoints_check_roles(live_stack):
    viewer = make_actor("vera", role="viewer")
    with http(live_stack, viewer) as h:
        assert h.post("/conversations", json={"agent": "helper"}).status_code == 403
        assert h.get("/memory/search", params={"q": "anything"}).status_code == 200
    executor = make_actor("ed", role="executor")
    with http(live_stack, executor) as h:
        conversation = new_conversation(h)
        assert h.post(f"/conversations/{conversation}/messages", json={"messages": history(2)}).status_code == 201


def test_creating_a_conversation_for_an_unknown_agent_is_a_404(live_stack, alice, bob):
    with http(live_stack, alice) as h:
        response = h.post("/conversations", json={"agent": "nobody"})
        assert response.status_code == 404 and response.json()["error"]["param"] == "agent"
        # Without `agent` (OpenAI's clients send none) it is the tenant's only agent; with several, a 400 naming it.
        assert h.post("/conversations", json={}).json()["agent"] == "helper"
        Agent.objects.create(tenant=alice.tenant, name="second")
        assert h.post("/conversations", json={}).json()["error"]["param"] == "agent"


def waiting_tasks(name: str) -> int:
    """Tasks of this name still in the broker's memory queue (not yet taken by a worker)."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return sum(json.loads(raw)["headers"]["task"] == name for raw in broker.lrange("memory", 0, -1))


def test_search_queries_are_answered_while_consolidations_fill_the_memory_queue(live_stack, stub_llm):
    flooder = make_actor("flooder", agent_name="dreamy")
    flooder.agent.short_term_messages = 0  # every message is old enough to consolidate
    flooder.agent.save()
    conversations = []
    for _ in range(16):  # twice the worker's threads, each held by a slow model call
        conversation = Conversation.objects.create(tenant=flooder.tenant, agent=flooder.agent, last_seq=1)
        Message.objects.bulk_create(
            Message(
                tenant=flooder.tenant,
                conversation=conversation,
                seq=1,
                index=i,
                role=role,
                content=f"slowdream {i}",
                embedded=True,
                token_count=8,
            )
            for i, role in enumerate(["user", "assistant"])
        )
        conversations.append(conversation)
    stub_llm.when("slowdream", lambda body: Reply(content="- They talked.", delay=2.5))
    for conversation in conversations:
        consolidate_task.apply_async(args=[str(conversation.id)], queue="memory")
    vectors = remote.embed_texts_sync(["Where was I born?"], None)
    assert len(vectors) == 1 and len(vectors[0]) == 384
    assert waiting_tasks("memory.tasks.consolidate") > 0, "the query was answered before the bulk work queued ahead of it"
