"""Run every benchmark and write BENCHMARKS.md. Use `make bench` (it starts what is needed);
`make bench BENCH_ARGS=--quick` runs smaller sizes for a smoke test.

    --only=turns,search,memory,dialogue   the parts to run (all four by default); the others' sections are kept
    --only=anchor                the targets of issue 13 only, side by side with LiteLLM's proxy
    --only=batch                 real-time chat latency idle and while a batch runs (issue 17)
    --only=scaleout [--scaleout=1+1,2+2,3+3] [--scaleout-seconds=20]   turns/s against web + worker processes (issue 18)
    --only=soak [--soak-seconds=600] [--soak-conversations=1000]   bounded soak; exits 1 if anything grows (issue 18)
    --only=routing               routing decision overhead and the response cache's hit latency (issue 19), and routing-quality
    --only=routing-quality       adaptive routing's decisions on a labelled prompt set: accuracy, share cheap, cost (seconds, no stack)
    --only=latency [--anchor]    the sequential turn printed (LiteLLM beside it with --anchor); no file written
    --only=latency|throughput --lanes a:K=V b:K=W [--rounds=N]   configurations compared alternately (bench/lanes.py)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
django.setup()

from bench import (  # noqa: E402
    anchor,
    batch_bench,
    dialogue_bench,
    lanes,
    memory_bench,
    report,
    routing_bench,
    routing_quality,
    scaleout,
    search_bench,
    soak,
    turn_bench,
)
from bench.harness import Stack, fdatasync_ms, percentile, rss_mb  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent
HISTORY = Path(__file__).resolve().parent / "HISTORY.md"


def python_speed() -> float:
    """Seconds of CPU for a pure-Python loop of ten million additions: this machine's speed for the
    interpreter, to compare runs by. It is taken at the run's start and again at its end: the machine
    of HISTORY row 48 took 1.64 s at one hour and 0.69 s at the next."""
    started = time.process_time()
    total = 0
    for i in range(10_000_000):
        total += i
    return time.process_time() - started


SPEED_AT_START: list[float] = []  # taken by main(), not at import


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?"
    )
    mem = next(
        (int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BASE_DIR, capture_output=True, text=True).stdout.strip()
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    start = f"{SPEED_AT_START[0]:.2f} s of CPU at the start, " if SPEED_AT_START else ""
    speed = f"a pure-Python loop of 10 million additions: {start}{python_speed():.2f} s at the end"
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, {system}, {speed}, commit {commit}"


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def opt_ms(value: float | None) -> str:
    return "n/a" if value is None else ms(value)


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def ratio(sentinel: float, litellm: float | None) -> str:
    """Sentinel's figure over LiteLLM's: above 1 is more (slower, costlier, or more turns)."""
    if litellm is None or not litellm or sentinel != sentinel or litellm != litellm:  # n/a, zero or NaN
        return "n/a"
    return f"{sentinel / litellm:.2f}x"


def anchor_note(proxy: anchor.LiteLLM | None, reason: str) -> str:
    if proxy is None:
        return f"**LiteLLM's proxy did not run in this run**, so its column is empty: {reason}"
    return (
        f"LiteLLM's proxy {anchor.VERSION} (`litellm[proxy]` in var/litellm-venv, {anchor.WORKERS} uvicorn workers, no database "
        "or cache: it forwards and keeps nothing durable) against the same stub, measured in this run with the same wrk script."
    )


def turn_sections(stack: Stack, quick: bool, proxy: anchor.LiteLLM | None, reason: str, scope: str = "full") -> list[str]:
    """The turn path's sections; `scope="anchor"` runs only what issue 13's targets need and returns
    only the targets and the durability floor."""
    lines: list[str] = []
    full = scope == "full"
    idle = {"web": rss_mb(stack.pid("web")), "worker": sum(rss_mb(pid) for pid in stack.pids("worker"))}

    print("fsync floor ...", flush=True)
    floor = fdatasync_ms(200)
    print("added latency ...", flush=True)
    lat = turn_bench.added_latency(stack, requests=60 if quick else 300, proxy=proxy)
    print("added latency, asynchronous commit (SENTINEL_DURABILITY=async) ...", flush=True)
    stack.restart({"SENTINEL_DURABILITY": "async"})
    turn_bench.added_latency(stack, requests=10 if quick else 30, wal=False)  # warm the restarted processes up, as the first run was
    lat_async = turn_bench.added_latency(stack, requests=30 if quick else 150, wal=False)
    stack.restart({})
    p50, p99 = percentile(lat.added_ms, 50), percentile(lat.added_ms, 99)
    a50 = percentile(lat.anchor_added_ms, 50) if proxy else None
    a99 = percentile(lat.anchor_added_ms, 99) if proxy else None
    lines += [
        "## Added latency (issue 6.1)",
        "",
        f"{lat.requests} sequential rounds on kept-alive connections, each question a new text: a direct call to the stub (0 ms "
        "latency), then the same question through Sentinel's `/v1/chat/completions` (non-streaming): authentication, rate limits "
        "(counted in Redis), a budget reservation at a real price, the turn and its messages persisted, Celery, the worker's claim, "
        "context assembly, the provider call through the circuit breaker, settlement, the audit chain, every event stored, the "
        "answer back over a Redis stream; then through LiteLLM's proxy when it runs. Added latency is over the round's direct call.",
        "",
        "| measure | Sentinel | target | LiteLLM proxy (same run) | Sentinel / LiteLLM |",
        "| --- | --- | --- | --- | --- |",
        f"| added latency p50 | {ms(p50)} | at most 6 ms: {verdict(p50 <= 6)} | {opt_ms(a50)} | {ratio(p50, a50)} |",
        f"| added latency p99 | {ms(p99)} | at most 15 ms: {verdict(p99 <= 15)} | {opt_ms(a99)} | {ratio(p99, a99)} |",
        f"| direct call to the stub | {turn_bench_summary(lat.direct_ms)} | | | |",
        f"| through Sentinel | {turn_bench_summary(lat.sentinel_ms)} | | | |",
        f"| of which admission to a worker starting the turn (queue) | {turn_bench_summary(lat.queue_ms)} | | | |",
        "",
        anchor_note(proxy, reason),
        "",
        "Where a sequential turn's time goes (p50 of each phase, from the timestamps the turn records):",
        "",
        "| phase | p50 | p90 | what happens |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {ms(percentile(lat.phases[name], 50))} | {ms(percentile(lat.phases[name], 90))} | {what} |"
            for name, what in turn_bench.PHASES.items()
        ),
        "",
        "CPU per turn in the sequential run, by stage (background work such as indexing the new messages included; LiteLLM per "
        "request): " + ", ".join(f"{name} {value:.1f} ms" for name, value in sorted(lat.cpu_ms.items(), key=lambda kv: -kv[1])) + ".",
        "",
        "## Queue and round trips per turn (issue 6.4)",
        "",
        "| measure | result |",
        "| --- | --- |",
        f"| enqueue to start, unloaded (sequential) | {turn_bench_summary(lat.queue_ms)} |",
        f"| SQL statements per turn, web process | {lat.db_queries.get('web', 0):.1f} |",
        f"| SQL statements per turn, worker | {lat.db_queries.get('worker', 0):.1f} |",
        f"| WAL fsyncs per turn (`pg_stat_io`, object `wal`) | {lat.wal.get('fsyncs', 0):.2f} |",
        f"| texts whose vector a turn asked for, by where it came from | {_embedded(lat.embedded)} |",
        f"| Redis commands per turn (all processes; broker included) | {lat.redis_commands:.1f} |",
        f"| top Redis commands per turn | {', '.join(f'{name} {n:.1f}' for name, n in lat.redis_top)} |",
        "",
        "Counted, not estimated: `sentinel_db_queries_total` (every statement through Django's connection, by process), "
        "`sentinel_embedded_texts_total` (the model: computed when asked; prefetch: computed earlier, when the worker took "
        "the turn; recent: another call's vector of the same text, kept in Redis by `SENTINEL_RECENT_VECTORS_SECONDS`; cache: "
        "the embedding cache of the slower models), "
        "PostgreSQL's `pg_stat_io` and Redis's `INFO commandstats`, before and after the sequential run, divided by its turns. "
        "The last two are server-wide: another user of the same PostgreSQL cluster or Redis server during the run adds to them.",
        "",
    ]

    print("throughput ...", flush=True)
    seconds = 8 if quick else 20
    runs: list[turn_bench.Throughput] = []
    for stub_ms in (0, 500) if full else (0,):
        for clients in (50, 200) if quick or not full else (50, 200, 1000):
            print(f"  {clients} clients, stub {stub_ms} ms", flush=True)
            runs.append(turn_bench.throughput(stack, clients, stub_ms, seconds))
            if proxy and stub_ms == 0 and clients in (50, 200):
                print(f"  {clients} clients, stub {stub_ms} ms, LiteLLM", flush=True)
                runs.append(turn_bench.throughput(stack, clients, stub_ms, seconds, proxy=proxy))
    mine = [r for r in runs if r.target == "Sentinel"]
    best = max(r.turns_per_s for r in mine if r.stub_latency_ms == 0)
    lines += [
        "## Throughput (issue 6.2)",
        "",
        f"wrk (2 threads) posts non-streaming turns for {seconds} s per row with that many open connections, every request a new "
        f"text; every Sentinel turn is durable as above. One uvicorn process, {stack.workers} Celery worker processes (threads pool, "
        f"{stack.worker_concurrency} threads each), PostgreSQL, Redis, the stub and wrk itself all share this machine's cores. "
        "Sentinel's turns/s counts turns that succeeded within the window, from the database; LiteLLM's, its 2xx answers. Every "
        "answer is counted by status; a 503 that carried Retry-After is a deliberate shed, one without it is not; a timeout or a "
        "broken connection is a failed request without a status; a request still open when the window closed is not counted.",
        "",
        "| target | clients | stub latency | turns/s | HTTP requests/s | answers by status | success | p50 | p99 | queue wait p50 / p99 "
        "| CPU (cores busy) | CPU ms per turn: web / workers / PostgreSQL (LiteLLM: proxy) | finishes per commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        if r.target == "LiteLLM":
            per_turn, queue, batch = f"{r.cpu_ms_per_turn.get('litellm', 0):.1f}", "", ""
        else:
            per_turn = " / ".join(f"{r.cpu_ms_per_turn.get(part, 0):.0f}" for part in ("web", "worker", "postgres"))
            queue = f"{ms(r.queue_p50_ms)} / {ms(r.queue_p99_ms)}"
            batch = f"{r.finishes_per_commit:.1f}"
        lines.append(
            f"| {r.target} | {r.clients} | {r.stub_latency_ms} ms | {r.turns_per_s:.0f} | {r.rps:.0f} | {r.load.by_status()} | "
            f"{r.success:.1%} | {ms(r.p50_ms)} | {ms(r.p99_ms)} | {queue} | {r.cpu} | {per_turn} | {batch} |"
        )
    stored = [r.distinct for r in mine]
    lines += [
        "",
        f"Distinct texts: the user messages Sentinel stored during these rows were {sum(d for d, _ in stored):,} distinct texts "
        f"of {sum(n for _, n in stored):,}.",
        "",
        f"Target: 1,000 turns/s with a 0 ms stub: {verdict(best >= 1000)} (best {best:.0f} turns/s).",
        "",
    ]
    if full:
        lines += what_stands_in_the_way(lat, mine)

    print("streaming ...", flush=True)
    levels = ([50, 200] if quick else [50, 200, 500, 1000]) if full else []
    stream = turn_bench.streaming(stack, sequential=10 if quick else 30, levels=levels, proxy=proxy)
    added_ttft = [s - d for s, d in zip(stream.sentinel_ttft, stream.direct_ttft, strict=True)]
    t50 = percentile(added_ttft, 50)
    l50 = percentile(stream.anchor_ttft, 50) if proxy else None
    clean = [level["streams"] for level in stream.levels if level["ok"] == level["streams"]]
    lines += [
        "## Streaming (issue 6.3)",
        "",
        "The stub streams 64 chunks 20 ms apart. Time to first token is from sending the request to the first chunk with content.",
        "",
        "| measure | direct | through Sentinel | target | LiteLLM proxy (same run) | Sentinel / LiteLLM |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| time to first token p50 | {ms(percentile(stream.direct_ttft, 50))} | {ms(percentile(stream.sentinel_ttft, 50))} | | | |",
        f"| added time to first token p50 / p99 | | {ms(t50)} / {ms(percentile(added_ttft, 99))} | "
        f"at most 8 ms: {verdict(t50 <= 8)} | {opt_ms(l50)} | {ratio(t50, l50)} |",
        f"| gap between chunks p99 | {ms(percentile(stream.direct_gaps, 99))} | {ms(percentile(stream.sentinel_gaps, 99))} | | | |",
        "",
        "| concurrent streams | complete without a stall | TTFT p50 / p99 | gap p99 | longest gap | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level in stream.levels:
        lines.append(
            f"| {level['streams']} | {level['ok']} | {ms(level['ttft_p50'])} / {ms(level['ttft_p99'])} | {ms(level['gap_p99'])} | "
            f"{ms(level['gap_max'])} | {', '.join(level['errors']) or 'none'} |"
        )
    most = max(clean) if clean else 0
    lines += [
        "",
        f"A stall is a stream that did not finish or waited more than {turn_bench.STALL_MS} ms for a chunk. Most concurrent streams with "
        f"no stall: {most} (target 1,000: {verdict(most >= 1000)}). The client reading them runs on the same two cores.",
        "",
    ]
    if full:
        lines += [
            "## Resources (issue 6.6)",
            "",
            "| process | idle | peak under the throughput runs |",
            "| --- | --- | --- |",
            f"| web (uvicorn, one process) | {idle['web']:.0f} MiB | {max(r.rss_peak['web'] for r in mine):.0f} MiB |",
            f"| workers (Celery, threads pool; {stack.workers} processes together) | {idle['worker']:.0f} MiB | "
            f"{max(r.rss_peak['worker'] for r in mine):.0f} MiB |",
            "",
        ]
    targets = target_section(lat, runs, t50, l50, floor, proxy, reason, lat_async) + durability_section(lat, floor)
    return targets + lines if full else targets


def target_section(
    lat: turn_bench.Latency,
    runs: list[turn_bench.Throughput],
    ttft: float,
    anchor_ttft: float | None,
    floor: list[float],
    proxy: anchor.LiteLLM | None,
    reason: str,
    lat_async: turn_bench.Latency,
) -> list[str]:
    """Issue 13's targets: Sentinel's figure, LiteLLM's from the same run, and their ratio."""

    def at(target: str, clients: int) -> turn_bench.Throughput | None:
        return next((r for r in runs if r.target == target and r.clients == clients and r.stub_latency_ms == 0), None)

    s200, l200 = at("Sentinel", 200), at("LiteLLM", 200)
    s50, l50 = at("Sentinel", 50), at("LiteLLM", 50)
    p50, p99 = percentile(lat.added_ms, 50), percentile(lat.added_ms, 99)
    async50 = percentile(lat_async.added_ms, 50)
    a50 = percentile(lat.anchor_added_ms, 50) if proxy else None
    a99 = percentile(lat.anchor_added_ms, 99) if proxy else None
    cpu = (s200.cpu_ms_per_turn.get("web", 0) + s200.cpu_ms_per_turn.get("worker", 0)) if s200 else float("nan")
    lite_cpu = l200.cpu_ms_per_turn.get("litellm") if l200 else None

    def load(r: turn_bench.Throughput | None, unit: str) -> str:
        return f"{r.turns_per_s:,.0f} {unit}, {r.success:.1%} 2xx ({r.load.by_status()})" if r else "n/a"

    met_throughput = bool(s200 and s200.turns_per_s >= 1000 and s200.success == 1.0)
    return [
        "## Targets of issue 13, side by side with LiteLLM",
        "",
        "Each target on this 2-core machine with a 0 ms stub, Sentinel and LiteLLM's proxy measured in the same run against the "
        "same stub, with the same wrk script and a new text in every request. " + anchor_note(proxy, reason),
        "",
        "| target | Sentinel | LiteLLM proxy | Sentinel / LiteLLM | verdict |",
        "| --- | --- | --- | --- | --- |",
        f"| throughput at 200 clients: at least 1,000 turns/s, 100% success | {load(s200, 'turns/s')} | {load(l200, 'requests/s')} | "
        f"{ratio(s200.turns_per_s, l200.turns_per_s) if s200 and l200 else 'n/a'} | {verdict(met_throughput)} |",
        f"| throughput at 50 clients (no target; the anchor's second level) | {load(s50, 'turns/s')} | {load(l50, 'requests/s')} | "
        f"{ratio(s50.turns_per_s, l50.turns_per_s) if s50 and l50 else 'n/a'} | |",
        f"| added latency p50, sequential: at most 6 ms | {ms(p50)} | {opt_ms(a50)} | {ratio(p50, a50)} | {verdict(p50 <= 6)} |",
        f"| added latency p99, sequential: at most 15 ms | {ms(p99)} | {opt_ms(a99)} | {ratio(p99, a99)} | {verdict(p99 <= 15)} |",
        f"| added latency p50, sequential, opt-in asynchronous commit (`SENTINEL_DURABILITY=async`; loss window: about 600 ms of "
        f"commits if PostgreSQL itself crashes): at most 4 ms | {ms(async50)} | {opt_ms(a50)} | {ratio(async50, a50)} | "
        f"{verdict(async50 <= 4)} |",
        f"| streaming, added time to first token p50: at most 8 ms | {ms(ttft)} | "
        f"{opt_ms(anchor_ttft)} | {ratio(ttft, anchor_ttft)} | {verdict(ttft <= 8)} |",
        f"| CPU per turn, web + workers (LiteLLM: its processes per request), at 200 clients: at most 1.5 ms | {ms(cpu)} | "
        f"{opt_ms(lite_cpu)} | {ratio(cpu, lite_cpu)} | {verdict(cpu <= 1.5)} |",
        f"| the floor: `fdatasync` of a small write in var/ (median of {len(floor)}) | {ms(percentile(floor, 50))} | | | "
        "under every synchronous commit |",
        "",
    ]


