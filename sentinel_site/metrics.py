"""Prometheus metrics (seed 000 section 7.2.2.2, seed 004 MON-1), for web and worker processes.

Event metrics (counters, histograms) are recorded where things happen. With PROMETHEUS_MULTIPROC_DIR
set (`make run` sets it), every process writes to that folder and the web's /metrics sums them, so
one scrape covers web and worker. State metrics (queue depth, active turns, breaker state, open
dead letters) are read from Redis and PostgreSQL at scrape time, so they are true across hosts; each
process reads them at most once every STATE_TTL_SECONDS, so a scrape storm cannot load the stores.

Every label value is bounded: the provider metrics' endpoint and model come from agents a tenant
configures, so `.labels()` maps them to known values (`provider_label`, `model_label`) before they
reach a time series. A base URL (perhaps with credentials in it) never becomes a label.
Who may scrape is sentinel_site.scrape's business.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

from sentinel_site.redis import broker_client

log = logging.getLogger(__name__)
OPENAI_BASE_URL = "https://api.openai.com/v1"  # what an empty base URL means to the SDK
PRICED_MODELS_TTL_SECONDS = 60.0  # a new global Price row shows up as a model label within this
STATE_TTL_SECONDS = 5.0


class ProviderMetric:
    """A provider metric whose first two labels, endpoint and model, are bounded before use:
    `.labels(endpoint, model, *rest)` records under (provider_label, model_label, *rest)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric

    def labels(self, endpoint: str, model: str, *rest: str):
        return self.metric.labels(provider_label(endpoint), model_label(model), *rest)


def provider_label(endpoint: str) -> str:
    """The provider's label: "default" for the deployment's own; the host when the operator
    allowlisted it by name (SENTINEL["PROVIDER_ALLOWED_HOSTS"], sentinel_site.egress), or the entry
    that admits it (`*.example.com`, `10.20.0.0/16`); else "custom"."""
    conf = settings.SENTINEL
    allowed = conf.get("PROVIDER_ALLOWED_HOSTS") or ()
    return _provider_label(endpoint, conf["LLM_BASE_URL"] or OPENAI_BASE_URL, tuple(str(entry) for entry in allowed))


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl().rstrip("/")


@lru_cache(maxsize=512)
def _provider_label(endpoint: str, default: str, allowed: tuple[str, ...]) -> str:
    try:
        if _without_credentials(endpoint) == _without_credentials(default):  # ProviderConfig.endpoint drops them
            return "default"
    except ValueError:
        return "custom"
    try:
        host = (urlsplit(endpoint).hostname or "").lower()
    except ValueError:
        return "custom"
    if not host:
        return "custom"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (entry.lower() for entry in allowed):
        if entry == host:
            return host
        # A network or a domain is one label, not one per address or subdomain under it.
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return entry
        if address is not None and "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return entry
            except ValueError:
                continue
    return "custom"  # "public" admits any address: too many to name


_priced: tuple[float, frozenset[str]] = (float("-inf"), frozenset())


def model_label(model: str) -> str:
    """The model's name if the operator knows it (the default model, or one with a global Price
    row, which tenants cannot create), else "other"."""
    if model == settings.SENTINEL["LLM_MODEL"] or model in _priced_models():
        return model
    return "other"


def _priced_models() -> frozenset[str]:
    """Models with a global price, read at most once a minute per process. The read runs in its own
    atomic block (a savepoint inside a caller's transaction, which a failed read must not abort),
    and a failed read keeps the last set: a metric label must not break a turn."""
    global _priced
    read_at, models = _priced
    if time.monotonic() - read_at < PRICED_MODELS_TTL_SECONDS:
        return models
    from budgets.models import Price  # metrics is imported while the apps load; Price only after

    try:
        with transaction.atomic():
            models = frozenset(Price.objects.filter(tenant__isnull=True).values_list("model", flat=True))
    except Exception as exc:  # noqa: BLE001 - keep the last set; labels fall back to "other"
        log.warning("could not read the priced models for metric labels: %s", type(exc).__name__)
    _priced = (time.monotonic(), models)
    return models


