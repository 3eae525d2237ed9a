"""Bounded soak (issue 18, seed 004): many concurrent conversations at a steady rate for a long
time, with what must stay flat sampled over it; the run fails if anything grows without bound.

    make bench BENCH_ARGS=--only=soak                        1,000 conversations, 8 turns/s, 10 minutes
    make bench BENCH_ARGS="--only=soak --soak-seconds=60"    the same shape, one minute
    (--soak-conversations=N, --soak-rate=turns/s; --quick: 200 conversations, 8 turns/s, 60 s)

Each conversation is a client that sends its next turn (non-streaming, in the same conversation, so
its context grows as a real one does) on its own schedule, one turn in flight at most: together
they offer `rate` turns/s whatever the latency. Sampled every few seconds: resident memory of the
web process and of the worker processes, PostgreSQL connections open to the database, queue depth
(turns queued in the database, and the broker's turn queue), turns finished and errors.

The verdict is a slope test over the steady part of the run (after the warm-up: the first quarter,
and at least WARM_UP_MIN_S, the time the processes' connection pools take to open their connections
as the load first arrives; a one-minute run first showed them still opening at 26 s):
a least-squares line through each series, and its rise across that part must stay within the
series' allowance (`LIMITS`: RSS 10% of its level or 32 MiB, connections 4, queue depth 50 turns or
half its level). Errors must stay under 1% of the turns. A leak shows as a rise that a flat series
does not have; a noisy one stays inside its allowance.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field

import httpx
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.backpressure import TURN_QUEUE
from agents.models import Turn, TurnStatus
from bench import soak_plot, texts, turn_bench
from bench.harness import CpuMeter, Stack, postgres_pids, redis_pids, rss_mb
from sentinel_site.stack import BASE_DIR

HEADING = "## Soak: memory, connections and queue over time (issue 18)"
PLOT = BASE_DIR / "docs" / "soak.svg"
WARM_UP_SHARE = 0.25
WARM_UP_MIN_S = 30.0
ERROR_BOUND = 0.01
# series: (allowed rise as a share of its level, or at least this much in its unit)
LIMITS = {
    "web RSS (MiB)": (0.10, 32.0),
    "workers RSS (MiB)": (0.10, 32.0),
    "pool connections checked out": (0.0, 4.0),
    "queue depth": (0.5, 50.0),
}
# PostgreSQL's count of open connections is not slope-tested: each process's pool opens connections
# as bursts ask for them, up to its size, and keeps them (psycopg_pool closes idle ones after 10
# minutes), so a healthy run's count climbs to the pools' ceiling and stays. It must stay under that
# ceiling; a leak (a connection a thread took and never gave back) shows in the pools' checked-out
# count, which PostgreSQL cannot tell from an idle pooled connection.
OPEN = "PG connections"


@dataclass
class Sample:
    at: float  # seconds since the load started
    series: dict[str, float]
    finished: int
    errors: int


@dataclass
class Soak:
    conversations: int
    rate: float
    seconds: float
    connection_ceiling: int = 0  # the processes' pools together (0: not known, not checked)
    scrape_timeouts: int = 0  # samples whose /metrics scrape did not answer in time (the last reading stood)
    samples: list[Sample] = field(default_factory=list)
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    cpu: str = ""  # cores busy by stage over the run (CpuMeter.shares)
    cpu_per_turn_ms: dict[str, float] = field(default_factory=dict)
    phases: list[tuple[str, int, float, float]] = field(default_factory=list)  # (window, turns, queue p50 ms, run p50 ms)
    scans: dict[str, float] = field(default_factory=dict)  # memory_memory's pg_stat_user_tables deltas over the run
    memories: int = 0  # the soak agent's memories at the end


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) points, in units per second."""
    if len(points) < 3:
        return 0.0
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    spread = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (v - mv) for t, v in points) / spread if spread else 0.0


def warm_up(soak: Soak) -> float:
    return min(max(soak.seconds * WARM_UP_SHARE, WARM_UP_MIN_S), soak.seconds / 2)


