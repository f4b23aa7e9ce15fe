"""Exponential backoff with full jitter, reset on success, and a server's
Retry-After never undercut."""

from __future__ import annotations

import random

import pytest

from provisiond.agent.backoff import Backoff


def test_delays_are_jittered_below_a_doubling_ceiling_up_to_the_cap():
    backoff = Backoff(base=1.0, cap=60.0, rng=random.Random(7))
    ceilings = []
    for _ in range(10):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


def test_full_jitter_spreads_agents_out():
    delays = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(200)]
    assert min(delays) < 0.1 and max(delays) > 0.9  # spread over [0, base], not all at once


def test_success_resets():
    backoff = Backoff(rng=random.Random(1))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.ceiling() == 32
    backoff.reset()
    assert backoff.ceiling() == 1 and backoff.failures == 0


@pytest.mark.parametrize("retry_after", [0.5, 5, 120])
def test_retry_after_is_never_undercut(retry_after: float):
    for seed in range(50):
        backoff = Backoff(rng=random.Random(seed))
        delay = backoff.next_delay(retry_after)
        assert retry_after <= delay <= retry_after + min(retry_after, 1.0)


def test_retry_after_spread_grows_with_failures():
    backoff = Backoff(rng=random.Random(3))
    for _ in range(8):
        backoff.next_delay()
    delays = [Backoff(rng=random.Random(s)).next_delay(30) for s in range(20)]
    assert all(30 <= d <= 31 for d in delays)  # first failure: spread up to the base
    assert 30 <= backoff.next_delay(30) <= 60


def test_no_overflow_after_many_failures():
    backoff = Backoff(rng=random.Random(0))
    for _ in range(5000):
        assert backoff.next_delay() <= 60


def test_bad_settings():
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=10, cap=5)
