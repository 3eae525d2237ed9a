"""Which deployment of a group takes the next call: weighted random, least busy or lowest latency,
among those whose circuit breaker is not open and whose rpm/tpm limits are not reached.

Everything a decision reads is shared by every worker through Redis: each deployment's breaker
(agents/breaker.py's own state, keyed per deployment and tenant), its request and token counters for
the current minute, its calls in flight and its measured latency (an exponentially weighted moving
average). A worker reads them in one pipelined round trip and decides on that snapshot for
SENTINEL_ROUTING_STATE_SECONDS (0.1 s): a Redis round trip costs more than the 100 µs a decision may
take. Its own calls change its snapshot at once (counted, in flight, ended); other workers' are seen
within the snapshot's age, so an rpm/tpm limit can be overshot by what other workers start in that
interval. A deployment that just failed is read afresh at the next decision (its breaker may have opened).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import redis
from django.conf import settings

from agents import breaker
from routing.groups import DeploymentSpec, GroupSpec
from sentinel_site.redis import sync_client

log = logging.getLogger(__name__)
_PREFIX = "sentinel:rt:"
# deployment id -> tenant id -> (monotonic read time, its state): what this process last read
_snapshots: dict[int, dict[object, tuple[float, dict]]] = {}
_snapshot_lock = threading.Lock()

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


def choose(
    group: GroupSpec,
    tenant_id: object,
    exclude: frozenset[int] | set[int] = frozenset(),
    *,
    latency_budget_ms: int | None = None,
    price: Callable[[DeploymentSpec], Decimal] | None = None,
) -> Choice | None:
    """The deployment for the next call, or None if every one is excluded, open or at its limits.
    `latency_budget_ms`: only deployments whose measured latency fits (see _within); `price`: the
    cheapest usable one instead of the group's strategy (adaptive routing past a soft limit)."""
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
    note = ""
    if latency_budget_ms is not None:
        usable, note = _within(usable, state, latency_budget_ms)
    if price is not None:
        chosen = min(usable, key=price)
        return Choice(chosen, note + "cost-aware: the cheapest past a budget's soft limit", tuple(skipped))
    chosen, reason = _pick(group.strategy, usable, state)
    return Choice(chosen, note + reason, tuple(skipped))


def _within(usable: list[DeploymentSpec], state: dict[int, dict], budget_ms: int) -> tuple[list[DeploymentSpec], str]:
    """The deployments whose measured latency fits the budget; none measured to fit: the
    unmeasured ones (they may); none of those either: the fastest one, said so."""
    measured = {d.id: v for d in usable if (v := state.get(d.id, {}).get("latency")) is not None}
    fits = [d for d in usable if d.id in measured and measured[d.id] <= budget_ms]
    if fits:
        return fits, f"within {budget_ms} ms; "
    unmeasured = [d for d in usable if d.id not in measured]
    if unmeasured:
        return unmeasured, f"none measured within {budget_ms} ms; "
    fastest = min(usable, key=lambda d: measured[d.id])
    return [fastest], f"none within {budget_ms} ms, the fastest ({measured[fastest.id]:.0f} ms); "


def _read(strategy: str, candidates: list[DeploymentSpec], tenant_id: object) -> dict[int, dict]:
    """What the decision needs to know of each candidate: from this process's snapshot if it is
    younger than SENTINEL_ROUTING_STATE_SECONDS, else from Redis, all stale ones in one round trip."""
    now = time.monotonic()
    ttl = settings.SENTINEL["ROUTING_STATE_SECONDS"]
    state: dict[int, dict] = {}
    stale = []
    for deployment in candidates:
        cached = _snapshots.get(deployment.id, {}).get(tenant_id)
        if cached is not None and now - cached[0] < ttl:
            state[deployment.id] = cached[1]
        else:
            stale.append(deployment)
    if stale:
        state.update(_fetch(stale, tenant_id, now if ttl > 0 else None))
    return state


