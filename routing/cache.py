"""The response cache: an agent's answer kept for identical requests, opt-in per agent and request.

Exact match only: the key is the tenant, the agent and the hash of the normalised request (its
canonical JSON without `stream`/`stream_options`, which shape only the delivery). No semantic
matching: a near miss is a miss, so an agent never gets an answer to another question. Requests
that carry conversation history (a `conversation`, or assistant/tool messages) are never cached
unless the agent's policy says so: their answer depends on more than the words in front of us.
Only complete answers are kept (finish_reason stop, length or tool_calls), for the policy's TTL.

A hit costs nothing: no turn, no provider call, no budget. Hits and misses are counted per agent
(in Redis, so every process adds to one count) and in Prometheus. Purging an agent's cache deletes
its keys (a SCAN of its own prefix: purges are rare, lookups are not).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

from django.conf import settings

from agents import streams
from routing import metrics
from sentinel_site.redis import async_client, sync_client

log = logging.getLogger(__name__)
PREFIX = "sentinel:cache:"
CACHEABLE_ENDINGS = frozenset({"stop", "length", "tool_calls"})
HEADER_VALUES = ("use", "skip")
_tasks: set[asyncio.Task] = set()


def key_for(tenant_id: object, agent_id: object, data: dict[str, Any]) -> str:
    body = {name: value for name, value in data.items() if name not in ("stream", "stream_options")}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
    return f"{_agent_prefix(tenant_id, agent_id)}{digest}"


def _agent_prefix(tenant_id: object, agent_id: object) -> str:
    return f"{PREFIX}{tenant_id}:{agent_id}:"


def _stats(agent_id: object) -> str:
    return f"{PREFIX}stats:{agent_id}"


def has_history(data: dict[str, Any]) -> bool:
    return data.get("conversation") is not None or any(m.get("role") in ("assistant", "tool") for m in data.get("messages", []))


def wanted(header: str | None, cache_seconds: int, cache_always: bool, cache_history: bool, data: dict[str, Any]) -> bool:
    """The agent keeps answers, the request asks (`Sentinel-Cache: use`, or the policy always
    does unless `skip`), and it carries no history unless the policy allows it."""
    if cache_seconds <= 0 or header == "skip" or not (header == "use" or cache_always):
        return False
    return cache_history or not has_history(data)


def lookup(key: str, agent_id: object) -> dict[str, Any] | None:
    """The cached chat.completion, or None; counted either way."""
    client = sync_client()
    raw = client.get(key)
    hit = raw is not None
    client.hincrby(_stats(agent_id), "hits" if hit else "misses", 1)
    metrics.CACHE_LOOKUPS.labels("hit" if hit else "miss").inc()
    return json.loads(raw) if raw is not None else None


def fill_when_done(turn_id: object, key: str, seconds: int) -> None:
    """Keep the turn's answer once it is done, whatever becomes of the client that asked."""
    task = asyncio.get_running_loop().create_task(_fill(turn_id, key, seconds))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _fill(turn_id: object, key: str, seconds: int) -> None:
    try:
        async for event in streams.follow(turn_id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is not None and event.is_terminal:
                if event.kind == streams.StreamKind.DONE:
                    await _store_async(key, event.data["response"], seconds)
                return
    except TimeoutError:
        return
    except Exception:
        log.warning("could not keep an answer in the response cache", exc_info=True)


async def _store_async(key: str, response: dict[str, Any], seconds: int) -> None:
    choices = response.get("choices") or [{}]
    if choices[0].get("finish_reason") in CACHEABLE_ENDINGS:
        await async_client().set(key, json.dumps(response, separators=(",", ":")), ex=seconds)


def purge(tenant_id: object, agent_id: object) -> int:
    """Delete every answer kept for the agent; how many there were."""
    client = sync_client()
    keys = list(client.scan_iter(_agent_prefix(tenant_id, agent_id) + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


def stats(agent_id: object) -> dict[str, int]:
    """{"hits", "misses"} counted for the agent."""
    raw = sync_client().hgetall(_stats(agent_id))
    return {name: int(raw.get(name.encode(), 0)) for name in ("hits", "misses")}


def replay_chunks(response: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A cached chat.completion as the chunks a stream of it sends (content in one piece)."""
    choice = response["choices"][0]
    message = choice.get("message") or {}
    base = {"id": response.get("id"), "object": "chat.completion.chunk", "created": response.get("created"), "model": response.get("model")}
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if message.get("content"):
        deltas.append({"content": message["content"]})
    for index, call in enumerate(message.get("tool_calls") or []):
        deltas.append({"tool_calls": [{"index": index, **call}]})
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]} for delta in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason"), "logprobs": None}]})
    if include_usage and response.get("usage"):
        chunks.append({**base, "choices": [], "usage": response["usage"]})
    return chunks
