"""Scale-out (issue 18): turns/s against the number of web and worker processes behind one address.

    make bench BENCH_ARGS=--only=scaleout     (--quick: 1+1 and 2+2, shorter windows)
    make bench BENCH_ARGS="--only=scaleout --scaleout=1+1,2+2,3+3 --scaleout-seconds=20"

Every configuration runs on the same stub, database and Redis: `N` web processes are uvicorn's
`--workers N` on one listening socket (the kernel hands each new connection to one of them, as a
Service does to pods), `M` Celery worker processes of SENTINEL_BENCH_WORKER_CONCURRENCY threads each
on the same queues. The load is the throughput bench's wrk (every request a new text, 200 open
connections, a 20 ms stub so turns overlap as real ones do); turns/s are the turns that succeeded in
the window, read from the database. No process holds state a request needs from another: what
changes between rows is only how many of each there are. On a machine of few cores the table shows
where the cores run out, not a cluster's ceiling: rerun it where each process gets its own core.
"""

from __future__ import annotations

import os

from bench import turn_bench
from bench.harness import Stack, wait_http
from sentinel_site.stack import web_command, worker_command

HEADING = "## Scale-out: turns/s against processes (issue 18)"
CLIENTS = 200
STUB_MS = 20


class ScaledStack(Stack):
    """The bench stack with SENTINEL_BENCH_WEBS web processes behind its one port."""

    def _start_sentinel(self) -> None:
        webs = int(self.env.get("SENTINEL_BENCH_WEBS", "1"))
        argv = [*web_command("127.0.0.1", self.web_port), "--backlog", "4096"]
        if webs > 1:
            argv += ["--workers", str(webs)]
        web = self._spawn("web", argv, kind="web")
        workers = int(self.env.get("SENTINEL_BENCH_WORKERS", self.workers))
        for n in range(workers):
            name = "worker" if n == 0 else f"worker{n + 1}"
            argv = worker_command(self.worker_concurrency, f"scale{n}-{os.getpid()}@%h", "--without-mingle", "--without-gossip")
            self._spawn(name, argv, kind="worker")
        wait_http(f"{self.base_url}/health/live", 60, "the web server", web)
        self.wait_worker()


def configurations(text: str) -> list[tuple[int, int]]:
    """'1+1,2+2' -> [(1, 1), (2, 2)]: web processes + worker processes."""
    found = []
    for part in text.split(","):
        webs, workers = part.split("+")
        found.append((int(webs), int(workers)))
    return found


def run(quick: bool, shape: str = "", seconds: float = 0) -> list[str]:
    shape = shape or ("1+1,2+2" if quick else "1+1,2+2,3+3")
    seconds = seconds or (8 if quick else 20)
    stack = ScaledStack(worker_concurrency=16, workers=1)
    rows = []
    try:
        first = True
        for webs, workers in configurations(shape):
            overrides = {"SENTINEL_BENCH_WEBS": str(webs), "SENTINEL_BENCH_WORKERS": str(workers)}
            if first:
                stack.start(overrides)
                first = False
            else:
                stack.restart(overrides)
            print(f"  {webs} web + {workers} worker processes, {CLIENTS} clients, {seconds:.0f} s", flush=True)
            result = turn_bench.throughput(stack, CLIENTS, STUB_MS, seconds)
            rows.append((webs, workers, result))
    finally:
        stack.stop()
    return report(rows, seconds)


def report(rows: list[tuple[int, int, turn_bench.Throughput]], seconds: float) -> list[str]:
    base = rows[0][2].turns_per_s if rows else 0.0
    lines = [
        HEADING,
        "",
        f"One address (uvicorn `--workers N` on one socket), N web and M worker processes (16 threads each) on one PostgreSQL "
        f"and Redis; wrk with {CLIENTS} connections for {seconds:.0f} s per row, a {STUB_MS} ms stub; turns/s from the database. "
        f"Machine: {os.cpu_count()} cores shared by every process (and by other users): the rows past the core count measure "
        "contention, not the design. Rerun: `make bench BENCH_ARGS=--only=scaleout`.",
        "",
        "| web + worker processes | turns/s | vs 1+1 | latency | answered | peak RSS web / workers |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for webs, workers, r in rows:
        scale = f"{r.turns_per_s / base:.2f}x" if base else "-"
        lines.append(
            f"| {webs} + {workers} | {r.turns_per_s:.0f} | {scale} | p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms "
            f"| {r.load.by_status()} | {r.rss_peak.get('web', 0):.0f} / {r.rss_peak.get('worker', 0):.0f} MiB |"
        )
    return lines
