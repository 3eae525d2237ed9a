"""Health, API docs, start-up validation of settings, and the key command."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from budgets.models import ApiKey

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.django_db
def test_ready_checks_database_pgvector_redis_and_broker():
    body = Client().get("/health/ready").json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "broker"}
    assert body["checks"]["database"]["pgvector"].startswith("0.")


def test_live_and_health_answer_without_dependencies():
    assert Client().get("/health/live").json() == {"status": "alive"}
    assert Client().get("/health").json() == {"status": "healthy"}


@pytest.mark.django_db
def test_ready_answers_503_when_redis_is_down(settings):
    from sentinel_site.celery import app
    from sentinel_site.redis import sync_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    sync_client.cache_clear()
    old = app.conf.broker_url
    app.conf.broker_url = settings.REDIS_URL
    try:
        response = Client().get("/health/ready")
    finally:
        app.conf.broker_url = old
        sync_client.cache_clear()
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False


@pytest.mark.django_db
def test_the_schema_describes_every_endpoint_including_the_streams():
    import yaml

    schema = yaml.safe_load(Client().get("/api/schema/").content)
    paths = schema["paths"]
    for path in [
        "/v1/chat/completions",
        "/v1/turns/{turn_id}/events",
        "/v1/turns/{id}",
        "/v1/models",
        "/v1/agents",
        "/v1/agents/{id}",
        "/v1/conversations",
        "/v1/conversations/{id}",
        "/v1/conversations/{id}/messages",
    ]:
        assert path in paths, f"{path} is missing from the OpenAPI schema"
    chat = paths["/v1/chat/completions"]["post"]["responses"]
    assert "text/event-stream" in chat["200"]["content"] and "202" in chat
    assert "text/event-stream" in paths["/v1/turns/{turn_id}/events"]["get"]["responses"]["200"]["content"]
    assert "ApiKeyAuth" in schema["components"]["securitySchemes"]


def test_the_docs_pages_load_their_assets_locally():
    client = Client()
    for url in ["/api/docs/", "/api/redoc/"]:
        page = client.get(url).content.decode()
        assert "cdn" not in page.lower() and "//unpkg" not in page, f"{url} must not use a CDN"
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("SENTINEL_LLM_TIMEOUT", "soon", "SENTINEL_LLM_TIMEOUT must be a number"),
        ("SENTINEL_DB_POOL_MAX_SIZE", "-1", "SENTINEL_DB_POOL_MAX_SIZE must be at least 0"),
        ("REDIS_URL", "http://localhost", "REDIS_URL must be a URL with scheme"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL must be a postgresql:// URL"),
        ("SENTINEL_ENV", "staging", "SENTINEL_ENV must be one of"),
        ("SENTINEL_DEBUG", "maybe", "SENTINEL_DEBUG must be one of"),
        ("SENTINEL_LLM_BASE_URL", "localhost:8001", "SENTINEL_LLM_BASE_URL must be a URL"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(name, value, message):
    env = {**os.environ, name: value}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]


def test_production_requires_a_secret_key():
    env = {**os.environ, "SENTINEL_ENV": "production", "SENTINEL_SECRET_KEY": "", "SENTINEL_ALLOWED_HOSTS": "x"}
    env.pop("SENTINEL_SECRET_KEY_FILE", None)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert "SENTINEL_SECRET_KEY must be set" in result.stderr


@pytest.mark.django_db
def test_create_api_key_prints_the_key_alone_on_the_last_line():
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "--tenant", "acme", "--role", "viewer", stdout=out, stderr=err)
    key = out.getvalue().strip().splitlines()[-1]
    assert key.startswith("snt_")
    stored = ApiKey.objects.get(tenant__name="acme")
    assert stored.role == "viewer"
    assert key not in (stored.hashed_secret, stored.salt, stored.key_id), "only a hash may be stored"
    assert stored.key_id in key
    assert Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


@pytest.mark.django_db
def test_create_api_key_rejects_a_bad_tenant_name():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="slug"):
        call_command("create_api_key", "--tenant", "Not A Slug", stdout=StringIO(), stderr=StringIO())
    assert not ApiKey.objects.exists()


def test_the_command_prints_the_key_last_when_run_as_a_process(django_db_setup, django_db_blocker):
    from django.conf import settings

    from tests.conftest import database_url

    env = {**os.environ, "DATABASE_URL": database_url(settings.DATABASES["default"])}
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--tenant", "proc-tenant"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("snt_")
    with django_db_blocker.unblock():
        ApiKey.objects.filter(tenant__name="proc-tenant").delete()


def test_manage_py_finds_the_embedded_database_without_database_url():
    """`make run` in one terminal, `python manage.py ...` in another: no DATABASE_URL to know about."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    script = "from django.db import connection; connection.ensure_connection(); print(connection.settings_dict['NAME'])"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines() == ["sentinel"], "the command's own output only, from the embedded database"


