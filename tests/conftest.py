"""Shared fixtures: named tenants (alice, bob), the stub model server, and a live stack.

Tests run against real services: the PostgreSQL with pgvector and the Redis that `make test` starts
or finds, a real HTTP stub of an OpenAI-compatible server, and for end-to-end tests a real uvicorn
web process and a real Celery worker pointed at the test database.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

os.environ.setdefault("SENTINEL_ENV", "test")

from sentinel_site.stack import process_env, web_command, worker_command
from tests.stub_llm import StubLLM

BASE_DIR = Path(__file__).resolve().parent.parent
# Rate limits stay out of the way except in the tests about them (test_rate_limits.py, test_admin_login.py).
UNLIMITED = {"RATE_LIMIT_GLOBAL": 0, "RATE_LIMIT_PER_IP": 0, "RATE_LIMIT_PER_KEY": 0, "AUTH_FAILURES_PER_IP": 0, "ADMIN_LOGIN_FAILURES": 0}
# Provider retries are off except in the tests about them, so one scripted failure is one failure.
NO_RETRIES = {"PROVIDER_RETRIES": 0}
# The stub listens on loopback, which the default egress policy (public addresses only) refuses
# to agents' own URLs; the tests of that policy set their own (tests/agents/test_provider_security.py).
STUB_REACHABLE = {"PROVIDER_ALLOWED_HOSTS": ["127.0.0.1"]}
# The heartbeat thread beats on its own connection, which cannot see a test's uncommitted rows and
# would take a slow in-process turn for one taken back: it stays quiet except in the tests about it
# (tests/agents/test_heartbeat.py, committing) and in the live stack (SENTINEL_HEARTBEAT_SECONDS=1).
QUIET_HEARTBEATS = {"HEARTBEAT_SECONDS": 3600.0}


@pytest.fixture(scope="session")
def stub_llm():
    stub = StubLLM().start()
    yield stub
    stub.stop()


@pytest.fixture(autouse=True)
def _stub_provider(stub_llm, settings):
    """Point the in-process provider at the stub with short timeouts; forget earlier scripts."""
    stub_llm.reset()
    settings.SENTINEL = {
        **settings.SENTINEL,
        "LLM_BASE_URL": stub_llm.base_url,
        "LLM_TIMEOUT": 3.0,
        "LLM_MODEL": "stub-model",
        **UNLIMITED,
        **NO_RETRIES,
        **STUB_REACHABLE,
        **QUIET_HEARTBEATS,
    }


@pytest.fixture(autouse=True)
def _fresh_config_cache():
    """Every test starts with nothing cached in this process (a rolled-back test sends no signals)."""
    from sentinel_site import config_cache

    config_cache.clear()


@pytest.fixture(autouse=True)
def _closed_breakers():
    """Every test starts with closed circuit breakers: the stub is one endpoint for all of them."""
    from agents import breaker
    from sentinel_site.redis import sync_client

    client = sync_client()
    for key in client.scan_iter("sentinel:cb:*"):
        client.delete(key)
    breaker.forget_cached()  # what this process saw of them is gone with them


@pytest.fixture(autouse=True)
def _fresh_rate_counters():
    """Every test starts with no requests or failures counted: the test client is always 127.0.0.1,
    and which failed authentication is audited depends on the count in its window."""
    from sentinel_site.redis import sync_client

    client = sync_client()
    for pattern in ("sentinel:rl:*", "sentinel:login:*"):
        for key in client.scan_iter(pattern, count=1000):
            client.delete(key)


@pytest.fixture
def rate_window(monkeypatch) -> float:
    """Pin the rate limiter's clock one second into a fixed one-minute window, and return it: the
    limits count in windows of the wall clock, so a test whose requests straddle a minute's end
    would see two windows' allowance (4 admitted where 2 are allowed)."""
    from types import SimpleNamespace

    from budgets import ratelimit

    now = (int(time.time()) // ratelimit.WINDOW_SECONDS) * ratelimit.WINDOW_SECONDS + 1.0
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now))
    return now


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_a_deadlock():
    """A transactional test ends with one TRUNCATE of every table. A live stack's worker still
    finishing an earlier test's turn locks a few of them row by row, in another order (a foreign key
    check's share lock), and PostgreSQL breaks the deadlock by failing one side: when that is the
    TRUNCATE, it runs again, instead of leaving the next test the rows (tests/agents/test_outbox.py's
    three turns, seen by the next test of its process)."""
    from django.db import OperationalError
    from django.db.backends.postgresql.operations import DatabaseOperations

    flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(5):
            try:
                return flush(self, sql_list)
            except OperationalError as error:
                if "deadlock detected" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        return None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "execute_sql_flush", execute_sql_flush)
        yield


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    import redis
    from django.conf import settings

    assert settings.SENTINEL_ENV == "test", "tests flush their Redis database; run them with SENTINEL_ENV=test"
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@dataclass
class Actor:
    """A tenant with an API key and an agent: the cast of cross-tenant tests."""

    tenant: object
    api_key: object
    key: str
    agent: object

    @property
    def auth(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.key}"}


