"""A scope's vectors held in the process's memory, for recall's exact scan (SENTINEL_HELD_VECTORS_MB).

Recall scans its scope exactly up to SENTINEL_EXACT_SEARCH_MAX memories, and PostgreSQL's scan costs
about 0.9 us a row whatever the distance function (bench/HISTORY.md row 71): 9-12 ms of the
database's CPU a turn at 10,000 memories, the busiest process under load. The same cosine
similarities in numpy take 0.2-0.5 ms. So a process holds each scope it searches (a tenant's agent,
one embedding model) as a matrix, and the hybrid statement ranks only the nearest held candidates
and whatever was written since, exactly, as before (memory/search.py `_HELD_CANDIDATES`).

What it holds is kept true by the transaction ids PostgreSQL gives each memory (`written_xid`,
memory migration 0010). A scope is read with the xmin of the statement's snapshot (`frontier`):
every transaction below it has ended, so every committed memory written below it is held, and the
statement scans each memory at or past it (an index range: the last second's writes). A refresh,
at most every REFRESH_SECONDS, reads what was written since and moves the frontier up. A memory
deleted since is still held: the statement reads candidates from the table, which has it no more,
and MARGIN candidates beyond the statement's depth keep such gaps (and float32's last digit, where
PostgreSQL ranks in float4 too) from costing it a neighbour; the scope is read afresh every
RELOAD_SECONDS. A re-embedded memory takes a new `written_xid` (memory/indexing.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from django.conf import settings

from memory import search_sql

REFRESH_SECONDS = 1.0
RELOAD_SECONDS = 300.0
MARGIN = 32

# The frontier first (a row of its own: the scope may have no memory yet), then the memories,
# all in one statement and so one snapshot. Vectors come in pgvector's binary format.
_READ = """
SELECT NULL::uuid, NULL::uuid, NULL::uuid, NULL::vector, pg_snapshot_xmin(pg_current_snapshot())::text
UNION ALL
SELECT id, conversation_id, message_id, embedding, NULL FROM memory_memory
WHERE tenant_id = %(tenant)s AND agent_id = %(agent)s AND embedding_model = %(model)s AND written_xid >= %(since)s::xid8
"""


class _Scope:
    """One scope's held vectors (unit rows of `matrix`, the first `count` used) and what each row is."""

    def __init__(self, dimensions: int) -> None:
        self.lock = threading.Lock()
        self.matrix = np.zeros((0, dimensions), dtype=np.float32)
        self.conversations = np.zeros(0, dtype=np.int32)  # a code per row (`codes`)
        self.count = 0
        self.ids: list[str] = []
        self.row_of: dict[uuid.UUID, int] = {}
        self.message_row: dict[uuid.UUID, int] = {}
        self.codes: dict[uuid.UUID, int] = {}
        self.frontier = "0"
        self.loaded_at = self.refreshed_at = 0.0

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + self.conversations.nbytes

    def read(self, tenant_id: Any, agent_id: Any, model: str) -> None:
        """Read what was written at or past the frontier (everything, the first time) and move it up."""
        with search_sql.binding_cursor(binary_results=True) as cursor:
            cursor.execute(_READ, {"tenant": tenant_id, "agent": agent_id, "model": model, "since": self.frontier})
            rows = cursor.fetchall()
        # The frontier's row is the one without an id (UNION ALL promises no order of its branches).
        frontier = next(row[4] for row in rows if row[0] is None)
        new = [row for row in rows if row[0] is not None and row[0] not in self.row_of]
        if new:
            self._append(new)
        self.frontier = frontier
        self.refreshed_at = time.monotonic()

    def _append(self, rows: list) -> None:
        dimensions = self.matrix.shape[1]
        vectors = np.frombuffer(b"".join(row[3] for row in rows), dtype=">f4").reshape(len(rows), dimensions + 1)[:, 1:]
        vectors = vectors.astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.where(norms == 0, 1, norms)
        end = self.count + len(rows)
        if end > len(self.matrix):  # room for twice as many: a refresh appends a few rows, not a copy
            capacity = max(end, 2 * len(self.matrix), 64)
            matrix = np.zeros((capacity, dimensions), dtype=np.float32)
            matrix[: self.count] = self.matrix[: self.count]
            conversations = np.zeros(capacity, dtype=np.int32)
            conversations[: self.count] = self.conversations[: self.count]
            self.matrix, self.conversations = matrix, conversations
        self.matrix[self.count : end] = vectors
        for n, (memory_id, conversation_id, message_id, _, _) in enumerate(rows, start=self.count):
            self.ids.append(str(memory_id))
            self.row_of[memory_id] = n
            if message_id is not None:
                self.message_row[message_id] = n
            self.conversations[n] = self.codes.setdefault(conversation_id, len(self.codes))
        self.count = end

    def nearest(
        self, vectors: Sequence[Sequence[float]], n: int, memories: Iterable, messages: Iterable, conversations: Iterable
    ) -> list[str]:
        """For each query vector, the ids of the n nearest held rows not excluded, as uuid[] literals."""
        allowed = np.ones(self.count, dtype=bool)
        allowed[[row for memory in _uuids(memories) if (row := self.row_of.get(memory)) is not None]] = False
        allowed[[row for message in _uuids(messages) if (row := self.message_row.get(message)) is not None]] = False
        if codes := [code for c in _uuids(conversations) if (code := self.codes.get(c)) is not None]:
            allowed &= ~np.isin(self.conversations[: self.count], codes)
        held = self.matrix[: self.count]
        found = []
        for vector in vectors:
            query = np.asarray(vector, dtype=np.float32)
            scores = held @ (query / (np.linalg.norm(query) or 1.0))
            scores[~allowed] = -np.inf
            rows = np.argpartition(scores, -n)[-n:] if self.count > n else np.arange(self.count)
            found.append("{" + ",".join(self.ids[row] for row in rows if allowed[row]) + "}")
        return found


