"""Where exact search should give way to the HNSW index (issue 18's soak, issue 16's quality):
recall quality and cost of one agent's hybrid search, exact scan against HNSW, at soak size.

    SENTINEL_BENCH_REDIS_DB=<n> python -m bench.exact_bound [--distractors=17000]

The soak's one agent gathered ~18,000 memories in 10 minutes, all inside SENTINEL_EXACT_SEARCH_MAX
(20,000), and every turn's recall scanned them exactly (bench/HISTORY.md row 34). Whether a lower
bound costs recall is measured here on the dialogue benchmark's data (bench/data/dialogue.json:
1,008 messages, 125 answerable questions with the client ids of their evidence messages), imported
into one conversation of an agent whose other conversations hold `--distractors` memories of
generated chat on the same kind of topics (bench/memory_bench.py's lines). Every question is asked
as the dialogue conversation's next turn's recall query, once with the exact scan forced and once
with the HNSW index (ef_search 200, relaxed iterative scan), alternating question by question; the
context is checked for the evidence (a message piece carrying its client id: nothing is
consolidated, so a piece is a message). Also per mode: the assembly's wall time and the hybrid
statement's own time in PostgreSQL (EXPLAIN ANALYZE's execution time, the query vector given).

The database is a fresh one of the embedded PostgreSQL (or DATABASE_URL's server), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from functools import partial

from bench import context_bench

DATABASE = os.environ.get("SENTINEL_BENCH_DATABASE_NAME", "sentinel_exact_bound")
KINDS = ["single", "temporal", "multi_hop", "updated"]


def _build(distractors: int):
    """The dialogue conversation and `distractors` generated messages in other conversations of the
    same agent, all indexed; returns (conversation, questions)."""
    from datetime import UTC, datetime, timedelta

    from agents.models import Agent, Conversation, Message
    from bench import dialogue_data
    from bench.memory_bench import ASSISTANT_LINES, TOPICS, USER_LINES
    from budgets.models import Tenant
    from memory import indexing
    from memory.models import Memory

    data = dialogue_data.load()
    tenant = Tenant.objects.create(name="exact-bound")
    agent = Agent.objects.create(
        tenant=tenant, name="dialogue", context_budget=2048, short_term_messages=12, short_term_tokens=1024, recall_limit=48,
        consolidation_threshold=10**6,
    )  # fmt: skip
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, last_seq=1, title="Mara and Jonas")
    Message.objects.bulk_create(
        Message(tenant=tenant, conversation=conversation, seq=1, index=i, role=m["role"], name=m["name"], content=m["content"],
                client_id=m["client_id"], occurred_at=m["timestamp"])
        for i, m in enumerate(data["messages"])
    )  # fmt: skip
    rng = random.Random(18)
    subjects = [s for items in TOPICS.values() for s in items]
    start = datetime(2025, 6, 1, 9, tzinfo=UTC)
    for c in range(0, distractors, 1000):
        other = Conversation.objects.create(tenant=tenant, agent=agent, last_seq=1, title=f"other {c // 1000}")
        Message.objects.bulk_create(
            Message(tenant=tenant, conversation=other, seq=1, index=i, role="user" if i % 2 == 0 else "assistant",
                    content=rng.choice(USER_LINES if i % 2 == 0 else ASSISTANT_LINES).format(x=rng.choice(subjects)) + f" ({c + i})",
                    occurred_at=start + timedelta(minutes=c + i))
            for i in range(min(1000, distractors - c))
        )  # fmt: skip
    indexing.index_pending(limit=512)
    # Measured both ways, as for a tenant the HNSW index is for (memory/hnsw.py): every memory in it.
    Memory.objects.filter(tenant=tenant).update(in_hnsw=True)
    agent.refresh_from_db(fields=["has_memories"])
    conversation.agent = agent
    return conversation, [q for q in data["questions"] if q["kind"] in KINDS]


def _statement_ms(conversation, vector, text: str, exact: bool) -> tuple[float, bool]:
    """The hybrid statement's execution time in PostgreSQL (EXPLAIN ANALYZE), as the recall runs it,
    and whether its plan used the HNSW index."""
    from django.conf import settings
    from django.db import transaction

    from memory import embeddings, search, search_sql

    condition, params = search_sql.scope(conversation.tenant_id, embeddings.model_name(), agent_id=conversation.agent_id)
    size = search_sql.count(condition, params, settings.SENTINEL["EXACT_SEARCH_MAX"] + 1)
    params.update(text=text, k=96, depth=search.DEPTH * 96, rrf=search.RRF_K, neighbours=True, vector0=search_sql.QueryVector(vector))
    params.update(common=search._common_word_bound(size))
    sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + search._statement(condition, 1, exact, settings.SENTINEL["TEXT_RANK"])
    with transaction.atomic(), search_sql.binding_cursor() as cursor:
        if not exact:
            cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cursor.execute("SET LOCAL hnsw.ef_search = 384")
        cursor.execute(sql, params)
        plan = cursor.fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return float(plan[0]["Execution Time"]), "memory_embedding_hnsw" in json.dumps(plan)


def _measure(distractors: int) -> None:
    from django.conf import settings

    from memory import embeddings
    from memory.context import assemble
    from memory.models import Memory

    t0 = time.monotonic()
    conversation, questions = _build(distractors)
    memories = Memory.objects.filter(agent_id=conversation.agent_id).count()
    print(f"{memories:,} memories in the agent's scope (built and indexed in {time.monotonic() - t0:.0f} s)", flush=True)
    conf = settings.SENTINEL
    modes = {"exact scan": 10**9, "HNSW index": 0}
    found: dict[str, dict[str, list[bool]]] = {mode: {kind: [] for kind in KINDS} for mode in modes}
    wall: dict[str, list[float]] = {mode: [] for mode in modes}
    statement: dict[str, list[float]] = {mode: [] for mode in modes}
    indexed: dict[str, int] = {mode: 0 for mode in modes}
    embeddings.embed_query(["warm up"])
    embed = partial(embeddings.embed_query, tenant=conversation.tenant_id)
    for question in questions:
        vector = embed([question["question"]])[0]
        for mode, bound in modes.items():
            settings.SENTINEL = {**conf, "EXACT_SEARCH_MAX": bound}
            started = time.perf_counter()
            context = assemble(conversation, query=question["question"], embed=embed)  # cached after the first mode
            wall[mode].append((time.perf_counter() - started) * 1000)
            carried = {cid for piece in context.pieces for cid in piece.client_ids}
            found[mode][question["kind"]].append(set(question["evidence"]) <= carried)
            ms, used_index = _statement_ms(conversation, vector, question["question"], exact=bound > 0)
            statement[mode].append(ms)
            indexed[mode] += used_index
    settings.SENTINEL = conf
    print(f"\n{len(questions)} answerable questions of the dialogue benchmark, {memories:,} memories in scope, recall 48, budget 2,048\n")
    columns = [*KINDS, "all", "assembly wall p50 / p95", "hybrid statement in PostgreSQL p50 / p95", "plans using HNSW"]
    print("| mode | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * (len(KINDS) + 4))
    for mode in modes:
        every = [hit for kind in KINDS for hit in found[mode][kind]]
        cells = [f"{100 * sum(found[mode][k]) / len(found[mode][k]):.0f}%" for k in KINDS]
        share = f"{100 * sum(every) / len(every):.0f}%"
        print(
            f"| {mode} | " + " | ".join(cells) + f" | {share} | {_spread(wall[mode])} | {_spread(statement[mode])} | "
            f"{indexed[mode]} of {len(questions)} |"
        )


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):.1f} / {ordered[int(0.95 * (len(ordered) - 1))]:.1f} ms"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--distractors", type=int, default=17_000)
    parser.add_argument("--keep", action="store_true", help="keep the database (to explain its statements afterwards)")
    args = parser.parse_args(argv)
    stack = context_bench.services(DATABASE)
    try:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
        os.environ.setdefault("SENTINEL_PROCESS", "worker")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        _measure(args.distractors)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            context_bench.drop(DATABASE)
        stack.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
