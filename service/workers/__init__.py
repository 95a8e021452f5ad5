"""Background work beside the RPCs (or alone): lease sweeping, event retention."""

from __future__ import annotations

from collections.abc import Callable

from ..config import ServerConfig
from ..domain.values import now_us
from .jobs import default_jobs
from .runner import Job, Runner

__all__ = ["Job", "Runner", "default_jobs", "start"]


def start(config: ServerConfig, clock: Callable[[], int] = now_us) -> Runner:
    """Starts this process's jobs (none when `config.run_workers` is off) and returns them."""
    return Runner(default_jobs(config) if config.run_workers else [], clock).start()
