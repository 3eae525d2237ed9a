"""Batch lines yield the machine to real-time turns: while a real-time turn was claimed in the last
SENTINEL_BATCH_YIELD_SECONDS, a batch admits at most SENTINEL_BATCH_CONCURRENCY_BUSY lines at once,
and its full bound again once they stop. A batch line's own claim marks nothing."""

import pytest

from agents import activity, runner
from batches import processing
from batches.models import BatchLine, LineState
from sentinel_site.redis import sync_client
from tests.agents.test_turn_runner import admit_turn
from tests.batches.test_batch_bounds import make_batch

pytestmark = pytest.mark.django_db


@pytest.fixture
def bounds(settings):
    settings.SENTINEL = {**settings.SENTINEL, "BATCH_CONCURRENCY": 4, "BATCH_CONCURRENCY_BUSY": 1, "BATCH_YIELD_SECONDS": 2}


def running(batch) -> int:
    return BatchLine.objects.filter(batch=batch, state=LineState.RUNNING).count()


def test_a_real_time_turns_claim_holds_batches_to_their_busy_bound(alice, bounds):
    assert runner.claim(admit_turn(alice).id) is not None
    assert activity.realtime_busy()
    assert 0 < sync_client().ttl(activity.KEY) <= 2, "the mark lapses by itself"
    batch = make_batch(alice, 6)
    processing.advance(batch.id, enqueue=lambda turn: None)
    assert running(batch) == 1


def test_once_the_mark_lapses_the_batch_grows_back_to_its_bound(alice, bounds):
    batch = make_batch(alice, 6)
    sync_client().set(activity.KEY, 1, ex=2)
    processing.advance(batch.id, enqueue=lambda turn: None)
    assert running(batch) == 1
    sync_client().delete(activity.KEY)
    processing.advance(batch.id, enqueue=lambda turn: None)
    assert running(batch) == 4


def test_a_batch_lines_claim_marks_nothing(alice, bounds):
    batch = make_batch(alice, 1)
    processing.advance(batch.id, enqueue=lambda turn: None)
    line = BatchLine.objects.get(batch=batch)
    assert runner.claim(line.turn_id) is not None
    assert not activity.realtime_busy()


def test_with_redis_out_of_reach_batches_keep_their_full_bound(alice, bounds, settings, monkeypatch):
    import redis

    def down(*args, **kwargs):
        raise redis.ConnectionError("down")

    monkeypatch.setattr(activity, "sync_client", lambda: type("Down", (), {"exists": down})())
    assert processing.bound() == 4
