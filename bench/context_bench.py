"""Context assembly's CPU per call, in-process, by read lane (SENTINEL_CONTEXT_READS and
SENTINEL_SEARCH_READS, sql against orm), lanes alternating call by call on the same conversations,
the same process and the same database.

    SENTINEL_BENCH_REDIS_DB=<n> python -m bench.context_bench [--calls=200] [--warmup=30]

Two conversations, each assembled for its last turn as the worker does (`upto_seq` = the turn):
60 messages with 60 memories before the turn's input (recall runs: a hybrid search), and 4 messages
of an agent with no memories (no recall; the messages counted as the indexer counts them). In both
the turn's input is not counted yet, as in a live turn. The query vector is computed once and
handed in, so what is measured is assembly without the embedder. Lanes: `orm-uncached` (every read
through the ORM, the recalled lines' token counts forgotten before each call: assembly before
bench/HISTORY.md rows 31 and 32), `orm`, `sql+search-orm` (the conversation's reads in one statement,
the search through the ORM: row 31) and `sql` (both hand-written: row 32). CPU is this thread's
(`time.thread_time`): the client side only, PostgreSQL's own work is not in it; wall time (with the
round trips) is printed beside it. Also: the statements per call, and what parts cost alone
(the sql lane's statement; the hybrid search in each lane, alternating; the ORM compiling the orm
lane's scope, memory/search.py).

The database is a fresh one of the embedded PostgreSQL (or DATABASE_URL's server), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

DATABASE = "sentinel_context_bench"


def services(database: str = DATABASE) -> object:
    """The embedded services for an in-process bench: a fresh `database` and the bench's Redis DB."""
    from sentinel_site.stack import Stack

    stack = Stack()
    stack.ensure_secret_key()
    stack.ensure_audit_key()
    stack.ensure_database(database, fresh=True)
    stack.ensure_redis(db=int(os.environ.get("SENTINEL_BENCH_REDIS_DB", "14")))
    return stack


FILLER = [
    "Let's talk about the weather today, it looks cloudy over the hills.",
    "Sure, clouds often gather in the afternoon this time of the year.",
    "I have been reading a novel about sailing across the Atlantic.",
    "Sailing stories can be thrilling, with storms and long calm days.",
    "Yesterday I fixed the squeaky hinge on the garden gate.",
    "A little oil usually quiets a squeaky hinge for a long while.",
]