def test_every_response_carries_a_request_id_and_keeps_a_well_formed_one():
    generated = Client().get("/health/live")
    assert len(generated["X-Request-Id"]) == 32
    assert Client().get("/health/live", HTTP_X_REQUEST_ID="abc-123")["X-Request-Id"] == "abc-123"
    assert Client().get("/health/live", HTTP_X_REQUEST_ID="bad id\n")["X-Request-Id"] != "bad id\n"


def test_json_logs_carry_the_context_ids_and_extras():
    import json
    import logging

    from sentinel_site import logs

    record = logging.LogRecord("sentinel", logging.INFO, __file__, 1, "turn finished", (), None)
    record.turn = "t-1"
    token = logs.request_id.set("req-9")
    try:
        logs.ContextFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "turn finished" and line["request_id"] == "req-9" and line["turn"] == "t-1"


@pytest.mark.django_db
def test_a_traceparent_follows_the_request_into_its_turn():
    from agents.models import Turn
    from tests.conftest import make_actor

    actor = make_actor("tracy")
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = '{"model": "helper", "messages": [{"role": "user", "content": "hi"}]}'
    Client().post(
        "/v1/chat/completions",
        data=body,
        content_type="application/json",
        HTTP_PREFER="respond-async",
        HTTP_TRACEPARENT=f"00-{trace}-00f067aa0ba902b7-01",
        **actor.auth,
    )
    assert Turn.objects.get().trace_id == trace


def test_a_full_connection_queue_is_overload_and_a_pool_timeout_is_the_database():
    from django import db
    from psycopg_pool import PoolTimeout, TooManyRequests

    from sentinel_site.errors import classify

    wrapped = db.OperationalError("pool full")  # how Django re-raises the pool's error from connect()
    wrapped.__cause__ = TooManyRequests("too many requests")
    for exc in (TooManyRequests("too many requests"), wrapped):
        error = classify(exc)
        assert (error.status, error.type, error.code) == (503, "overloaded", "connections_busy")
        assert int(error.headers["Retry-After"]) > 0
    error = classify(PoolTimeout("couldn't get a connection after 10.00 sec"))
    assert (error.status, error.code) == (503, "database_unavailable"), "the pool is not exhausted: the database is the problem"


@pytest.mark.django_db(transaction=True)
def test_a_pool_timeout_while_every_connection_is_lent_out_is_overload():
    from django.db import connections
    from psycopg_pool import PoolTimeout

    from sentinel_site.errors import classify

    pool = connections["default"].pool
    lent = []
    try:
        with pytest.raises(PoolTimeout) as timed_out:
            while len(lent) <= pool.max_size:  # borrow until the pool has nothing left to lend
                lent.append(pool.getconn(timeout=0.5))
        error = classify(timed_out.value)
        assert (error.status, error.type, error.code) == (503, "overloaded", "connections_busy")
    finally:
        for conn in lent:
            pool.putconn(conn)
    assert classify(PoolTimeout("later")).code == "database_unavailable", "with connections free again, a timeout is the database"


def test_only_the_web_process_bounds_its_connection_queue():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['OPTIONS']['pool'].get('max_waiting'))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sentinel_site.settings", "SENTINEL_DB_POOL_MAX_SIZE": "5"}
    web = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=True)
    assert web.stdout.strip() == "50"
    as_worker = {**env, "SENTINEL_PROCESS": "worker"}  # as sentinel_site.stack starts a Celery worker
    worker = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=as_worker, capture_output=True, text=True, check=True)
    assert worker.stdout.strip() == "None", "a turn must not fail because its worker's threads queue for connections"


def test_make_run_starts_a_web_and_a_worker_process_per_core_unless_told(monkeypatch):
    from sentinel_site import stack

    monkeypatch.delenv("SENTINEL_WORKER_PROCESSES", raising=False)
    assert stack.worker_processes() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SENTINEL_WORKER_PROCESSES", "3")
    assert stack.worker_processes() == 3
    monkeypatch.setenv("SENTINEL_WORKER_PROCESSES", "0")
    with pytest.raises(SystemExit, match="SENTINEL_WORKER_PROCESSES"):
        stack.worker_processes()
    monkeypatch.setenv("SENTINEL_WEB_PROCESSES", "2")
    assert stack.processes("web") == 2
