"""Per-turn event streams in Redis: the worker appends, the API reads (blocking, never polling).

Each turn has one Redis stream `sentinel:turn:<id>` of entries `{k: kind, d: json}`:
    state  {"from", "to"}                  a state machine transition
    delta  {"content"?, "tool_calls"?}     a piece of the model's answer
    done   {"response": chat.completion}   the turn ended with an answer (succeeded, or cancelled or
                                           interrupted: finish_reason says which); it is in PostgreSQL
    error  {"status", "type", "code", "message"}   the turn failed for good
    approval {"approval_id", "tool_calls", "expires_at"}   tool calls wait for a person (not an end)
Stream entry ids double as SSE event ids, so a client resuming with Last-Event-ID loses nothing.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from sentinel_site.redis import async_client, sync_client


class StreamKind(enum.StrEnum):
    """The kinds of entry in a turn's stream (see the module docstring for their data)."""

    STATE = "state"
    DELTA = "delta"
    DONE = "done"
    ERROR = "error"
    APPROVAL = "approval"


TERMINAL = frozenset({StreamKind.DONE, StreamKind.ERROR})
# The longest a read waits for an event before the reader sends a keep-alive (the async client's
# socket timeout, sentinel_site.redis.ASYNC_SOCKET_TIMEOUT_SECONDS, outlasts it).
MAX_BLOCK_MS = 15000


@dataclass(frozen=True)
class StreamEvent:
    id: str
    kind: str
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.kind in TERMINAL


def key(turn_id: Any) -> str:
    return f"sentinel:turn:{turn_id}"


def publish(turn_id: Any, kind: str, data: dict[str, Any]) -> str:
    """Append one event to the turn's stream (one round trip) and return its id."""
    return publish_many(turn_id, [(kind, data)])[-1]


def publish_many(turn_id: Any, events: list[tuple[str, dict[str, Any]]], also: Callable[[Any], None] | None = None) -> list[str]:
    """Append events in order in one round trip (a reader blocked on the stream wakes once). `also`
    queues more commands on the same pipeline, after them (agents/activity.py's mark)."""
    if not events:
        return []
    pipe = sync_client().pipeline(transaction=False)
    for kind, data in events:
        pipe.xadd(key(turn_id), {"k": kind, "d": json.dumps(data, separators=(",", ":"))})
    pipe.expire(key(turn_id), settings.SENTINEL["STREAM_TTL_SECONDS"])
    if also is not None:
        also(pipe)
    ids = pipe.execute()[: len(events)]
    return [entry_id.decode() if isinstance(entry_id, bytes) else entry_id for entry_id in ids]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: dict[Any, Any], name: str) -> Any:
    """A field of an entry, whether the client decodes responses (str keys) or not (bytes keys)."""
    raw = name.encode()
    return fields[raw] if raw in fields else fields[name]


def _decode(entry_id: bytes | str, fields: dict[Any, Any]) -> StreamEvent:
    return StreamEvent(id=_text(entry_id), kind=_text(_field(fields, "k")), data=json.loads(_field(fields, "d")))


async def read(turn_id: Any, after: str = "0", block_ms: int = MAX_BLOCK_MS) -> list[StreamEvent]:
    """Events after `after`, waiting up to block_ms for the first one; [] on timeout."""
    response: Any = await async_client().xread({key(turn_id): after}, block=min(block_ms, MAX_BLOCK_MS), count=500)
    if not response:
        return []
    _, entries = response[0]
    return [_decode(entry_id, fields) for entry_id, fields in entries]


async def follow(turn_id: Any, after: str = "0", *, timeout: float, idle_block_ms: int = MAX_BLOCK_MS) -> AsyncIterator[StreamEvent | None]:
    """Yield events until a terminal one; yield None every idle_block_ms with nothing new (keep-alive).

    Raises TimeoutError once `timeout` seconds pass without reaching a terminal event.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        events = await read(turn_id, after, block_ms=max(1, min(idle_block_ms, int(remaining * 1000))))
        if not events:
            yield None
            continue
        for event in events:
            after = event.id
            yield event
            if event.is_terminal:
                return


async def exists(turn_id: Any) -> bool:
    return bool(await async_client().exists(key(turn_id)))