def forget_label_caches() -> None:
    """Forget the cached label mappings (after the allowlist, the default provider or prices change)."""
    global _priced
    _priced = (float("-inf"), frozenset())
    _provider_label.cache_clear()


TURNS = Counter("sentinel_turns_total", "Turns finished, by status.", ["status"])
TURN_DURATION = Histogram(
    "sentinel_turn_duration_seconds", "From admission to the end of a turn.", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
)
LLM_REQUESTS = ProviderMetric(Counter("sentinel_llm_requests_total", "Provider calls, by outcome.", ["provider", "model", "status"]))
LLM_DURATION = ProviderMetric(
    Histogram(
        "sentinel_llm_request_duration_seconds",
        "Provider call latency.",
        ["provider", "model"],
        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )
)
LLM_TOKENS = ProviderMetric(Counter("sentinel_llm_tokens_total", "Tokens by direction.", ["provider", "model", "type"]))
LLM_COST = ProviderMetric(Counter("sentinel_llm_cost_usd_total", "Settled provider cost in USD.", ["provider", "model"]))
RETRIES = Counter("sentinel_retries_total", "Provider call retries, by reason.", ["reason"])
STREAM_PUBLISH_FAILURES = Counter(
    "sentinel_stream_publish_failures_total", "Turn events that could not reach the live stream (Redis out of reach)."
)
BUDGET_EXCEEDED = Counter("sentinel_budget_exceeded_total", "Requests refused for want of budget.", ["period"])
RATE_LIMITED = Counter("sentinel_rate_limited_total", "Requests refused by a rate limit, by the limit (auth, ip, key, global).", ["scope"])
AUTH_FAILURES = Counter("sentinel_auth_failures_total", "API keys refused, by reason.", ["reason"])
SHED = Counter("sentinel_shed_requests_total", "Requests shed by backpressure.", ["reason"])
DEAD_LETTERED = Counter("sentinel_dead_letters_total", "Turns dead-lettered, by reason.", ["reason"])
CONSOLIDATIONS = Counter("sentinel_consolidation_runs_total", "Dreamer consolidation steps, by status.", ["status"])
CONTEXT_TOKENS = Histogram(
    "sentinel_context_tokens",
    "Tokens of context sent per turn (memory_token_count).",
    buckets=(128, 256, 512, 1024, 2048, 4096, 8192, 16384),
)
GROUP_COMMIT_BATCH = Histogram(
    "sentinel_group_commit_batch_size",
    "Items written per group commit (one transaction, one fsync), by writer.",
    ["writer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
ENQUEUE_BATCH = Histogram(
    "sentinel_enqueue_batch_size", "Turns per broker message the web's outbox sent.", buckets=(1, 2, 4, 8, 16, 32, 64)
)
EMBEDDED_TEXTS = Counter(
    "sentinel_embedded_texts_total",
    "Texts whose vector was asked for, by where it came from: model, prefetch (the model, started earlier), "
    "recent (another call's, kept in Redis) or cache (the embedding cache).",
    ["source"],
)
MEMORY_INDEXED = Counter("sentinel_memory_indexed_total", "Messages and summaries embedded into long-term memory.")
DB_QUERIES = Counter("sentinel_db_queries_total", "SQL statements sent to PostgreSQL, by process kind.", ["process"])


def _count_query(execute, sql, params, many, context):
    DB_QUERIES.labels(settings.PROCESS).inc()
    return execute(sql, params, many, context)


def count_queries(sender, connection, **kwargs) -> None:
    """connection_created receiver: every statement on the connection counts (round trips per turn)."""
    if _count_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_query)


# Each process's connection pool, sampled by a thread of its own every DB_POOL_SAMPLE_SECONDS
# (sentinel_site.db.watch_pool) and summed over the live processes of a kind: `open` connections,
# `checked_out` (held by a thread: a leak shows as a rise here, not in PostgreSQL, where a held
# idle connection looks like a pooled one) and `waiting` (requests waiting for one).
DB_POOL = Gauge(
    "sentinel_db_pool_connections",
    "Database connections of the processes' pools, by process kind and state (open, checked_out, waiting).",
    ["process", "state"],
    multiprocess_mode="livesum",
)
DB_POOL_SAMPLE_SECONDS = 5.0

BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}


