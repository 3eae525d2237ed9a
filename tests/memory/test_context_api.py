"""GET /v1/conversations/{id}/context: each piece with why it was chosen; tenant-scoped; bad input."""

import pytest
from django.test import Client
from django.urls import reverse

from budgets.admin_roles import sync_groups
from memory import remote
from tests.budgets.test_admin import staff
from tests.memory.helpers import conversation_with

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def query_embedder():
    """This process answers query embeddings as a memory worker does (memory/remote.py)."""
    stop = remote.start_serving()
    yield
    stop.set()


def get(actor, url, **params):
    return Client().get(url, params, **actor.auth)


def remembered(actor):
    texts = [
        "My goldfish is called Zephyrine.",
        "What a lovely name for a fish.",
        *[f"Filler line number {i} about the weather." for i in range(10)],
        "What is the fish called?",
    ]
    return conversation_with(actor, texts, short_term_messages=2, recall_limit=1)


def test_it_explains_why_each_recalled_piece_was_chosen(alice, query_embedder):
    conversation = remembered(alice)
    response = get(alice, f"/v1/conversations/{conversation.id}/context", query="Zephyrine")
    assert response.status_code == 200, response.content
    body = response.json()
    recalled = [piece for piece in body["pieces"] if piece["kind"] == "recalled"]
    first = next(piece for piece in recalled if "Zephyrine" in piece["text"])
    assert first["why"]["via"] == "hit" and first["why"]["text_rank"] == 1 and first["why"]["fused_rank"] == 1
    assert first["date"] and first["text"].startswith(f"[{first['date']}, user]")
    neighbour = next(piece for piece in recalled if "lovely name" in piece["text"])
    assert neighbour["why"]["via"] == "neighbour" and neighbour["why"]["of"] == first["memory_id"]
    assert body["total_tokens"] == sum(piece["tokens"] for piece in body["pieces"]) <= body["budget"]


def test_another_tenants_conversation_is_a_404(alice, bob, query_embedder):
    conversation = remembered(alice)
    response = get(bob, f"/v1/conversations/{conversation.id}/context")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_bad_input_is_refused_in_openais_error_shape(alice, query_embedder):
    conversation = remembered(alice)
    too_long = get(alice, f"/v1/conversations/{conversation.id}/context", query="x" * 2001)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "query"
    empty = get(alice, f"/v1/conversations/{conversation.id}/context", query="")
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "query"
    assert get(alice, "/v1/conversations/not-a-uuid/context").status_code == 404


def test_the_admin_explains_a_context_of_its_own_tenants_only(alice, bob, query_embedder):
    sync_groups()
    ada = Client()
    ada.force_login(staff("ada", "admin", alice.tenant))
    conversation, theirs = remembered(alice), remembered(bob)
    url = reverse("admin:memory_explain_context")
    page = ada.get(url, {"conversation": str(conversation.id), "query": "Zephyrine"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "My goldfish is called Zephyrine." in html and "neighbour" in html and "fused rank" in html
    assert ada.get(url, {"conversation": str(theirs.id)}).status_code == 404
    assert ada.get(url, {"conversation": "nonsense"}).status_code == 404
