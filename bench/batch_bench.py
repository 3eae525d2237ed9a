"""Real-time chat while a batch runs (issue 17): the p50 and p99 of sequential chat turns on an idle
stack, then on the same stack while a batch of many lines is in progress, side by side in one run,
with the batch's own rate beside them. The acceptance bar: the busy p99 within 2x of the idle one.

    make bench BENCH_ARGS=--only=batch        (--quick: fewer lines and probes)
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass

import openai

from bench import texts
from bench.harness import Stack, percentile


@dataclass
class BatchResult:
    lines: int
    probes: int
    idle_ms: list[float]
    busy_ms: list[float]
    lines_per_s: float
    concurrency: str


def _timed_chats(stack: Stack, count: int, still_running=lambda: True) -> list[float]:
    took = []
    for _ in range(count):
        if not still_running():
            break
        started = time.perf_counter()
        stack.chat(texts.distinct("real-time "))
        took.append((time.perf_counter() - started) * 1000)
    return took


def run(stack: Stack, lines: int, probes: int) -> BatchResult:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.key, max_retries=2, timeout=120)
    # A model that takes a little time, so batch lines occupy worker threads as real ones do; one chunk, unpaced
    # (the stub's default paces 64 chunks 20 ms apart: 1.3 s a turn, which hid Sentinel's own latency entirely).
    stack.stub(latency_ms=20.0, chunks=1, chunk_ms=0)
    idle = _timed_chats(stack, probes)
    body = "".join(
        json.dumps(
            {
                "custom_id": f"b{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "bench", "messages": [{"role": "user", "content": texts.distinct("batch ")}]},
            }
        )
        + "\n"
        for i in range(lines)
    )
    file = client.files.create(file=("bench.jsonl", io.BytesIO(body.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    start_count, start = client.batches.retrieve(batch.id).request_counts.completed, time.monotonic()

    def running() -> bool:
        return client.batches.retrieve(batch.id).status == "in_progress"

    busy = _timed_chats(stack, probes, running)
    end_count, end = client.batches.retrieve(batch.id).request_counts.completed, time.monotonic()
    client.batches.cancel(batch.id)
    rate = (end_count - start_count) / (end - start) if end > start else float("nan")
    concurrency = stack.env.get("SENTINEL_BATCH_CONCURRENCY", "8")
    return BatchResult(lines=lines, probes=probes, idle_ms=idle, busy_ms=busy, lines_per_s=rate, concurrency=concurrency)


def report(result: BatchResult) -> list[str]:
    idle99, busy99 = percentile(result.idle_ms, 99), percentile(result.busy_ms, 99)
    ratio = busy99 / idle99 if idle99 else float("nan")
    return [
        "## Real-time chat while a batch runs (issue 17)",
        "",
        f"Sequential chat turns (a stub answering in 20 ms, one chunk) on an idle stack, then on the same stack while a {result.lines}-line batch runs "
        f"(`SENTINEL_BATCH_CONCURRENCY={result.concurrency}` lines at once on the `batches` queue; the batch is cancelled "
        "once the probes are done).",
        "",
        "| | turns | p50 | p99 |",
        "| --- | --- | --- | --- |",
        f"| idle | {len(result.idle_ms)} | {percentile(result.idle_ms, 50):.1f} ms | {idle99:.1f} ms |",
        f"| batch running | {len(result.busy_ms)} | {percentile(result.busy_ms, 50):.1f} ms | {busy99:.1f} ms |",
        "",
        f"p99 while the batch runs: {ratio:.2f}x idle (the bar: at most 2x, {'met' if ratio <= 2 else '**not met**'}); "
        f"the batch meanwhile: {result.lines_per_s:.1f} lines/s.",
    ]
