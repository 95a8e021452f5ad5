"""The background jobs every worker runs; a new job is one more line in `_makers`."""

from __future__ import annotations

from collections.abc import Callable

from ..config import ServerConfig
from ..domain import leases, retention
from ..domain.values import MICROS
from ..webhooks.dispatcher import BATCH, INTERVAL_S, SENDERS, Dispatcher
from ..webhooks.http import HttpSender
from .runner import Job

SWEEP_INTERVAL = 0.5  # seconds: the contract says within one, and a run takes time too
SWEEP_BATCH = 100
RETENTION_INTERVAL = 60.0
RETENTION_BATCH = 1000


def lease_sweeper(interval: float = SWEEP_INTERVAL, batch: int = SWEEP_BATCH) -> Job:
    return Job("lease-sweeper", lambda now: leases.expire_due_leases(now, batch), interval, batch)


def event_retention(
    retention_s: float, interval: float = RETENTION_INTERVAL, batch: int = RETENTION_BATCH
) -> Job:
    keep_us = int(retention_s * MICROS)
    return Job(
        "event-retention",
        lambda now: retention.delete_events_before(now - keep_us, batch),
        interval,
        batch,
    )


def webhook_dispatcher(config: ServerConfig) -> Job:
    dispatcher = Dispatcher(
        HttpSender(allow_private=config.allow_private_webhooks),
        disable_after_s=config.webhook_disable_after,
    )
    return Job("webhook-dispatcher", dispatcher.run_once, INTERVAL_S, BATCH)


def _makers(config: ServerConfig) -> list[Callable[[], Job]]:
    """What `default_jobs` builds, unbuilt (so they can be counted without a sender)."""
    makers: list[Callable[[], Job]] = [lease_sweeper]
    if config.event_retention > 0:  # 0 keeps events forever
        makers.append(lambda: event_retention(config.event_retention))
    makers.append(lambda: webhook_dispatcher(config))
    return makers


def default_jobs(config: ServerConfig) -> list[Job]:
    return [make() for make in _makers(config)]


def connections_needed(config: ServerConfig) -> int:
    """The most database connections the jobs of `default_jobs(config)` hold at once: one
    per job thread during its tick, and one per webhook sending thread during a delivery."""
    if not config.run_workers:
        return 0
    return len(_makers(config)) + SENDERS
