"""Celery tasks for memory: thin wrappers over memory.indexing, memory.dreamer and the embedder."""

from __future__ import annotations

import json
import logging

from celery import shared_task
from celery.signals import worker_ready

from agents import streams
from memory import dreamer, embeddings, indexing, tokens

log = logging.getLogger(__name__)

_INDEX_SCHEDULED = "sentinel:memory:index-scheduled"
_INDEX_RUNNING = "sentinel:memory:index-running"
_INDEX_RUNNING_TTL = 30  # renewed after every batch; a pass that died blocks others this long at most


def schedule_indexing() -> None:
    """Ask for an indexing pass unless one is already waiting (one Redis round trip)."""
    if streams.sync_client().set(_INDEX_SCHEDULED, "1", nx=True, ex=30):
        index_memories.apply_async(queue="memory")


@shared_task(name="memory.tasks.index_memories", ignore_result=True)
def index_memories() -> int:
    """One indexing pass at a time per deployment, looping while work keeps arriving.

    Concurrent passes only queued behind each other for the embedder, each holding a database
    connection meanwhile, and starved the turns of connections (issue 6: measured). A task that
    finds a pass running leaves: that pass sees the schedule flag it set and goes round again.
    """
    client = streams.sync_client()
    indexed = 0
    while client.set(_INDEX_RUNNING, "1", nx=True, ex=_INDEX_RUNNING_TTL):
        try:
            # Cleared before the pass reads: anything committed after this schedules another.
            client.delete(_INDEX_SCHEDULED)
            while step := indexing.index_pending_summaries() + indexing.index_pending_messages():
                indexed += step
                client.expire(_INDEX_RUNNING, _INDEX_RUNNING_TTL)  # still alive: keep the flag
        finally:
            client.delete(_INDEX_RUNNING)
        if not client.exists(_INDEX_SCHEDULED):
            break
    return indexed


@shared_task(name="memory.tasks.dream", ignore_result=True)
def dream(dry_run: bool | None = None) -> dict:
    result = dreamer.dream(dry_run=dry_run)
    if result["runs"]:
        schedule_indexing()
    return result


@shared_task(name="memory.tasks.consolidate", ignore_result=True)
def consolidate(conversation_id: str, dry_run: bool = False, trigger: str = "api") -> list[str]:
    runs = dreamer.consolidate(conversation_id, trigger=trigger, dry_run=dry_run, force=True)
    if runs:
        schedule_indexing()
    return [run.status for run in runs]


@shared_task(name="memory.tasks.embed_query", ignore_result=True, acks_late=False)
def embed_query(texts: list[str], reply_key: str) -> None:
    """Embed query texts for a web process, which waits on `reply_key` (BLPOP, no polling)."""
    vectors = embeddings.embed_query(texts)
    pipe = streams.sync_client().pipeline(transaction=False)
    pipe.rpush(reply_key, json.dumps(vectors))
    pipe.expire(reply_key, 60)
    pipe.execute()


@worker_ready.connect
def _warm_up(**kwargs) -> None:
    """Load the embedding model and tokenizer before the first turn needs them."""
    try:
        embeddings.embed(["warm up"])
        tokens.count("warm up")
    except Exception:
        log.warning("could not warm up the embedder", exc_info=True)
