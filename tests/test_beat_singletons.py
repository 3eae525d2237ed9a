"""Beat singletons: each periodic task runs once per period, however many times it is delivered."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings as django_settings

from agents.tasks import supervise
from batches.tasks import sweep as batches_sweep
from budgets.tasks import checkpoint_audit, expire_reservations
from lifecycle.tasks import ensure_partitions, purge
from memory.tasks import dream
from runs.tasks import reload_config, sweep
from sentinel_site import singletons
from sentinel_site.celery import app
from sentinel_site.redis import sync_client
from webhooks.tasks import sweep as webhooks_sweep

SINGLETONS = {
    "supervisor": supervise,
    "runs-sweep": sweep,
    "reload-config": reload_config,
    "dreamer": dream,
    "expire-reservations": expire_reservations,
    "audit-checkpoint": checkpoint_audit,
    "purge": purge,
    "partitions": ensure_partitions,
    "batches-sweep": batches_sweep,
    "webhooks-sweep": webhooks_sweep,
}


@pytest.fixture(autouse=True)
def _no_period_held():
    client = sync_client()
    for key in client.scan_iter("sentinel:singleton:*"):
        client.delete(key)
    yield
    for key in client.scan_iter("sentinel:singleton:*"):
        client.delete(key)


def with_period(settings, entry: str, seconds: float) -> None:
    schedule = {name: dict(value) for name, value in django_settings.CELERY_BEAT_SCHEDULE.items()}
    schedule.setdefault(entry, {"task": entry})["schedule"] = seconds
    settings.CELERY_BEAT_SCHEDULE = schedule


started = threading.Event()
release = threading.Event()


@app.task(name="tests.singletons.slow")
@singletons.once_per_period("test-slow")
def slow() -> str:
    started.set()
    release.wait(10)
    return "ran"


@pytest.mark.django_db
@pytest.mark.parametrize("entry", sorted(SINGLETONS))
def test_it_runs_each_beat_singleton_once_when_two_beats_deliver_it_in_one_period(entry):
    task = SINGLETONS[entry]
    assert django_settings.CELERY_BEAT_SCHEDULE[entry]["task"] == task.name, "the lock is named after the task's beat entry"
    first = task.apply().get()
    second = task.apply().get()
    assert first != singletons.SKIPPED, f"the first delivery of {entry} in its period runs"
    assert second == singletons.SKIPPED, f"a second delivery of {entry} in the same period must not run"


def test_every_beat_entry_is_a_singleton_except_indexing_which_guards_itself():
    guarded = set(SINGLETONS) | {"index-memories"}  # a pass at a time (memory.tasks._INDEX_RUNNING), also asked for on demand
    assert set(django_settings.CELERY_BEAT_SCHEDULE) == guarded, "a new beat entry needs @once_per_period (or a reason not to)"


@pytest.mark.django_db
def test_it_runs_again_in_the_next_period(settings):
    with_period(settings, "supervisor", 0.3)
    assert supervise.apply().get() != singletons.SKIPPED
    assert supervise.apply().get() == singletons.SKIPPED
    time.sleep(0.35)
    assert supervise.apply().get() != singletons.SKIPPED, "the period's lock is gone with the period"


@pytest.mark.django_db
def test_a_direct_call_in_code_is_not_locked():
    assert supervise() != singletons.SKIPPED
    assert supervise() != singletons.SKIPPED, "only deliveries count against the period"


def test_a_run_longer_than_its_period_is_not_overlapped_and_frees_the_period_when_it_ends(settings):
    with_period(settings, "test-slow", 0.3)
    started.clear()
    release.clear()
    results: list[str] = []
    runner = threading.Thread(target=lambda: results.append(slow.apply().get()))
    runner.start()
    try:
        assert started.wait(10)
        time.sleep(0.8)  # well past the period: the running one still holds it
        assert slow.apply().get() == singletons.SKIPPED, "a run still going is not overlapped by the next period's"
    finally:
        release.set()
        runner.join(10)
    assert results == ["ran"]
    started.clear()
    release.set()
    assert slow.apply().get() == "ran", "a run that outlasted its period frees the lock when it ends"


def test_a_dead_holders_lock_expires_within_the_period(settings):
    with_period(settings, "supervisor", 0.3)
    assert singletons.acquire("supervisor") is not None  # a worker took the period, then was killed -9
    assert singletons.acquire("supervisor") is None
    time.sleep(0.3)
    assert singletons.acquire("supervisor") is not None, "no renewal: the key expired with the period"
