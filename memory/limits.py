"""Bounds on consolidations asked for through the API, so one tenant cannot fill the memory queue.

Each consolidation holds a slot from the moment it is asked for until its task ends: one slot per
conversation (a second request for the same conversation is refused, SlotTaken, while the first is
queued or running), and SENTINEL_CONSOLIDATIONS_PER_TENANT per tenant (beyond, TenantBusy). Slots live in one Redis
sorted set per tenant, scored by expiry, taken and counted by one atomic script: racing requests
cannot overshoot the bound. A slot whose task died expires after SENTINEL_DREAMER_LEASE_SECONDS.
"""

from __future__ import annotations

import time
import uuid

from django.conf import settings

from sentinel_site.redis import sync_client

RETRY_AFTER_SECONDS = 15  # a consolidation takes tens of seconds on the local model

# KEYS[1]: the tenant's slots. ARGV: now, expiry, conversation id, token, limit, key ttl.
# Members are "<conversation>:<token>" so that a late release never frees a newer slot.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local prefix = ARGV[3] .. ':'
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, member in ipairs(members) do
  if string.sub(member, 1, #prefix) == prefix then return -1 end
end
if #members >= tonumber(ARGV[5]) then return -2 end
redis.call('ZADD', KEYS[1], ARGV[2], prefix .. ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""


class SlotTaken(Exception):
    """This conversation already has a consolidation queued or running."""

    def __init__(self) -> None:
        super().__init__("This conversation is being consolidated already; its summaries appear when that has finished.")


class TenantBusy(Exception):
    """The tenant has as many consolidations queued or running as it may."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Your tenant already has {limit} consolidations queued or running; retry when one has finished.")
        self.limit = limit


def _key(tenant_id) -> str:
    return f"sentinel:consolidations:{tenant_id}"


def _ttl() -> int:
    return settings.SENTINEL["DREAMER_LEASE_SECONDS"]


def take(tenant_id, conversation_id) -> str:
    """Take a slot for a consolidation of this conversation; returns the token that releases it."""
    token = uuid.uuid4().hex
    now = time.time()
    limit = settings.SENTINEL["CONSOLIDATIONS_PER_TENANT"]
    taken = sync_client().eval(_TAKE, 1, _key(tenant_id), now, now + _ttl(), str(conversation_id), token, limit, _ttl())
    if taken == -1:
        raise SlotTaken
    if taken == -2:
        raise TenantBusy(limit)
    return token


def renew(tenant_id, conversation_id, token: str) -> None:
    """The task started: its slot lasts from now (time spent queued does not count against it)."""
    sync_client().zadd(_key(tenant_id), {f"{conversation_id}:{token}": time.time() + _ttl()}, xx=True)


def release(tenant_id, conversation_id, token: str) -> None:
    sync_client().zrem(_key(tenant_id), f"{conversation_id}:{token}")
