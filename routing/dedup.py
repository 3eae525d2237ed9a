"""Shared streams: identical in-flight requests ride one turn, so the provider is called once.

A request shares when `wanted`: by default one without a conversation whose answer is
deterministic (temperature 0 or a seed); a sampling one when its agent's policy or the request
(`Sentinel-Dedup: on`) asks; never with `Sentinel-Dedup: off`.

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
the turn is done, by its own request and by the leader's, whichever is first (keyed: once). A
subscriber that leaves cancels the turn (if it asked to) only when it was the last one reading it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django import db
from django.conf import settings
from django.db import connection, transaction

from agents import streams
from budgets.models import SpendEntry
from routing.models import SharedUsage
from routing.policy import PolicySpec
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


def deterministic(data: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Whether the request's answer is meant to be reproducible: temperature 0 or a seed, the
    request's own or else the agent's default (as admission.call_params merges them)."""
    params = {**(defaults or {}), **{k: v for k, v in data.items() if v is not None}}
    return params.get("temperature") == 0 or params.get("seed") is not None


def wanted(header: str | None, spec: PolicySpec, data: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Sentinel-Dedup decides (on|off). Without it, never a request with a conversation (its next
    turn depends on the turns before it); else a deterministic one (`deterministic`) by default,
    since two identical ones must get the same answer anyway (the policy's `dedup_deterministic`
    turns that off), and a sampling one only when the policy's `dedup` asks: identical requests at
    temperature 1 may want independent samples."""
    if header == "on":
        return True
    if header == "off" or data.get("conversation") is not None:
        return False
    return spec.dedup or (spec.dedup_deterministic and deterministic(data, defaults))


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
    """Who a follower is, for its usage: tenant, key and a token of this request (one client's
    two identical requests are two subscribers, each accounted once)."""
    return f"{tenant_id}:{api_key_id or ''}:{uuid.uuid4().hex}"


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


def account_when_done(turn_id: object, follower: str = "") -> None:
    """Once the shared turn is done, followers' usage in the ledger, their tokens at no cost (the
    leader's turn pays the provider). The leader's request accounts every follower listed; a
    follower's own request (`follower`) accounts itself when its stream ends, so its entry does not
    depend on the leader's process living to the end; each entry is keyed (routing.SharedUsage),
    so whichever comes second writes nothing. A follower that attaches in the instant between the
    turn's end and the leader's read is accounted by its own request."""
    task = asyncio.get_running_loop().create_task(_account(turn_id, follower))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _account(turn_id: object, follower: str = "") -> None:
    try:
        async for event in streams.follow(turn_id, timeout=settings.SENTINEL["SYNC_WAIT_SECONDS"]):
            if event is not None and event.kind == streams.StreamKind.DONE:
                followers: list[bytes | str] = [follower] if follower else await async_client().lrange(_followers(turn_id), 0, -1)
                if followers:
                    # Not on the request's thread: this task outlives the request that started it.
                    await sync_to_async(write_usage, thread_sensitive=False)(turn_id, event.data["response"], followers)
                return
            if event is not None and event.is_terminal:
                return
    except TimeoutError:
        return
    except Exception:
        log.warning("could not account a shared stream's followers", exc_info=True)


_CLAIM_SQL = (
    f"INSERT INTO {SharedUsage._meta.db_table} (turn_id, follower, created_at) SELECT %s, f, now() FROM unnest(%s::text[]) AS f "
    "ON CONFLICT (turn_id, follower) DO NOTHING RETURNING follower"
)


_PRUNE_SQL = f"DELETE FROM {SharedUsage._meta.db_table} WHERE created_at < now() - make_interval(secs => %s)"
PRUNE_EVERY_SECONDS = 60.0
_pruned_at = [0.0]  # when this process last pruned the keys (time.monotonic)


def write_usage(turn_id: object, response: dict[str, Any], followers: list[bytes | str]) -> int:
    """The followers' zero-cost entries, each written once: the keys claimed and the entries of
    those this call claimed in one transaction (a claim never commits without its entry). How many
    it wrote."""
    usage = response.get("usage") or {}
    names = sorted({raw.decode() if isinstance(raw, bytes) else raw for raw in followers})
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, [str(turn_id), names])
            claimed = [row[0] for row in cursor.fetchall()]
            entries = []
            for name in claimed:
                tenant_id, api_key_id = name.split(":")[:2]
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
            SpendEntry.objects.bulk_create(entries)
            if time.monotonic() - _pruned_at[0] > PRUNE_EVERY_SECONDS:
                _pruned_at[0] = time.monotonic()
                # keys no writer can still need: ten times the longest a turn's accounting waits
                cursor.execute(_PRUNE_SQL, [10 * (int(settings.SENTINEL["SYNC_WAIT_SECONDS"]) + 1)])
        return len(entries)
    finally:
        db.connections.close_all()
