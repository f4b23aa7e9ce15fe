"""How long to wait before trying the server again.

Exponential backoff with full jitter: the n-th consecutive failure waits a
random time between 0 and ``min(cap, base * 2**n)``. The randomness is the
point: thousands of agents that lost their server at the same moment must
not all come back at the same moment when it returns (Salt #63310).

A server that says when to come back (``Retry-After`` on 429/503: its
admission control) is never called sooner than that; the wait is spread
over up to as long again (at most the current backoff ceiling), so agents
told the same time do not arrive together either.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import random
from typing import Optional


class Backoff:
    """Consecutive failures make longer waits; a success resets them."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: Optional[random.Random] = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng if rng is not None else random.Random()
        self.failures = 0

    def ceiling(self) -> float:
        """The longest wait the next failure may get."""
        # min() before the power would overflow after ~1000 failures.
        return min(self.cap, self.base * float(2 ** min(self.failures, 64)))

    def next_delay(self, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after one more failure (``retry_after``: what the
        server asked for, if it did)."""
        ceiling = self.ceiling()
        self.failures += 1
        if retry_after is not None and retry_after > 0:
            return retry_after + self.rng.uniform(0, min(ceiling, retry_after))
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        """The server answered: the next failure starts from ``base`` again."""
        self.failures = 0
