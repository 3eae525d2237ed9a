"""The stack a benchmark runs against: the asyncio stub model server, Sentinel's web process and its
Celery worker, on the bench database, with a tenant, a key and an agent; plus what measures them.

Everything a production request goes through is on: authentication, rate limits (set high enough
not to refuse, but counted in Redis on every request), budgets with a real price, the audit chain,
persistence of every event. Only the model is a stub.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from django.conf import settings

from agents.models import Agent
from bench import texts
from budgets.models import ApiKey, Budget, Price, Tenant
from sentinel_site.stack import BASE_DIR, data_dir, process_env, web_command, worker_command

PYTHON = sys.executable
LOGS = BASE_DIR / "var" / "log" / "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {LOGS}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f}s; see {LOGS}")


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.1f} ms, p99 {percentile(values, 99):.1f} ms"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def descendants(pid: int) -> list[int]:
    try:
        kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in descendants(k)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (threads included), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids() -> list[int]:
    """The embedded PostgreSQL's postmaster and its backends when this run started it (var/pgdata),
    so another checkout's database on the same machine is not counted; else every postgres process."""
    try:
        postmaster = int((data_dir() / "pgdata" / "postmaster.pid").read_text().split()[0])
        if Path(f"/proc/{postmaster}").exists():
            return [postmaster, *descendants(postmaster)]
    except (OSError, ValueError, IndexError):
        pass
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def redis_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "redis-server":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def fdatasync_ms(samples: int = 200) -> list[float]:
    """The floor under a durable commit: `os.fdatasync` after a 512-byte write into a preallocated file
    in the data folder (where the embedded PostgreSQL keeps its WAL), as a WAL flush does."""
    path = data_dir() / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, bytes(1 << 20))  # preallocated, as WAL segments are: no size change to journal
        os.fsync(fd)
        block, times = os.urandom(512), []
        for i in range(samples):
            os.pwrite(fd, block, (i * 512) % (1 << 20))
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


# An idle PostgreSQL backend flushes its pending statistics within 1 s (PGSTAT_MIN_INTERVAL; 10 s
# only when the flush found its lock busy): wait this long before reading them.
STATS_SETTLE_S = 2


