"""Chaos: kill -9 the worker in the middle of a batch; after a restart the batch completes, no line twice,
and its bad lines are in the error file, once each."""

import os
import signal
import time
from collections import Counter

import pytest
import redis
from django.conf import settings as django_settings

from agents.models import Message, Turn
from agents.tasks import supervise
from batches import tasks
from batches.models import BatchLine, LineState
from tests.batches.conftest import jsonl, line, output_records, upload
from tests.conftest import start_worker, wait_for
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db(transaction=True)

# The acceptance run is SENTINEL_TEST_BATCH_LINES=10000 (several minutes on two cores); 60 by default.
LINES = int(os.environ.get("SENTINEL_TEST_BATCH_LINES", "60"))
DELAY = 0.4 if LINES <= 100 else 0.0  # small batches: slow lines, so the kill finds some in flight
BAD_LINES = [
    "{not json",
    {"method": "POST", "url": "/v1/chat/completions", "body": {}},
    {**line("bad-url"), "url": "/v1/embeddings"},
    line("bad-body", messages=[]),
]
BAD_CODES = ["invalid_json", "missing_custom_id", "mismatched_endpoint", "invalid_request"]


@pytest.mark.timeout(120 + LINES // 2)  # pytest-timeout's 120 s is for the default size
def test_a_batch_survives_a_killed_worker_without_redoing_finished_lines(client, live, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "ZOMBIE_SECONDS": 3, "UNSENT_SECONDS": 3, "RETRY_BACKOFF_BASE": 0, "BATCH_SWEEP_INTERVAL": 1}
    stub_llm.script(*[Reply(content=f"answer {i}", delay=DELAY) for i in range(2 * LINES)])
    started = time.monotonic()
    records: list[dict | str] = [line(f"k{i}", f"question {i}") for i in range(LINES)]
    for position, bad in zip((0, LINES // 2, LINES), BAD_LINES[:3], strict=True):
        records.insert(position, bad)  # at the start, in the middle and at the end; a bad line never fails the batch
    records.append(BAD_LINES[3])
    file = upload(client, jsonl(*records))
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= LINES // 6,
        timeout=60 + LINES // 10,
        message="a sixth of the batch done",
    )
    seen = [client.batches.retrieve(batch.id).request_counts.completed]
    killed_at = time.monotonic() - started
    finished_before = dict(BatchLine.objects.filter(state=LineState.SUCCEEDED).values_list("index", "turn_id"))
    assert BatchLine.objects.filter(state=LineState.RUNNING).exists(), "lines were in flight at the kill"
    os.kill(live.worker.pid, signal.SIGKILL)
    live.worker.wait()
    live.worker = start_worker(live.env, live.worker_log)

    def done():
        supervise()  # what beat runs every 10 s: the dead worker's turns run again
        tasks.sweep()  # and every 5 s: the batch moves on though its wake-ups died with the worker
        time.sleep(0.5)
        current = client.batches.retrieve(batch.id)
        seen.append(current.request_counts.completed)
        return current if current.status == "completed" else None

    ended = wait_for(done, timeout=180 + LINES // 5, interval=1, message="the batch to complete after the restart")
    if LINES > 100:  # the acceptance run's figures, for the record (run it with -s)
        took = time.monotonic() - started
        print(f"\n{LINES} lines in {took:.0f} s ({LINES / took:.1f} lines/s); killed at {killed_at:.0f} s with {seen[0]} done")
    assert seen == sorted(seen), "request_counts only ever rise"
    assert (ended.request_counts.total, ended.request_counts.completed, ended.request_counts.failed) == (LINES + 4, LINES, 4)
    outputs = output_records(client, ended.output_file_id)
    assert sorted(r["custom_id"] for r in outputs) == sorted(f"k{i}" for i in range(LINES)), "exactly one result per custom_id"
    errors = output_records(client, ended.error_file_id)
    assert sorted((r["error"] or {}).get("code") for r in errors) == sorted(BAD_CODES), "each bad line once, in the error file"
    assert sorted(r["custom_id"] for r in errors if r.get("custom_id")) == ["bad-body", "bad-url"]
    assert Turn.objects.count() == LINES, "one turn per line, however often the batch was picked up"
    replies = Counter(Message.objects.filter(role="assistant").values_list("turn_id", flat=True))
    assert set(replies.values()) == {1} and len(replies) == LINES, "every turn has exactly one reply"
    after = dict(BatchLine.objects.filter(index__in=finished_before).values_list("index", "turn_id"))
    assert after == finished_before, "lines finished before the kill kept their turns"
    assert Turn.objects.filter(id__in=finished_before.values(), attempt=1).count() == len(finished_before), "and were not run again"
    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")