def verdicts(soak: Soak) -> list[tuple[str, float, float, bool]]:
    """(series, its fitted rise across the steady part, the allowance, within it) for every series."""
    steady = [s for s in soak.samples if s.at >= warm_up(soak)]
    if len(steady) < 3:
        return []
    span = steady[-1].at - steady[0].at
    found = []
    for name, (share, floor) in LIMITS.items():
        points = [(s.at, s.series[name]) for s in steady]
        rise = slope(points) * span
        allowed = max(floor, share * statistics.fmean(v for _, v in points))
        found.append((name, rise, allowed, rise <= allowed))
    return found


def ceiling_verdict(soak: Soak) -> tuple[float, int, bool] | None:
    """(the most connections open at once, the pools' ceiling, within it), if the ceiling is known."""
    if not soak.connection_ceiling or not soak.samples:
        return None
    peak = max(s.series.get(OPEN, 0.0) for s in soak.samples)
    return peak, soak.connection_ceiling, peak <= soak.connection_ceiling


def error_rate(soak: Soak) -> float:
    return sum(soak.errors.values()) / soak.sent if soak.sent else 0.0


def failed(soak: Soak) -> bool:
    ceiling = ceiling_verdict(soak)
    return (
        error_rate(soak) > ERROR_BOUND
        or not all(ok for *_, ok in verdicts(soak))
        or not soak.samples
        or (ceiling is not None and not ceiling[2])
    )


# --- the load ------------------------------------------------------------------------------------
async def _conversation(client: httpx.AsyncClient, stack: Stack, soak: Soak, n: int, until: float) -> None:
    interval = soak.conversations / soak.rate
    conversation_id = None
    next_at = time.monotonic() + random.uniform(0, interval)  # spread the starts: a steady rate from the first second
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if time.monotonic() >= until:
            return
        next_at += interval
        body: dict = {"model": "bench", "messages": [{"role": "user", "content": texts.distinct(f"soak {n} ")}]}
        if conversation_id:
            body["conversation"] = conversation_id
        soak.sent += 1
        started = time.perf_counter()
        try:
            response = await client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as error:
            soak.errors[type(error).__name__] = soak.errors.get(type(error).__name__, 0) + 1
            continue
        if response.status_code == 200:
            soak.ok += 1
            soak.latencies_ms.append((time.perf_counter() - started) * 1000)
            conversation_id = response.headers.get("Sentinel-Conversation-Id", conversation_id)
        else:
            soak.errors[str(response.status_code)] = soak.errors.get(str(response.status_code), 0) + 1


def _measure(stack: Stack, broker: redis.Redis) -> dict[str, float]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        connections = cursor.fetchone()[0]
    queued = Turn.objects.filter(status=TurnStatus.QUEUED).count() + broker.llen(TURN_QUEUE)
    try:
        pools = stack.metrics()
    except OSError:  # a scrape that timed out under the load: the pools' last reading stands
        pools = {}
    return {
        "web RSS (MiB)": rss_mb(stack.pid("web")),
        "workers RSS (MiB)": sum(rss_mb(pid) for pid in stack.pids("worker")),
        "pool connections checked out": sum(value for name, value in pools.items() if _checked_out(name)) if pools else float("nan"),
        OPEN: float(connections),
        "queue depth": float(queued),
    }


POOL_CHECKED_OUT = "sentinel_db_pool_connections{process="  # every process kind's; then ",state=checked_out}"


def _checked_out(name: str) -> bool:
    return name.startswith(POOL_CHECKED_OUT) and name.endswith("state=checked_out}")


async def _sampler(stack: Stack, soak: Soak, started: float, until: float, every: float) -> None:
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    while time.monotonic() < until + every / 2:
        series = await asyncio.to_thread(_measure, stack, broker)
        if math.isnan(series["pool connections checked out"]):
            soak.scrape_timeouts += 1
            series["pool connections checked out"] = soak.samples[-1].series["pool connections checked out"] if soak.samples else 0.0
        soak.samples.append(Sample(time.monotonic() - started, series, soak.ok, sum(soak.errors.values())))
        await asyncio.sleep(every)