def durability_section(lat: turn_bench.Latency, floor: list[float]) -> list[str]:
    stages = ("web", "worker", "postgres", "redis", "stub")
    return [
        "## The durability floor and WAL per turn (issue 13)",
        "",
        "| measure | result |",
        "| --- | --- |",
        f"| `os.fdatasync` after a 512-byte write into a preallocated file in var/ (where the embedded PostgreSQL keeps its WAL), "
        f"{len(floor)} times | median {ms(percentile(floor, 50))}, p90 {ms(percentile(floor, 90))}, p99 {ms(percentile(floor, 99))} |",
        f"| WAL fsyncs per turn, sequential run | {lat.wal.get('fsyncs', 0):.2f} |",
        f"| WAL writes per turn | {lat.wal.get('writes', 0):.2f} |",
        f"| WAL records per turn / bytes per turn | {lat.wal.get('records', 0):.1f} / {lat.wal.get('bytes', 0):,.0f} |",
        "| CPU ms per turn by stage, sequential run | " + ", ".join(f"{part} {lat.cpu_ms.get(part, 0):.1f}" for part in stages) + " |",
        "",
        "PostgreSQL 18 counts WAL fsyncs and writes in `pg_stat_io` (rows with object `wal`); its `pg_stat_wal` keeps records and "
        "bytes only. Both are read before and after the sequential run once every backend's statistics have been flushed, and are "
        "cluster-wide: the embedded cluster in var/pgdata serves only this run unless another process uses the same data folder. "
        "A turn's synchronous commits each cost at least the fsync above: the latency target leaves room for about one.",
        "",
    ]