def wal_counters() -> dict[str, float]:
    """Cluster-wide WAL counters: fsyncs and writes from `pg_stat_io` (PostgreSQL 18 moved them there
    from `pg_stat_wal`), records and bytes from `pg_stat_wal`. Read after STATS_SETTLE_S of quiet."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(fsyncs), 0), coalesce(sum(writes), 0) FROM pg_stat_io WHERE object = 'wal'")
        fsyncs, writes = cursor.fetchone()
        cursor.execute("SELECT wal_records, wal_bytes FROM pg_stat_wal")
        records, size = cursor.fetchone()
    return {"fsyncs": float(fsyncs), "writes": float(writes), "records": float(records), "bytes": float(size)}


@dataclass
class CpuMeter:
    """CPU seconds each part of the system used between start() and stop(). A part is a list of
    process ids, or a function giving them, asked again at stop(): PostgreSQL's backends opened during
    the measurement (a pool growing under load) count from zero, which a list taken at start() missed
    (the soak of HISTORY row 42 counted 0.14 of PostgreSQL's cores that way)."""

    parts: dict[str, list[int] | Callable[[], list[int]]]
    before: dict[str, dict[int, float]] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0

    def _read(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in (pids() if callable(pids) else pids)} for name, pids in self.parts.items()}

    def start(self) -> None:
        self.before, self.wall = self._read(), time.monotonic()

    def stop(self) -> None:
        after, self.wall = self._read(), time.monotonic() - self.wall
        self.used = {
            name: sum(seconds - self.before.get(name, {}).get(pid, 0.0) for pid, seconds in times.items()) for name, times in after.items()
        }

    def shares(self) -> str:
        """Each part's use in cores (of the machine's cores) over the measured interval."""
        cores = os.cpu_count() or 1
        parts = sorted(self.used.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{name} {used / self.wall:.2f}" for name, used in parts if used / self.wall >= 0.01)
        return f"{text} (cores busy, of {cores})"


METRICS_TOKEN = secrets.token_urlsafe(24)


class Stack:
    """Stub + Sentinel web + worker, started once per run and reconfigured between benchmarks."""

    def __init__(self, worker_concurrency: int = 32, workers: int = 2) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.spawned: set[str] = set()
        self.stub_port, self.web_port = free_port(), free_port()
        self.stub_url = f"http://127.0.0.1:{self.stub_port}/v1"
        self.base_url = f"http://127.0.0.1:{self.web_port}"
        self.worker_concurrency = worker_concurrency
        self.workers = workers  # Celery worker processes: one per core, each a threads pool
        self.env = {
            **os.environ,
            "SENTINEL_LLM_BASE_URL": self.stub_url,
            "SENTINEL_LLM_MODEL": "stub-model",
            "SENTINEL_LLM_TIMEOUT": "60",
            "SENTINEL_SYNC_WAIT_SECONDS": "120",
            # On and counted in Redis on every request, but high enough not to refuse a benchmark.
            "SENTINEL_RATE_LIMIT_GLOBAL": "100000000",
            "SENTINEL_RATE_LIMIT_PER_IP": "100000000",
            "SENTINEL_RATE_LIMIT_PER_KEY": "100000000",
            "SENTINEL_MAX_QUEUED_TURNS": os.environ.get("SENTINEL_MAX_QUEUED_TURNS", "5000"),
            "SENTINEL_LOG_LEVEL": "WARNING",
            "SENTINEL_ENV": "production",
            "SENTINEL_ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Plain HTTP on loopback: no TLS to redirect to; the scrape needs the token production asks for.
            "SENTINEL_SSL_REDIRECT": "false",
            "SENTINEL_METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir()),
        }
        self.env.pop("OPENAI_API_KEY", None)
        self.base_env = dict(self.env)
        self.key = ""

    def _metrics_dir(self) -> Path:
        path = BASE_DIR / "var" / "prometheus-bench"
        if path.exists():
            for f in path.iterdir():
                f.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, argv: list[str], kind: str | None = None) -> subprocess.Popen:
        log = (LOGS / f"{name}.log").open("ab" if name in self.spawned else "wb")  # a lane's restart appends
        self.spawned.add(name)
        env = process_env(kind, self.env) if kind else self.env
        process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start(self, overrides: dict[str, str] | None = None) -> Stack:
        self.env = {**self.base_env, **(overrides or {})}
        try:
            return self._start()
        except BaseException:
            self.stop()  # a half-started stack must not live on into the next run (a stale worker took half its turns)
            raise

    def _start(self) -> Stack:
        self.seed()
        stub = self._spawn("stub", [PYTHON, "-m", "bench.stub_server", "--port", str(self.stub_port)])
        wait_http(f"{self.stub_url}/models", 30, "the stub server", stub)
        self._start_sentinel()
        return self

    def restart(self, overrides: dict[str, str]) -> None:
        """Web and workers again with these settings over the bench's own (a lane), on the same stub and
        database: what `--lanes` alternates between rounds."""
        self._stop({name: p for name, p in self.processes.items() if name != "stub"})
        self.processes = {name: p for name, p in self.processes.items() if name == "stub"}
        self.env = {**self.base_env, **overrides}
        self._start_sentinel()

    def _start_sentinel(self) -> None:
        web = self._spawn("web", [*web_command("127.0.0.1", self.web_port), "--backlog", "4096"], kind="web")
        # A lane may set the worker processes and their threads (`--lanes a: b:SENTINEL_BENCH_WORKERS=4`).
        workers = int(self.env.get("SENTINEL_BENCH_WORKERS", self.workers))
        concurrency = int(self.env.get("SENTINEL_BENCH_WORKER_CONCURRENCY", self.worker_concurrency))
        # And the batches queue its own processes at a lower CPU priority (`SENTINEL_BENCH_BATCH_WORKERS=1`: bench/batch_bench.py).
        batch_workers = int(self.env.get("SENTINEL_BENCH_BATCH_WORKERS", "0"))
        queues = {"queues": "turns,webhooks,memory,maintenance"} if batch_workers else {}
        for n in range(workers):
            name = "worker" if n == 0 else f"worker{n + 1}"
            argv = worker_command(concurrency, f"bench{n}-{os.getpid()}@%h", "--without-mingle", "--without-gossip", **queues)
            self._spawn(name, argv, kind="worker")
        for n in range(batch_workers):
            argv = worker_command(concurrency, f"batch{n}-{os.getpid()}@%h", "--without-mingle", "--without-gossip", queues="batches")
            self._spawn(f"batch-worker{n + 1}", ["nice", "-n", "10", *argv], kind="worker")
        wait_http(f"{self.base_url}/health/live", 60, "the web server", web)
        self.wait_worker()

    def wait_worker(self) -> None:
        """Ready when a turn goes through end to end."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if any(p.poll() is not None for name, p in self.processes.items() if name.startswith("worker")):
                raise RuntimeError(f"the worker exited; see {LOGS}/worker.log")
            try:
                self.chat(texts.distinct("warm up "))
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("no turn completed within 90 s of starting the worker")

    def seed(self) -> None:
        """A tenant with a developer key, an agent, a real price and budgets large enough to run."""
        tenant, _ = Tenant.objects.get_or_create(name="bench")
        _, self.key = ApiKey.issue(tenant, role="developer", name="bench")
        Agent.objects.get_or_create(tenant=tenant, name="bench", defaults={"system_prompt": "You are a benchmark."})
        Price.objects.update_or_create(
            tenant=None, model="stub-model", endpoint="", defaults={"input_per_mtok": Decimal("0.15"), "output_per_mtok": Decimal("0.60")}
        )
        Budget.objects.filter(tenant=tenant).update(limit=Decimal("1000000"))

    def stub(self, **settings_: float) -> None:
        post_json(f"http://127.0.0.1:{self.stub_port}/control", settings_)

    def chat(self, content: str, stream: bool = False) -> dict:
        request = urllib.request.Request(
            f"{self.base_url}/v1/chat/completions",
            data=json.dumps({"model": "bench", "messages": [{"role": "user", "content": content}], "stream": stream}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def pids(self, prefix: str) -> list[int]:
        return [p.pid for name, p in self.processes.items() if name.startswith(prefix)]

    def metrics(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        scrape = urllib.request.Request(f"{self.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        for attempt in range(4):  # right after an overload run the web may still be draining the requests it admitted
            try:
                with urllib.request.urlopen(scrape, timeout=15) as response:
                    text = response.read().decode()
                break
            except TimeoutError:
                if attempt == 3:
                    raise
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{label}}}"] = sample.value
        return values

    def redis_commands(self) -> dict[str, int]:
        import redis

        info = redis.Redis.from_url(settings.REDIS_URL).info("commandstats")
        return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}

    def stop(self) -> None:
        self._stop(self.processes)

    @staticmethod
    def _stop(processes: dict[str, subprocess.Popen]) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