async def _run(stack: Stack, soak: Soak) -> None:
    limits = httpx.Limits(max_connections=soak.conversations + 8, max_keepalive_connections=soak.conversations + 8)
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, limits=limits, timeout=120) as client:
        started = time.monotonic()
        until = started + soak.seconds
        every = max(2.0, soak.seconds / 60)
        sampler = asyncio.create_task(_sampler(stack, soak, started, until, every))
        await asyncio.gather(*(_conversation(client, stack, soak, n, until) for n in range(soak.conversations)))
        await sampler


def run(quick: bool, seconds: float = 0, conversations: int = 0, rate: float = 0) -> tuple[list[str], bool]:
    """The soak's section, and whether it failed."""
    soak = Soak(
        conversations=conversations or (200 if quick else 1000),
        # A soak looks for growth at a load the machine carries: two cores carried 12.7 turns/s of this
        # soak with both full (bench/HISTORY.md row 45), so the default offers about 60% of that. More
        # (--soak-rate) measures capacity: the queue and the pools' checked-out count then rise, as they should.
        rate=rate or 8.0,
        seconds=seconds or (60.0 if quick else 600.0),
    )
    stack = Stack().start()
    try:
        stack.stub(latency_ms=50, chunks=1, chunk_ms=0)
        # Sentinel's processes and this one (its sampler reads through Django), a pool each.
        soak.connection_ceiling = (len([name for name in stack.processes if name != "stub"]) + 1) * settings.DB_POOL_MAX_SIZE
        print(f"  {soak.conversations} conversations, {soak.rate:.0f} turns/s, {soak.seconds:.0f} s", flush=True)
        meter = CpuMeter(
            {
                "web": stack.pids("web"),
                "workers": stack.pids("worker"),
                "postgres": postgres_pids,  # asked again at the end: the pools open backends as the load arrives
                "redis": redis_pids,
                "stub": [stack.pid("stub")],
                "load generator": [os.getpid()],
            }
        )
        scans_before, started_at = _memory_scans(), timezone.now()
        meter.start()
        asyncio.run(_run(stack, soak))
        meter.stop()
        turn_bench.drain()
        _diagnose(soak, meter, scans_before, started_at)
    finally:
        stack.stop()
        connection.close()
    times = [sample.at for sample in soak.samples]
    curves = {name: [sample.series[name] for sample in soak.samples] for name in [*LIMITS, OPEN]}
    if times:
        soak_plot.write(PLOT, times, curves, f"Soak: {soak.conversations} conversations, {soak.rate:.0f} turns/s, {soak.seconds:.0f} s")
    return report(soak), failed(soak)


def _memory_scans() -> dict[str, float]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup FROM pg_stat_user_tables WHERE relname = 'memory_memory'"
        )
        row = cursor.fetchone() or (0, 0, 0, 0)
    return dict(zip(("sequential scans", "rows read by them", "index scans", "rows"), map(float, row), strict=True))


PHASE_WINDOWS = 5  # the run cut into this many windows of time, by when each turn was admitted


def _diagnose(soak: Soak, meter: CpuMeter, scans_before: dict[str, float], started_at) -> None:
    """Where the time went: CPU by stage over the run, each window's queue wait and run time, and
    what recall's scans of memory_memory read (pg_stat_user_tables lags by up to its flush interval)."""
    soak.cpu = meter.shares()
    finished = Turn.objects.filter(created_at__gte=started_at, finished_at__isnull=False)
    turns = list(finished.values_list("created_at", "started_at", "finished_at"))
    if turns:
        soak.cpu_per_turn_ms = {name: used * 1000 / len(turns) for name, used in meter.used.items()}
        first = min(created for created, _, _ in turns)
        width = max(1.0, soak.seconds / PHASE_WINDOWS)
        for n in range(PHASE_WINDOWS):
            window = [t for t in turns if n * width <= (t[0] - first).total_seconds() < (n + 1) * width and t[1]]
            if window:
                queue = statistics.median((started - created).total_seconds() * 1000 for created, started, _ in window)
                run = statistics.median((finished - started).total_seconds() * 1000 for _, started, finished in window)
                soak.phases.append((f"{n * width:.0f}-{(n + 1) * width:.0f} s", len(window), queue, run))
    after = _memory_scans()
    soak.scans = {name: after[name] - scans_before.get(name, 0.0) for name in after if name != "rows"}
    soak.memories = int(after["rows"])