def what_stands_in_the_way(lat: turn_bench.Latency, runs: list[turn_bench.Throughput]) -> list[str]:
    """The arithmetic behind the two targets not met, from this run's own measurements."""
    row = next(r for r in runs if r.stub_latency_ms == 0 and r.clients == 50)
    parts = ("web", "worker", "postgres", "redis")
    per_turn = sum(row.cpu_ms_per_turn.get(part, 0) for part in parts)
    ceiling = 2 * 1000 / per_turn if per_turn else 0
    statements = lat.db_queries.get("web", 0) + lat.db_queries.get("worker", 0)
    cost = turn_bench.statement_cost()
    pg_cores = row.cpu_ms_per_turn.get("postgres", 0) * row.turns_per_s / 1000
    chain = sum(percentile(lat.phases[name], 50) for name in turn_bench.PHASES if name != "provider")
    return [
        "### What stands in the way",
        "",
        f"**Throughput is bound by CPU, not by waiting.** At 50 clients a turn cost {per_turn:.0f} ms of CPU in all "
        f"(web {row.cpu_ms_per_turn.get('web', 0):.0f}, workers {row.cpu_ms_per_turn.get('worker', 0):.0f}, PostgreSQL "
        f"{row.cpu_ms_per_turn.get('postgres', 0):.0f}, Redis {row.cpu_ms_per_turn.get('redis', 0):.0f}). Two cores give 2,000 ms of "
        f"CPU a second, so this design tops out near {ceiling:.0f} turns/s here, and the run measured {row.turns_per_s:.0f}. "
        "1,000 turns/s leaves 2 ms of CPU per turn for everything: HTTP, JSON, authentication, "
        f"{statements:.0f} SQL statements with their commits and fsyncs, the broker, the provider call and its stream. "
        f"Measured in this run: one ORM read of a turn by primary key takes {cost.orm_ms:.2f} ms, {cost.build_ms:.2f} ms of it "
        f"Django building the SQL, while a bare `SELECT 1` round trip takes {cost.raw_ms:.2f} ms. So the "
        "statements alone spend that budget many times over. More cores scale it (web and workers are stateless "
        f"processes, and PostgreSQL used {pg_cores:.2f} of a core here), but on two cores the design has to change.",
        "",
        '**What would remove each cost** (DESIGN.md, "The hot path"; bench/HISTORY.md has what each step measured):',
        "",
        f"- *The statements* ({statements:.0f} a turn): built, hand-written SQL on the hot path: admission "
        "(`SENTINEL_ADMISSION_WRITES`), the claim (`agents/claims.py`) and the finish, which the worker's group commit "
        "writes for all the turns ending at the same moment in one transaction (`SENTINEL_WORKER_WRITES=batched`: "
        "replies, fenced turn updates, events, ledger, windows by sums, one lock of the audit head, one fsync; "
        "HISTORY row 22). Writes no client was told of (a plain wait's admission, the claim, the provider request's "
        "event) commit without waiting for the disk; the finish's commit flushes them. Admission is one statement "
        "(`SENTINEL_ADMISSION_WRITES=statement`: the rows written by the budget hold's own statement, each table's "
        "rows one JSON parameter, HISTORY rows 53 and 58) and a batch of finishes four (`SENTINEL_FINISH_STATEMENTS`, "
        "row 54), their rows too one JSON parameter a table instead of an array a column (row 59); on loopback a round "
        "trip costs about 0.1 ms of CPU, so what remains is the Python around them "
        "(model building, parameter quoting), and per turn the web's one admission statement (a group commit in the "
        "web would batch them, each batch's reservations decided in order against the locked windows). Context assembly reads "
        "the conversation in one hand-written statement and recall's hybrid search in another (`SENTINEL_CONTEXT_READS`, "
        "`SENTINEL_SEARCH_READS`: 8.7 -> 2.0 ms CPU for a 60-message turn with memories, HISTORY rows 31-32).",
        "- *PostgreSQL's own CPU* (the largest consumer under load): recall's hybrid statement was about two thirds of "
        "PostgreSQL's statement time in a throughput run (HISTORY row 60), and it grows with the agent's memories, which this "
        "bench adds to with every turn. Up to `SENTINEL_EXACT_SEARCH_MAX` (20,000) memories the vector side is exact, "
        "chosen for recall quality (HISTORY rows 6 and 39). Built: the exact scan's distances are computed in the "
        "searching process over the scope's vectors it holds, PostgreSQL ranking only the nearest held and what was "
        "written since (`SENTINEL_HELD_VECTORS_MB`, HISTORY row 71: 17-18 -> 7-9 ms of PostgreSQL's CPU a search at "
        "11,096 memories, 1.5 ms more in the worker); the HNSW index holds only the memories of tenants with a scope past "
        "the bound (`SENTINEL_HNSW`, row 70: about 1 ms of PostgreSQL's CPU saved for each memory written). Left, and "
        "growing with the scope: the full-text side, which counts the question's words in the scope and ranks every "
        "match (the bench's questions are eight common words each); a bounded cost would need each word's count kept "
        "per scope and the ranking over a bounded candidate set. Not built.",
        "- *Celery per turn:* built, the web's outbox sends the turns admitted at the same moment as one message "
        "(`run_turns`, HISTORY row 23); what is left per message is kombu's Redis transport (polling, the unacked "
        "index, acknowledgements), paid per batch.",
        "- *The embeddings:* skipped for an agent with no long-term memories; MiniLM int8 through ONNX Runtime, the "
        "default now, costs 5-8 ms a turn (query + 2 indexed) instead of 26-30 through torch, with the same planted "
        "facts (section Embeddings, HISTORY row 24); the static model costs about 0.15 ms but misses the 90% bar, "
        "so it is opt-in. Each new text now runs through the model once: the vector of a turn's new message, "
        "embedded as its recall query, is kept in Redis for the indexer, and the reply's for the next turn's query "
        "(`SENTINEL_RECENT_VECTORS_SECONDS`, HISTORY row 64: 3 -> 2 model runs a stateless turn, worker CPU 0.90x). "
        "Still the largest single cost of a turn with memory on; embedding lazily (when a message leaves the recent "
        "window) is not built.",
        "- *The provider call's parsing:* the stream is read as JSON behind the SDK's client (built, "
        "`SENTINEL_PROVIDER_CLIENT=raw`: 3.1 -> 1.2 ms CPU a call; its kill -9 chaos failure was the client "
        "collected mid-stream, HISTORY rows 21 and 26); the connection is kept for the next call, the stream read to "
        "its body's end after `[DONE]` (HISTORY row 48: 1.0 -> 0.002 TCP connections a call).",
        "- *Indexing the turn's messages* (a background pass per turn, about a third of a worker's busy samples on a "
        "sequential run): the batch is written in two hand-written statements instead of five compiled by the ORM "
        "(`SENTINEL_INDEX_WRITES=sql`, HISTORY row 50).",
        "- *Django's request handling on the web:* msgspec validation (built, HISTORY row 25: 0.4 ms saved); `/v1/` "
        "through a middleware chain async from end to end, without the site's sync middleware and their thread hops "
        "(built, `SENTINEL_API_LANE=async`: web CPU 11.7 -> 9.8 ms a turn on a loaded machine, HISTORY row 35).",
        "- *The rest is Python per turn in processes that each hold one core:* ASGI and DRF, JSON, Redis round trips "
        "for rate limits, streams and the broker, logging and metrics. At 2 ms a turn for everything on two cores, "
        "this design would need the request path outside Django and the worker outside Celery; web and workers are "
        "stateless processes, so more cores scale it instead.",
        "",
        f"**Added latency is a chain of round trips, not one slow step.** Outside the model call a sequential turn "
        f"spends {chain:.0f} ms (p50 phases above): the web process's statements and commit, the broker hop to a "
        "worker, the claim, history and recall (a query embedding on the CPU, started while the worker claims the "
        "turn), settlement and the audit chain in one transaction, then the answer's hop back over Redis. A proxy "
        f"does none of it. The durable hand-off alone (the queue phase: commit, enqueue, delivery, claim) takes "
        f"{percentile(lat.phases['queue'], 50):.0f} ms, more than the 6 ms target for the whole turn.",
        "",
    ]


