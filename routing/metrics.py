"""Routing's Prometheus metrics: event counters recorded where the response cache and shared
streams decide (the registry and the multiprocess folder are sentinel_site.metrics's)."""

from prometheus_client import Counter

CACHE_LOOKUPS = Counter("sentinel_cache_lookups_total", "Response cache lookups, by result (hit, miss).", ["result"])
DEDUP_REQUESTS = Counter(
    "sentinel_dedup_requests_total",
    "Requests eligible for a shared stream, by role (leader: called the provider, shared: rode a twin).",
    ["role"],
)
