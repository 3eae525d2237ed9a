"""The provider stage of a turn, in lanes: CPU per streamed call on each stream lane
(SENTINEL_PROVIDER_CLIENT=raw against sdk), the circuit breaker's Redis commands per turn
with its cache off and on (SENTINEL_BREAKER_CACHE_SECONDS=0 against 1), and the raw lane with
the connection closed after `[DONE]` (as before HISTORY row 48: `providers._drain` left out)
against kept for the next call. Same process, same stub, lanes alternating round by round; TCP
connections opened are counted at `socket.create_connection`, which httpcore's sync backend calls.

    python -m sentinel_site.stack env   # or any DATABASE_URL / REDIS_URL (the database is not used)
    python -m bench.provider_bench [--calls=300] [--chunks=20] [--rounds=4]

Each call is what `runner.call_provider` does around the model: `breaker.before_call`,
`providers.stream`, `breaker.record_success`. CPU is this thread's (time.thread_time) around
`providers.stream`; the stub (bench/stub_server.py, no latency, no pause between chunks) runs in
a process of its own. Redis commands are counted by MONITOR, only those sent to this Redis
database.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
os.environ.setdefault("SENTINEL_PROCESS", "worker")
django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402

from agents import breaker, providers  # noqa: E402

PYTHON = sys.executable


class RedisCommands:
    """Counts the commands Redis receives for one database (MONITOR, in a thread of its own)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.count = 0
        self._monitor = self.client.monitor()
        self._monitor.__enter__()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        try:
            for command in self._monitor.listen():
                if command.get("db") == self.db:
                    self.count += 1
        except (redis.RedisError, OSError, ValueError):
            pass  # the monitor connection closed at the end of the run

    def settle(self) -> int:
        """The count once MONITOR has caught up (it is asynchronous): a marker command, then wait."""
        marker = f"bench-marker-{uuid.uuid4()}"
        seen = self.count
        self.client.exists(marker)
        deadline = time.monotonic() + 5
        while self.count <= seen and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        return self.count


DRAIN = providers._drain
CONNECT = socket.create_connection
connections = 0


def _counted_connect(*args, **kwargs) -> socket.socket:
    global connections
    connections += 1
    return CONNECT(*args, **kwargs)


socket.create_connection = _counted_connect


def one_lane(
    config: providers.ProviderConfig, body: dict, calls: int, stream_lane: str, cache_seconds: float, keep_alive: bool
) -> tuple[float, float, float, float]:
    """(ms of CPU per providers.stream call, breaker calls' ms of CPU per turn, ms of wall time per
    providers.stream call, TCP connections opened per call)."""
    settings.SENTINEL["PROVIDER_CLIENT"] = stream_lane
    settings.SENTINEL["BREAKER_CACHE_SECONDS"] = cache_seconds
    providers._drain = DRAIN if keep_alive else lambda body_bytes: None
    breaker.forget_cached()
    streaming = guarding = wall = 0.0
    opened = connections
    for _ in range(calls):
        before = time.thread_time()
        breaker.before_call(config)
        started, clock = time.thread_time(), time.perf_counter()
        providers.stream(config, body, lambda delta: None)
        ended, wall = time.thread_time(), wall + time.perf_counter() - clock
        breaker.record_success(config)
        streaming += ended - started
        guarding += (started - before) + (time.thread_time() - ended)
    return streaming * 1000 / calls, guarding * 1000 / calls, wall * 1000 / calls, (connections - opened) / calls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_stub(port: int, chunks: int) -> subprocess.Popen:
    """bench/stub_server.py, told to answer at once and send its chunks without a pause."""
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


LANES = {
    "sdk": ("sdk", 0.0, False),
    "raw": ("raw", 0.0, False),
    "raw+cache": ("raw", 1.0, False),
    "keep-alive": ("raw", 1.0, True),  # the default since HISTORY row 48
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    port = _free_port()
    stub = _start_stub(port, args.chunks)
    commands = RedisCommands(settings.REDIS_URL)
    try:
        config = providers.ProviderConfig(f"http://127.0.0.1:{port}/v1", "bench-key", "stub-model", 30.0, 5.0, tenant_id=str(uuid.uuid4()))
        body = providers.request_body(config, [{"role": "user", "content": "a benchmark question"}], {}, stream=True)
        answers = []
        for lane in ("sdk", "raw"):
            settings.SENTINEL["PROVIDER_CLIENT"] = lane
            deltas: list[dict] = []
            result = providers.stream(config, body, deltas.append)
            result.latency_ms, result.first_token_ms = 0, None
            answers.append((result, deltas))
        assert answers[0] == answers[1], f"the lanes disagree: {answers}"
        for lane_settings in LANES.values():  # warm every lane: connection pool, imports, caches
            one_lane(config, body, 20, *lane_settings)
        cpu: dict[str, list[float]] = {name: [] for name in LANES}
        guard: dict[str, list[float]] = {name: [] for name in LANES}
        sent: dict[str, list[float]] = {name: [] for name in LANES}
        walls: dict[str, list[float]] = {name: [] for name in LANES}
        opened: dict[str, list[float]] = {name: [] for name in LANES}
        names = list(LANES)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                before = commands.settle()
                stream_ms, guard_ms, wall_ms, per_call = one_lane(config, body, args.calls, *LANES[name])
                cpu[name].append(stream_ms)
                walls[name].append(wall_ms)
                opened[name].append(per_call)
                guard[name].append(guard_ms)
                sent[name].append((commands.settle() - before - 1) / args.calls)  # less settle's own marker
    finally:
        stub.terminate()
        stub.wait(timeout=10)

    words = len(answers[1][0].content.split())
    print(f"provider stage per turn: {args.calls} streamed calls x {args.rounds} rounds a lane, alternating; answers of {words} words")
    print(f"in {args.chunks} content chunks; CPU is this thread's (time.thread_time); Redis commands are this database's (MONITOR)")
    columns = ("providers.stream CPU ms", 24), ("wall ms", 8), ("connections", 12), ("breaker CPU ms", 16), ("Redis commands", 16)
    print(f"  {'lane':10s} " + " ".join(f"{title:>{width}s}" for title, width in columns))
    for name in names:
        rounds = ", ".join(f"{v:.3f}" for v in cpu[name])
        print(
            f"  {name:10s} {statistics.median(cpu[name]):24.3f} {statistics.median(walls[name]):8.3f} "
            f"{statistics.median(opened[name]):12.3f} {statistics.median(guard[name]):16.3f} "
            f"{statistics.median(sent[name]):16.3f}   (stream rounds: {rounds})"
        )
    sdk, raw = statistics.median(cpu["sdk"]), statistics.median(cpu["raw"])
    print(f"  raw against sdk: {sdk - raw:.3f} ms less CPU per call ({(1 - raw / sdk) * 100:.0f}%)")
    closed, kept = statistics.median(cpu["raw+cache"]), statistics.median(cpu["keep-alive"])
    closed_wall, kept_wall = statistics.median(walls["raw+cache"]), statistics.median(walls["keep-alive"])
    print(f"  keep-alive against closed after [DONE]: {closed - kept:.3f} ms less CPU, {closed_wall - kept_wall:.3f} ms less wall per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
