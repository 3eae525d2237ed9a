"""Prometheus metrics (seed 000 section 7.2.2.2, seed 004 MON-1), for web and worker processes.

Event metrics (counters, histograms) are recorded where things happen. With PROMETHEUS_MULTIPROC_DIR
set (`make run` sets it), every process writes to that folder and the web's /metrics sums them, so
one scrape covers web and worker. State metrics (queue depth, active turns, breaker state, open
dead letters) are read from Redis and PostgreSQL at scrape time, so they are true across hosts.
"""

from __future__ import annotations

import os
import sys

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

TURNS = Counter("sentinel_turns_total", "Turns finished, by status.", ["status"])
TURN_DURATION = Histogram(
    "sentinel_turn_duration_seconds", "From admission to the end of a turn.", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
)
LLM_REQUESTS = Counter("sentinel_llm_requests_total", "Provider calls, by outcome.", ["provider", "model", "status"])
LLM_DURATION = Histogram(
    "sentinel_llm_request_duration_seconds",
    "Provider call latency.",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LLM_TOKENS = Counter("sentinel_llm_tokens_total", "Tokens by direction.", ["provider", "model", "type"])
LLM_COST = Counter("sentinel_llm_cost_usd_total", "Settled provider cost in USD.", ["provider", "model"])
RETRIES = Counter("sentinel_retries_total", "Provider call retries, by reason.", ["reason"])
STREAM_PUBLISH_FAILURES = Counter(
    "sentinel_stream_publish_failures_total", "Turn events that could not reach the live stream (Redis out of reach)."
)
BUDGET_EXCEEDED = Counter("sentinel_budget_exceeded_total", "Requests refused for want of budget.", ["period"])
RATE_LIMITED = Counter("sentinel_rate_limited_total", "Requests refused by a rate limit.")
SHED = Counter("sentinel_shed_requests_total", "Requests shed by backpressure.", ["reason"])
DEAD_LETTERED = Counter("sentinel_dead_letters_total", "Turns dead-lettered, by reason.", ["reason"])
CONSOLIDATIONS = Counter("sentinel_consolidation_runs_total", "Dreamer consolidation steps, by status.", ["status"])
CONTEXT_TOKENS = Histogram(
    "sentinel_context_tokens",
    "Tokens of context sent per turn (memory_token_count).",
    buckets=(128, 256, 512, 1024, 2048, 4096, 8192, 16384),
)
MEMORY_INDEXED = Counter("sentinel_memory_indexed_total", "Messages and summaries embedded into long-term memory.")
DB_QUERIES = Counter("sentinel_db_queries_total", "SQL statements sent to PostgreSQL, by process kind.", ["process"])
PROCESS_KIND = "worker" if "celery" in " ".join(sys.argv) else "web"


def _count_query(execute, sql, params, many, context):
    DB_QUERIES.labels(PROCESS_KIND).inc()
    return execute(sql, params, many, context)


def count_queries(sender, connection, **kwargs) -> None:
    """connection_created receiver: every statement on the connection counts (round trips per turn)."""
    if _count_query not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_query)


class StateCollector:
    """Gauges read at scrape time from the shared stores."""

    def collect(self):
        from django.conf import settings
        from django.db.models import Count

        from agents import breaker
        from agents.models import DeadLetter, Turn, TurnStatus

        queue = GaugeMetricFamily("sentinel_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"])
        try:
            import redis

            broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1)
            for name in ("turns", "memory", "maintenance"):
                queue.add_metric([name], broker.llen(name))
        except Exception:  # noqa: BLE001 - a scrape must not fail for a missing store
            pass
        yield queue
        active = GaugeMetricFamily("sentinel_active_turns", "Turns running now (active_actors).")
        by_status = dict(
            Turn.objects.filter(status__in=[TurnStatus.RUNNING, TurnStatus.QUEUED]).values_list("status").annotate(n=Count("id"))
        )
        active.add_metric([], by_status.get(TurnStatus.RUNNING, 0))
        yield active
        queued = GaugeMetricFamily("sentinel_queued_turns", "Turns admitted and waiting to run.")
        queued.add_metric([], by_status.get(TurnStatus.QUEUED, 0))
        yield queued
        dead = GaugeMetricFamily("sentinel_dead_letters_open", "Dead letters not re-driven.")
        dead.add_metric([], DeadLetter.objects.filter(redriven_at__isnull=True).count())
        yield dead
        circuit = GaugeMetricFamily("sentinel_circuit_breaker_state", "0 closed, 1 open, 2 half-open.", labels=["provider"])
        for provider, current in breaker.snapshot():
            circuit.add_metric([provider], {"closed": 0, "open": 1, "half_open": 2}[current])
        yield circuit


def registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
    else:
        from prometheus_client import REGISTRY

        reg = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):
            reg.register(collector)
    reg.register(StateCollector())
    return reg


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
