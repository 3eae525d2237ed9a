"""A running turn's heartbeat moves while it waits on the provider, first token or not (issue 11.7)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents import heartbeat, runner, supervisor
from agents.models import Turn, TurnStatus
from budgets.models import Reservation, SpendEntry
from tests.agents.test_turn_runner import admit_turn, run
from tests.stub_llm import Reply

# The heartbeat thread has its own database connection: it sees only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_beats(settings):
    settings.SENTINEL = {**settings.SENTINEL, "HEARTBEAT_SECONDS": 0.5, "ZOMBIE_SECONDS": 1, "LLM_TIMEOUT": 10.0}


def test_a_first_token_slower_than_the_zombie_timeout_does_not_get_the_turn_run_again(alice, stub_llm, fast_beats):
    stub_llm.script(Reply(content="slow but sure", delay=3.5))
    turn = admit_turn(alice)

    def work():
        try:
            run(turn)
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    requeued = []
    while worker.is_alive():
        requeued += supervisor.sweep().requeued
        time.sleep(0.2)
    worker.join()
    turn.refresh_from_db()
    assert requeued == [], "the Supervisor must see a live turn while its provider thinks"
    assert (turn.status, turn.attempt, len(stub_llm.requests)) == (TurnStatus.SUCCEEDED, 1, 1)
    assert SpendEntry.objects.filter(turn_id=turn.id).count() == 1


def test_a_beat_finds_a_claim_that_was_taken_back(alice, fast_beats):
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    tracked = heartbeat.track(turn.id, recorder.attempt)
    try:
        Turn.objects.filter(id=turn.id).update(status=TurnStatus.QUEUED, attempt=recorder.attempt + 1)  # the Supervisor took it
        assert heartbeat.beat_once(now=time.monotonic() + 1) == 0
        assert tracked.lost.is_set()
    finally:
        heartbeat.untrack(tracked)


def test_a_beat_keeps_the_turns_reservation_from_expiring(alice, fast_beats, settings):
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    soon = timezone.now() + timedelta(seconds=5)
    Reservation.objects.filter(turn_id=turn.id).update(expires_at=soon)
    tracked = heartbeat.track(turn.id, recorder.attempt)
    try:
        before = Turn.objects.get(id=turn.id).heartbeat_at
        assert heartbeat.beat_once(now=time.monotonic() + 1) == 1
        assert Turn.objects.get(id=turn.id).heartbeat_at > before
        held = Reservation.objects.get(turn_id=turn.id)
        assert held.expires_at > soon + timedelta(seconds=settings.SENTINEL["RESERVATION_TTL_SECONDS"] / 2)
    finally:
        heartbeat.untrack(tracked)


def test_a_turn_shorter_than_one_interval_is_never_beaten(alice, fast_beats):
    turn = admit_turn(alice)
    recorder = runner.claim(turn.id)
    tracked = heartbeat.track(turn.id, recorder.attempt)
    try:
        assert heartbeat.beat_once(now=tracked.since + 0.1) == 0
    finally:
        heartbeat.untrack(tracked)
