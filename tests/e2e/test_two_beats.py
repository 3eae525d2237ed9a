"""Two live `celery beat` processes send every periodic task; the worker runs each once per period."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from sentinel_site import singletons
from sentinel_site.redis import sync_client
from sentinel_site.stack import BASE_DIR, beat_command, process_env
from tests.conftest import start_worker, wait_for

# Worker and beat processes are started and stopped inside the test: more than the default 120 s on a busy machine.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

PERIODS = {"runs-sweep": 1.0, "supervisor": 2.0, "dreamer": 2.0, "audit-checkpoint": 2.0, "reload-config": 5.0}
SHORT = {
    "SENTINEL_RUNS_SWEEP_INTERVAL": "1",
    "SENTINEL_SUPERVISOR_INTERVAL": "2",
    "SENTINEL_DREAMER_INTERVAL": "2",
    "SENTINEL_AUDIT_CHECKPOINT_INTERVAL": "2",
    "SENTINEL_LOG_FORMAT": "json",
}
WATCH_SECONDS = 12


def start_beat(env: dict[str, str], log: Path, schedule: Path) -> subprocess.Popen:
    return subprocess.Popen(
        beat_command(schedule), cwd=BASE_DIR, env=process_env("beat", env), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def singleton_records(log: Path) -> list[dict]:
    records = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "singleton" in record:
            records.append(record)
    return records


def sends(log: Path, entry: str) -> int:
    return log.read_text().count(f"Sending due task {entry} (")


def test_two_beat_processes_do_not_double_any_periodic_task(live_stack, tmp_path):
    env = {**live_stack.env, **SHORT}
    live_stack.worker.terminate()
    live_stack.worker.wait(30)
    worker_log = tmp_path / "worker.log"
    worker = start_worker(env, worker_log)
    beats: list[subprocess.Popen] = []
    beat_logs = [tmp_path / "beat-1.log", tmp_path / "beat-2.log"]
    try:
        beats.append(start_beat(env, beat_logs[0], tmp_path / "beat-1.schedule"))
        wait_for(lambda: sends(beat_logs[0], "runs-sweep") >= 1, timeout=60, message="the first beat to send")
        time.sleep(0.5)  # the second beat's periods start half a sweep period later
        beats.append(start_beat(env, beat_logs[1], tmp_path / "beat-2.schedule"))
        wait_for(lambda: sends(beat_logs[1], "runs-sweep") >= 1, timeout=60, message="the second beat to send")
        time.sleep(WATCH_SECONDS)
    finally:
        for beat in beats:
            beat.terminate()
        for beat in beats:
            beat.wait(15)
    time.sleep(1.5)  # the last deliveries run
    worker.terminate()
    worker.wait(30)
    live_stack.worker = start_worker(live_stack.env, live_stack.worker_log)
    client = sync_client()
    for key in client.scan_iter("sentinel:singleton:*"):
        client.delete(key)

    records = singleton_records(worker_log)
    for entry, period in PERIODS.items():
        for beat_log in beat_logs:
            assert sends(beat_log, entry) >= 1, f"both beats sent {entry}:\n{beat_log.read_text()[-3000:]}"
        ran = sorted(datetime.fromisoformat(r["ts"]).timestamp() for r in records if r["singleton"] == entry and r["ran"])
        skipped = [r for r in records if r["singleton"] == entry and not r["ran"]]
        assert ran, f"{entry} ran"
        assert skipped, f"the second beat's deliveries of {entry} were skipped, not run"
        gaps = [later - earlier for earlier, later in pairwise(ran)]
        too_close = [round(gap, 3) for gap in gaps if gap < period * singletons.HOLD_SHARE - 0.05]
        assert not too_close, f"{entry} (every {period} s) ran twice within a period: gaps {too_close}"
    sweeps = [r for r in records if r["singleton"] == "runs-sweep" and r["ran"]]
    assert len(sweeps) >= WATCH_SECONDS * 0.7, "the sweep kept its schedule while the lock skipped the doubles"
