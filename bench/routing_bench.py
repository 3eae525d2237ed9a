"""The routing decision's overhead and the response cache's hit latency (issue 19).

Decisions: microseconds per `routing.selection.choose` on a group of three deployments, in-process,
for each strategy, with and without rpm/tpm limits, with a latency budget and cost-aware (the
cheapest past a soft limit), plus adaptive routing's prompt rule (`routing.adaptive.group_for`);
with the worker's snapshot of the routing state (SENTINEL_ROUTING_STATE_SECONDS=0.1, the default)
and without it (0: a Redis round trip at every decision). The seed asks < 100 µs.

Cache: through the live stack (`make bench BENCH_ARGS=--only=routing`), the latency of a chat
request answered from the response cache beside the same request answered by a turn on the stub.

    make bench BENCH_ARGS=--only=routing      # both, written to BENCHMARKS.md
    python -m sentinel_site.stack env; python -m bench.routing_bench [--decisions=20000]   # decisions only, printed

With the snapshot, one decision in every 0.1 s pays the round trip (the median hides it; the p99
of a batch of 100 shows it); without, every decision pays it, so that lane measures this Redis too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
os.environ.setdefault("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")
django.setup()

from django.conf import settings  # noqa: E402

from agents.models import Agent  # noqa: E402
from bench.harness import percentile  # noqa: E402
from routing import adaptive, selection  # noqa: E402
from routing.groups import DeploymentSpec, GroupSpec  # noqa: E402
from routing.models import Policy  # noqa: E402
from routing.policy import PolicySpec  # noqa: E402

TENANT = "bench-tenant"
HEADING = "## Routing decisions and the response cache (issue 19)"
PROMPT = {"messages": [{"role": "system", "content": "You help."}, {"role": "user", "content": "word " * 200}]}
ADAPTIVE = PolicySpec(adaptive=True, simple_group="cheap", complex_group="strong", complex_above_tokens=2000)


def group(strategy: str, limits: bool) -> GroupSpec:
    deployments = tuple(
        DeploymentSpec(
            id=900_000 + index,
            name=f"d{index}",
            base_url=f"http://127.0.0.1:{9000 + index}/v1",
            api_key="",
            model="m",
            weight=index + 1,
            rpm=10**9 if limits else None,
            tpm=10**12 if limits else None,
        )
        for index in range(3)
    )
    return GroupSpec(0, "bench", None, strategy, deployments, (), (), ())


def measure(decide: Callable[[], object], decisions: int) -> tuple[float, float]:
    """(median, p99) µs per decision, over batches of 100."""
    for _ in range(200):  # warm: connections, breaker cache
        decide()
    batches = []
    for _ in range(max(1, decisions // 100)):
        started = time.perf_counter()
        for _ in range(100):
            decide()
        batches.append((time.perf_counter() - started) / 100 * 1e6)
    batches.sort()
    return statistics.median(batches), batches[int(len(batches) * 0.99) - 1 if len(batches) > 1 else 0]


def lanes() -> list[tuple[str, Callable[[], object]]]:
    found: list[tuple[str, Callable[[], object]]] = []
    for strategy in ("weighted", "least_busy", "lowest_latency"):
        for limits in (False, True):
            spec = group(strategy, limits)
            found.append((strategy + (" + rpm/tpm limits" if limits else ""), lambda spec=spec: selection.choose(spec, TENANT)))
    spec = group("weighted", True)
    found.append(("weighted + latency budget 150 ms", lambda: selection.choose(spec, TENANT, latency_budget_ms=150)))
    prices = {d.id: Decimal(3 - index) for index, d in enumerate(spec.deployments)}  # as the config cache hands them back
    found.append(("cost-aware (past a soft limit)", lambda: selection.choose(spec, TENANT, price=lambda d: prices[d.id])))
    found.append(("adaptive rule (a 200-word prompt)", lambda: adaptive.group_for(ADAPTIVE, PROMPT)))
    return found


def decisions(count: int) -> list[tuple[str, float, float, float]]:
    """(lane, snapshot seconds, median µs, p99 µs) for every lane, with and without the snapshot."""
    for deployment in group("weighted", False).deployments:
        selection.ended(deployment, "", latency_ms=100 + deployment.id % 7)  # lowest-latency and budgets have measurements
    rows = []
    for seconds in (0.1, 0.0):
        settings.SENTINEL = {**settings.SENTINEL, "ROUTING_STATE_SECONDS": seconds}
        selection.forget()
        for lane, decide in lanes():
            median, p99 = measure(decide, count)
            rows.append((lane, seconds, median, p99))
    return rows


@dataclass
class CacheResult:
    hit_ms: list[float]
    turn_ms: list[float]


def cache_latency(stack, requests: int) -> CacheResult:
    """The bench agent keeps answers; the same request again and again (hits) beside distinct ones (turns)."""
    stack.stub(latency_ms=0, chunks=1, chunk_ms=0)  # a turn's own cost, not a paced model's
    agent = Agent.objects.get(tenant__name="bench", name="bench")
    Policy.objects.update_or_create(agent=agent, defaults={"cache_seconds": 600})

    def timed(content: str) -> tuple[float, str]:
        request = urllib.request.Request(
            f"{stack.base_url}/v1/chat/completions",
            data=json.dumps({"model": "bench", "messages": [{"role": "user", "content": content}]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.key}", "Sentinel-Cache": "use"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return (time.perf_counter() - started) * 1000, response.headers.get("Sentinel-Cache", "")

    timed("the cached question")
    time.sleep(0.5)  # the answer is kept once its turn is done
    hits, turns = [], []
    for index in range(requests):
        took, state = timed("the cached question")
        if state == "hit":
            hits.append(took)
        turns.append(timed(f"a new question {index}")[0])
    return CacheResult(hits, turns)


def run(stack, quick: bool) -> tuple[list[tuple[str, float, float, float]], CacheResult]:
    return decisions(5_000 if quick else 20_000), cache_latency(stack, 50 if quick else 200)


def report(result: tuple[list[tuple[str, float, float, float]], CacheResult]) -> list[str]:
    rows, cached = result
    lines = [
        HEADING,
        "",
        "Microseconds per routing decision (`routing.selection.choose`, three deployments, in-process; the seed asks < 100 µs), "
        "with the worker's 0.1 s snapshot of the routing state and without it (a Redis round trip per decision):",
        "",
        "| lane | snapshot s | median µs | p99 µs (batches of 100) |",
        "|---|---|---|---|",
        *[f"| {lane} | {seconds} | {median:.1f} | {p99:.1f} |" for lane, seconds, median, p99 in rows],
        "",
        "A chat request answered from the response cache (`Sentinel-Cache: use`, a hit: no turn, no provider call) beside the "
        "same-sized request answered by a turn on the stub (0 ms, one chunk: Sentinel's own path), sequential, through the web process:",
        "",
        "| answered by | requests | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| the cache (hit) | {len(cached.hit_ms)} | {percentile(cached.hit_ms, 50):.1f} | {percentile(cached.hit_ms, 99):.1f} |",
        f"| a turn | {len(cached.turn_ms)} | {percentile(cached.turn_ms, 50):.1f} | {percentile(cached.turn_ms, 99):.1f} |",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{'lane':<36} {'snapshot s':>10} {'median µs':>10} {'p99 µs':>10}")
    for lane, seconds, median, p99 in decisions(args.decisions):
        print(f"{lane:<36} {seconds:>10} {median:>10.1f} {p99:>10.1f}")


if __name__ == "__main__":
    main()
