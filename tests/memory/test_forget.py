"""Forgetting a message removes or redacts its text everywhere it was stored, and says what it did."""

import json

import pytest
from django.test import Client

from agents import runner, streams
from agents.admission import admit
from agents.models import Conversation, Message, Turn, TurnEventRecord, TurnStatus
from budgets.models import AuditEntry
from memory import embeddings, indexing
from memory.forget import REDACTED
from memory.models import EmbeddingCache, Memory, Summary
from sentinel_site.redis import sync_client
from tests.memory.helpers import conversation_with
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db

SECRET = "My locker code is 4417 and the spare key is under the blue pot."
SUMMARY = "- The user's locker code is 4417; the spare key is under the blue pot."


def turn(actor, content, *, conversation=None):
    data = {"model": actor.agent.name, "messages": [{"role": "user", "content": content}]}
    if conversation is not None:
        data["conversation"] = conversation.id
    admitted = admit(tenant=actor.tenant, api_key=actor.api_key, data=data, idempotency_key=None, enqueue=lambda _: None).turn
    return admitted


def run(admitted, stub_llm, reply):
    stub_llm.script(Reply(content=reply))
    runner.execute(runner.claim(admitted.id))
    admitted.refresh_from_db()
    assert admitted.status == TurnStatus.SUCCEEDED
    return admitted


def forget(client, actor, conversation_id, message_id):
    return client.delete(f"/v1/conversations/{conversation_id}/messages/{message_id}", **actor.auth)


def stored_anywhere(text):
    """Every recorded turn event that still holds the text."""
    return [event.kind for event in TurnEventRecord.objects.all() if text in json.dumps(event.payload)]


@pytest.fixture
def remembered(alice, stub_llm):
    """A secret said in a turn, embedded, summarised, then carried by later turns' contexts."""
    first = run(turn(alice, SECRET), stub_llm, "Noted, I will keep that in mind.")
    secret = Message.objects.get(turn=first, role="user")
    indexing.index_pending()
    summary = Summary.objects.create(
        tenant=alice.tenant,
        conversation=first.conversation,
        text=SUMMARY,
        token_count=20,
        source_message_ids=[secret.id, first.output_id],
        first_seq=1,
        last_seq=1,
    )
    Message.objects.filter(id__in=summary.source_message_ids).update(summary=summary)
    indexing.index_pending()
    second = run(turn(alice, "Where is the spare key?", conversation=first.conversation), stub_llm, "Under the blue pot.")
    elsewhere = run(turn(alice, "What was my locker code again?"), stub_llm, "I am not sure.")
    return {"first": first, "second": second, "elsewhere": elsewhere, "secret": secret, "summary": summary}


@pytest.fixture
def remembered_with_cache(local_embeddings, remembered):
    """`remembered` with MiniLM, whose embeddings are cached (the static model's are not)."""
    return remembered


def test_forgetting_a_message_removes_and_redacts_its_text_everywhere_and_reports_it(alice, remembered_with_cache):
    remembered = remembered_with_cache
    first, secret, summary = remembered["first"], remembered["secret"], remembered["summary"]
    assert stored_anywhere(SECRET) and stored_anywhere(SUMMARY), "the scenario puts the text in turn events"
    assert sync_client().exists(streams.key(first.id))
    assert EmbeddingCache.objects.filter(content_hash=embeddings.content_hash(SECRET, alice.tenant.id)).exists()
    assert SECRET in json.dumps(remembered["elsewhere"].events.get(kind="provider_request").payload), "recalled in another conversation"

    response = forget(Client(), alice, first.conversation_id, secret.id)

    assert response.status_code == 200, response.content
    report = response.json()
    assert report["object"] == "message.forgotten" and report["id"] == str(secret.id)
    assert report["deleted"] == {"messages": 1, "memories": 2, "summaries": 1, "embedding_cache_entries": 2, "turn_streams": 1}
    assert report["redacted"] == {"turn_events": 3, "turns": 3}, "its own turn's request, and the two that carried it"
    assert report["cleared"] == {"turn_outputs": 0} and report["unmarked_messages"] == 1
    assert not Message.objects.filter(id=secret.id).exists()
    assert not Memory.objects.filter(text__contains="4417 and the spare").exists(), "its embedding and the summary's are gone"
    assert not Summary.objects.filter(id=summary.id).exists()
    assert Message.objects.get(id=first.output_id).summary_id is None, "the summary's other message can be summarised again"
    assert stored_anywhere(SECRET) == [] and stored_anywhere(SUMMARY) == [], "no recorded request or response keeps it"
    request = first.events.get(kind="provider_request").payload
    assert request["body"]["messages"][-1] == {"role": "user", "content": REDACTED}
    assert request["redacted"]["message_ids"] == [str(secret.id)]
    assert REDACTED in remembered["second"].events.get(kind="provider_request").payload["body"]["messages"][0]["content"]
    hashes = [embeddings.content_hash(text, alice.tenant.id) for text in (SECRET, SUMMARY)]
    assert not EmbeddingCache.objects.filter(content_hash__in=hashes).exists()
    assert not sync_client().exists(streams.key(first.id))
    entry = AuditEntry.objects.get(action="memory.message_forgotten")
    assert entry.target == str(secret.id) and entry.actor == f"key:{alice.api_key.key_id}"
    assert "4417" not in json.dumps(entry.data) and entry.data["summaries"] == 1, "audited with counts, never the text"


