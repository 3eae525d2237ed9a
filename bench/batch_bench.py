"""Real-time chat while a batch runs (issue 17): the p50 and p99 of sequential chat turns on an idle
stack, then while a batch of many lines is in progress, side by side in one run, with the batch's own
rate beside them. Two ways to run the batch: on the same worker processes as real-time turns (the
Procfile's single `worker`), and on a worker process of its own for the `batches` queue at a lower CPU
priority (`nice -n 10`), the real-time workers leaving that queue alone. The acceptance bar: the busy
p99 within 2x of the idle one.

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

SEPARATE = {"SENTINEL_BENCH_BATCH_WORKERS": "1"}  # bench/harness.py: the batches queue on a niced worker of its own


@dataclass
class Busy:
    """Probes taken while one batch ran, and how fast the batch went meanwhile."""

    took_ms: list[float]
    lines_per_s: float


@dataclass
class BatchResult:
    lines: int
    probes: int
    idle_ms: list[float]
    shared: Busy
    separate: Busy
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


def _jsonl(lines: int) -> bytes:
    body = {"model": "bench", "messages": [{"role": "user", "content": ""}]}
    records = []
    for i in range(lines):
        body["messages"][0]["content"] = texts.distinct("batch ")
        records.append(json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
    return ("\n".join(records) + "\n").encode()


def _while_batch(stack: Stack, lines: int, probes: int) -> Busy:
    """Probes once the batch's first line finished, until they are done or the batch is; then it is cancelled."""
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=stack.key, max_retries=2, timeout=120)
    file = client.files.create(file=("bench.jsonl", io.BytesIO(_jsonl(lines))), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    start_count, start = client.batches.retrieve(batch.id).request_counts.completed, time.monotonic()

    def running() -> bool:
        return client.batches.retrieve(batch.id).status == "in_progress"

    took = _timed_chats(stack, probes, running)
    end_count, end = client.batches.retrieve(batch.id).request_counts.completed, time.monotonic()
    client.batches.cancel(batch.id)
    while client.batches.retrieve(batch.id).status == "cancelling" and time.monotonic() < end + 60:
        time.sleep(0.2)  # its running lines end before the next lane restarts the workers
    return Busy(took_ms=took, lines_per_s=(end_count - start_count) / (end - start) if end > start else float("nan"))


def run(stack: Stack, lines: int, probes: int) -> BatchResult:
    # A model that takes a little time, so batch lines occupy worker threads as real ones do; one chunk, unpaced
    # (the stub's default paces 64 chunks 20 ms apart: 1.3 s a turn, which hid Sentinel's own latency entirely).
    stack.stub(latency_ms=20.0, chunks=1, chunk_ms=0)
    idle = _timed_chats(stack, probes)
    shared = _while_batch(stack, lines, probes)
    stack.restart(SEPARATE)
    separate = _while_batch(stack, lines, probes)
    concurrency = stack.env.get("SENTINEL_BATCH_CONCURRENCY", "8")
    return BatchResult(lines=lines, probes=probes, idle_ms=idle, shared=shared, separate=separate, concurrency=concurrency)


def report(result: BatchResult) -> list[str]:
    idle99 = percentile(result.idle_ms, 99)

    def row(name: str, took: list[float]) -> str:
        return f"| {name} | {len(took)} | {percentile(took, 50):.1f} ms | {percentile(took, 99):.1f} ms |"

    def verdict(busy: Busy) -> str:
        ratio = percentile(busy.took_ms, 99) / idle99 if idle99 else float("nan")
        return f"{ratio:.2f}x idle ({'met' if ratio <= 2 else '**not met**'}), the batch meanwhile {busy.lines_per_s:.1f} lines/s"

    return [
        "## Real-time chat while a batch runs (issue 17)",
        "",
        f"Sequential chat turns (a stub answering in 20 ms, one chunk) on an idle stack, then while a {result.lines}-line batch "
        f"runs (`SENTINEL_BATCH_CONCURRENCY={result.concurrency}` lines at once on the `batches` queue; the batch is cancelled "
        "once the probes are done): first on the same two worker processes as the real-time turns, then (the workers "
        "restarted) on a worker process of its own for the `batches` queue at `nice -n 10`, the real-time workers leaving "
        "that queue alone.",
        "",
        "| | turns | p50 | p99 |",
        "| --- | --- | --- | --- |",
        row("idle", result.idle_ms),
        row("batch on the same workers", result.shared.took_ms),
        row("batch on its own niced worker", result.separate.took_ms),
        "",
        f"p99 while the batch runs (the bar: at most 2x idle): on the same workers {verdict(result.shared)}; on its own niced "
        f"worker {verdict(result.separate)}.",
    ]