def _uuids(values: Iterable) -> list[uuid.UUID]:
    """Ids (UUIDs or their strings) as UUIDs; None is left out, as the statement's exclusions leave it (search_sql._uuids)."""
    return [value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)) for value in values if value is not None]


_scopes: OrderedDict[tuple, _Scope] = OrderedDict()  # least recently searched first
_lock = threading.Lock()


def nearest(
    tenant_id: Any,
    agent_id: Any,
    model: str,
    vectors: Sequence[Sequence[float]],
    *,
    size: int,
    n: int,
    exclude_memory_ids: Iterable = (),
    exclude_message_ids: Iterable = (),
    exclude_conversation_ids: Iterable = (),
) -> tuple[list[str], str] | None:
    """(for each query vector the ids of its n nearest held memories of the scope, as uuid[] literals;
    the frontier past which the statement scans what was written), or None when the scope of `size`
    memories is not held (SENTINEL_HELD_VECTORS_MB 0, or more than a quarter of it)."""
    budget = settings.SENTINEL["HELD_VECTORS_MB"] * 2**20
    dimensions = len(vectors[0])
    if 4 * size * dimensions * 4 > budget:
        return None
    key = (tenant_id, agent_id, model)
    with _lock:
        scope = _scopes.get(key)
        if scope is None or time.monotonic() - scope.loaded_at > RELOAD_SECONDS:
            scope = _scopes[key] = _Scope(dimensions)
        _scopes.move_to_end(key)
    with scope.lock:
        now = time.monotonic()
        if not scope.loaded_at:
            scope.read(tenant_id, agent_id, model)
            scope.loaded_at = now
        elif now - scope.refreshed_at > REFRESH_SECONDS:
            scope.read(tenant_id, agent_id, model)
        found = scope.nearest(vectors, n, exclude_memory_ids, exclude_message_ids, exclude_conversation_ids)
        frontier = scope.frontier
    _evict(budget)
    return found, frontier


def _evict(budget: int) -> None:
    """Forget the least recently searched scopes while the held vectors outgrow the budget."""
    with _lock:
        while len(_scopes) > 1 and sum(scope.nbytes for scope in _scopes.values()) > budget:
            _scopes.popitem(last=False)


def forget_all() -> None:
    """Hold nothing (tests; a process that wants its memory back)."""
    with _lock:
        _scopes.clear()
