"""Lanes: one run compares configurations of Sentinel alternately on one stub and one database.

    make bench BENCH_ARGS="--only=latency --lanes old:SENTINEL_X=a new:SENTINEL_X=b"
    make bench BENCH_ARGS="--only=throughput --lanes old: new:SENTINEL_X=b --rounds=4"

Each lane is `name:KEY=VALUE` (repeat the name for more settings; `name:` alone runs the bench's own
settings). Between rounds the web and worker processes restart with the next lane's environment;
rounds go A B B A A B ..., so a drift of the machine's speed over the run falls on both lanes
alike, and a lane that runs twice in a row is not restarted. Each lane's figures print side by
side with the first lane's; BENCHMARKS.md is left as it is.
"""

from __future__ import annotations

from bench import turn_bench
from bench.harness import Stack, percentile


def parse(specs: list[str]) -> dict[str, dict[str, str]]:
    """`["old:A=1", "new:A=2", "new:B=3"]` -> {"old": {"A": "1"}, "new": {"A": "2", "B": "3"}}, in order."""
    lanes: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, setting = spec.partition(":")
        if not name:
            raise SystemExit(f"bench: a lane needs a name before ':' (got {spec!r})")
        lane = lanes.setdefault(name, {})
        if setting:
            key, sep, value = setting.partition("=")
            if not sep or not key:
                raise SystemExit(f"bench: a lane's setting is KEY=VALUE (got {spec!r})")
            lane[key] = value
    if len(lanes) < 2:
        raise SystemExit("bench: --lanes needs at least two lanes, e.g. --lanes old: new:SENTINEL_X=1")
    return lanes


def schedule(names: list[str], rounds: int) -> list[str]:
    """Each round runs every lane once, forward then backward: A B, B A, A B, ..."""
    order: list[str] = []
    for r in range(rounds):
        order += names if r % 2 == 0 else names[::-1]
    return order


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


def _table(rows: list[tuple[str, list[float]]], names: list[str], unit: str = "") -> str:
    width = max(len(label) for label, _ in rows) + 2
    out = ["".ljust(width) + "".join(n.rjust(12) for n in names) + "".join(f"{n}/{names[0]}".rjust(14) for n in names[1:])]
    for label, values in rows:
        cells = "".join(f"{v:12.2f}" for v in values)
        ratios = "".join(_ratio(v, values[0]).rjust(14) for v in values[1:])
        out.append(label.ljust(width) + cells + ratios)
    return "\n".join(out)


def run(what: str, lanes: dict[str, dict[str, str]], rounds: int, quick: bool) -> int:
    names = list(lanes)
    order = schedule(names, rounds)
    stack = Stack()
    current = order[0]
    stack.start(lanes[current])
    try:
        if what == "latency":
            return _latency(stack, lanes, order, per_round=30 if quick else 100)
        if what == "throughput":
            return _throughput(stack, lanes, order, seconds=8 if quick else 15)
        raise SystemExit(f"bench: --lanes works with --only=latency or --only=throughput (got {what!r})")
    finally:
        stack.stop()


def _switch(stack: Stack, lanes: dict[str, dict[str, str]], lane: str, current: list[str]) -> None:
    if current[0] != lane:
        print(f"restarting web and workers for lane {lane} ...", flush=True)
        stack.restart(lanes[lane])
        current[0] = lane


def _latency(stack: Stack, lanes: dict[str, dict[str, str]], order: list[str], per_round: int) -> int:
    names = list(lanes)
    results = {name: turn_bench.Latency() for name in names}
    current = [order[0]]
    for n, lane in enumerate(order, 1):
        _switch(stack, lanes, lane, current)
        part = turn_bench.added_latency(stack, requests=per_round)
        print(f"round {n}/{len(order)} lane {lane}: added p50 {percentile(part.added_ms, 50):.1f} ms", flush=True)
        results[lane].add(part)
    r = [results[name] for name in names]
    rows = [
        ("added latency p50 ms", [percentile(x.added_ms, 50) for x in r]),
        ("added latency p99 ms", [percentile(x.added_ms, 99) for x in r]),
        *((f"  phase {phase} p50 ms", [percentile(x.phases[phase], 50) for x in r]) for phase in turn_bench.PHASES),
        *((f"SQL per turn, {p}", [x.db_queries.get(p, 0) for x in r]) for p in ("web", "worker")),
        ("Redis commands per turn", [x.redis_commands for x in r]),
        *((f"texts embedded per turn, {s}", [x.embedded.get(s, 0) for x in r]) for s in turn_bench.EMBEDDING_SOURCES),
        *((f"CPU ms per turn, {p}", [x.cpu_ms.get(p, 0) for x in r]) for p in ("web", "worker", "postgres", "redis", "stub")),
        ("CPU ms per turn, web + worker", [x.cpu_ms.get("web", 0) + x.cpu_ms.get("worker", 0) for x in r]),
        ("WAL fsyncs per turn", [x.wal.get("fsyncs", 0) for x in r]),
        ("WAL records per turn", [x.wal.get("records", 0) for x in r]),
        ("WAL kB per turn", [x.wal.get("bytes", 0) / 1000 for x in r]),
    ]
    print(f"\nlanes, {len(order) // len(names)} rounds of {per_round} sequential turns each:")
    for name in names:
        print(f"  {name}: {' '.join(f'{k}={v}' for k, v in lanes[name].items()) or '(the bench defaults)'}")
    print(_table(rows, names))
    return 0


def _throughput(stack: Stack, lanes: dict[str, dict[str, str]], order: list[str], seconds: float) -> int:
    names = list(lanes)
    runs: dict[str, list[turn_bench.Throughput]] = {name: [] for name in names}
    current = [order[0]]
    for n, lane in enumerate(order, 1):
        _switch(stack, lanes, lane, current)
        for clients in (50, 200):
            run = turn_bench.throughput(stack, clients, 0, seconds)
            print(
                f"round {n}/{len(order)} lane {lane}, {clients} clients: {run.turns_per_s:.0f} turns/s, {run.load.by_status()}", flush=True
            )
            runs[lane].append(run)
    rows = []
    for clients in (50, 200):
        mine = {name: [x for x in runs[name] if x.clients == clients] for name in names}

        def avg(name: str, value, mine=mine) -> float:
            return sum(value(x) for x in mine[name]) / max(1, len(mine[name]))

        rows += [
            (f"{clients} clients: turns/s", [avg(n, lambda x: x.turns_per_s) for n in names]),
            (f"{clients} clients: 2xx share %", [avg(n, lambda x: x.success * 100) for n in names]),
            (
                f"{clients} clients: CPU ms/turn web+worker",
                [avg(n, lambda x: x.cpu_ms_per_turn.get("web", 0) + x.cpu_ms_per_turn.get("worker", 0)) for n in names],
            ),
            (f"{clients} clients: CPU ms/turn postgres", [avg(n, lambda x: x.cpu_ms_per_turn.get("postgres", 0)) for n in names]),
            (f"{clients} clients: finishes per commit", [avg(n, lambda x: x.finishes_per_commit) for n in names]),
        ]
    print(f"\nlanes, {len(order) // len(names)} rounds of {seconds:.0f} s at 50 and 200 clients (0 ms stub), means over rounds:")
    print(_table(rows, names))
    for name in names:
        statuses: dict[str, int] = {}
        for x in runs[name]:
            for status, count in x.load.statuses.items():
                statuses[status] = statuses.get(status, 0) + count
        print(f"  {name} answers by status, all rounds: " + "; ".join(f"{s}: {c:,}" for s, c in sorted(statuses.items())))
    return 0