def _fetch(deployments: list[DeploymentSpec], tenant_id: object, keep_at: float | None) -> dict[int, dict]:
    minute = _minute()
    since = time.time() - settings.SENTINEL["ROUTING_INFLIGHT_SECONDS"]
    pipe = sync_client().pipeline(transaction=False)
    for deployment in deployments:
        pipe.hget(breaker._key(breaker_key(deployment, tenant_id)), "opened_at")
        pipe.get(rpm_key(deployment.id, minute))
        pipe.get(tpm_key(deployment.id, minute))
        pipe.zcount(inflight_key(deployment.id), since, "+inf")
        pipe.get(latency_key(deployment.id))
    try:
        values = pipe.execute()
    except redis.RedisError as error:  # like the breaker: routing state is advice, never a dependency
        log.warning("routing state unreadable (%s); choosing without it", type(error).__name__)
        return {}
    state: dict[int, dict] = {}
    with _snapshot_lock:
        if sum(len(by_tenant) for by_tenant in _snapshots.values()) > 10_000:
            _snapshots.clear()  # bounded, whatever the tenants and groups
        for index, deployment in enumerate(deployments):
            opened, rpm, tpm, busy, latency = values[index * 5 : index * 5 + 5]
            known = {
                "opened_at": float(opened or 0),
                "rpm": int(rpm or 0),
                "tpm": int(tpm or 0),
                "busy": int(busy or 0),
                "latency": float(latency) if latency is not None else None,
            }
            state[deployment.id] = known
            if keep_at is not None:
                _snapshots.setdefault(deployment.id, {})[tenant_id] = (keep_at, known)
    return state


def live_state(deployments: list[DeploymentSpec], tenant_id: object) -> dict[int, dict]:
    """What the next decision would read of each deployment, from Redis now (the admin shows it):
    its breaker's state as well as the counters."""
    state = _fetch(deployments, tenant_id, None)
    now = time.time()
    for known in state.values():
        known["breaker"] = breaker._state_of(known["opened_at"], now)
    return state


def _adjust(deployment_id: int, **deltas: int) -> None:
    """This process's own calls, seen at once in its snapshots (other processes' within their age)."""
    with _snapshot_lock:
        for _, known in _snapshots.get(deployment_id, {}).values():
            for name, delta in deltas.items():
                known[name] = max(0, known[name] + delta)


def forget(deployment_id: int | None = None) -> None:
    """Drop this process's snapshots (of one deployment, or all): the next decision reads Redis."""
    with _snapshot_lock:
        if deployment_id is None:
            _snapshots.clear()
        else:
            _snapshots.pop(deployment_id, None)


def _unusable(deployment: DeploymentSpec, state: dict) -> str:
    opened = state.get("opened_at") or 0.0
    if opened and breaker._state_of(opened, time.time()) == breaker.OPEN:
        return "circuit_open"
    if deployment.rpm is not None and state.get("rpm", 0) >= deployment.rpm:
        return "rpm_limit"
    if deployment.tpm is not None and state.get("tpm", 0) >= deployment.tpm:
        return "tpm_limit"
    return ""


def _pick(strategy: str, usable: list[DeploymentSpec], state: dict[int, dict]) -> tuple[DeploymentSpec, str]:
    if strategy == "least_busy":
        busy = {d.id: state.get(d.id, {}).get("busy", 0) for d in usable}
        fewest = min(busy.values())
        chosen = random.choice([d for d in usable if busy[d.id] == fewest])
        return chosen, f"least_busy: {fewest} in flight"
    if strategy == "lowest_latency":
        measured = {d.id: v for d in usable if (v := state.get(d.id, {}).get("latency")) is not None}
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
    _adjust(deployment.id, rpm=1, busy=1)


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
    if latency_ms is not None:
        forget(deployment.id)  # the average moved in Redis: read it afresh
    else:
        _adjust(deployment.id, busy=-1 if call_id else 0, tpm=tokens)
