"""Turn-path benchmarks (issue 6): added latency, throughput, streaming, queue, round trips, resources.

Every comparison runs side by side in one run against the same stub server: a direct call to the
stub is the baseline, Sentinel's /v1/chat/completions (the whole durable turn path) is measured
against it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents import backpressure
from agents.models import Message, Role, Turn, TurnEventRecord, TurnStatus
from bench import anchor, texts, wrk
from bench.harness import (
    BASE_DIR,
    LOGS,
    STATS_SETTLE_S,
    CpuMeter,
    Stack,
    percentile,
    postgres_pids,
    redis_pids,
    rss_mb,
    wal_counters,
)
from budgets import spend
from budgets.models import Reservation


def _direct_body(text: str, stream: bool = False) -> dict:
    body = {"model": "stub-model", "messages": [{"role": "system", "content": "You are a benchmark."}, {"role": "user", "content": text}]}
    return {**body, "stream": True} if stream else body


def _sentinel_body(text: str, stream: bool = False) -> dict:
    return {"model": "bench", "messages": [{"role": "user", "content": text}], "stream": stream}


def _anchor_body(text: str, stream: bool = False) -> dict:
    return {"model": anchor.MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}


# --- 1. added latency -----------------------------------------------------------------------
EMBEDDING_SOURCES = ("model", "prefetch", "recent", "cache")  # sentinel_embedded_texts_total's


@dataclass
class Latency:
    requests: int = 0
    direct_ms: list[float] = field(default_factory=list)
    sentinel_ms: list[float] = field(default_factory=list)
    added_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)  # admission -> a worker starts the turn
    provider_ms: list[float] = field(default_factory=list)
    anchor_added_ms: list[float] = field(default_factory=list)  # LiteLLM's proxy over the same direct call
    db_queries: dict[str, float] = field(default_factory=dict)  # per turn, by process
    embedded: dict[str, float] = field(default_factory=dict)  # texts a vector was asked for per turn, by source
    redis_commands: float = 0.0  # per turn
    redis_top: list[tuple[str, float]] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PHASES})  # ms, per turn
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per turn, by process kind (litellm: per request)
    wal: dict[str, float] = field(default_factory=dict)  # WAL fsyncs, writes, records, bytes per turn (cluster-wide)

    def add(self, other: Latency) -> None:
        """Fold another round of the same lane in: samples appended, per-turn figures weighted by turns."""
        total = self.requests + other.requests
        for name in ("direct_ms", "sentinel_ms", "added_ms", "queue_ms", "provider_ms", "anchor_added_ms"):
            getattr(self, name).extend(getattr(other, name))
        for name in PHASES:
            self.phases[name].extend(other.phases.get(name, []))
        for name in ("db_queries", "embedded", "cpu_ms", "wal"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for key in {*mine, *theirs}:
                mine[key] = (mine.get(key, 0) * self.requests + theirs.get(key, 0) * other.requests) / total
        self.redis_commands = (self.redis_commands * self.requests + other.redis_commands * other.requests) / total
        self.redis_top = other.redis_top if not self.redis_top else self.redis_top
        self.requests = total


# Where a sequential turn's time goes, from timestamps the turn records anyway (one clock: this machine).
PHASES = {
    "admission": "request sent -> turn row created (HTTP, auth, rate limit, validation, agent, budgets)",
    "queue": "turn created -> a worker claims it (commit, reservation, enqueue, Celery, the claim)",
    "context": "claimed -> provider request recorded (history, summaries, query embedding, recall)",
    "provider": "provider request -> response recorded (budget hold, the model call)",
    "reply": "response -> answer received (settle, audit, commit, Redis stream, HTTP)",
}


def _phases(turn: Turn, sent: float, received: float) -> dict[str, float] | None:
    """None when the turn did not record the marks (a lane whose design records them otherwise)."""
    events = {e.kind: e.created_at.timestamp() for e in TurnEventRecord.objects.filter(turn=turn, attempt=turn.attempt)}
    if turn.started_at is None or "provider_request" not in events or "provider_response" not in events:
        return None
    marks = [
        sent,
        turn.created_at.timestamp(),
        turn.started_at.timestamp(),
        events["provider_request"],
        events["provider_response"],
        received,
    ]
    return {name: (marks[i + 1] - marks[i]) * 1000 for i, name in enumerate(PHASES)}


def _meter(stack: Stack, proxy: anchor.LiteLLM | None = None) -> CpuMeter:
    """CPU by stage: web, workers, this run's PostgreSQL, Redis, the stub (and LiteLLM when it runs)."""
    parts: dict = {"web": [stack.pid("web")], "worker": stack.pids("worker"), "postgres": postgres_pids, "redis": redis_pids}
    parts["stub"] = [stack.pid("stub")]
    if proxy is not None:
        parts["litellm"] = proxy.pids()
    return CpuMeter(parts)