def test_forgetting_a_message_drops_the_vector_kept_for_it_in_redis(alice, onnx_embeddings):
    conversation = conversation_with(alice, [SECRET])
    message = Message.objects.get(conversation=conversation)
    key = embeddings._recent_key(onnx_embeddings.name, embeddings.content_hash(SECRET, alice.tenant.id))
    assert sync_client().exists(key), "kept by the indexer for the next query"
    assert forget(Client(), alice, conversation.id, message.id).status_code == 200
    assert not sync_client().exists(key)


def test_forgetting_a_reply_clears_the_turns_response_and_redacts_what_the_model_said(alice, stub_llm):
    answered = run(turn(alice, "Make up a password for me."), stub_llm, "Try tangerine-otter-91 as your password.")
    response = forget(Client(), alice, answered.conversation_id, answered.output_id)
    assert response.status_code == 200, response.content
    assert response.json()["cleared"] == {"turn_outputs": 1} and response.json()["deleted"]["turn_streams"] == 1
    answered.refresh_from_db()
    assert answered.output is None
    assert answered.events.get(kind="provider_response").payload["content"] == REDACTED
    assert stored_anywhere("tangerine-otter-91") == []
    assert Client().get(f"/v1/turns/{answered.id}", **alice.auth).json()["response"] is None


def test_a_short_message_is_redacted_only_where_it_stands_alone(alice, stub_llm):
    said = run(turn(alice, "ok"), stub_llm, "Your token is ready, ok?")
    message = Message.objects.get(turn=said, role="user")
    assert forget(Client(), alice, said.conversation_id, message.id).status_code == 200
    assert said.events.get(kind="provider_request").payload["body"]["messages"][-1]["content"] == REDACTED
    assert said.events.get(kind="provider_response").payload["content"] == "Your token is ready, ok?"


def test_another_tenants_message_is_a_404_and_stays(alice, bob, stub_llm):
    theirs = run(turn(alice, SECRET), stub_llm, "Noted.")
    secret = Message.objects.get(turn=theirs, role="user")
    mine = Conversation.objects.create(tenant=bob.tenant, agent=bob.agent)
    assert forget(Client(), bob, theirs.conversation_id, secret.id).status_code == 404
    assert forget(Client(), bob, mine.id, secret.id).status_code == 404
    assert Message.objects.filter(id=secret.id).exists() and stored_anywhere(SECRET)
    assert not AuditEntry.objects.filter(action="memory.message_forgotten").exists()


def test_a_message_of_a_turn_still_to_run_is_a_409_and_nothing_changes(alice):
    waiting = turn(alice, SECRET)
    secret = Message.objects.get(turn=waiting)
    response = forget(Client(), alice, waiting.conversation_id, secret.id)
    assert response.status_code == 409 and response.json()["error"]["code"] == "turn_in_progress"
    Turn.objects.filter(id=waiting.id).update(status=TurnStatus.RUNNING)
    assert forget(Client(), alice, waiting.conversation_id, secret.id).status_code == 409
    assert Message.objects.filter(id=secret.id).exists()
