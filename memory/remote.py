"""Query embeddings for the web process, computed by a worker: the web process never loads the
embedding model (it stays small), and the request waits on a Redis reply list, not by polling."""

from __future__ import annotations

import json
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings

from agents import streams
from sentinel_site.errors import ApiError


def _unavailable() -> ApiError:
    return ApiError(
        503,
        "The embedding service did not answer in time; try again.",
        type="server_error",
        code="embeddings_unavailable",
        headers={"Retry-After": "2"},
    )


async def embed_texts(texts: list[str]) -> list[list[float]]:
    from memory.tasks import embed_query as task

    reply_key = f"sentinel:embed-reply:{uuid.uuid4().hex}"
    await sync_to_async(task.apply_async, thread_sensitive=False)(args=[texts, reply_key], queue="memory")
    reply = await streams.async_client().blpop([reply_key], timeout=settings.SENTINEL["EMBED_QUERY_TIMEOUT"])
    if reply is None:
        raise _unavailable()
    return json.loads(reply[1])


def embed_texts_sync(texts: list[str]) -> list[list[float]]:
    """The same for sync callers (the admin)."""
    from memory.tasks import embed_query as task

    reply_key = f"sentinel:embed-reply:{uuid.uuid4().hex}"
    task.apply_async(args=[texts, reply_key], queue="memory")
    reply = streams.sync_client().blpop([reply_key], timeout=settings.SENTINEL["EMBED_QUERY_TIMEOUT"])
    if reply is None:
        raise _unavailable()
    return json.loads(reply[1])
