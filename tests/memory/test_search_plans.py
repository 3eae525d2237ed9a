"""Recall's hybrid statement is driven by its few hits, whatever the planner believes of the scope.

Without statistics (a table not yet analyzed, or an agent too small to be in them) the planner takes
the scope for a row or two. The neighbours and updates of the top hits then checked "in the scope"
by joining the whole scope first: every scoped memory times every hit, 16 x 442 loops of the
message lookups in a bench run's first minute, the statement 4 -> 58 ms as the scope grew, until
autovacuum analyzed the table (bench/HISTORY.md row 51). Now that check is a lookup by primary key
per candidate, so the lookups stay a few per hit.
"""

import json

import pytest
from django.db import connection

from memory import embeddings, search
from tests.memory.helpers import FILLER, conversation_with

pytestmark = pytest.mark.django_db

K = 8


def _superuser() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        return bool(cursor.fetchone()[0])


def _forget_statistics() -> None:
    """What the planner knows of memory_memory and agents_message, as before their first ANALYZE
    (inside the test's transaction: rolled back with it)."""
    with connection.cursor() as cursor:
        for table in ("memory_memory", "agents_message"):
            cursor.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [table])
            cursor.execute("UPDATE pg_class SET reltuples = -1 WHERE oid = %s::regclass", [table])


def _loops(plan: dict, relation: str) -> int:
    """How many times the plan's scans of `relation` ran, summed over the tree."""
    own = plan.get("Actual Loops", 0) if plan.get("Relation Name") == relation else 0
    return own + sum(_loops(child, relation) for child in plan.get("Plans", []))


def test_the_neighbours_of_the_hits_are_looked_up_per_hit_not_per_scoped_memory(alice, monkeypatch):
    if not _superuser():
        pytest.skip("forgetting the planner's statistics needs a superuser")
    texts = [f"{FILLER[n % len(FILLER)]} (note {n})" for n in range(150)]
    conversation_with(alice, texts)
    _forget_statistics()
    plans = []
    run = search._run

    def explained(cursor, sql, params, exact, k):
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        document = cursor.fetchone()[0]
        plans.append((json.loads(document) if isinstance(document, str) else document)[0]["Plan"])
        return run(cursor, sql, params, exact, k)

    monkeypatch.setattr(search, "_run", explained)
    search._scope_verdicts.clear()
    question = "What was the novel about sailing?"
    hits = search.hybrid(alice.tenant.id, embeddings.embed([question])[0], question, k=K, agent_id=alice.agent.id)

    assert any(hit.via == "neighbour" for hit in hits), "the statement did look for neighbours"
    (plan,) = plans
    # Per hit: its message, and the one before and the one after it (each a LIMIT 1 index scan); and
    # per row found, its source messages' client ids (memory/search_sql.py CLIENT_IDS).
    assert len(hits) < 150 and _loops(plan, "agents_message") <= 3 * K + len(hits), "the message lookups ran per hit, not per scoped memory"
