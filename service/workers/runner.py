"""Runs background jobs, each in its own thread on its own timer, until stopped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..domain.values import now_us
from ..storage.db import DATABASE_DOWN, connected, drop_connection

log = logging.getLogger("agenttasks.workers")


@dataclass(frozen=True)
class Job:
    """Work done over and over: `run_once(now_us)` handles a batch and returns its size.

    After a run the job sleeps `interval` seconds, or only `busy_interval` when the run
    handled a full `batch` (more is probably waiting).
    """

    name: str
    run_once: Callable[[int], int]
    interval: float
    batch: int
    busy_interval: float = 0.0


class Runner:
    """Runs `jobs` in daemon threads; `clock` gives the `now_us` each run is handed."""

    def __init__(
        self,
        jobs: Sequence[Job],
        clock: Callable[[], int] = now_us,
        max_backoff: float = 60.0,
    ) -> None:
        self.jobs = list(jobs)
        self.clock = clock
        self.max_backoff = max_backoff
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Runner:
        for job in self.jobs:
            thread = threading.Thread(
                target=self._loop, args=(job,), name=f"agenttasks-{job.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self.jobs:
            log.info("background jobs running: %s", ", ".join(job.name for job in self.jobs))
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Asks every job to stop and waits (up to `timeout` s) for the items in hand.

        Returns whether every job stopped; one still busy is a daemon thread and does not
        keep the process alive.
        """
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            log.warning("background jobs still busy after %.0f s: %s", timeout, ", ".join(busy))
        return not busy

    def _loop(self, job: Job) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with connected():  # each tick returns its connection (dropped if it failed)
                    handled = job.run_once(self.clock())
            except DATABASE_DOWN as error:  # the job backs off; the next tick reconnects
                failures += 1
                delay = self._backoff(job, failures)
                log.warning(
                    "%s: database unavailable (%s); retrying in %.0f s",
                    job.name,
                    type(error).__name__,
                    delay,
                )
            except Exception:
                failures += 1
                delay = self._backoff(job, failures)
                log.exception("%s failed; retrying in %.0f s", job.name, delay)
            else:
                if failures:
                    log.info("%s: running again", job.name)
                failures = 0
                delay = job.busy_interval if handled >= job.batch else job.interval
            self._stopping.wait(delay)
        drop_connection()

    def _backoff(self, job: Job, failures: int) -> float:
        """Doubling waits after consecutive failures, so a database that is down is not
        hammered by every job of every process."""
        return min(self.max_backoff, max(job.interval, 1.0) * 2 ** min(failures - 1, 16))
