"""Why a dialogue question misses (issue 16): per question, each evidence message's ranks.

    python -m bench.dialogue_probe [--kinds=multi_hop] [--consolidate] [--fresh] [--all]

Starts what `make bench` starts (a database of its own, Redis, the model when consolidating), imports
the dialogue as the benchmark does (bench/dialogue_bench.py) once and keeps it (--fresh: again), then
asks the questions of the given kinds and prints, for every evidence message the context lacks (or
for every question with --all): its rank for the query's vector (the speakers' names left out, as
recall embeds it) and for each clause vector, its full-text rank, its fused rank in recall's search
(k = 2 x the recall limit), and what the context holds of it. Not part of `make bench`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial


def _options() -> dict[str, str]:
    return dict([*arg[2:].split("=", 1), "1"][:2] for arg in sys.argv[1:] if arg.startswith("--"))


def _outer() -> int:
    from sentinel_site.stack import PYTHON, Stack

    stack = Stack()
    try:
        stack.ensure_secret_key()
        stack.ensure_audit_key()
        options = _options()
        stack.ensure_database(os.environ.get("SENTINEL_BENCH_DATABASE_NAME", "sentinel_probe"), fresh="fresh" in options)
        stack.ensure_redis(db=int(os.environ.get("SENTINEL_BENCH_REDIS_DB", "14")))
        if "consolidate" in options:
            stack.ensure_model()
        stack.manage("migrate", "--no-input", "-v", "0")
        return subprocess.run([PYTHON, "-m", "bench.dialogue_probe", "--inner", *sys.argv[1:]]).returncode
    finally:
        stack.stop()


def _inner() -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
    django.setup()

    from agents.models import Conversation
    from bench import dialogue_bench, dialogue_data
    from memory import context, dreamer, embeddings, indexing, search
    from memory.models import Memory

    options = _options()
    kinds = options.get("kinds", "multi_hop").split(",")
    data = dialogue_data.load()
    title = "probe consolidated" if "consolidate" in options else "probe"
    conversation = Conversation.objects.select_related("agent").filter(title=title).first()
    if conversation is None:
        conversation, _ = dialogue_bench._import(data)
        Conversation.objects.filter(id=conversation.id).update(title=title)
        indexing.index_pending(limit=512)
        if "consolidate" in options:
            dreamer.consolidate(conversation.id, trigger="bench", force=True, token_allowance=10**7)
            indexing.index_pending()
        conversation = Conversation.objects.select_related("agent").get(id=conversation.id)
    agent = conversation.agent
    agent.recall_limit = dialogue_bench.RECALL_LIMIT
    client_of = dialogue_bench._client_ids(conversation)
    memory_of = dialogue_bench._memories_by_client_id(conversation, client_of)
    text_of = {m["client_id"]: m["content"] for m in data["messages"]}
    message_memories = set(memory_of.values())
    speakers = frozenset(data["people"])
    found_by_kind: dict[str, list[bool]] = {}
    tokens_by_kind: dict[str, list[int]] = {}
    for question in data["questions"]:
        if question["kind"] not in kinds:
            continue
        asked = dialogue_bench._ask(conversation, question, text_of, memory_of)
        found_by_kind.setdefault(question["kind"], []).append(asked.in_context)
        tokens_by_kind.setdefault(question["kind"], []).append(asked.tokens)
        if asked.in_context and "all" not in options:
            continue
        embed = partial(embeddings.embed_query, tenant=conversation.tenant_id)
        built = context.assemble(conversation, query=question["question"], embed=embed)
        held = {piece.memory_id for piece in built.pieces if piece.memory_id}
        print(f"\n{'HIT ' if asked.in_context else 'MISS'} {question['id']} [{asked.stage}] {question['question']}")
        query = context._QueryVector([question["question"]], embeddings.embed_query, speakers=speakers)
        vectors = [query.get(), *query.clause_vectors()]
        print(f"    clauses: {context.clauses(question['question'])}")
        full = 2000
        ranks = []
        for vector in vectors:
            hits = search.search(conversation.tenant_id, vector, k=full, agent_id=agent.id)
            ranks.append({str(hit.memory.id): (n + 1, hit.score) for n, hit in enumerate(hits)})
        text_hits = search.hybrid(conversation.tenant_id, vectors[0], question["question"], k=full, agent_id=agent.id)
        text_rank = {str(h.memory.id): h.text_rank for h in text_hits if h.via == "" and h.text_rank is not None}
        fused = search.hybrid(
            conversation.tenant_id, vectors[0], question["question"], k=2 * agent.recall_limit, extra_vectors=vectors[1:], agent_id=agent.id
        )
        fused_rank = {str(h.memory.id): h.fused_rank for h in fused if h.via == ""}
        neighbour = {str(h.memory.id) for h in fused if h.via == "neighbour"}
        for cid in question["evidence"]:
            mid = memory_of[cid]
            holds = dialogue_bench.holds(built.pieces, cid, question, text_of, message_memories)
            vranks = ", ".join(f"{r[mid][0]} ({r[mid][1]:.3f})" if mid in r else "-" for r in ranks)
            print(
                f"    {'ok ' if holds else 'NO '} {cid} {text_of[cid]!r}\n"
                f"        vector ranks (main, clauses): {vranks}; text rank {text_rank.get(mid, '-')}; "
                f"fused rank {fused_rank.get(mid, '-')}{' (also a neighbour)' if mid in neighbour else ''}; "
                f"in context as itself: {mid in held}"
            )
            others = [p for p in built.pieces if cid in p.client_ids and p.memory_id != mid and p.kind != "recent"]
            for piece in others[:3]:
                print(f"        carried by a {piece.kind}: {piece.text[:160]!r}")
        recalled = [p for p in built.pieces if p.kind == "recalled"]
        facts = sum(1 for p in recalled if ", fact" in p.text[:30])
        print(f"    recalled {len(recalled)} ({facts} facts), tokens {built.total_tokens}")
        if "show" in options:
            for piece in recalled:
                print(f"        {piece.why.get('fused_rank')} {piece.why.get('via')} {piece.text[:110]}")
    for kind, found in found_by_kind.items():
        print(f"{kind}: {sum(found)} of {len(found)}, context {sum(tokens_by_kind[kind]) / len(found):.0f} tokens on average")
    kinds_held = Memory.objects.filter(conversation=conversation).values_list("kind", flat=True)
    print("memories:", {kind: list(kinds_held).count(kind) for kind in set(kinds_held)})
    return 0


if __name__ == "__main__":
    sys.exit(_inner() if "--inner" in sys.argv else _outer())
