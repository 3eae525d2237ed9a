"""Rate limits, shared by every API process through Redis, applied before the API key is looked up.

Four limits in fixed one-minute windows, narrowest first: failed authentications per client IP
(SENTINEL_AUTH_FAILURES_PER_IP), requests per client IP, per API key and for the whole API. One Lua
script (one round trip) checks them in that order and counts the request on the IP, key and global
counters only if every one of them admits it: a request refused by a narrower limit costs the wider
ones nothing, so a client over its own limit cannot spend everybody's global budget.

The check runs from the authentication class (budgets.auth), before PostgreSQL is asked about the
key: the key id is read from the presented key's text (`snt_<id>_<secret>`), so an IP that keeps
failing is refused with 429 without a query or an audit entry. A key that then fails to
authenticate is taken back off the key and global counters by `failed()` (an unverified key id
must not spend its owner's budget, nor a flood of bad keys everyone's) and counted as the IP's
failure instead.

With Redis out of reach the API fails closed: the check raises, and the request is answered 503
`redis_unavailable` (sentinel_site.errors). Every turn needs Redis anyway (broker and streams), and
running without the limiter would open the database and the audit log to exactly the floods it
stops.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest
from rest_framework.exceptions import Throttled

from sentinel_site import metrics
from sentinel_site.redis import sync_client

WINDOW_SECONDS = 60

# KEYS: counters, narrowest first. ARGV[i]: the limit of KEYS[i]; ARGV[n + i]: "1" if an admitted
# request counts on KEYS[i] (the failure counter is only read here); ARGV[2n + 1]: the counters' TTL.
# Returns 0 if admitted, else the position of the first counter at its limit.
_ADMIT = """
local n = #KEYS
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[i]) then return i end
end
for i = 1, n do
  if ARGV[n + i] == '1' and redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * n + 1]) end
end
return 0
"""

# KEYS[1]: the IP's failure counter; KEYS[2..]: counters to take the failed request back off (only
# if they still exist: a DECR on an expired key would leave a -1 without a TTL). Returns the count.
_FAILED = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return failures
"""


@dataclass(frozen=True)
class Admission:
    """A request let through: where it was counted, so a failed authentication can be taken back."""

    ip: str
    window: int
    refundable: tuple[str, ...]  # the key and global counters this request was counted on

    @property
    def window_started(self) -> float:
        return self.window * WINDOW_SECONDS


def client_ip(request: HttpRequest) -> str:
    """The client's address (REMOTE_ADDR, already resolved from trusted proxies by
    sentinel_site.middleware.ProxyHeadersMiddleware), as a rate-limit bucket: an IPv6 client is
    its /64, since one host is routinely given a whole /64 and could otherwise rotate freely."""
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return remote


def _counter(kind: str, name: str, window: int) -> str:
    return f"sentinel:rl:{kind}:{name}:{window}"


def admit(ip: str, key_id: str | None, now: float | None = None) -> Admission:
    """Count the request, or raise Throttled (429 with Retry-After) naming no one else's limit."""
    conf = settings.SENTINEL
    now = now or time.time()
    window = int(now // WINDOW_SECONDS)
    scopes = [
        ("auth", _counter("auth", ip, window), conf["AUTH_FAILURES_PER_IP"], False),
        ("ip", _counter("ip", ip, window), conf["RATE_LIMIT_PER_IP"], True),
    ]
    if key_id:
        scopes.append(("key", _counter("key", key_id, window), conf["RATE_LIMIT_PER_KEY"], True))
    scopes.append(("global", _counter("global", "all", window), conf["RATE_LIMIT_GLOBAL"], True))
    scopes = [scope for scope in scopes if scope[2] > 0]  # 0 turns a limit off
    refundable = tuple(key for kind, key, _, _ in scopes if kind in ("key", "global"))
    if not scopes:
        return Admission(ip=ip, window=window, refundable=refundable)
    args = [limit for _, _, limit, _ in scopes] + ["1" if counts else "0" for *_, counts in scopes] + [WINDOW_SECONDS + 1]
    refused = int(_script(_ADMIT)(keys=[key for _, key, _, _ in scopes], args=args))
    if refused:
        kind = scopes[refused - 1][0]
        metrics.RATE_LIMITED.labels(kind).inc()
        wait = max(1, WINDOW_SECONDS - int(now % WINDOW_SECONDS))
        raise Throttled(wait=wait, detail=_MESSAGES[kind])
    return Admission(ip=ip, window=window, refundable=refundable)


def failed(admission: Admission) -> int:
    """Record a failed authentication for the admission's IP and take the request back off the key
    and global counters; returns the IP's failures in this window (one round trip)."""
    keys = [_counter("auth", admission.ip, admission.window), *admission.refundable]
    return int(_script(_FAILED)(keys=keys, args=[WINDOW_SECONDS + 1]))


_MESSAGES = {
    "auth": "Too many failed authentications from your address. Retry after the time in Retry-After.",
    "ip": "Rate limit reached for requests from your address. Retry after the time in Retry-After.",
    "key": "Rate limit reached for your API key. Retry after the time in Retry-After.",
    "global": "Sentinel is at its overall request limit. Retry after the time in Retry-After.",
}

_scripts: dict[tuple[int, str], object] = {}


def _script(source: str):
    """The registered script for this process's Redis client (EVALSHA, loading it on first use)."""
    client = sync_client()
    key = (id(client), source)
    script = _scripts.get(key)
    if script is None:
        script = _scripts[key] = client.register_script(source)
    return script
