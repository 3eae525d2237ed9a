"""Which memories the HNSW index holds: those of tenants that need it.

A search scans its scope exactly up to SENTINEL_EXACT_SEARCH_MAX memories (memory/search.py) and
reads the HNSW index only past it, but every memory used to enter the index as it was written:
about 1 ms of PostgreSQL's CPU a row, twenty times all the table's other indexes together, two rows
a stateless turn (bench/HISTORY.md row 69). Now the index is partial on `Memory.in_hnsw`:

- A search that finds a scope past the bound names its tenant (`want`: a row of `HnswTenant`);
  from then on the indexer writes that tenant's memories into the index as it writes them, and
  `admit` (run by the indexing pass between new work) moves in what was written before, and what
  other writers (summaries, facts, forks, shared memories) wrote, a batch at a time.
- A search past the bound reads the index for the memories it holds and scans the rest of its
  scope exactly (memory/search.py `_NEAREST`), so what `admit` has not reached yet is found all
  the same: the flag decides only how a memory is found, never whether.

SENTINEL_HNSW=all: every memory enters the index as the indexer writes it (the lane before this),
and `admit` moves in every tenant's.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection

# {tenant id: when this process last named it}: a search past the bound names its tenant again
# after WANT_SECONDS at most (the insert is a no-op then; it is renewed in case the first was rolled
# back with the transaction it ran in).
_named: dict = {}
WANT_SECONDS = 60.0

ADMIT_BATCH = 256

# The memories of the named tenants (every tenant's, SENTINEL_HNSW=all) the index does not hold
# yet, a batch of them (locked, skipping what another pass or a forget has locked), moved in.
# `memory_tenant_in_hnsw` finds them, tenant by tenant: one index probe for a tenant with none.
_ADMIT = """
UPDATE memory_memory SET in_hnsw = true WHERE id IN (
    SELECT waiting.id FROM {tenants} CROSS JOIN LATERAL (
        SELECT id FROM memory_memory m WHERE m.tenant_id = t.tenant_id AND NOT m.in_hnsw LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) waiting LIMIT %(limit)s
)
"""
_ADMIT_NAMED = _ADMIT.format(tenants="memory_hnswtenant t")
_ADMIT_ALL = _ADMIT.format(tenants="(SELECT id AS tenant_id FROM budgets_tenant) t")


def want(tenant_id) -> None:
    """A search found a scope of this tenant past the exact bound: its memories go into the HNSW index."""
    now = time.monotonic()
    if now - _named.get(tenant_id, -WANT_SECONDS) < WANT_SECONDS:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO memory_hnswtenant (tenant_id, created_at) VALUES (%s, now()) ON CONFLICT DO NOTHING RETURNING 1", [tenant_id]
        )
        named = cursor.fetchone() is not None
    if len(_named) > 10_000:
        _named.clear()
    _named[tenant_id] = now
    if named:
        from memory.tasks import schedule_indexing  # memory.tasks imports the indexer, which imports this

        schedule_indexing()  # the pass moves its memories in (`admit`)


def admit(limit: int = ADMIT_BATCH) -> int:
    """Move up to `limit` memories of the named tenants into the HNSW index; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(_ADMIT_ALL if settings.SENTINEL["HNSW"] == "all" else _ADMIT_NAMED, {"limit": limit})
        return cursor.rowcount
