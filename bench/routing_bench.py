"""The routing decision's overhead: microseconds per `routing.selection.choose` on a group of three
deployments, in-process, for each strategy, with and without rpm/tpm limits (the seed asks < 100 µs),
with the worker's snapshot of the routing state (SENTINEL_ROUTING_STATE_SECONDS=0.1, the default)
and without it (0: a Redis round trip at every decision).

    python -m sentinel_site.stack env   # or any REDIS_URL (the database is not used)
    python -m bench.routing_bench [--decisions=20000]

With the snapshot, one decision in every 0.1 s pays the round trip (the median hides it; the p99
of a batch of 100 shows it); without, every decision pays it, so that lane measures this Redis too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
os.environ.setdefault("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")
django.setup()

from django.conf import settings  # noqa: E402

from routing import selection  # noqa: E402
from routing.groups import DeploymentSpec, GroupSpec  # noqa: E402

TENANT = "bench-tenant"


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


def measure(spec: GroupSpec, decisions: int) -> tuple[float, float]:
    """(median, p99) µs per decision, over batches of 100."""
    for _ in range(200):  # warm: connections, breaker cache
        selection.choose(spec, TENANT)
    batches = []
    for _ in range(max(1, decisions // 100)):
        started = time.perf_counter()
        for _ in range(100):
            selection.choose(spec, TENANT)
        batches.append((time.perf_counter() - started) / 100 * 1e6)
    batches.sort()
    return statistics.median(batches), batches[int(len(batches) * 0.99) - 1 if len(batches) > 1 else 0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args()
    for deployment in group("weighted", False).deployments:
        selection.ended(deployment, "", latency_ms=100 + deployment.id % 7)  # lowest-latency has measurements
    print(f"{'lane':<34} {'snapshot s':>10} {'median µs':>10} {'p99 µs':>10}")
    for seconds in (0.1, 0.0):
        settings.SENTINEL = {**settings.SENTINEL, "ROUTING_STATE_SECONDS": seconds}
        selection.forget()
        for strategy in ("weighted", "least_busy", "lowest_latency"):
            for limits in (False, True):
                median, p99 = measure(group(strategy, limits), args.decisions)
                lane = strategy + (" + rpm/tpm limits" if limits else "")
                print(f"{lane:<34} {seconds:>10} {median:>10.1f} {p99:>10.1f}")


if __name__ == "__main__":
    main()