class StateCollector:
    """Gauges read from the shared stores, at most once every STATE_TTL_SECONDS per process.

    While one scrape refreshes them, concurrent scrapes answer the previous reading instead of
    queueing more reads; a store that cannot be read leaves its gauge without samples, never fails
    the scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: list[GaugeMetricFamily] = []
        self._read_at = float("-inf")

    def describe(self) -> list:
        return []  # registering must not read the stores

    def collect(self):
        if self._stale() and self._lock.acquire(blocking=not self._families):
            try:
                if self._stale():  # not refreshed by the scrape this one waited for
                    self._families = self.read()
                    self._read_at = time.monotonic()
            finally:
                self._lock.release()
        return iter(self._families)

    def _stale(self) -> bool:
        return time.monotonic() - self._read_at >= STATE_TTL_SECONDS

    def forget(self) -> None:
        self._read_at = float("-inf")

    def read(self) -> list[GaugeMetricFamily]:
        from agents.models import DeadLetter, Turn, TurnStatus  # models load after this module

        queue = GaugeMetricFamily("sentinel_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"])
        active = GaugeMetricFamily("sentinel_active_turns", "Turns running now (active_actors).")
        queued = GaugeMetricFamily("sentinel_queued_turns", "Turns admitted and waiting to run.")
        dead = GaugeMetricFamily("sentinel_dead_letters_open", "Dead letters not re-driven.")
        circuit = GaugeMetricFamily("sentinel_circuit_breaker_state", "0 closed, 1 open, 2 half-open.", labels=["provider"])
        try:
            pipe = broker_client().pipeline(transaction=False)
            names = ("turns", "batches", "webhooks", "memory", "maintenance")
            for name in names:
                pipe.llen(name)
            for name, depth in zip(names, pipe.execute(), strict=True):
                queue.add_metric([name], depth)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail for a store out of reach
            log.warning("queue depth unreadable: %s", type(exc).__name__)
        try:
            running = dict(
                Turn.objects.filter(status__in=[TurnStatus.RUNNING, TurnStatus.QUEUED]).values_list("status").annotate(n=Count("id"))
            )
            active.add_metric([], running.get(TurnStatus.RUNNING, 0))
            queued.add_metric([], running.get(TurnStatus.QUEUED, 0))
            dead.add_metric([], DeadLetter.objects.filter(redriven_at__isnull=True).count())
        except Exception as exc:  # noqa: BLE001 - as above (the pool's timeout is no DatabaseError)
            log.warning("turn gauges unreadable: %s", type(exc).__name__)
        try:
            for label, state in _breaker_states().items():
                circuit.add_metric([label], BREAKER_STATES.get(state, 0))
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("breaker states unreadable: %s", type(exc).__name__)
        return [queue, active, queued, dead, circuit]


def _breaker_states() -> dict[str, str]:
    """{provider label: state}: every label with a breaker not closed (agents.breaker.snapshot, one
    round trip, the worst state per label), and the deployment's own provider always, closed unless
    listed, so its series exists for alerts before anything fails."""
    from agents import breaker  # agents imports this module

    return {"default": "closed", **dict(breaker.snapshot())}


STATE = StateCollector()


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
    else:
        from prometheus_client import REGISTRY

        reg = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):
            reg.register(collector)
    reg.register(STATE)
    return reg
