"""CPU per streamed provider call: Sentinel's adapter (`providers.stream`, chunks read as JSON)
against the SDK's own streaming path (`chat.completions.create(stream=True)`, a pydantic model
per chunk), the way `_stream` read it before issue 13. Same process, same stub, alternating.

    python -m bench.provider_bench [--calls=400] [--chunks=64] [--rounds=4]

It starts bench/stub_server.py on a free port with no latency and no pause between chunks, so
the figures are the client's CPU (time.process_time) per call; the stub runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from agents import providers
from sentinel_site import tracing

PYTHON = sys.executable


def sdk_stream(config: providers.ProviderConfig, body: dict, on_delta: Callable[[dict], None]) -> providers.Completion:
    """The adapter's streaming read before issue 13, kept as the reference it is measured against."""
    started = time.monotonic()
    result = providers.Completion(model=config.model)
    calls: dict[Any, dict] = {}
    finished = False
    try:
        for chunk in providers.client_for(config).chat.completions.create(**body, extra_headers=tracing.outgoing_headers()):
            if chunk.usage:
                result.prompt_tokens = chunk.usage.prompt_tokens
                result.completion_tokens = chunk.usage.completion_tokens
            if chunk.model:
                result.model = chunk.model
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            delta = choice.delta
            out: dict[str, Any] = {}
            if delta and delta.content:
                result.content += delta.content
                out["content"] = delta.content
            if delta and delta.tool_calls:
                out["tool_calls"] = [tc.model_dump(exclude_none=True) for tc in delta.tool_calls]
                for tc in delta.tool_calls:
                    call = calls.setdefault(tc.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                    if tc.id:
                        call["id"] = tc.id
                    if tc.function:
                        call["function"]["name"] += tc.function.name or ""
                        call["function"]["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                result.finish_reason = choice.finish_reason
                finished = True
            if out:
                if result.first_token_ms is None:
                    result.first_token_ms = int((time.monotonic() - started) * 1000)
                on_delta(out)
    except providers.ProviderError:
        raise
    except Exception as exc:
        raise providers.classify(exc) from exc
    if not finished:
        raise providers.ProviderError(502, "provider_bad_response", "The model provider's stream ended without finishing.", retryable=True)
    result.tool_calls = [calls[index] for index in sorted(calls)]
    result.latency_ms = int((time.monotonic() - started) * 1000)
    return result


def _adapter(config: providers.ProviderConfig, body: dict, on_delta: Callable[[dict], None]) -> providers.Completion:
    return providers._stream(config, body, on_delta)


LANES: dict[str, Callable[..., providers.Completion]] = {"sdk": sdk_stream, "adapter": _adapter}


def cpu_per_call_ms(lane: Callable[..., providers.Completion], config: providers.ProviderConfig, body: dict, calls: int) -> float:
    deltas: list[dict] = []
    started = time.process_time()
    for _ in range(calls):
        deltas.clear()
        lane(config, body, deltas.append)
    return (time.process_time() - started) * 1000 / calls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_stub(port: int, chunks: int) -> subprocess.Popen:
    """bench/stub_server.py, told to answer at once and send its chunks without a pause. (Not
    bench.harness: that needs Django's settings and a database this benchmark has no use for.)"""
    stub = subprocess.Popen([PYTHON, "-m", "bench.stub_server", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    control = json.dumps({"latency_ms": 0, "chunks": chunks, "chunk_ms": 0}).encode()
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/control", data=control), timeout=1):
                return stub
        except OSError:
            if stub.poll() is not None or time.monotonic() > deadline:
                stub.kill()
                raise RuntimeError("the stub did not start") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    port = _free_port()
    stub = _start_stub(port, args.chunks)
    try:
        config = providers.ProviderConfig(f"http://127.0.0.1:{port}/v1", "bench-key", "stub-model", 30.0, 5.0)
        body = providers.request_body(config, [{"role": "user", "content": "a benchmark question"}], {}, stream=True)
        reference = [sdk_stream(config, body, lambda _: None), _adapter(config, body, lambda _: None)]
        for result in reference:
            result.latency_ms, result.first_token_ms = 0, None
        assert reference[0] == reference[1], f"the lanes disagree: {reference}"
        for lane in LANES.values():  # warm both: connection pool, imports, caches
            cpu_per_call_ms(lane, config, body, 20)
        figures: dict[str, list[float]] = {name: [] for name in LANES}
        for _ in range(args.rounds):
            for name, lane in LANES.items():
                figures[name].append(cpu_per_call_ms(lane, config, body, args.calls))
    finally:
        stub.terminate()
        stub.wait(timeout=10)

    print(f"providers.stream CPU per call, {args.chunks} content chunks, {args.calls} calls x {args.rounds} rounds alternating")
    for name, values in figures.items():
        print(f"  {name:8s} median {statistics.median(values):.3f} ms  (rounds: {', '.join(f'{v:.3f}' for v in values)})")
    sdk, adapter = statistics.median(figures["sdk"]), statistics.median(figures["adapter"])
    print(f"  saved    {sdk - adapter:.3f} ms per call ({(1 - adapter / sdk) * 100:.0f}%)")


if __name__ == "__main__":
    sys.exit(main())
