"""Health endpoints: live (the process answers), ready (its dependencies answer), and a summary."""

from __future__ import annotations

import json
import time
from functools import lru_cache

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from sentinel_site.celery import app as celery_app
from sentinel_site.redis import sync_client

# Written by the config reloader (runs/config.py): the file applied, or the one refused and why.
CONFIG_STATUS_KEY = "sentinel:config:status"


def _check(fn) -> dict:
    started = time.monotonic()
    try:
        detail = fn()
    except Exception as exc:  # noqa: BLE001 - a failed dependency is a result here, not an error
        return {"ok": False, "error": type(exc).__name__, "ms": round((time.monotonic() - started) * 1000, 1)}
    result = {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
    if detail:
        result.update(detail)
    return result


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    if row is None:
        raise RuntimeError("pgvector extension missing")
    return {"pgvector": row[0]}


def _redis() -> None:
    sync_client().ping()


def _broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@lru_cache(maxsize=1)
def _quick_client() -> redis.Redis:
    """For /health: a Redis that does not answer within half a second is left out, not waited for."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


def live(request):
    return JsonResponse({"status": "alive"})


def ready(request):
    checks = {"database": _check(_database), "redis": _check(_redis), "broker": _check(_broker)}
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ready" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


def health(request):
    body: dict = {"status": "healthy"}
    try:
        raw = _quick_client().get(CONFIG_STATUS_KEY)
    except redis.RedisError:  # this endpoint answers without its dependencies (ready checks them)
        raw = None
    if raw:
        # An invalid config file is refused and the one before stays: the stack is healthy, and says so.
        body["config"] = json.loads(raw)
    return JsonResponse(body)