def added_latency(stack: Stack, requests: int, proxy: anchor.LiteLLM | None = None, wal: bool = True) -> Latency:
    """Sequential rounds on kept-alive connections: a direct call to the stub, then the same question
    through Sentinel (and then through LiteLLM's proxy, when it runs); each added latency is over the
    direct call of its own round. Every question is a new text. `wal` waits for PostgreSQL's I/O
    statistics to settle before and after (2 x STATS_SETTLE_S) to count WAL fsyncs per turn."""
    stack.stub(latency_ms=0, chunks=1, chunk_ms=0)  # Sentinel streams from the provider: one chunk, no pacing
    result = Latency(requests)
    headers = {"Authorization": f"Bearer {stack.key}"}
    direct_url = f"{stack.stub_url}/chat/completions"
    with (
        httpx.Client(timeout=30) as direct,
        httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as sentinel,
        httpx.Client(base_url=proxy.base_url if proxy else "", headers={"Authorization": f"Bearer {proxy.key if proxy else ''}"}) as lite,
    ):
        for _ in range(20):  # warm every path (connections, caches, the worker's threads)
            direct.post(direct_url, json=_direct_body(texts.distinct()))
            sentinel.post("/v1/chat/completions", json=_sentinel_body(texts.distinct("warm ")))
            if proxy:
                lite.post("/v1/chat/completions", json=_anchor_body(texts.distinct()), timeout=30)
        if wal:
            time.sleep(STATS_SETTLE_S)
        wal_before = wal_counters() if wal else {}
        metrics_before, redis_before = stack.metrics(), stack.redis_commands()
        meter = _meter(stack, proxy)
        meter.start()
        ids, walls = [], []
        for _ in range(requests):
            text = texts.distinct()
            started = time.perf_counter()
            assert direct.post(direct_url, json=_direct_body(text)).status_code == 200
            middle = time.perf_counter()
            sent = time.time()
            response = sentinel.post("/v1/chat/completions", json=_sentinel_body(text))
            walls.append((sent, time.time()))
            ended = time.perf_counter()
            assert response.status_code == 200, response.text
            ids.append(response.headers["Sentinel-Turn-Id"])
            result.direct_ms.append((middle - started) * 1000)
            result.sentinel_ms.append((ended - middle) * 1000)
            result.added_ms.append(result.sentinel_ms[-1] - result.direct_ms[-1])
            if proxy:
                again = time.perf_counter()
                answer = lite.post("/v1/chat/completions", json=_anchor_body(text), timeout=30)
                assert answer.status_code == 200, answer.text
                result.anchor_added_ms.append((time.perf_counter() - again) * 1000 - result.direct_ms[-1])
        meter.stop()
        metrics_after, redis_after = stack.metrics(), stack.redis_commands()
    if wal:
        time.sleep(STATS_SETTLE_S)  # the turns' background work (indexing) and every backend's statistics
        wal_after = wal_counters()
        result.wal = {name: (wal_after[name] - wal_before[name]) / requests for name in wal_after}
    result.cpu_ms = {name: used * 1000 / requests for name, used in meter.used.items()}
    for process in ("web", "worker"):
        key = f"sentinel_db_queries_total{{process={process}}}"
        result.db_queries[process] = (metrics_after.get(key, 0) - metrics_before.get(key, 0)) / requests
    for source in EMBEDDING_SOURCES:
        key = f"sentinel_embedded_texts_total{{source={source}}}"
        result.embedded[source] = (metrics_after.get(key, 0) - metrics_before.get(key, 0)) / requests
    calls = {name: redis_after.get(name, 0) - redis_before.get(name, 0) for name in redis_after}
    calls = {name: n for name, n in calls.items() if n > 0 and name not in ("info", "config|resetstat")}
    result.redis_commands = sum(calls.values()) / requests
    result.redis_top = sorted(((name, n / requests) for name, n in calls.items()), key=lambda kv: -kv[1])[:8]
    turns = {str(turn.id): turn for turn in Turn.objects.filter(id__in=ids)}
    for turn_id, (sent, received) in zip(ids, walls, strict=True):
        turn = turns[turn_id]
        if turn.started_at is not None:
            result.queue_ms.append((turn.started_at - turn.created_at).total_seconds() * 1000)
        result.provider_ms.append(turn.provider_latency_ms or 0)
        for name, value in (_phases(turn, sent, received) or {}).items():
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
    target: str  # "Sentinel" or "LiteLLM"
    clients: int
    stub_latency_ms: int
    seconds: float
    load: wrk.WrkResult
    turns_per_s: float = 0.0  # Sentinel: turns that succeeded within the window, from the database; LiteLLM: 2xx/s
    queue_p50_ms: float = 0.0
    queue_p99_ms: float = 0.0
    cpu: str = ""
    cpu_ms_per_turn: dict[str, float] = field(default_factory=dict)
    rss_peak: dict[str, float] = field(default_factory=dict)
    distinct: tuple[int, int] = (0, 0)  # Sentinel: distinct user texts stored in the window, of user messages stored
    finishes_per_commit: float = 0.0  # Sentinel: turns' finishes written per group commit in the window

    @property
    def rps(self) -> float:
        return self.load.rps

    @property
    def p50_ms(self) -> float:
        return self.load.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.load.p99_ms

    @property
    def success(self) -> float:
        return self.load.success


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


