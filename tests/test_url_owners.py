"""Each resource has one owner and each app one urls module (sentinel_site/urls.py mounts them):
the agents app owns the conversation resource, the memory app what it keeps of a conversation."""

import uuid

import pytest
from django.test import Client
from django.urls import resolve

from agents.models import Conversation

pytestmark = pytest.mark.django_db

ID = uuid.UUID(int=0x5E17)  # fixed: the test ids carry it, and every pytest-xdist process must collect the same tests
OWNERS = {
    "/v1/conversations": "agents.api.resources",
    f"/v1/conversations/{ID}": "agents.api.resources",
    f"/v1/conversations/{ID}/messages": "memory.api",
    f"/v1/conversations/{ID}/messages/{uuid.UUID(int=0x5E18)}": "memory.api",
    f"/v1/conversations/{ID}/summaries": "memory.api",
    f"/v1/conversations/{ID}/consolidate": "memory.api",
    f"/v1/conversations/{ID}/consolidations": "memory.api",
    f"/v1/conversations/{ID}/imports/1": "memory.api",
    f"/v1/conversations/{ID}/context": "memory.api",
    f"/v1/conversations/{ID}/items": "responses.api.conversations",
    "/v1/memory/search": "memory.api",
    f"/v1/memory/{ID}": "memory.api",
    "/v1/chat/completions": "agents.api.chat",
    "/v1/keys": "budgets.api",
}


@pytest.mark.parametrize("path", OWNERS)
def test_each_path_is_served_by_its_owners_views(path):
    match = resolve(path)
    assert match.func.cls.__module__ == OWNERS[path], f"{path} is served by {match.func.cls.__module__}"


@pytest.mark.parametrize("path", [path for path in OWNERS if path.startswith("/v1/conversations/")])
def test_options_describes_every_conversation_route(alice, path):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    response = Client().options(path.replace(str(ID), str(conversation.id)), **alice.auth)
    assert response.status_code == 200, response.content
