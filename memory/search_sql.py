"""The hybrid search's scope in hand-written SQL, its rows as light objects (`SENTINEL_SEARCH_READS=sql`).

memory/search.py `hybrid` runs one statement (its `_HYBRID`). Through the ORM (`orm`, the reference
lane) its scope, the memories a search may find, was a queryset compiled on every call, and its rows
became `Memory` instances: together most of the search's CPU. Here the scope is written by hand,
once per shape (which filters it has), and the statement's text is cached per shape, query vectors
and exactness; each row is a `FoundMemory` with only the columns context assembly reads.

The query vectors go as pgvector's binary format (a header and big-endian float4s, packed by
`struct`) through a server-side binding cursor: the float32 values exactly, where the ORM lane's
text literal rounds each to 7 significant digits (moving a similarity by about 1e-8).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from django.db import connection
from psycopg.adapt import Dumper
from psycopg.pq import Format

from memory.asof import AsOf


class FoundMemory:
    """A memory as hybrid search returns it: the fields context assembly reads (memory.models.Memory's names)."""

    __slots__ = (
        "client_ids",
        "conversation_id",
        "id",
        "kind",
        "occurred_at",
        "role",
        "source_message_ids",
        "summary_id",
        "supersedes_id",
        "text",
    )

    id: uuid.UUID
    conversation_id: uuid.UUID
    kind: str
    summary_id: uuid.UUID | None
    role: str
    text: str
    source_message_ids: list[uuid.UUID]
    occurred_at: datetime
    supersedes_id: uuid.UUID | None
    client_ids: list[str]  # the importer's ids of its source messages that have one, in their order

    def __init__(self, row: Sequence) -> None:
        (self.id, self.conversation_id, self.kind, self.summary_id, self.role, self.text, self.source_message_ids, self.occurred_at,
         self.supersedes_id, self.client_ids) = row[:FIELDS]  # fmt: skip

    def __repr__(self) -> str:
        return f"FoundMemory({self.kind}: {self.text[:60]!r})"


# The source messages' client ids come with each row: context assembly otherwise read them in a
# statement of their own whenever recall found a memory of another conversation (4% of a loaded
# worker's GIL samples; bench/HISTORY.md row 65). A few primary-key reads a row, in the statement.
CLIENT_IDS = (
    "ARRAY(SELECT a.client_id FROM unnest(m.source_message_ids) WITH ORDINALITY s(mid, n) JOIN agents_message a ON a.id = s.mid"
    " WHERE a.client_id <> '' ORDER BY s.n)"
)
_FIELD_COLUMNS = "m.id, m.conversation_id, m.kind, m.summary_id, m.role, m.text, m.source_message_ids, m.occurred_at, m.supersedes_id"
COLUMNS = f"{_FIELD_COLUMNS}, {CLIENT_IDS}"
FIELDS = len(_FIELD_COLUMNS.split(", ")) + 1  # CLIENT_IDS: one column with commas of its own


class QueryVector:
    """A query vector in pgvector's binary format (`vector_recv`: dimensions, unused, float4s, big-endian)."""

    __slots__ = ("data",)

    def __init__(self, vector: Sequence[float]) -> None:
        self.data = struct.pack(f">HH{len(vector)}f", len(vector), 0, *vector)


class _QueryVectorDumper(Dumper):
    """Sends a QueryVector as it is. No type oid: the statement's `::vector` tells the server how to read it."""

    format = Format.BINARY

    def dump(self, obj: QueryVector) -> bytes:
        return obj.data


@lru_cache(maxsize=64)
def where(
    agent: bool, conversation: bool, excluded_conversations: bool, excluded_memories: bool, excluded_messages: bool, as_of: bool
) -> str:
    """The scope's condition on memory_memory, for the filters present (memory/search.py `scoped_memories`
    in SQL). A memory without a message (a summary, a fact) is never excluded by message, as the ORM's
    `exclude(message_id__in=...)` keeps it."""
    parts = ["tenant_id = %(tenant)s", "embedding_model = %(model)s"]
    if as_of:
        parts.append("(created_at <= %(as_of_at)s OR id = ANY(%(as_of_known)s::uuid[]))")
    if agent:
        parts.append("agent_id = %(agent)s")
    if conversation:
        parts.append("conversation_id = %(conversation)s")
    if excluded_conversations:
        parts.append("conversation_id <> ALL(%(excluded_conversations)s::uuid[])")
    if excluded_memories:
        parts.append("id <> ALL(%(excluded_memories)s::uuid[])")
    if excluded_messages:
        parts.append("(message_id IS NULL OR message_id <> ALL(%(excluded_messages)s::uuid[]))")
    return " AND ".join(parts)


def scope(
    tenant_id: Any,
    model: str,
    *,
    agent_id: Any = None,
    conversation_id: Any = None,
    exclude_memory_ids: Iterable = (),
    exclude_message_ids: Iterable = (),
    exclude_conversation_ids: Iterable = (),
    as_of: AsOf | None = None,
) -> tuple[str, dict[str, Any]]:
    """(the scope's condition, its parameters): the memories of the tenant and embedding model a search may find."""
    params: dict[str, Any] = {"tenant": tenant_id, "model": model}
    if as_of is not None:
        params["as_of_at"], params["as_of_known"] = as_of.at, _uuids(as_of.known_memory_ids) or "{}"
    if agent_id is not None:
        params["agent"] = agent_id
    if conversation_id is not None:
        params["conversation"] = conversation_id
    if excluded := _uuids(exclude_conversation_ids):
        params["excluded_conversations"] = excluded
    if excluded := _uuids(exclude_memory_ids):
        params["excluded_memories"] = excluded
    if excluded := _uuids(exclude_message_ids):
        params["excluded_messages"] = excluded
    shape = (
        agent_id is not None,
        conversation_id is not None,
        "excluded_conversations" in params,
        "excluded_memories" in params,
        "excluded_messages" in params,
        as_of is not None,
    )
    return where(*shape), params


def _uuids(values: Iterable) -> str:
    """Ids (UUIDs or their strings; None is left out, as the ORM's `__in` drops it) as a uuid[]
    literal, "" for none: one text parameter is cheaper to send than a list psycopg dumps item by item."""
    ids = [str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))) for value in values if value is not None]
    return "{" + ",".join(ids) + "}" if ids else ""


def count(condition: str, params: dict[str, Any], limit: int) -> int:
    """How many memories the scope holds, counting at most `limit` (the ORM's `queryset[:limit].count()`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM memory_memory WHERE {condition} LIMIT %(limit)s) scoped", {**params, "limit": limit}
        )
        return cursor.fetchone()[0]


def binding_cursor(*, binary_results: bool = False) -> Any:
    """A cursor of this thread's connection that binds parameters server-side (Django's binds them
    into the statement's text, which cannot carry a binary parameter), wrapped as Django wraps its
    own: the statement is counted and logged like any other. `binary_results`: rows in PostgreSQL's
    binary formats (a vector as its bytes: memory/held_vectors.py)."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    raw: Any = psycopg.Cursor(connection.connection)  # Any: django-stubs type make_cursor's argument as a wrapper
    raw.adapters.register_dumper(QueryVector, _QueryVectorDumper)
    if binary_results:
        raw.format = Format.BINARY
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
