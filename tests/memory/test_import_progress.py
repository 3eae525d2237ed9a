"""A history import reports its progress: its messages are in the history at once, and `processed`
counts those the indexer has embedded, in the import's API object and on the conversation's admin page."""

import json

import pytest
from django.test import Client

from agents.models import Conversation, Message, Turn
from memory import indexing

pytestmark = pytest.mark.django_db


def import_history(actor, conversation, count: int) -> dict:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"line {i} of the old chat"} for i in range(count)]
    response = Client().post(
        f"/v1/conversations/{conversation.id}/messages", json.dumps({"messages": messages}), content_type="application/json", **actor.auth
    )
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def conversation(alice):
    return Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)


def read(actor, url: str):
    return Client().get(url, **actor.auth)


def test_an_import_answers_with_its_progress_before_anything_is_embedded(alice, conversation):
    body = import_history(alice, conversation, 5)
    progress = body["import"]
    assert progress == {
        "object": "conversation.import",
        "id": body["seq"],
        "conversation": str(conversation.id),
        "state": "indexing",
        "total": 5,
        "processed": 0,
        "url": f"/v1/conversations/{conversation.id}/imports/{body['seq']}",
    }
    assert read(alice, progress["url"]).json() == progress, "the url reads the same object"


def test_progress_follows_the_indexer_until_the_import_is_completed(alice, conversation):
    url = import_history(alice, conversation, 5)["import"]["url"]
    assert indexing.index_pending_messages(limit=2) == 2
    halfway = read(alice, url).json()
    assert (halfway["processed"], halfway["state"]) == (2, "indexing")
    indexing.index_pending_messages(limit=10)
    done = read(alice, url).json()
    assert (done["processed"], done["total"], done["state"]) == (5, 5, "completed")


def test_two_imports_are_counted_apart(alice, conversation):
    first = import_history(alice, conversation, 3)["import"]
    second = import_history(alice, conversation, 4)["import"]
    assert second["id"] == first["id"] + 1
    assert read(alice, first["url"]).json()["total"] == 3
    assert read(alice, second["url"]).json()["total"] == 4


def test_a_turns_seq_is_not_an_import(alice, conversation):
    conversation.last_seq = 1
    conversation.save()
    turn = Turn.objects.create(tenant=alice.tenant, conversation=conversation, agent=alice.agent, seq=1)
    Message.objects.create(tenant=alice.tenant, conversation=conversation, turn=turn, seq=1, index=0, role="user", content="Hi")
    response = read(alice, f"/v1/conversations/{conversation.id}/imports/1")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found", "errors keep OpenAI's shape"


def test_an_unknown_import_and_another_tenants_import_answer_404(alice, bob, conversation):
    url = import_history(alice, conversation, 2)["import"]["url"]
    assert read(alice, url.replace(url.rsplit("/", 1)[1], "99")).status_code == 404
    response = read(bob, url)
    assert response.status_code == 404 and set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_conversations_admin_page_shows_each_imports_progress(alice, conversation, admin_client):
    import_history(alice, conversation, 4)
    import_history(alice, conversation, 2)
    indexing.index_pending_messages(limit=100)
    import_history(alice, conversation, 3)
    page = admin_client.get(f"/admin/agents/conversation/{conversation.id}/change/").content.decode()
    assert "history imports" in page.lower()
    assert page.count('role="progressbar"') == 3
    assert "3 of 3 (100%)" not in page and "0 of 3 (0%): indexing" in page
    assert "4 of 4 (100%): completed" in page and "2 of 2 (100%): completed" in page
