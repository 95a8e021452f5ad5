"""Token buckets per token (and per client address for failed attempts), shared by processes.

Each bucket is one row of the database (storage.rate_buckets) that every process and
machine sharing it draws on. A process takes tokens from the row in batches (LEASE_SHARE
of the capacity) and spends them locally, so most calls write nothing. Tokens are only
ever taken from the shared row, so no process admits more than the row gave: across
processes the limit holds as an upper bound, and a process may refuse early by at most
the batch another process holds unspent (see the README).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .domain.errors import RateLimited
from .storage import rate_buckets

# A batch is this share of the bucket's capacity (at least one token).
LEASE_SHARE = 0.05
# A batch unspent this long goes stale; spending it later would burst past the rate.
LEASE_SECONDS = 5.0
# Shared rows untouched this long have refilled completely and are deleted.
FORGET_SECONDS = 120.0


@dataclass
class _Lease:
    tokens: int
    taken_at: float


class RateLimiter:
    """Buckets hold `per_minute` calls, start full and refill continuously; 0 disables."""

    _MAX_LEASES = 100_000  # forget leases beyond this, so memory stays bounded

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._leases: dict[tuple, _Lease] = {}
        self._lock = threading.Lock()
        self._forgotten_at = clock()

    def charge(self, key: tuple, per_minute: int, what: str) -> None:
        """Counts one call against `key`; raises RATE_LIMITED when its bucket is empty."""
        if per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            lease = self._leases.get((key, per_minute))
            if lease is not None and lease.tokens > 0 and now - lease.taken_at < LEASE_SECONDS:
                lease.tokens -= 1
                return
            # Writes come before any change here: a caller that may not wait for the write
            # lock (storage.db.run_without_waiting) runs the whole charge again where it may.
            if now - self._forgotten_at > FORGET_SECONDS:
                rate_buckets.forget_before(now - FORGET_SECONDS)
                self._forgotten_at = now
            batch = max(1, math.floor(per_minute * LEASE_SHARE))
            taken, wait = rate_buckets.take(
                _row_key(key, per_minute), per_minute, per_minute / 60.0, batch, now
            )
            if len(self._leases) >= self._MAX_LEASES:
                self._leases.clear()
            self._leases[(key, per_minute)] = _Lease(max(0, taken - 1), now)
        if not taken:
            raise RateLimited(wait, f"Rate limit exceeded: {per_minute} {what} per minute")


def _row_key(key: tuple, per_minute: int) -> str:
    # Fixed length whatever the key holds (addresses, token digests), and no input echoed.
    return hashlib.sha256(repr((key, per_minute)).encode()).hexdigest()


@dataclass(frozen=True)
class RateLimits:
    """Server-wide defaults, per minute; 0 disables. A team's settings override the first two."""

    task: int = 120
    other: int = 60
    auth_failures: int = 5