def _embedded(per_source: dict[str, float]) -> str:
    """'model 1.0, prefetch 1.0, recent 1.0' (texts per turn by source), the empty ones left out."""
    return ", ".join(f"{source} {n:.2f}" for source, n in per_source.items() if n) or "none"


def turn_bench_summary(values: list[float]) -> str:
    return f"p50 {ms(percentile(values, 50))}, p99 {ms(percentile(values, 99))}"


# Every section BENCHMARKS.md holds, in order; a run writes those it measured and keeps the others.
SECTIONS = [
    "## Targets of issue 13, side by side with LiteLLM",
    "## The durability floor and WAL per turn (issue 13)",
    "## Added latency (issue 6.1)",
    "## Queue and round trips per turn (issue 6.4)",
    "## Throughput (issue 6.2)",
    "## Streaming (issue 6.3)",
    "## Resources (issue 6.6)",
    "## Memory search at size (issue 6.5)",
    "## Memory (issue 3)",
    "## Embeddings (issue 13)",
    dialogue_bench.HEADING,
    "## Storage per turn (issue 18)",  # bench/storage.py, run on its own: kept from the file by every run
    "## Real-time chat while a batch runs (issue 17)",
    scaleout.HEADING,  # --only=scaleout (bench/scaleout.py)
    soak.HEADING,  # --only=soak (bench/soak.py)
    "## Routing decisions and the response cache (issue 19)",
    routing_quality.HEADING,  # --only=routing or routing-quality (bench/routing_quality.py)
]