def throughput(stack: Stack, clients: int, stub_latency_ms: int, seconds: float, proxy: anchor.LiteLLM | None = None) -> Throughput:
    """wrk for `seconds` with `clients` open connections, every request a new text, against Sentinel
    or, given `proxy`, against LiteLLM's proxy on the same stub."""
    stack.stub(latency_ms=stub_latency_ms, chunks=1, chunk_ms=0)
    name = "litellm" if proxy else "sentinel"
    if proxy:
        lua, url = wrk.script(LOGS / "chat-litellm.lua", anchor.MODEL, proxy.key), proxy.base_url + "/v1/chat/completions"
        meter = CpuMeter({"litellm": proxy.pids(), "stub": [stack.pid("stub")]})
    else:
        lua, url = wrk.script(LOGS / "chat.lua", "bench", stack.key), stack.base_url + "/v1/chat/completions"
        meter = _meter(stack)
    peaks = {"web": 0.0, "worker": 0.0, "litellm": 0.0}  # the worker: all worker processes together
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            if proxy:
                peaks["litellm"] = max(peaks["litellm"], rss_mb(proxy.process.pid))  # type: ignore[union-attr]
            else:
                peaks["web"] = max(peaks["web"], rss_mb(stack.pid("web")))
                peaks["worker"] = max(peaks["worker"], sum(rss_mb(pid) for pid in stack.pids("worker")))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    metrics_before = {} if proxy else stack.metrics()
    started_at = time.time()
    meter.start()
    sampler.start()
    load = wrk.run(url, lua, clients, seconds, LOGS / f"wrk-{name}-{clients}-{stub_latency_ms}.txt", BASE_DIR)
    meter.stop()
    sampling.set()
    sampler.join()
    result = Throughput("LiteLLM" if proxy else "Sentinel", clients, stub_latency_ms, seconds, load)
    result.cpu = meter.shares()
    result.rss_peak = dict(peaks)
    if proxy:
        result.turns_per_s = load.ok / seconds
        result.cpu_ms_per_turn = {part: used * 1000 / max(1, load.ok) for part, used in meter.used.items()}
        return result
    finished = Turn.objects.filter(
        status=TurnStatus.SUCCEEDED, finished_at__gte=_dt(started_at), finished_at__lte=_dt(started_at + seconds)
    )
    count = finished.count()
    result.turns_per_s = count / seconds
    rows = finished.only("started_at", "created_at")[:20000]
    waits = [(t.started_at - t.created_at).total_seconds() * 1000 for t in rows if t.started_at]
    result.queue_p50_ms, result.queue_p99_ms = percentile(waits, 50), percentile(waits, 99)
    result.cpu_ms_per_turn = {part: used * 1000 / max(1, count) for part, used in meter.used.items()}
    result.finishes_per_commit = _commit_batch(metrics_before, stack.metrics())
    asked = Message.objects.filter(role=Role.USER, content__startswith=f"{texts.RUN}-", created_at__gte=_dt(started_at))
    result.distinct = (asked.values("content").distinct().count(), asked.count())
    drain()
    return result


