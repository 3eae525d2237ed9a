"""Supervisor, dead letters, circuit breaker and provider retries, against real PostgreSQL and Redis."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from agents import breaker, deadletters, providers, runner, supervisor
from agents.models import DeadLetter, Message, Turn, TurnStatus
from budgets.models import AuditEntry, Reservation
from tests.agents.test_turn_runner import admit_turn, run
from tests.stub_llm import Reply

pytestmark = pytest.mark.django_db


def silent_for(turn, seconds):
    Turn.objects.filter(id=turn.id).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def test_a_turn_silent_for_60_seconds_is_requeued_and_its_old_worker_fenced_out(alice, stub_llm):
    turn = admit_turn(alice)
    stale = runner.claim(turn.id)
    silent_for(turn, 61)
    result = supervisor.sweep()
    assert [turn_id for turn_id, _ in result.requeued] == [str(turn.id)]
    assert Turn.objects.get(id=turn.id).status == TurnStatus.QUEUED
    with pytest.raises(runner.LostClaim):
        runner.execute(stale)  # the zombie wakes up: its writes are refused
    fresh = runner.claim(turn.id)
    assert fresh.attempt == 2
    assert turn.events.filter(kind="zombie_requeued", attempt=0).exists()
    runner.execute(fresh)
    assert Message.objects.filter(turn=turn, role="assistant").count() == 1
    kinds = list(turn.events.values_list("kind", flat=True))
    assert "zombie_requeued" in kinds
    assert AuditEntry.objects.filter(action="turn.requeued", target=str(turn.id)).exists()


def test_a_turn_with_a_recent_heartbeat_is_left_alone(alice):
    turn = admit_turn(alice)
    runner.claim(turn.id)
    silent_for(turn, 30)
    assert supervisor.sweep().requeued == []


def test_requeues_back_off_exponentially(settings):
    assert [supervisor.backoff_seconds(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert supervisor.backoff_seconds(30) == settings.SENTINEL["RETRY_BACKOFF_MAX"]


def test_after_its_attempts_a_turn_is_dead_lettered_and_its_budget_released(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "MAX_ATTEMPTS": 2}
    turn = admit_turn(alice)
    for _ in range(2):
        runner.claim(turn.id)
        silent_for(turn, 61)
        supervisor.sweep()
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED and turn.error["code"] == "heartbeat_lost"
    letter = DeadLetter.objects.get(turn=turn)
    assert (letter.reason, letter.attempts) == ("heartbeat_lost", 2)
    assert not Reservation.objects.filter(turn_id=turn.id, status="held").exists()


def test_a_dead_letter_can_be_redriven_once(alice, stub_llm):
    turn = admit_turn(alice)
    runner.claim(turn.id)
    supervisor.dead_letter(Turn.objects.get(id=turn.id), "poison", {"code": "poison"})
    letter = DeadLetter.objects.get(turn=turn)
    assert deadletters.redrive(letter, actor="test")
    assert not deadletters.redrive(letter, actor="test")
    run(turn)
    assert Turn.objects.get(id=turn.id).status == TurnStatus.SUCCEEDED


def test_dead_letters_over_the_api_are_per_tenant(alice, bob):
    turn = admit_turn(alice)
    runner.claim(turn.id)
    supervisor.dead_letter(Turn.objects.get(id=turn.id), "poison", None)
    letter = DeadLetter.objects.get(turn=turn)
    assert [d["turn"] for d in Client().get("/v1/dead-letters", **alice.auth).json()["data"]] == [str(turn.id)]
    assert Client().get("/v1/dead-letters", **bob.auth).json()["data"] == []
    assert Client().post(f"/v1/dead-letters/{letter.id}/redrive", **bob.auth).status_code == 404
    assert Client().post(f"/v1/dead-letters/{letter.id}/redrive", **alice.auth).status_code == 202
    assert Client().post(f"/v1/dead-letters/{letter.id}/redrive", **alice.auth).status_code == 409


def test_turns_committed_but_never_enqueued_are_found(alice):
    first = admit_turn(alice, "a")
    second = admit_turn(alice, "b", conversation=first.conversation_id)
    Turn.objects.filter(id__in=[first.id, second.id]).update(created_at=timezone.now() - timedelta(minutes=5))
    assert supervisor.sweep().unsent == [str(first.id)], "only the head of the conversation's queue can run"


def test_five_failures_open_the_breaker_and_calls_fail_fast(alice, stub_llm, settings):
    stub_llm.script(*[Reply(status=500) for _ in range(5)])
    for _ in range(5):
        run(admit_turn(alice))
    assert breaker.state(providers.ProviderConfig.for_agent(alice.agent)) == breaker.OPEN
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.error["status"] == 503 and turn.error["code"] == "circuit_open"
    assert len(stub_llm.requests) == 5, "an open breaker sends nothing to the provider"


def test_after_30_seconds_one_success_closes_the_breaker(alice, stub_llm, settings):
    config = providers.ProviderConfig.for_agent(alice.agent)
    for _ in range(5):
        breaker.record_failure(config, providers.ProviderError(502, "provider_error", "x", retryable=True, upstream_status=500))
    assert breaker.state(config) == breaker.OPEN
    assert breaker.state(config, now=__import__("time").time() + 31) == breaker.HALF_OPEN
    from sentinel_site.redis import sync_client

    sync_client().hset(breaker._key(config.breaker_key), "opened_at", __import__("time").time() - 31)
    run(admit_turn(alice))
    assert breaker.state(config) == breaker.CLOSED


def test_client_errors_do_not_open_the_breaker(alice, stub_llm, settings):
    stub_llm.script(*[Reply(status=400) for _ in range(6)])
    for _ in range(6):
        run(admit_turn(alice))
    assert breaker.state(providers.ProviderConfig.for_agent(alice.agent)) == breaker.CLOSED


def test_retryable_failures_are_retried_with_every_try_on_record(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_RETRIES": 2, "PROVIDER_RETRY_BASE_SECONDS": 0.01}
    stub_llm.script(Reply(status=503), Reply(status=429), Reply(content="third time lucky"))
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.status == TurnStatus.SUCCEEDED and turn.output.content == "third time lucky"
    retries = [e.payload for e in turn.events.filter(kind="provider_retry").order_by("seq")]
    assert [r["error"]["status"] for r in retries] == [502, 429] and all(r["delay_s"] > 0 for r in retries)


def test_non_retryable_failures_are_not_retried(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_RETRIES": 3, "PROVIDER_RETRY_BASE_SECONDS": 0.01}
    stub_llm.script(Reply(status=401))
    turn = admit_turn(alice)
    run(turn)
    assert len(stub_llm.requests) == 1 and Turn.objects.get(id=turn.id).error["status"] == 401


def test_retries_stop_once_tokens_reached_the_client(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_RETRIES": 3, "PROVIDER_RETRY_BASE_SECONDS": 0.01}
    stub_llm.script(Reply(content="one two three four", cut_after=2))
    turn = admit_turn(alice)
    run(turn)
    assert len(stub_llm.requests) == 1, "a retry after partial output would duplicate it in the stream"


def test_a_hanging_provider_times_out_retries_and_ends_in_the_dead_letter_queue(alice, stub_llm, settings):
    settings.SENTINEL = {**settings.SENTINEL, "PROVIDER_RETRIES": 1, "PROVIDER_RETRY_BASE_SECONDS": 0.01, "LLM_TIMEOUT": 0.5}
    stub_llm.script(Reply(hang=2), Reply(hang=2))
    turn = admit_turn(alice)
    run(turn)
    turn.refresh_from_db()
    assert turn.error["status"] == 504 and len(stub_llm.requests) == 2
    letter = DeadLetter.objects.get(turn=turn)
    assert letter.reason == "provider_timeout" and letter.last_error["status"] == 504
    assert turn.events.filter(kind="provider_retry").count() == 1


def test_a_refused_request_is_a_plain_failure_not_a_dead_letter(alice, stub_llm):
    stub_llm.script(Reply(status=400))
    turn = admit_turn(alice)
    run(turn)
    assert not DeadLetter.objects.filter(turn=turn).exists()


def test_a_redis_blip_does_not_abort_the_supervisors_sweep(alice, settings, monkeypatch):
    import redis

    from agents import streams

    settings.SENTINEL = {**settings.SENTINEL, "MAX_ATTEMPTS": 1}
    turns = [admit_turn(alice, f"t{i}") for i in range(2)]
    for turn in turns:
        runner.claim(turn.id)
        silent_for(turn, 61)
    unreachable = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    monkeypatch.setattr(streams, "sync_client", lambda: unreachable)
    result = supervisor.sweep()
    assert sorted(result.dead) == sorted(str(t.id) for t in turns), "both turns are given up, the second too"
    assert all(Turn.objects.get(id=t.id).status == TurnStatus.FAILED for t in turns)


def test_a_dead_lettered_turn_lets_the_next_one_of_its_conversation_run(alice, settings):
    settings.SENTINEL = {**settings.SENTINEL, "MAX_ATTEMPTS": 1}
    first = admit_turn(alice, "a")
    second = admit_turn(alice, "b", conversation=first.conversation_id)
    runner.claim(first.id)
    silent_for(first, 61)
    result = supervisor.sweep()
    assert result.dead == [str(first.id)] and result.unsent == [str(second.id)]
