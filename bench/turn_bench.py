"""Turn-path benchmarks (issue 6): added latency, throughput, streaming, queue, round trips, resources.

Every comparison runs side by side in one run against the same stub server: a direct call to the
stub is the baseline, Sentinel's /v1/chat/completions (the whole durable turn path) is measured
against it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents import backpressure
from agents.models import Turn, TurnEventRecord, TurnStatus
from bench.harness import BASE_DIR, LOGS, CpuMeter, Stack, percentile, postgres_pids, redis_pids, rss_mb
from budgets import spend
from budgets.models import Reservation

BODY_DIRECT = {
    "model": "stub-model",
    "messages": [{"role": "system", "content": "You are a benchmark."}, {"role": "user", "content": "hi"}],
}


def _sentinel_body(text: str = "hi", stream: bool = False) -> dict:
    return {"model": "bench", "messages": [{"role": "user", "content": text}], "stream": stream}


# --- 1. added latency -----------------------------------------------------------------------
@dataclass
class Latency:
    requests: int
    direct_ms: list[float] = field(default_factory=list)
    sentinel_ms: list[float] = field(default_factory=list)
    added_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)  # admission -> a worker starts the turn
    provider_ms: list[float] = field(default_factory=list)
    db_queries: dict[str, float] = field(default_factory=dict)  # per turn, by process
    redis_commands: float = 0.0  # per turn
    redis_top: list[tuple[str, float]] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)  # where each turn's time went, ms
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per turn, by process kind


# Where a sequential turn's time goes, from timestamps the turn records anyway (one clock: this machine).
PHASES = {
    "admission": "request sent -> turn row created (HTTP, auth, rate limit, validation, agent, budgets)",
    "queue": "turn created -> a worker claims it (commit, reservation, enqueue, Celery, the claim)",
    "context": "claimed -> provider request recorded (history, summaries, query embedding, recall)",
    "provider": "provider request -> response recorded (budget hold, the model call)",
    "reply": "response -> answer received (settle, audit, commit, Redis stream, HTTP)",
}


def _phases(turn: Turn, sent: float, received: float) -> dict[str, float]:
    events = {e.kind: e.created_at.timestamp() for e in TurnEventRecord.objects.filter(turn=turn, attempt=turn.attempt)}
    marks = [
        sent,
        turn.created_at.timestamp(),
        turn.started_at.timestamp(),
        events["provider_request"],
        events["provider_response"],
        received,
    ]
    return {name: (marks[i + 1] - marks[i]) * 1000 for i, name in enumerate(PHASES)}


def added_latency(stack: Stack, requests: int) -> Latency:
    """Sequential pairs, direct then through Sentinel, on kept-alive connections."""
    stack.stub(latency_ms=0, chunks=1, chunk_ms=0)  # Sentinel streams from the provider: one chunk, no pacing
    result = Latency(requests)
    headers = {"Authorization": f"Bearer {stack.key}"}
    with httpx.Client(timeout=30) as direct, httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as sentinel:
        for _ in range(20):  # warm both paths (connections, caches, the worker's threads)
            direct.post(f"{stack.stub_url}/chat/completions", json=BODY_DIRECT)
            sentinel.post("/v1/chat/completions", json=_sentinel_body())
        metrics_before, redis_before = stack.metrics(), stack.redis_commands()
        meter = CpuMeter({"web": [stack.pid("web")], "worker": stack.pids("worker"), "postgres": postgres_pids(), "redis": redis_pids()})
        meter.start()
        ids, walls = [], []
        for i in range(requests):
            started = time.perf_counter()
            assert direct.post(f"{stack.stub_url}/chat/completions", json=BODY_DIRECT).status_code == 200
            middle = time.perf_counter()
            sent = time.time()
            response = sentinel.post("/v1/chat/completions", json=_sentinel_body(f"question {i}"))
            walls.append((sent, time.time()))
            ended = time.perf_counter()
            assert response.status_code == 200, response.text
            ids.append(response.headers["Sentinel-Turn-Id"])
            result.direct_ms.append((middle - started) * 1000)
            result.sentinel_ms.append((ended - middle) * 1000)
            result.added_ms.append(result.sentinel_ms[-1] - result.direct_ms[-1])
        meter.stop()
        metrics_after, redis_after = stack.metrics(), stack.redis_commands()
    result.cpu_ms = {name: used * 1000 / requests for name, used in meter.used.items()}
    for process in ("web", "worker"):
        key = f"sentinel_db_queries_total{{process={process}}}"
        result.db_queries[process] = (metrics_after.get(key, 0) - metrics_before.get(key, 0)) / requests
    calls = {name: redis_after.get(name, 0) - redis_before.get(name, 0) for name in redis_after}
    calls = {name: n for name, n in calls.items() if n > 0 and name not in ("info", "config|resetstat")}
    result.redis_commands = sum(calls.values()) / requests
    result.redis_top = sorted(((name, n / requests) for name, n in calls.items()), key=lambda kv: -kv[1])[:8]
    turns = {str(turn.id): turn for turn in Turn.objects.filter(id__in=ids)}
    result.phases = {name: [] for name in PHASES}
    for turn_id, (sent, received) in zip(ids, walls, strict=True):
        turn = turns[turn_id]
        result.queue_ms.append((turn.started_at - turn.created_at).total_seconds() * 1000)
        result.provider_ms.append(turn.provider_latency_ms or 0)
        for name, value in _phases(turn, sent, received).items():
            result.phases[name].append(value)
    return result


@dataclass
class StatementCost:
    orm_ms: float  # one ORM read of a turn by primary key, start to finish
    build_ms: float  # of which Django builds and compiles the SQL (no database involved)
    raw_ms: float  # `SELECT 1` on the same connection: the round trip alone


def statement_cost(repeat: int = 300) -> StatementCost:
    """What one SQL statement costs a Python process here, split into Django's part and the round trip."""
    missing = "00000000-0000-0000-0000-000000000000"

    def orm() -> None:
        Turn.objects.filter(id=missing).first()

    def build() -> None:
        Turn.objects.filter(id=missing).order_by("pk")[:1].query.get_compiler("default").as_sql()

    def raw() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def timed(step) -> float:
        step()
        started = time.perf_counter()
        for _ in range(repeat):
            step()
        return (time.perf_counter() - started) * 1000 / repeat

    return StatementCost(orm_ms=timed(orm), build_ms=timed(build), raw_ms=timed(raw))


