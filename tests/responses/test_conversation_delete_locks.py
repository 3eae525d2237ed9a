"""Deleting a conversation locks its messages before the conversation's row: the memory indexer holds
a message's lock and, at its commit, a key-share lock on that message's conversation, so the other
order deadlocked against an indexer embedding the conversation's last messages."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.api.resources import _delete_conversation
from agents.models import Conversation, Message

pytestmark = pytest.mark.django_db


def first_lock(queries, table: str) -> int:
    locks = [i for i, q in enumerate(queries) if "FOR UPDATE" in q["sql"] and f'FROM "{table}"' in q["sql"]]
    assert locks, f"{table} was never locked"
    return locks[0]


def test_the_messages_are_locked_before_the_conversation(alice):
    conversation = Conversation.objects.create(tenant=alice.tenant, agent=alice.agent)
    Message.objects.create(tenant=alice.tenant, conversation=conversation, seq=1, index=0, role="user", content="hi")
    with CaptureQueriesContext(connection) as captured:
        _delete_conversation(conversation, actor="test")
    queries = captured.captured_queries
    assert first_lock(queries, Message._meta.db_table) < first_lock(queries, Conversation._meta.db_table)
    assert not Conversation.objects.filter(id=conversation.id).exists() and not Message.objects.filter(conversation=conversation).exists()
