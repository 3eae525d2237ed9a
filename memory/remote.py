"""Query embeddings for the web process, computed by a worker: the web process never loads the
embedding model (it stays small), and the request waits on a Redis reply list, not by polling.

Queries do not travel as Celery tasks. A Celery task waits for a free thread of the worker's pool,
and those threads are held by bulk memory work (indexing passes, consolidations that each wait on a
model for tens of seconds) and by turns: one tenant's burst of consolidations queued everyone's
searches behind it. Instead the web process pushes the request onto one Redis list, and a thread of
its own in every worker process that consumes the `memory` queue pops it (BLPOP, no polling), takes
whatever else waits as one batch, and hands the batch to the embedder, which runs queries before
indexing batches. A request carries its deadline; one nobody waits for any more is dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import redis
from django.conf import settings

from memory import embeddings
from sentinel_site.db import release_connection
from sentinel_site.redis import async_client, sync_client

log = logging.getLogger(__name__)

REQUESTS_KEY = "sentinel:embed-queries"
MAX_BATCH_REQUESTS = 64  # requests one model call takes at most when many wait at once
REPLY_TTL_SECONDS = 60


class EmbeddingsUnavailable(Exception):
    """No worker answered the query in time, or the one that did could not embed it."""

    def __init__(self) -> None:
        super().__init__("The embedding service did not answer in time; try again.")


def _request(texts: list[str], tenant: object) -> tuple[str, str, float]:
    timeout = settings.SENTINEL["EMBED_QUERY_TIMEOUT"]
    reply_key = f"sentinel:embed-reply:{uuid.uuid4().hex}"
    owner = None if tenant is None else str(tenant)
    return reply_key, json.dumps({"texts": texts, "tenant": owner, "reply": reply_key, "deadline": time.time() + timeout}), timeout


def _vectors(reply) -> list[list[float]]:
    if reply is None:
        raise EmbeddingsUnavailable
    answer = json.loads(reply[1])
    if not isinstance(answer, list):  # {"error": ...}: the worker could not embed them
        raise EmbeddingsUnavailable
    return answer


async def embed_texts(texts: list[str], tenant: object) -> list[list[float]]:
    """The query vectors of `tenant`'s texts (vectors are reused only within a tenant: embeddings.content_hash)."""
    reply_key, request, timeout = _request(texts, tenant)
    client = async_client()
    await client.rpush(REQUESTS_KEY, request)
    return _vectors(await client.blpop([reply_key], timeout=timeout))


def embed_texts_sync(texts: list[str], tenant: object) -> list[list[float]]:
    """The same for sync callers (the admin)."""
    reply_key, request, timeout = _request(texts, tenant)
    client = sync_client()
    client.rpush(REQUESTS_KEY, request)
    return _vectors(client.blpop([reply_key], timeout=timeout))


def serve_once(block_seconds: float = 1.0) -> int:
    """Answer the query requests waiting (up to MAX_BATCH_REQUESTS) in one model call; returns how
    many were answered (0 when none came within block_seconds)."""
    client = sync_client()
    first = client.blpop([REQUESTS_KEY], timeout=block_seconds)
    if first is None:
        return 0
    raw = [first[1], *(client.lpop(REQUESTS_KEY, MAX_BATCH_REQUESTS - 1) or [])]
    now = time.time()
    requests = [request for request in map(json.loads, raw) if request["deadline"] > now]
    if not requests:
        return 0
    try:
        vectors = embeddings.embed_query(
            [text for request in requests for text in request["texts"]],
            [request.get("tenant") for request in requests for _ in request["texts"]],
        )
        answers, start = [], 0
        for request in requests:
            answers.append(vectors[start : start + len(request["texts"])])
            start += len(request["texts"])
    except Exception as error:  # noqa: BLE001 - every waiting request gets an answer: 503 at once, not a timeout
        log.warning("could not embed %d query request(s): %s", len(requests), type(error).__name__)
        answers = [{"error": type(error).__name__}] * len(requests)
    finally:
        release_connection()  # the embedding cache's connection goes back to the pool between batches
    pipe = client.pipeline(transaction=False)
    for request, answer in zip(requests, answers, strict=True):
        pipe.rpush(request["reply"], json.dumps(answer))
        pipe.expire(request["reply"], REPLY_TTL_SECONDS)
    pipe.execute()
    return len(requests)


def serve(stop: threading.Event) -> None:
    """Answer query requests until `stop` is set: the loop of each worker process's query thread."""
    while not stop.is_set():
        try:
            serve_once()
        except redis.RedisError as error:
            log.warning("query embeddings: Redis is out of reach (%s); trying again", type(error).__name__)
            stop.wait(1)
        except Exception:
            log.exception("query embeddings: unexpected error; going on")
            stop.wait(1)


def start_serving() -> threading.Event:
    """Start this process's query thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=serve, args=(stop,), name="embed-queries", daemon=True).start()
    return stop
