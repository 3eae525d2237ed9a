"""Stop flags in Redis: the fast path of a cancel or interrupt to the worker running the turn.

The turn's row holds the durable flag (Turn.stop_requested, read with each heartbeat); this key is
how the worker hears of it within SENTINEL_STOP_POLL_SECONDS rather than a heartbeat interval.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sentinel_site.redis import quick_client, sync_client

STOP_FLAG_TTL_SECONDS = 3600


def _key(turn_id: Any) -> str:
    return f"sentinel:stop:{turn_id}"


def flag_stop(turn_id: Any, kind: str) -> None:
    sync_client().set(_key(turn_id), kind, ex=STOP_FLAG_TTL_SECONDS)


def clear_stop(turn_id: Any) -> None:
    sync_client().delete(_key(turn_id))


def stop_flags(turn_ids: Sequence[uuid.UUID]) -> list[str]:
    """The stop asked of each turn ("" for none), in one round trip."""
    values = quick_client().mget([_key(turn_id) for turn_id in turn_ids])
    return [(value.decode() if isinstance(value, bytes) else value) or "" for value in values]