# --- 2. throughput (wrk) --------------------------------------------------------------------
@dataclass
class Throughput:
    clients: int
    stub_latency_ms: int
    seconds: float
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    turns_per_s: float = 0.0
    queue_p50_ms: float = 0.0
    queue_p99_ms: float = 0.0
    cpu: str = ""
    cpu_ms_per_turn: dict[str, float] = field(default_factory=dict)
    rss_peak: dict[str, float] = field(default_factory=dict)

    @property
    def success(self) -> float:
        return (self.requests - self.non_2xx) / self.requests if self.requests else 0.0


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"model": "bench", "messages": [{"role": "user", "content": "hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def _unit_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def drain(timeout: float = 180) -> None:
    """End a run so the next does not inherit its backlog: turns still queued are cancelled (their
    broker messages dropped, their budget holds released), turns running are let finish."""
    try:
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(backpressure.TURN_QUEUE)
        queued = Turn.objects.filter(status=TurnStatus.QUEUED)
        for reservation_id in Reservation.objects.filter(turn__in=queued, status=Reservation.Status.HELD).values_list("id", flat=True):
            spend.release(reservation_id)
        queued.update(status=TurnStatus.CANCELLED, finished_at=timezone.now())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Turn.objects.filter(status__in=[TurnStatus.QUEUED, TurnStatus.RUNNING]).exists():
                return
            time.sleep(0.5)
    finally:
        connection.close()  # called from helper threads too: give their connection back to the pool


def throughput(stack: Stack, clients: int, stub_latency_ms: int, seconds: float) -> Throughput:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs it)")
    stack.stub(latency_ms=stub_latency_ms, chunks=1, chunk_ms=0)
    script = LOGS / "chat.lua"
    script.write_text(WRK_SCRIPT % stack.key)
    result = Throughput(clients, stub_latency_ms, seconds)
    meter = CpuMeter(
        {
            "web": [stack.pid("web")],
            "worker": stack.pids("worker"),
            "postgres": postgres_pids(),
            "redis": redis_pids(),
            "stub": [stack.pid("stub")],
        }
    )
    peaks = {"web": 0.0, "worker": 0.0}  # the worker: all worker processes together
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peaks["web"] = max(peaks["web"], rss_mb(stack.pid("web")))
            peaks["worker"] = max(peaks["worker"], sum(rss_mb(pid) for pid in stack.pids("worker")))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    started_at = time.time()
    meter.start()
    sampler.start()
    argv = [
        "wrk",
        "-t2",
        f"-c{clients}",
        f"-d{seconds:.0f}s",
        "--timeout",
        "60s",
        "--latency",
        "-s",
        str(script),
        stack.base_url + "/v1/chat/completions",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=BASE_DIR).stdout
    meter.stop()
    sampling.set()
    sampler.join()
    (LOGS / f"wrk-{clients}-{stub_latency_ms}.txt").write_text(out)
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        result.requests = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result.socket_errors = sum(int(g) for g in m.groups())
        result.non_2xx += int(m.group(4))  # timed out requests are failures too
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result.rps = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        result.p50_ms = _unit_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        result.p99_ms = _unit_ms(m.group(1))
    finished = Turn.objects.filter(
        status=TurnStatus.SUCCEEDED, finished_at__gte=_dt(started_at), finished_at__lte=_dt(started_at + seconds)
    )
    result.turns_per_s = finished.count() / seconds
    waits = [(t.started_at - t.created_at).total_seconds() * 1000 for t in finished.only("started_at", "created_at")[:20000]]
    result.queue_p50_ms, result.queue_p99_ms = percentile(waits, 50), percentile(waits, 99)
    result.cpu = meter.shares()
    result.cpu_ms_per_turn = {name: used * 1000 / max(1, finished.count()) for name, used in meter.used.items()}
    result.rss_peak = dict(peaks)
    drain()
    return result


def _dt(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


# --- 3. streaming ---------------------------------------------------------------------------
@dataclass
class StreamRun:
    ttft_ms: float | None = None
    gaps_ms: list[float] = field(default_factory=list)
    chunks: int = 0
    done: bool = False
    error: str = ""


async def _read_stream(client: httpx.AsyncClient, url: str, body: dict, headers: dict) -> StreamRun:
    run = StreamRun()
    started = time.perf_counter()
    last = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                run.error = f"HTTP {response.status_code}"
                return run
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    run.done = True
                    break
                choices = json.loads(line[6:]).get("choices") or [{}]
                if not (choices[0].get("delta") or {}).get("content"):
                    continue  # the role chunk, the finish chunk: not tokens
                now = time.perf_counter()
                if run.ttft_ms is None:
                    run.ttft_ms = (now - started) * 1000
                elif last is not None:
                    run.gaps_ms.append((now - last) * 1000)
                last = now
                run.chunks += 1
    except httpx.HTTPError as exc:
        run.error = type(exc).__name__
    return run


@dataclass
class Streaming:
    direct_ttft: list[float] = field(default_factory=list)
    sentinel_ttft: list[float] = field(default_factory=list)
    direct_gaps: list[float] = field(default_factory=list)
    sentinel_gaps: list[float] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)  # concurrent streams: {streams, ok, ttft p99, gap p99, max gap}


STALL_MS = 1000  # a chunk later than this after the previous one (the stub paces them 20 ms apart) is a stall


async def _streaming(stack: Stack, sequential: int, levels: list[int]) -> Streaming:
    stack.stub(latency_ms=0, chunks=64, chunk_ms=20)
    result = Streaming()
    auth = {"Authorization": f"Bearer {stack.key}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=60), limits=limits) as client:
        direct_url, sentinel_url = f"{stack.stub_url}/chat/completions", f"{stack.base_url}/v1/chat/completions"
        for i in range(sequential + 3):
            direct = await _read_stream(client, direct_url, {**BODY_DIRECT, "stream": True}, {})
            through = await _read_stream(client, sentinel_url, _sentinel_body(f"stream {i}", stream=True), auth)
            if i < 3 or direct.ttft_ms is None or through.ttft_ms is None:
                continue  # warm-up
            result.direct_ttft.append(direct.ttft_ms)
            result.sentinel_ttft.append(through.ttft_ms)
            result.direct_gaps += direct.gaps_ms
            result.sentinel_gaps += through.gaps_ms
        for streams in levels:
            runs = await asyncio.gather(
                *(_read_stream(client, sentinel_url, _sentinel_body(f"many {n}", stream=True), auth) for n in range(streams))
            )
            gaps = [g for r in runs for g in r.gaps_ms]
            ttfts = [r.ttft_ms for r in runs if r.ttft_ms is not None]
            ok = sum(1 for r in runs if r.done and r.chunks == 64 and max(r.gaps_ms or [0]) < STALL_MS)
            result.levels.append(
                {
                    "streams": streams,
                    "ok": ok,
                    "ttft_p50": percentile(ttfts, 50),
                    "ttft_p99": percentile(ttfts, 99),
                    "gap_p99": percentile(gaps, 99),
                    "gap_max": max(gaps or [0]),
                    "errors": sorted({r.error for r in runs if r.error}),
                }
            )
            await asyncio.to_thread(drain)
            if ok < streams:
                break  # past the first level that stalls, the next ones only stall more
    return result


def streaming(stack: Stack, sequential: int, levels: list[int]) -> Streaming:
    return asyncio.run(_streaming(stack, sequential, levels))
