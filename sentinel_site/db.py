"""Database connection handling shared by the web process and the worker."""

from __future__ import annotations

from django.db import connection


def release_connection() -> None:
    """Hand this thread's connection back to the pool before waiting on something slow.

    Django keeps a thread's connection until the request (or task) ends, so a web request waiting
    for its turn, or a worker thread waiting on the model, held a pooled connection all along: a pool
    of 20 capped each process at 20 turns in flight whatever its concurrency.
    Without a pool, closing would mean reconnecting for every turn, so the connection is kept.
    """
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not connection.in_atomic_block:
        connection.close()
