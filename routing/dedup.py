"""Shared streams: identical in-flight requests ride one turn, so the provider is called once.

Identical means the same tenant, agent and body (how the answer is delivered, `stream` and
`stream_options`, aside). The first request to claim the request's key in Redis (SET NX) is the
leader: it is admitted as any other and then points the key at its turn. Every identical request
that finds the pointer attaches to that turn's Redis stream from its first entry, as a client
resuming with Last-Event-ID does: each reader reads at its own pace, so a slow or gone subscriber
never holds up the others or the worker that writes. One that finds the key still being claimed
waits a moment for the pointer; if the leader's admission failed, it is admitted on its own.

A pointer outlives its turn by at most SYNC_WAIT_SECONDS; one whose stream already ended is
stale and taken over, so only a request arriving while its twin is in flight shares it. The
leader's turn is charged as usual; each follower's usage is written to the ledger at no cost once
the turn is done. A subscriber that leaves cancels the turn (if it asked to) only when it was the
last one reading it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django import db
from django.conf import settings

from agents import streams
from budgets.models import SpendEntry
from sentinel_site.redis import async_client, sync_client

log = logging.getLogger(__name__)
PREFIX = "sentinel:dedup:"
_PENDING = b"pending"
CLAIM_SECONDS = 10  # a leader admits its request within this, or its claim lapses
JOIN_WAIT_SECONDS = 5.0
_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_tasks: set[asyncio.Task] = set()  # the accounting tasks in flight (a task nobody holds may be collected)


@dataclass(frozen=True)
class Shared:
    """The in-flight turn an identical request rides."""

    turn_id: uuid.UUID
    conversation_id: uuid.UUID
    created: float  # the turn's created_at, as a timestamp (its chunks carry it)

    def encode(self) -> str:
        return json.dumps({"turn": str(self.turn_id), "conversation": str(self.conversation_id), "created": self.created})

    @classmethod
    def decode(cls, raw: bytes | str) -> Shared:
        value = json.loads(raw)
        return cls(uuid.UUID(value["turn"]), uuid.UUID(value["conversation"]), value["created"])

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)


def key_for(tenant_id: object, agent_id: object, data: dict[str, Any]) -> str:
    """The request's key: tenant and agent in the clear (one tenant's key never names another's
    turn), the body hashed (canonical JSON) without what only shapes the delivery."""
    body = {name: value for name, value in data.items() if name not in ("stream", "stream_options")}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
    return f"{PREFIX}{tenant_id}:{agent_id}:{digest}"


def wanted(header: str | None, agent_dedup: bool, data: dict[str, Any]) -> bool:
    """Sentinel-Dedup decides (on|off); without it, the agent's policy for requests that carry no
    conversation (a conversation's next turn depends on the turns before it)."""
    if header == "on":
        return True
    if header == "off":
        return False
    return agent_dedup and data.get("conversation") is None


def claim(key: str) -> Shared | bool:
    """The turn to share (Shared), or True: this request leads (admit it, then `publish`), or
    False: another is being admitted now (`join` it)."""
    client = sync_client()
    for _ in range(3):
        if client.set(key, _PENDING, nx=True, ex=CLAIM_SECONDS):
            return True
        raw = client.get(key)
        if raw is None:
            continue  # released between the two calls: claim again
        if raw == _PENDING:
            return False
        shared = Shared.decode(raw)
        if not _finished(client, shared.turn_id):
            return shared
        client.eval(_DELETE_IF, 1, key, raw)  # stale: the turn is over, a new call is due
    return True  # contended three times over: lead without a key rather than wait


def _finished(client: Any, turn_id: uuid.UUID) -> bool:
    last = client.xrevrange(streams.key(turn_id), count=1)
    return bool(last) and last[0][1].get(b"k", b"").decode() in streams.TERMINAL


def publish(key: str, turn: Any) -> Shared:
    """The leader's turn is admitted: point the key at it, with the leader as its one subscriber."""
    shared = Shared(turn.id, turn.conversation_id, turn.created_at.timestamp())
    ttl = int(settings.SENTINEL["SYNC_WAIT_SECONDS"]) + 1
    pipe = sync_client().pipeline(transaction=False)
    pipe.set(key, shared.encode(), ex=ttl)
    pipe.set(_subscribers(turn.id), 1, ex=ttl)
    pipe.execute()
    return shared


def abandon(key: str) -> None:
    """The leader's admission failed: let the next identical request lead."""
    sync_client().eval(_DELETE_IF, 1, key, _PENDING)


def attach(shared: Shared, follower: str, agent_id: object) -> None:
    """A follower rides the turn: counted as its subscriber, listed for its usage, and as a
    provider call its agent saved."""
    pipe = sync_client().pipeline(transaction=False)
    _attach(pipe, shared.turn_id, follower, agent_id)
    pipe.execute()


def _attach(pipe: Any, turn_id: object, follower: str, agent_id: object) -> None:
    ttl = int(settings.SENTINEL["SYNC_WAIT_SECONDS"]) + 1
    pipe.incr(_subscribers(turn_id))
    pipe.rpush(_followers(turn_id), follower)
    pipe.expire(_followers(turn_id), ttl)
    pipe.hincrby(_saved(agent_id), "shared", 1)


def _saved(agent_id: object) -> str:
    return f"{PREFIX}stats:{agent_id}"


def saved(agent_id: object) -> int:
    """How many requests to the agent rode a twin's provider call (calls saved), counted in Redis."""
    return int(sync_client().hget(_saved(agent_id), "shared") or 0)


def follower_id(tenant_id: object, api_key_id: object) -> str:
    return f"{tenant_id}:{api_key_id or ''}"


async def join(key: str, follower: str, agent_id: object) -> Shared | None:
    """Wait for the leader being admitted to point the key at its turn; None if it gave up."""
    client = async_client()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOIN_WAIT_SECONDS
    while loop.time() < deadline:
        raw = await client.get(key)
        if raw is None:
            return None
        if raw != _PENDING:
            shared = Shared.decode(raw)
            pipe = client.pipeline(transaction=False)
            _attach(pipe, shared.turn_id, follower, agent_id)
            await pipe.execute()
            return shared
        await asyncio.sleep(0.005)
    return None


def _subscribers(turn_id: object) -> str:
    return f"{PREFIX}subs:{turn_id}"


def _followers(turn_id: object) -> str:
    return f"{PREFIX}followers:{turn_id}"


def last_one_out(turn_id: object, cancel: Any) -> Any:
    """What a shared turn's subscriber does when its client leaves: `cancel` only if nobody else
    still reads the turn (from a thread: the stream's task is being torn down)."""

    def leave() -> None:
        try:
            remaining = sync_client().decr(_subscribers(turn_id))
        except Exception:
            log.warning("could not count a shared stream's subscriber out", exc_info=True)
            return
        if remaining <= 0 and cancel is not None:
            cancel()

    return lambda: threading.Thread(target=leave, name="shared-stream-leave", daemon=True).start()


def account_when_done(turn_id: object) -> None:
    """The leader's side: once the shared turn is done, each follower's usage in the ledger, its
    tokens at no cost (the leader's turn pays the provider), in one insert. A follower that attaches
    in the instant between the turn's end and this read is not accounted (it read a finished turn)."""
    task = asyncio.get_running_loop().create_task(_account(turn_id))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _account(turn_id: object) -> None:
    try:
        async for event in streams.follow(turn_id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is not None and event.kind == streams.StreamKind.DONE:
                pipe = async_client().pipeline(transaction=True)
                pipe.lrange(_followers(turn_id), 0, -1)
                pipe.delete(_followers(turn_id))
                followers, _ = await pipe.execute()
                if followers:
                    # Not on the request's thread: this task outlives the request that started it.
                    await sync_to_async(_write_usage, thread_sensitive=False)(event.data["response"], followers)
                return
            if event is not None and event.is_terminal:
                return
    except TimeoutError:
        return
    except Exception:
        log.warning("could not account a shared stream's followers", exc_info=True)


def _write_usage(response: dict[str, Any], followers: list[bytes]) -> None:
    usage = response.get("usage") or {}
    entries = []
    for raw in followers:
        tenant_id, _, api_key_id = raw.decode().partition(":")
        entries.append(
            SpendEntry(
                tenant_id=tenant_id,
                api_key_id=api_key_id or None,
                model=str(response.get("model", ""))[:200],
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
                cost=0,
            )
        )
    try:
        SpendEntry.objects.bulk_create(entries)
    finally:
        db.connections.close_all()
