"""The circuit breaker's in-process cache: a healthy provider costs no Redis round trip per turn,
and a breaker that opens is still seen within SENTINEL_BREAKER_CACHE_SECONDS. Real Redis; only
the cache's clock is moved by hand."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from agents import breaker, providers
from sentinel_site.redis import sync_client


class CountingRedis:
    """The real client, with the name of each command (or pipeline) sent through it noted."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.sent.append(name)
        return getattr(self.client, name)


@pytest.fixture
def redis_calls(monkeypatch) -> CountingRedis:
    counting = CountingRedis(sync_client())
    monkeypatch.setattr(breaker, "sync_client", lambda: counting)
    return counting


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(breaker, "_clock", lambda: now[0])
    return now


@pytest.fixture(autouse=True)
def cache_for_a_second(settings):
    settings.SENTINEL = {**settings.SENTINEL, "BREAKER_CACHE_SECONDS": 1.0}
    breaker.forget_cached()
    yield
    breaker.forget_cached()


@pytest.fixture
def config() -> providers.ProviderConfig:
    # A tenant of its own: no other test's breaker (or cache entry) is this one.
    return providers.ProviderConfig("http://127.0.0.1:9/v1", "key", "m", 5.0, 2.0, tenant_id=str(uuid.uuid4()))


def failure() -> providers.ProviderError:
    return providers.ProviderError(502, "provider_error", "x", retryable=True, upstream_status=500)


def open_elsewhere(config: providers.ProviderConfig) -> None:
    """What another worker's fifth failure writes."""
    sync_client().hset(breaker._key(config.breaker_key), mapping={"failures": 5, "opened_at": time.time()})


def test_a_healthy_provider_costs_one_redis_read_per_interval_not_per_turn(config, redis_calls, clock):
    for _ in range(10):
        breaker.before_call(config)
        breaker.record_success(config)
        clock[0] += 0.05
    assert redis_calls.sent == ["hgetall"], "ten turns within the interval: the breaker read once, no success written"
    clock[0] += 1.0
    breaker.before_call(config)
    assert redis_calls.sent == ["hgetall", "hgetall"], "read again once the interval has passed"


def test_a_breaker_opened_by_another_process_is_seen_within_the_interval(config, clock):
    breaker.before_call(config)
    open_elsewhere(config)
    clock[0] += 0.5
    breaker.before_call(config)  # still trusted: the interval is the price of no round trip
    clock[0] += 0.51
    with pytest.raises(providers.ProviderError) as raised:
        breaker.before_call(config)
    assert (raised.value.status, raised.value.code) == (503, "circuit_open")


def test_failures_counted_in_this_process_are_seen_at_once(config, clock):
    breaker.before_call(config)
    for _ in range(5):
        breaker.record_failure(config, failure())
    with pytest.raises(providers.ProviderError) as raised:
        breaker.before_call(config)
    assert raised.value.code == "circuit_open", "no waiting for the interval after this process's own failures"


def test_a_success_after_failures_still_resets_their_count(config, clock):
    for _ in range(4):
        breaker.record_failure(config, failure())
    breaker.before_call(config)
    breaker.record_success(config)
    breaker.record_failure(config, failure())
    assert breaker.state(config) == breaker.CLOSED, "4 failures, a success, 1 failure: not 5 in a row"
    assert sync_client().hget(breaker._key(config.breaker_key), "failures") == b"1"


def test_a_breaker_with_failures_counted_is_not_trusted(config, redis_calls, clock):
    breaker.record_failure(config, failure())
    breaker.before_call(config)
    breaker.before_call(config)
    assert redis_calls.sent.count("hgetall") == 2, "closed but not clean: read every time until a success clears it"


def test_with_the_cache_off_every_call_reads_redis(config, redis_calls, clock, settings):
    settings.SENTINEL = {**settings.SENTINEL, "BREAKER_CACHE_SECONDS": 0}
    for _ in range(3):
        breaker.before_call(config)
        breaker.record_success(config)
    assert redis_calls.sent == ["hgetall", "exists"] * 3


def test_a_half_open_breaker_lets_one_probe_through_and_its_success_closes_it(config, clock):
    sync_client().hset(breaker._key(config.breaker_key), mapping={"failures": 5, "opened_at": time.time() - 31})
    breaker.before_call(config)  # the probe
    with pytest.raises(providers.ProviderError):
        breaker.before_call(config)  # a second caller while the probe is out
    breaker.record_success(config)
    breaker.before_call(config)
    assert breaker.state(config) == breaker.CLOSED