def make_actor(name: str, role: str = "developer", agent_name: str = "helper") -> Actor:
    from agents.models import Agent
    from budgets.models import ApiKey, Tenant

    tenant, _ = Tenant.objects.get_or_create(name=name)
    api_key, key = ApiKey.issue(tenant, role=role, name=f"{name}-{role}")
    agent, _ = Agent.objects.get_or_create(tenant=tenant, name=agent_name, defaults={"system_prompt": f"You help {name}."})
    return Actor(tenant=tenant, api_key=api_key, key=key, agent=agent)


@pytest.fixture
def alice(db) -> Actor:
    return make_actor("alice")


@pytest.fixture
def bob(db) -> Actor:
    return make_actor("bob")


# --- the live stack -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LIVE_APPLICATION_NAME = "sentinel-live"


def database_url(db: dict, application_name: str = "") -> str:
    auth = quote(db["USER"]) + (":" + quote(db["PASSWORD"]) if db["PASSWORD"] else "")
    host = db["HOST"]
    extra = f"application_name={application_name}" if application_name else ""
    if host.startswith("/"):
        return f"postgresql://{auth}@/{db['NAME']}?host={quote(host)}" + (f"&{extra}" if extra else "")
    return f"postgresql://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}" + (f"?{extra}" if extra else "")


@dataclass
class LiveStack:
    base_url: str
    web: subprocess.Popen
    worker: subprocess.Popen
    worker_log: Path
    env: dict[str, str]

    @property
    def api(self) -> str:
        return f"{self.base_url}/v1"


def _wait(check, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text()[-4000:] if log else ''}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start in {timeout}s:\n{log.read_text()[-4000:] if log else ''}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_worker(
    env: dict[str, str], log: Path, concurrency: int = 8, queues: str = "turns,batches,webhooks,memory,maintenance"
) -> subprocess.Popen:
    log.write_text("")
    name = f"test-{os.getpid()}-{time.monotonic_ns()}@%h"
    worker = subprocess.Popen(
        worker_command(concurrency, name, "--without-mingle", "--without-gossip", queues=queues),
        cwd=BASE_DIR,
        env=process_env("worker", env),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    _wait(lambda: " ready." in log.read_text(), 60, "the Celery worker", worker, log)
    return worker


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker, stub_llm, tmp_path_factory) -> LiveStack:
    """uvicorn + a Celery worker (threads pool) on the test database, provider = the stub."""
    from django.conf import settings

    logs = tmp_path_factory.mktemp("live")
    prometheus = tmp_path_factory.mktemp("prometheus")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(settings.DATABASES["default"], application_name=LIVE_APPLICATION_NAME),
        "REDIS_URL": settings.REDIS_URL,
        "SENTINEL_ENV": "test",
        "SENTINEL_LLM_BASE_URL": stub_llm.base_url,
        "SENTINEL_LLM_MODEL": "stub-model",
        "SENTINEL_LLM_TIMEOUT": "3",
        "SENTINEL_SYNC_WAIT_SECONDS": "30",
        "SENTINEL_LOG_LEVEL": "INFO",
        "SENTINEL_RATE_LIMIT_GLOBAL": "0",
        "SENTINEL_RATE_LIMIT_PER_IP": "0",
        "SENTINEL_RATE_LIMIT_PER_KEY": "0",
        "SENTINEL_AUTH_FAILURES_PER_IP": "0",
        "SENTINEL_PROVIDER_RETRIES": "0",
        "SENTINEL_PROVIDER_ALLOWED_HOSTS": "127.0.0.1",
        "SENTINEL_UNPRICED_MODELS": "free",
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
        "SENTINEL_HEARTBEAT_SECONDS": "1",
        # Webhook retries a fraction of a second apart, so a test sees the third try (tests/webhooks).
        "SENTINEL_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        # A change made by a test is seen by the live processes at their next lookup, not within 0.25 s.
        "SENTINEL_CONFIG_CHECK_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("OPENAI_API_KEY", None)
    port = free_port()
    web_log = logs / "web.log"
    web = subprocess.Popen(
        web_command("127.0.0.1", port),
        cwd=BASE_DIR,
        env=process_env("web", env),
        stdout=web_log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    worker_log = logs / "worker.log"
    worker = start_worker(env, worker_log)
    base = f"http://127.0.0.1:{port}"
    _wait(lambda: _answers(f"{base}/health/live"), 60, "the web server", web, web_log)
    stack = LiveStack(base_url=base, web=web, worker=worker, worker_log=worker_log, env=env)
    yield stack
    for process in (stack.web, stack.worker):
        process.terminate()
    for process in (stack.web, stack.worker):
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, message: str = "condition"):
    """Tests may poll with a deadline; the product never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
