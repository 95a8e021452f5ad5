"""Token buckets per token (and per client address for failed authentications).

Buckets live in this process: with several server processes each one counts on its own,
so the effective limit is per process (see the README).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .domain.errors import RateLimited


@dataclass
class _Bucket:
    capacity: float
    tokens: float
    refilled_at: float

    def take(self, per_second: float, now: float) -> float:
        """Takes one token; returns 0, or the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.refilled_at) * per_second)
        self.refilled_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / per_second


class RateLimiter:
    """Buckets hold `per_minute` calls, start full and refill continuously; 0 disables."""

    _MAX_BUCKETS = 100_000  # forget idle buckets beyond this, so memory stays bounded

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple, _Bucket] = {}
        self._lock = threading.Lock()

    def charge(self, key: tuple, per_minute: int, what: str) -> None:
        """Counts one call against `key`; raises RATE_LIMITED when its bucket is empty."""
        if per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((key, per_minute))
            if bucket is None:
                if len(self._buckets) >= self._MAX_BUCKETS:
                    self._forget_full_buckets(now)
                bucket = self._buckets[(key, per_minute)] = _Bucket(per_minute, per_minute, now)
            wait = bucket.take(per_minute / 60.0, now)
        if wait:
            raise RateLimited(wait, f"Rate limit exceeded: {per_minute} {what} per minute")

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely behaves exactly like a new one.
        for key, bucket in list(self._buckets.items()):
            refill = (now - bucket.refilled_at) * bucket.capacity / 60.0
            if bucket.tokens + refill >= bucket.capacity:
                del self._buckets[key]


@dataclass(frozen=True)
class RateLimits:
    """Server-wide defaults, per minute; 0 disables. A team's settings override the first two."""

    task: int = 120
    other: int = 60
    auth_failures: int = 5