def _commit_batch(before: dict[str, float], after: dict[str, float]) -> float:
    """Finishes per group commit between two scrapes (0 when the finish writer commits per turn)."""
    total, commits = ("sentinel_group_commit_batch_size_" + part + "{writer=finish}" for part in ("sum", "count"))
    written = after.get(commits, 0) - before.get(commits, 0)
    return (after.get(total, 0) - before.get(total, 0)) / written if written else 0.0


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
    anchor_ttft: list[float] = field(default_factory=list)  # LiteLLM's proxy, same stub, same round
    direct_gaps: list[float] = field(default_factory=list)
    sentinel_gaps: list[float] = field(default_factory=list)
    levels: list[dict] = field(default_factory=list)  # concurrent streams: {streams, ok, ttft p99, gap p99, max gap}


STALL_MS = 1000  # a chunk later than this after the previous one (the stub paces them 20 ms apart) is a stall


async def _streaming(stack: Stack, sequential: int, levels: list[int], proxy: anchor.LiteLLM | None) -> Streaming:
    stack.stub(latency_ms=0, chunks=64, chunk_ms=20)
    result = Streaming()
    auth = {"Authorization": f"Bearer {stack.key}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=60), limits=limits) as client:
        direct_url, sentinel_url = f"{stack.stub_url}/chat/completions", f"{stack.base_url}/v1/chat/completions"
        for i in range(sequential + 3):
            text = texts.distinct()
            direct = await _read_stream(client, direct_url, _direct_body(text, stream=True), {})
            through = await _read_stream(client, sentinel_url, _sentinel_body(text, stream=True), auth)
            if proxy:
                proxy_auth = {"Authorization": f"Bearer {proxy.key}"}
                lite = await _read_stream(client, f"{proxy.base_url}/v1/chat/completions", _anchor_body(text, stream=True), proxy_auth)
                if i >= 3 and lite.ttft_ms is not None and direct.ttft_ms is not None:
                    result.anchor_ttft.append(lite.ttft_ms - direct.ttft_ms)  # added, over this round's direct call
            if i < 3 or direct.ttft_ms is None or through.ttft_ms is None:
                continue  # warm-up
            result.direct_ttft.append(direct.ttft_ms)
            result.sentinel_ttft.append(through.ttft_ms)
            result.direct_gaps += direct.gaps_ms
            result.sentinel_gaps += through.gaps_ms
        for streams in levels:
            runs = await asyncio.gather(
                *(_read_stream(client, sentinel_url, _sentinel_body(texts.distinct("many "), stream=True), auth) for n in range(streams))
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


def streaming(stack: Stack, sequential: int, levels: list[int], proxy: anchor.LiteLLM | None = None) -> Streaming:
    return asyncio.run(_streaming(stack, sequential, levels, proxy))
