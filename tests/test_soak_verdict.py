"""The soak's verdict (bench/soak.py): a series that rises steadily fails it, a flat noisy one and
the warm-up's climb do not, and errors over 1% fail it."""

import random

import pytest

from bench.soak import LIMITS, OPEN, Sample, Soak, failed, verdicts


def soak_of(shape, seconds: float = 600, every: float = 10, errors: int = 0, ceiling: int = 100) -> Soak:
    soak = Soak(
        conversations=1000,
        rate=50,
        seconds=seconds,
        sent=30000,
        ok=30000 - errors,
        errors={"503": errors} if errors else {},
        connection_ceiling=ceiling,
    )
    rng = random.Random(7)
    for n in range(int(seconds / every) + 1):
        at = n * every
        soak.samples.append(Sample(at, {name: shape(name, at, rng) for name in [*LIMITS, OPEN]}, n * 500, 0))
    return soak


def flat(name: str, at: float, rng: random.Random) -> float:
    warm_up = min(1.0, at / 100)  # the first minutes fill caches and pools
    levels = {"web RSS (MiB)": 300, "workers RSS (MiB)": 900, "pool connections checked out": 8, OPEN: 20, "queue depth": 30}
    return levels[name] * warm_up + rng.uniform(-5, 5)


def test_flat_noisy_series_after_their_warm_up_pass():
    assert not failed(soak_of(flat)), verdicts(soak_of(flat))


@pytest.mark.parametrize("leaking", sorted(LIMITS))
def test_a_series_that_keeps_rising_fails_the_run(leaking):
    def rising(name, at, rng):
        return flat(name, at, rng) + (at * 0.4 if name == leaking else 0)  # 240 units over ten minutes

    result = {name: ok for name, _rise, _allowed, ok in verdicts(soak_of(rising))}
    assert result[leaking] is False, f"{leaking} grew by 240 across the run and must fail the slope test"
    assert all(ok for name, ok in result.items() if name != leaking)


def test_errors_over_one_percent_fail_the_run():
    assert failed(soak_of(flat, errors=400)) and not failed(soak_of(flat, errors=100))


def test_a_short_runs_warm_up_is_at_least_the_pools_filling():
    def pools_filling(name, at, rng):  # connections checked out as the load first arrives, for 26 s of a one-minute run
        return min(12.0, 2 + 0.4 * at) if name == "pool connections checked out" else flat(name, 100, rng)

    assert not failed(soak_of(pools_filling, seconds=60, every=2))


def test_open_connections_may_climb_to_the_pools_ceiling_but_not_past_it():
    def pools_growing(name, at, rng):  # what a healthy 10-minute run showed: the pools opening what bursts asked for
        return min(63.0, 12 + at / 10) if name == OPEN else flat(name, at, rng)

    assert not failed(soak_of(pools_growing, ceiling=80)), "a pool keeps the connections it opened: bounded, not a leak"
    assert failed(soak_of(pools_growing, ceiling=60)), "more connections than the pools may open: something outside them leaks"


def test_a_run_with_no_samples_fails():
    assert failed(Soak(conversations=1, rate=1, seconds=60))
