"""Celery tasks for memory: thin wrappers over memory.indexing and memory.dreamer; and the worker's
query-embedding thread (memory.remote), started with every worker that consumes the memory queue."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings

from memory import dreamer, embeddings, hnsw, indexing, limits, remote, tokens
from sentinel_site.redis import sync_client
from sentinel_site.singletons import once_per_period

log = logging.getLogger(__name__)

_INDEX_SCHEDULED = "sentinel:memory:index-scheduled"
_INDEX_RUNNING = "sentinel:memory:index-running"
_INDEX_RUNNING_TTL = 30  # renewed after every batch; a pass that died blocks others this long at most


def schedule_indexing() -> None:
    """Ask for an indexing pass unless one is already waiting (one Redis round trip)."""
    if sync_client().set(_INDEX_SCHEDULED, "1", nx=True, ex=30):
        index_memories.apply_async(queue="memory")


@shared_task(name="memory.tasks.index_memories", ignore_result=True)
def index_memories() -> int:
    """One indexing pass at a time per deployment, looping while work keeps arriving; when none is
    pending, memories of another embedding model are re-embedded, and memories moved into the HNSW
    index (memory/hnsw.py), a batch at a time between new work.

    Concurrent passes only queued behind each other for the embedder, each holding a database
    connection meanwhile, and starved the turns of connections. A task that
    finds a pass running leaves: that pass sees the schedule flag it set and goes round again.
    """
    client = sync_client()
    indexed = 0
    while client.set(_INDEX_RUNNING, "1", nx=True, ex=_INDEX_RUNNING_TTL):
        try:
            # Cleared before the pass reads: anything committed after this schedules another.
            client.delete(_INDEX_SCHEDULED)
            while True:
                summaries = indexing.index_pending_summaries(indexing.SUMMARY_BATCH)
                messages = indexing.index_pending_messages(indexing.MESSAGE_BATCH)
                # A batch short of its size took all there was when it read (what was locked by
                # another pass is that pass's): no round more to find nothing, since anything
                # committed after the read set the schedule flag again.
                more = summaries == indexing.SUMMARY_BATCH or messages == indexing.MESSAGE_BATCH
                stale = 0 if more else indexing.reembed_stale()  # between new work, as before
                admitted = 0 if more or stale else hnsw.admit()  # memories into the HNSW index, between new work too
                indexed += summaries + messages + stale
                if not (more or stale or admitted):
                    break
                client.expire(_INDEX_RUNNING, _INDEX_RUNNING_TTL)  # still alive: keep the flag
        finally:
            client.delete(_INDEX_RUNNING)
        if not client.exists(_INDEX_SCHEDULED):
            break
    return indexed


@shared_task(name="memory.tasks.dream", ignore_result=True)
@once_per_period("dreamer")
def dream(dry_run: bool | None = None) -> dict:
    result = dreamer.dream(dry_run=dry_run, concurrency=settings.SENTINEL["DREAMER_CONCURRENCY"])
    if result["runs"]:
        schedule_indexing()
    return result


@shared_task(name="memory.tasks.consolidate", ignore_result=True)
def consolidate(conversation_id: str, dry_run: bool = False, trigger: str = "api", tenant_id: str = "", slot: str = "") -> list[str]:
    """A consolidation asked for through the API; `slot` (memory.limits) is held until it ends."""
    if slot:
        limits.renew(tenant_id, conversation_id, slot)
    try:
        runs = dreamer.consolidate(conversation_id, trigger=trigger, dry_run=dry_run, force=True)
    finally:
        if slot:
            limits.release(tenant_id, conversation_id, slot)
    if runs:
        schedule_indexing()
    return [run.status for run in runs]


_serving: list = []  # this process's query thread's stop event, once started


@worker_ready.connect
def _warm_up(sender=None, **kwargs) -> None:
    """Load the embedding model and tokenizer before the first turn needs them, then (in a worker
    that consumes the memory queue) start answering the web processes' query embeddings."""
    try:
        embeddings.embed(["warm up"])
        tokens.count("warm up")
    except Exception:
        log.warning("could not warm up the embedder", exc_info=True)
    queues = sender.app.amqp.queues.consume_from if sender is not None else {}
    if "memory" in queues and not _serving:
        _serving.append(remote.start_serving())


@worker_shutting_down.connect
def _stop_serving_queries(**kwargs) -> None:
    for stop in _serving:
        stop.set()
