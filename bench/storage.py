"""Bytes per turn in each table, and the growth per million turns (issue 18).

    .venv/bin/python -m bench.storage [--turns=400] [--per-conversation=10]

Starts what it needs like `make bench` (a fresh `sentinel_storage` database, Redis at
SENTINEL_BENCH_REDIS_DB, the bench's stub model, a web and a worker process), runs the turns through the
API in conversations of `--per-conversation` turns (so the recorded context grows as in real use), waits
for indexing, then reads each table's size (heap + TOAST + indexes, after VACUUM) against an empty
database's. Prints a Markdown table; BENCHMARKS.md keeps the last one by hand.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sentinel_site.stack import Stack as Services

TABLES = [
    ("agents_message", "messages"),
    ("agents_turn", "turns"),
    ("agents_turnevent", "turn events"),
    ("agents_conversation", "conversations"),
    ("memory_memory", "embeddings (memories)"),
    ("memory_embeddingcache", "embedding cache"),
    ("budgets_spendentry", "spend ledger"),
    ("budgets_reservation", "reservations"),
    ("budgets_reservation_windows", "reservation windows"),
    ("budgets_auditentry", "audit entries"),
]


def option(name: str, default: int) -> int:
    for arg in sys.argv[1:]:
        if arg.startswith(f"--{name}="):
            return int(arg.split("=", 1)[1])
    return default


def sizes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        found = {}
        for table, _ in TABLES:
            # a partitioned table (lifecycle/partitions.py) holds nothing itself: its partitions do
            # (pg_partition_tree lists nothing for a plain table)
            cursor.execute(
                "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(%s)), pg_total_relation_size(%s))",
                [table, table],
            )
            found[table] = int(cursor.fetchone()[0])
        return found


def rows() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        found = {}
        for table, _ in TABLES:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            found[table] = cursor.fetchone()[0]
        return found


def main() -> int:
    turns, per_conversation = option("turns", 400), option("per-conversation", 10)
    services = Services()
    try:
        services.ensure_secret_key()
        services.ensure_audit_key()
        services.ensure_database("sentinel_storage", fresh=True)
        services.ensure_redis(db=int(os.environ.get("SENTINEL_BENCH_REDIS_DB", "14")))
        services.manage("migrate", "--no-input", "-v", "0")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
        import django

        django.setup()
        from bench.harness import Stack
        from bench.texts import distinct

        before = sizes()
        stack = Stack(worker_concurrency=16, workers=1).start()
        try:

            def conversation(n: int) -> None:
                conversation_id = None
                for _ in range(per_conversation):
                    body = {"model": "bench", "messages": [{"role": "user", "content": distinct(f"c{n} ")}]}
                    if conversation_id:
                        body["conversation"] = conversation_id
                    request = urllib.request.Request(
                        f"{stack.base_url}/v1/chat/completions",
                        data=json.dumps(body).encode(),
                        headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.key}"},
                    )
                    with urllib.request.urlopen(request, timeout=60) as response:
                        conversation_id = response.headers["Sentinel-Conversation-Id"]

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(conversation, range(turns // per_conversation)))
            print(f"{turns} turns in {time.monotonic() - started:.0f} s; waiting for indexing", flush=True)
            from agents.models import Message

            deadline = time.monotonic() + 300
            while Message.objects.filter(embedded=False).exists() and time.monotonic() < deadline:
                time.sleep(1)
        finally:
            stack.stop()
        after, counted = sizes(), rows()
        from agents.models import Turn

        measured = Turn.objects.count() - 1  # the warm-up turn
        total = 0
        print("\n| table | rows per turn | bytes per turn | per million turns |\n| --- | --- | --- | --- |")
        for table, label in TABLES:
            grown = after.get(table, 0) - before.get(table, 0)
            total += grown
            per_turn = grown / measured
            print(f"| {label} (`{table}`) | {counted[table] / measured:.2f} | {per_turn:,.0f} | {per_turn * 1e6 / 2**30:.1f} GiB |")
        print(f"| **all of them** | | **{total / measured:,.0f}** | **{total / measured * 1e6 / 2**30:.1f} GiB** |")
        print(f"\n{measured} turns, {per_conversation} a conversation, bench stub replies; sizes include TOAST and indexes.")
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