def _cpu(call: Callable[[], object]) -> tuple[float, float]:
    """(thread CPU, wall) of one call, in ms."""
    wall, cpu = time.perf_counter(), time.thread_time()
    call()
    return (time.thread_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000


def _conversations():
    from agents.models import Agent, Conversation, Message
    from budgets.models import Tenant
    from memory import indexing, tokens

    tenant = Tenant.objects.create(name="context-bench")
    long_agent = Agent.objects.create(tenant=tenant, name="long", system_prompt="You help the bench.")
    short_agent = Agent.objects.create(tenant=tenant, name="short", system_prompt="You help the bench.")
    made = []
    for agent, history in ((long_agent, 60), (short_agent, 4)):
        conversation = Conversation.objects.create(tenant=tenant, agent=agent, last_seq=history // 2 + 1)
        Message.objects.bulk_create(
            Message(tenant=tenant, conversation=conversation, seq=i // 2 + 1, index=i % 2, role="user" if i % 2 == 0 else "assistant",
                    content=f"{FILLER[i % len(FILLER)]} (note {i})")
            for i in range(history)
        )  # fmt: skip
        if agent is long_agent:
            indexing.index_pending()
        else:  # counted, as the indexer counts every message, but with nothing in long-term memory
            for message in Message.objects.filter(conversation=conversation):
                Message.objects.filter(id=message.id).update(token_count=tokens.count_message(message.as_openai()))
        Message.objects.create(tenant=tenant, conversation=conversation, seq=history // 2 + 1, index=0, role="user",
                               content="What did I say about the garden gate?")  # fmt: skip
        made.append((f"{history} messages, {'60 memories' if agent is long_agent else 'no memories'}", conversation.id, history // 2 + 1))
    from memory.models import Memory

    assert Memory.objects.filter(agent=long_agent).count() == 60 and not Memory.objects.filter(agent=short_agent).exists()
    return made


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args(argv)
    stack = services()
    try:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
        os.environ.setdefault("SENTINEL_PROCESS", "worker")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        _measure(args.calls, args.warmup)
    finally:
        from django.db import connections

        connections.close_all()
        drop()
        stack.stop()  # type: ignore[attr-defined]
    return 0


def drop(database: str = DATABASE) -> None:
    """Drop the bench's database (connected to the server's `postgres` database)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    params = {**conninfo_to_dict(os.environ["DATABASE_URL"]), "dbname": "postgres"}
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _measure(calls: int, warmup: int) -> None:
    for label, conversation_id, seq in _conversations():
        _measure_one(label, conversation_id, seq, calls, warmup)


def _measure_one(label: str, conversation_id, seq: int, calls: int, warmup: int) -> None:
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.forking import ancestors
    from agents.models import Conversation
    from memory import context, context_reads, embeddings
    from memory import search as memory_search

    # lane: (SENTINEL_CONTEXT_READS, SENTINEL_SEARCH_READS, recalled lines' token counts forgotten before each call)
    lanes = {
        "orm-uncached": ("orm", "orm", True),  # before rows 31 and 32
        "orm": ("orm", "orm", False),
        "sql+search-orm": ("sql", "orm", False),  # row 31
        "sql": ("sql", "sql", False),  # row 32
    }

    def use(lane: str) -> None:
        reads, search_reads, uncached = lanes[lane]
        settings.SENTINEL["CONTEXT_READS"], settings.SENTINEL["SEARCH_READS"] = reads, search_reads
        if uncached:
            context._cached_line_tokens.cache_clear()

    conversation = Conversation.objects.select_related("agent").get(id=conversation_id)
    agent = conversation.agent
    texts = context.recall_query(conversation)[-1:] or ["What did I say about the garden gate?"]
    vectors = embeddings.embed_query(texts)

    def assemble() -> context.Context:  # the same vector every call: assembly without the embedder
        return context.assemble(conversation, upto_seq=seq, embed=lambda _texts: vectors)

    built = {}
    for lane in lanes:
        use(lane)
        with CaptureQueriesContext(connection) as queries:
            built[lane] = assemble()
        tables = [q["sql"].split("FROM", 1)[-1].split()[0] for q in queries.captured_queries]
        print(f"{label}: {lane} lane, {len(queries)} statements (FROM {', '.join(tables)})")
    assert all(built[lane] == built["orm"] for lane in lanes), "the lanes disagree"
    timed = tuple(lanes)
    samples: dict[str, list[tuple[float, float]]] = {lane: [] for lane in timed}
    for n in range(warmup + calls):
        for lane in timed if n % 2 == 0 else reversed(timed):
            use(lane)
            cost = _cpu(assemble)
            if n >= warmup:
                samples[lane].append(cost)
    for lane in timed:
        cpu = statistics.median(c for c, _ in samples[lane])
        wall = statistics.median(w for _, w in samples[lane])
        print(f"{label}: {lane} lane: assemble median CPU {cpu:.2f} ms, wall {wall:.2f} ms ({calls} calls)")
    parts = {"the sql lane's statement": lambda: context_reads.read_history(conversation.id, seq, agent.short_term_messages)}
    if agent.has_memories:
        window = [piece.source_message_ids[0] for piece in built["sql"].pieces if piece.kind == "recent"]
        scope = {"agent_id": agent.id, "exclude_message_ids": window, "exclude_conversation_ids": ancestors(conversation)}

        def hybrid(lane: str) -> Callable[[], object]:
            def search() -> object:
                settings.SENTINEL["SEARCH_READS"] = lane
                return memory_search.hybrid(conversation.tenant_id, vectors[0], texts[0], k=agent.recall_limit * 2, **scope)

            return search

        parts["hybrid search (memory/search.py), orm lane"] = hybrid("orm")
        parts["hybrid search (memory/search.py), sql lane"] = hybrid("sql")
        parts["  the orm lane's ORM compiling its scope"] = lambda: (
            memory_search.scoped_memories(conversation.tenant_id, **scope).order_by().values("id", "embedding", "search_vector")
            .query.sql_with_params()
        )  # fmt: skip
    costs: dict[str, list[float]] = {name: [] for name in parts}
    for n in range(warmup + calls):  # alternating, as the lanes above
        for name in parts if n % 2 == 0 else reversed(parts):
            cost = _cpu(parts[name])[0]
            if n >= warmup:
                costs[name].append(cost)
    for name in parts:
        print(f"{label}: {name}: median CPU {statistics.median(costs[name]):.2f} ms")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
