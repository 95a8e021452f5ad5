"""When a failed delivery is tried again: the retry table, with jitter."""

from __future__ import annotations

import random
from collections.abc import Sequence

# Seconds before each retry (attempt 2, 3, ...): about 3 days in all, the first within 30 s.
# The README's retry table shows these; keep the two in step.
RETRY_DELAYS: tuple[float, ...] = (
    5,
    30,
    2 * 60,
    10 * 60,
    30 * 60,
    3600,
    2 * 3600,
    4 * 3600,
    8 * 3600,
    12 * 3600,
    12 * 3600,
    12 * 3600,
    12 * 3600,
    12 * 3600,
)
JITTER = 0.2  # each delay is stretched or shrunk by up to 20 %, so retries do not stampede


def next_delay(
    attempts_made: int, delays: Sequence[float] = RETRY_DELAYS, jitter: float = JITTER
) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones; None: give up."""
    if attempts_made > len(delays):
        return None
    base = delays[attempts_made - 1]
    return base * random.uniform(1 - jitter, 1 + jitter)