def by_heading(lines: list[str]) -> dict[str, list[str]]:
    """Split a run's lines into its `## ` sections."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith("## "):
            current = found.setdefault(line, [line])
        elif current is not None:
            current.append(line)
    return found


def probe_latency(requests: int, with_anchor: bool) -> int:
    """`--only=latency`: the sequential turn alone, its phases printed, BENCHMARKS.md left as it is.
    For iterating on the hot path (a minute, not fifteen); `--anchor` runs LiteLLM's proxy beside it."""
    stack = Stack().start()
    proxy, reason = anchor.start(stack.stub_url) if with_anchor else (None, "")
    try:
        floor = fdatasync_ms(200)
        lat = turn_bench.added_latency(stack, requests=requests, proxy=proxy)
    finally:
        if proxy:
            proxy.stop()
        stack.stop()
    print(f"added latency: p50 {ms(percentile(lat.added_ms, 50))}, p99 {ms(percentile(lat.added_ms, 99))} over {requests} turns")
    if proxy:
        a50, a99 = percentile(lat.anchor_added_ms, 50), percentile(lat.anchor_added_ms, 99)
        print(f"LiteLLM proxy: p50 {ms(a50)}, p99 {ms(a99)}; Sentinel / LiteLLM p50 {ratio(percentile(lat.added_ms, 50), a50)}")
    elif with_anchor:
        print(f"LiteLLM's proxy did not run: {reason}")
    for name in turn_bench.PHASES:
        print(f"  {name:<10} p50 {ms(percentile(lat.phases[name], 50)):>9}  p90 {ms(percentile(lat.phases[name], 90)):>9}")
    print(
        "SQL per turn: " + ", ".join(f"{name} {n:.1f}" for name, n in lat.db_queries.items()) + f"; Redis commands {lat.redis_commands:.1f}"
    )
    print("CPU ms per turn: " + ", ".join(f"{name} {value:.1f}" for name, value in lat.cpu_ms.items()))
    wal = lat.wal
    print(
        f"WAL per turn: {wal.get('fsyncs', 0):.2f} fsyncs, {wal.get('writes', 0):.2f} writes, {wal.get('records', 0):.1f} records, "
        f"{wal.get('bytes', 0):,.0f} bytes"
    )
    print(f"fsync floor: fdatasync median {ms(percentile(floor, 50))}, p99 {ms(percentile(floor, 99))} ({len(floor)} in var/)")
    return 0


