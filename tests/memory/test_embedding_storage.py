"""Memory embeddings stay inline in their rows (memory migration 0007): an exact scan reads the
vector from the heap page, not through the TOAST table row by row (a third of the soak agent's rows
had their vector out of line, and its scan took half as long again)."""

import pytest
from django.db import connection

from memory.models import Memory
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db

# A long message of distinct words: its text and tsvector take the row past the ~2 KB TOAST threshold.
LONG = " ".join(f"{word}{i}" for i, word in enumerate(["harbour", "lantern", "orchard", "meadow", "copper", "violin"] * 40))


def test_the_embedding_column_is_stored_plain():
    with connection.cursor() as cursor:
        cursor.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'memory_memory'::regclass AND attname = 'embedding'")
        assert cursor.fetchone()[0] == "p"


def test_a_long_memory_keeps_its_vector_in_the_row(alice):
    if connection.pg_version < 170000:
        pytest.skip("pg_column_toast_chunk_id() is PostgreSQL 17's")
    conversation = conversation_with(alice, [LONG, *FILLER[:1]])
    memory = Memory.objects.get(conversation=conversation, text__startswith="harbour0")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_size(m.*) > 2000, pg_column_toast_chunk_id(embedding) IS NULL FROM memory_memory m WHERE id = %s", [memory.id]
        )
        over_threshold, inline = cursor.fetchone()
    assert over_threshold, "the row must be one the toaster shortens, or the test shows nothing"
    assert inline, "the vector went to the TOAST table"
