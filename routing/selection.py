"""Which deployment of a group takes the next call: weighted random, least busy or lowest latency,
among those whose circuit breaker is not open and whose rpm/tpm limits are not reached.

Everything a decision reads is shared by every worker through Redis, in one pipelined round trip:
each deployment's breaker (agents/breaker.py's own state, keyed per deployment and tenant), its
request and token counters for the current minute, its calls in flight and its measured latency
(an exponentially weighted moving average). A decision that needs none of it (weighted, no limits,
breakers this process saw clean within SENTINEL_BREAKER_CACHE_SECONDS) makes no round trip.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from agents import breaker
from routing.groups import DeploymentSpec, GroupSpec
from sentinel_site.redis import sync_client

log = logging.getLogger(__name__)
_PREFIX = "sentinel:rt:"

# new = old + alpha * (sample - old); the first sample is taken as it is.
_EWMA = """
local old = redis.call('GET', KEYS[1])
local value = tonumber(ARGV[1])
if old then value = tonumber(old) + tonumber(ARGV[2]) * (value - tonumber(old)) end
redis.call('SET', KEYS[1], tostring(value), 'EX', 86400)
return tostring(value)
"""


@dataclass(frozen=True)
class Choice:
    deployment: DeploymentSpec
    reason: str
    skipped: tuple[tuple[str, str], ...] = ()  # (deployment name, why), for the turn's events


def _minute() -> int:
    return int(time.time() // 60)


def rpm_key(deployment_id: int, minute: int) -> str:
    return f"{_PREFIX}rpm:{deployment_id}:{minute}"


def tpm_key(deployment_id: int, minute: int) -> str:
    return f"{_PREFIX}tpm:{deployment_id}:{minute}"


def inflight_key(deployment_id: int) -> str:
    return f"{_PREFIX}busy:{deployment_id}"


def latency_key(deployment_id: int) -> str:
    return f"{_PREFIX}lat:{deployment_id}"


def breaker_key(deployment: DeploymentSpec, tenant_id: object) -> str:
    """The breaker guarding one deployment for one tenant (see agents/breaker.py on why per tenant)."""
    return f"deployment:{deployment.id}|{tenant_id}"


def choose(group: GroupSpec, tenant_id: object, exclude: frozenset[int] | set[int] = frozenset()) -> Choice | None:
    """The deployment for the next call, or None if every one is excluded, open or at its limits."""
    candidates = [d for d in group.deployments if d.id not in exclude]
    if not candidates:
        return None
    state = _read(group.strategy, candidates, tenant_id)
    skipped: list[tuple[str, str]] = []
    usable = []
    for deployment in candidates:
        why = _unusable(deployment, state.get(deployment.id, {}))
        if why:
            skipped.append((deployment.name, why))
        else:
            usable.append(deployment)
    if not usable:
        return None
    chosen, reason = _pick(group.strategy, usable, state)
    return Choice(chosen, reason, tuple(skipped))


def _read(strategy: str, candidates: list[DeploymentSpec], tenant_id: object) -> dict[int, dict]:
    """What the decision needs from Redis, in one round trip (none if it needs nothing)."""
    minute = _minute()
    reads: list[tuple[int, str]] = []
    pipe = None
    for deployment in candidates:
        wanted: list[tuple[Any, ...]] = []
        key = breaker_key(deployment, tenant_id)
        if not breaker._known_clean(key):
            wanted.append(("breaker", "hget", breaker._key(key), "opened_at"))
        if deployment.rpm is not None:
            wanted.append(("rpm", "get", rpm_key(deployment.id, minute)))
        if deployment.tpm is not None:
            wanted.append(("tpm", "get", tpm_key(deployment.id, minute)))
        if strategy == "least_busy":
            since = time.time() - settings.SENTINEL["ROUTING_INFLIGHT_SECONDS"]
            wanted.append(("busy", "zcount", inflight_key(deployment.id), since, "+inf"))
        elif strategy == "lowest_latency":
            wanted.append(("latency", "get", latency_key(deployment.id)))
        for name, command, *args in wanted:
            if pipe is None:
                pipe = sync_client().pipeline(transaction=False)
            getattr(pipe, command)(*args)
            reads.append((deployment.id, name))
    state: dict[int, dict] = {}
    if pipe is None:
        return state
    try:
        values = pipe.execute()
    except redis.RedisError as error:  # like the breaker: routing state is advice, never a dependency
        log.warning("routing state unreadable (%s); choosing without it", type(error).__name__)
        return state
    for (deployment_id, name), value in zip(reads, values, strict=True):
        state.setdefault(deployment_id, {})[name] = value
    return state


def _unusable(deployment: DeploymentSpec, state: dict) -> str:
    opened = float(state.get("breaker") or 0)
    if opened and breaker._state_of(opened, time.time()) == breaker.OPEN:
        return "circuit_open"
    if deployment.rpm is not None and int(state.get("rpm") or 0) >= deployment.rpm:
        return "rpm_limit"
    if deployment.tpm is not None and int(state.get("tpm") or 0) >= deployment.tpm:
        return "tpm_limit"
    return ""


def _pick(strategy: str, usable: list[DeploymentSpec], state: dict[int, dict]) -> tuple[DeploymentSpec, str]:
    if strategy == "least_busy":
        busy = {d.id: int(state.get(d.id, {}).get("busy") or 0) for d in usable}
        fewest = min(busy.values())
        chosen = random.choice([d for d in usable if busy[d.id] == fewest])
        return chosen, f"least_busy: {fewest} in flight"
    if strategy == "lowest_latency":
        measured = {d.id: float(v) for d in usable if (v := state.get(d.id, {}).get("latency")) is not None}
        unmeasured = [d for d in usable if d.id not in measured]
        if unmeasured:  # measure every deployment before trusting the measurements
            return random.choice(unmeasured), "lowest_latency: not measured yet"
        chosen = min(usable, key=lambda d: measured[d.id])
        return chosen, f"lowest_latency: {measured[chosen.id]:.0f} ms"
    total = sum(d.weight for d in usable)
    if total <= 0:
        return random.choice(usable), "weighted: only zero-weight deployments left"
    point = random.uniform(0, total)
    for deployment in usable:
        point -= deployment.weight
        if point <= 0:
            return deployment, f"weighted: {deployment.weight}/{total}"
    return usable[-1], f"weighted: {usable[-1].weight}/{total}"


# --- what calls report back ---------------------------------------------------------------------
def started(deployment: DeploymentSpec, call_id: str) -> None:
    """A call goes to this deployment now: counted against its rpm and as in flight."""
    minute = _minute()
    try:
        pipe = sync_client().pipeline(transaction=False)
        pipe.incr(rpm_key(deployment.id, minute))
        pipe.expire(rpm_key(deployment.id, minute), 120)
        pipe.zadd(inflight_key(deployment.id), {call_id: time.time()})
        pipe.zremrangebyscore(inflight_key(deployment.id), "-inf", time.time() - settings.SENTINEL["ROUTING_INFLIGHT_SECONDS"])
        pipe.expire(inflight_key(deployment.id), settings.SENTINEL["ROUTING_INFLIGHT_SECONDS"])
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not count a routed call: %s", type(error).__name__)


def ended(deployment: DeploymentSpec, call_id: str, *, tokens: int = 0, latency_ms: int | None = None) -> None:
    """The call ended: no longer in flight, its tokens counted against tpm, its latency measured."""
    minute = _minute()
    try:
        client = sync_client()
        pipe = client.pipeline(transaction=False)
        pipe.zrem(inflight_key(deployment.id), call_id)
        if tokens:
            pipe.incrby(tpm_key(deployment.id, minute), tokens)
            pipe.expire(tpm_key(deployment.id, minute), 120)
        if latency_ms is not None:
            pipe.eval(_EWMA, 1, latency_key(deployment.id), latency_ms, settings.SENTINEL["ROUTING_LATENCY_ALPHA"])
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not record a routed call's end: %s", type(error).__name__)