def option(name: str, default: str) -> str:
    return next((a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")), default)


def lane_specs() -> list[str]:
    """The arguments after `--lanes` up to the next option."""
    if "--lanes" not in sys.argv:
        return []
    after = sys.argv[sys.argv.index("--lanes") + 1 :]
    return [a for a in after[: next((i for i, a in enumerate(after) if a.startswith("--")), len(after))]]


def main() -> int:
    SPEED_AT_START.append(python_speed())
    quick = "--quick" in sys.argv
    only = option("only", "turns,search,memory,dialogue").split(",")
    if specs := lane_specs():
        return lanes.run(only[0], lanes.parse(specs), int(option("rounds", "2" if quick else "4")), quick)
    if only == ["latency"]:
        return probe_latency(requests=60 if quick else 200, with_anchor="--anchor" in sys.argv)
    lanes_known = {"turns", "search", "memory", "dialogue", "anchor", "batch", "scaleout", "soak", "routing", "routing-quality"}
    if unknown := set(only) - lanes_known:
        raise SystemExit(
            "bench: --only takes turns, search, memory, dialogue, anchor, batch, scaleout, soak, routing, routing-quality or latency "
            "(throughput with --lanes); "
            f"got {sorted(unknown)}"
        )
    started = datetime.now(UTC)
    clock = time.monotonic()
    took: dict[str, float] = {}
    fresh: dict[str, list[str]] = {}
    soak_failed = False
    if "memory" in only:
        # First, on the fresh database: after the search benchmark's 100k memories, autovacuum of
        # those tables ran beside this one and made indexing and consolidation 2-4x slower (HISTORY 14).
        print("memory benchmark ...", flush=True)
        result = memory_bench.run(
            # sized so the whole of `make bench` stays well inside its 20 minutes on two cores
            conversations=2 if quick else 5,
            messages_each=400 if quick else 1000,
            consolidation_budget_s=60 if quick else 150,
        )
        fresh.update(by_heading(memory_bench.report(result)))
        took["memory"] = time.monotonic() - clock
    if "dialogue" in only:
        print("dialogue memory benchmark ...", flush=True)
        fresh.update(by_heading(dialogue_bench.report(dialogue_bench.run())))
        took["dialogue"] = time.monotonic() - clock - sum(took.values())
    if "scaleout" in only:
        print("scale-out ...", flush=True)
        fresh.update(by_heading(scaleout.run(quick, option("scaleout", ""), float(option("scaleout-seconds", "0")))))
        took["scaleout"] = time.monotonic() - clock - sum(took.values())
    if "soak" in only:
        print("soak ...", flush=True)
        lines, soak_failed = soak.run(
            quick,
            seconds=float(option("soak-seconds", "0")),
            conversations=int(option("soak-conversations", "0")),
            rate=float(option("soak-rate", "0")),
        )
        fresh.update(by_heading(lines))
        took["soak"] = time.monotonic() - clock - sum(took.values())
    if only == ["batch"]:
        stack = Stack().start()
        try:
            print("real-time chat while a batch runs ...", flush=True)
            fresh.update(by_heading(batch_bench.report(batch_bench.run(stack, lines=500 if quick else 5000, probes=50 if quick else 200))))
            took["batch"] = time.monotonic() - clock
        finally:
            stack.stop()
    if "routing" in only or "routing-quality" in only:
        print("adaptive routing quality ...", flush=True)
        fresh.update(by_heading(routing_quality.report(routing_quality.run())))
        took["routing quality"] = time.monotonic() - clock - sum(took.values())
    if only == ["routing"]:
        stack = Stack().start()
        try:
            print("routing decisions and the response cache ...", flush=True)
            fresh.update(by_heading(routing_bench.report(routing_bench.run(stack, quick))))
            took["routing"] = time.monotonic() - clock
        finally:
            stack.stop()
    if "turns" in only or "anchor" in only or "search" in only:
        stack = Stack().start()
        proxy, reason = (None, "")
        try:
            if "turns" in only or "anchor" in only:
                print("LiteLLM's proxy ...", flush=True)
                proxy, reason = anchor.start(stack.stub_url)
                if proxy is None:
                    print(f"LiteLLM's proxy did not run: {reason}", flush=True)
                scope = "full" if "turns" in only else "anchor"
                fresh.update(by_heading(turn_sections(stack, quick, proxy, reason, scope)))
                took["turn path" if scope == "full" else "targets"] = time.monotonic() - clock - sum(took.values())
            if proxy:
                proxy.stop()
            if "search" in only:
                print("memory search ...", flush=True)
                fresh.update(
                    by_heading(search_bench.report(search_bench.run(stack, sizes=(2_000, 10_000) if quick else (10_000, 100_000))))
                )
                took["memory search"] = time.monotonic() - clock - sum(took.values())
        finally:
            if proxy:
                proxy.stop()
            stack.stop()
    path = BASE_DIR / "BENCHMARKS.md"
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in took.items())
    sections = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {started:%Y-%m-%d %H:%M} UTC (`{' '.join(sys.argv[1:]) or 'all parts'}`). Machine: {machine()}.",
        "",
        *report.merge(SECTIONS, fresh, path.read_text() if path.exists() else ""),
    ]
    if HISTORY.exists():
        sections += [HISTORY.read_text().strip(), ""]
    sections += [f"This run took {time.monotonic() - clock:.0f} s ({parts})."]
    text = "\n".join(sections) + "\n"
    path.write_text(text)
    print(text)
    if soak_failed:
        print("bench: the soak FAILED: something grew without bound (see its section)", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