def _diagnosis(soak: Soak) -> list[str]:
    if not soak.cpu:
        return []
    done = sum(turns for _, turns, _, _ in soak.phases) or 1
    lines = [
        "",
        f"Where the time went: CPU over the run by stage, {soak.cpu}; per finished turn "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(soak.cpu_per_turn_ms.items(), key=lambda kv: -kv[1]))
        + f". memory_memory at the end: about {soak.memories:,} rows; over the run "
        + ", ".join(f"{name} {value:,.0f} ({value / done:,.1f} a turn)" for name, value in soak.scans.items())
        + ".",
        "",
        "| admitted at | turns finished | queue wait p50 (admitted to claimed) | run p50 (claimed to finished) |",
        "| --- | --- | --- | --- |",
        *(f"| {window} | {turns} | {queue:.0f} ms | {run:.0f} ms |" for window, turns, queue, run in soak.phases),
    ]
    return lines


def report(soak: Soak) -> list[str]:
    lat = sorted(soak.latencies_ms)
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    verdict = "**FAILED**" if failed(soak) else "passed"
    lines = [
        HEADING,
        "",
        f"{soak.conversations} concurrent conversations offering {soak.rate:.0f} turns/s for {soak.seconds:.0f} s (non-streaming "
        f"turns, a 50 ms stub, each conversation's turns in one conversation); {soak.sent} sent, {soak.ok} answered 200 "
        f"({soak.ok / soak.seconds:.1f} turns/s of the {soak.rate:.0f} offered), "
        f"errors {soak.errors or 'none'} ({error_rate(soak):.2%}); latency p50 {p50:.0f} ms, p99 {p99:.0f} ms. "
        f"Verdict: {verdict} (slope test over the run after its first {warm_up(soak):.0f} s; errors under {ERROR_BOUND:.0%}). "
        "Rerun: `make bench BENCH_ARGS=--only=soak` (10 minutes; `--soak-seconds=60` for a short one). "
        "The curves: [docs/soak.svg](docs/soak.svg)."
        + (
            f" {soak.scrape_timeouts} of {len(soak.samples)} scrapes of /metrics timed out (10 s); the last pool reading stood."
            if soak.scrape_timeouts
            else ""
        ),
        "",
        "| series | fitted rise over the steady part | allowed | |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {rise:+.1f} | {allowed:.1f} | {'flat' if ok else '**grows**'} |" for name, rise, allowed, ok in verdicts(soak)),
        *_ceiling_row(soak),
        *_diagnosis(soak),
        "",
        "| t (s) | web RSS (MiB) | workers RSS (MiB) | pool connections checked out | PG connections open | queue depth "
        "| turns done | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    step = max(1, len(soak.samples) // 20)
    for sample in soak.samples[::step]:
        s = sample.series
        lines.append(
            f"| {sample.at:.0f} | {s['web RSS (MiB)']:.0f} | {s['workers RSS (MiB)']:.0f} | {s.get('pool connections checked out', 0):.0f} "
            f"| {s[OPEN]:.0f} "
            f"| {s['queue depth']:.0f} | {sample.finished} | {sample.errors} |"
        )
    return lines


def _ceiling_row(soak: Soak) -> list[str]:
    ceiling = ceiling_verdict(soak)
    if ceiling is None:
        return []
    peak, bound, ok = ceiling
    return [
        f"| {OPEN} (PostgreSQL's count; pools keep what bursts opened) | peak {peak:.0f} | at most {bound} (the pools' sizes together) "
        f"| {'bounded' if ok else '**over the ceiling**'} |"
    ]
