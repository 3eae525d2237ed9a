"""The consolidation profile of bench/dialogue_consolidation.py alone, without the rest of `make bench`.

    python -m bench.consolidation_alone [THREADS ...]

A database of its own (SENTINEL_BENCH_DATABASE_NAME, default here sentinel_bench_consolidation, made afresh:
not `make bench`'s, which another run may be using), Redis database SENTINEL_BENCH_REDIS_DB, and a
llama.cpp server of its own per thread count (stack.local_model_command, so the launch measured is
the one `make run` uses); prints the section's table.
"""

from __future__ import annotations

import os
import sys

import django

from sentinel_site import stack as stacks


def main(argv: list[str]) -> int:
    stack = stacks.Stack()
    try:
        stack.ensure_secret_key()
        stack.ensure_audit_key()
        stack.ensure_database(os.environ.get("SENTINEL_BENCH_DATABASE_NAME", "sentinel_bench_consolidation"), fresh=True)
        stack.ensure_redis(db=int(os.environ.get("SENTINEL_BENCH_REDIS_DB", "14")))
        stack.manage("migrate", "--no-input", "-v", "0")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
        django.setup()
        from bench import dialogue_consolidation  # its models need django.setup() first

        profiles = [dialogue_consolidation.with_server(int(t)) for t in argv or [str(stacks.local_model_threads())]]
        print("\n".join(dialogue_consolidation.report(profiles)))
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
