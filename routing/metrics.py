"""Routing's Prometheus metrics: event counters recorded where the response cache and shared
streams decide (the registry and the multiprocess folder are sentinel_site.metrics's)."""

from prometheus_client import Counter, Histogram

from routing.groups import DeploymentSpec, GroupSpec

CACHE_LOOKUPS = Counter("sentinel_cache_lookups_total", "Response cache lookups, by result (hit, miss).", ["result"])
DEDUP_REQUESTS = Counter(
    "sentinel_dedup_requests_total",
    "Requests eligible for a shared stream, by role (leader: called the provider, shared: rode a twin).",
    ["role"],
)
DEPLOYMENT_CALLS = Counter(
    "sentinel_deployment_calls_total", "Routed provider calls by deployment and outcome (ok, or the error code).", ["deployment", "outcome"]
)
DEPLOYMENT_LATENCY = Histogram(
    "sentinel_deployment_latency_seconds",
    "Routed calls' latency to the first token (or the whole answer), by deployment.",
    ["deployment"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DEPLOYMENT_COST = Counter("sentinel_deployment_cost_usd_total", "Routed calls' cost at price, by deployment.", ["deployment"])


def deployment_label(group: GroupSpec, deployment: DeploymentSpec) -> str:
    """A bounded label: the operator's (global) deployments by name; every tenant's own ones are one
    value, `tenant` (tenants name theirs freely: their names must not grow the series)."""
    return f"{group.name}/{deployment.name}" if group.tenant_id is None else "tenant"
