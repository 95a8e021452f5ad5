"""Builds the gRPC server: servicers behind the door (api/door.py), health and reflection."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agenttasks.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    projects_pb2,
    projects_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    teams_pb2,
    teams_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)

from . import dbhealth, reflection, tls
from .api.agents import AgentServicer
from .api.door import Door
from .api.observe import Observer
from .api.projects import ProjectServicer
from .api.tasks import TaskServicer
from .api.teams import TeamServicer
from .api.webhooks import WebhookServicer
from .config import ConfigError, ServerConfig
from .dbwork import DatabaseExecutor, DatabaseWork
from .gate import Gate
from .listen import in_use_message
from .metrics import Metrics
from .ratelimit import RateLimiter
from .storage.checkpoints import Checkpointer
from .storage.db import is_postgres
from .waits import WaitHub

log = logging.getLogger(__name__)
T = TypeVar("T")

# The five API services, as descriptors (the permission test walks their methods).
SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (tasks_pb2, "TaskService"),
        (projects_pb2, "ProjectService"),
        (agents_pb2, "AgentService"),
        (webhooks_pb2, "WebhookService"),
        (teams_pb2, "TeamService"),
    )
]
SERVICE_NAMES = [service.full_name for service in SERVICES]

MAX_METADATA_BYTES = 64 * 1024
MAX_CONNECTION_AGE_MS = 5 * 60_000
CONNECTION_AGE_GRACE_MS = 70_000
MAX_CONCURRENT_STREAMS = 1000


def _options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        # Only the processes of one `serve --workers N` share the port; a lone server
        # must fail on a busy port instead of splitting its calls with a stranger.
        ("grpc.so_reuseport", int(config.workers > 1)),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Keep idle connections healthy through proxies, and tolerate clients that ping
        # every 10 s (long ClaimNextTask waits and WatchTasks streams sit idle).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # Let authorization values up to this size reach the gate, which refuses those
        # over 1 KB with the documented details (between gRPC's default soft and hard
        # limits, 8 and 16 KB, calls were refused at random without details).
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        # A call whose request never arrives holds no thread, but must still end: every
        # connection is closed after this age plus a grace longer than the longest wait
        # (ClaimNextTask, 60 s); clients reconnect transparently, WatchTasks resumes with
        # after_event_id. Streams per connection are bounded too.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_MS),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
    ]


class RunningServer:
    """A server running on its own event loop thread, driven from ordinary (sync) code."""

    def __init__(self, config: ServerConfig, limiter: RateLimiter | None) -> None:
        threads = futures.ThreadPoolExecutor(config.max_workers, thread_name_prefix="db")
        self.executor = DatabaseExecutor(threads)
        # SQLite work runs on the loop, whose commits make no checkpoints (dbwork): this
        # thread makes them.
        self._checkpoints = None if is_postgres() else Checkpointer().start()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="grpc", daemon=True)
        self._thread.start()
        try:
            self.port = self._call(self._start(config, limiter))
        except BaseException:
            self._close_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _start(self, config: ServerConfig, limiter: RateLimiter | None) -> int:
        work = self._work = DatabaseWork(self.loop, self.executor, on_loop=not is_postgres())
        self.hub = WaitHub(self.loop, work)
        credentials = tls.credentials(config)
        self.metrics = Metrics() if config.metrics_port else None
        door = Door(Gate(config.rate_limits, limiter), Observer(self.metrics), work)
        self.server = grpc.aio.server(options=_options(config))
        self.health = health.aio.HealthServicer()
        for add_to_server, servicer in (
            (tasks_pb2_grpc.add_TaskServiceServicer_to_server, TaskServicer(self.hub)),
            (projects_pb2_grpc.add_ProjectServiceServicer_to_server, ProjectServicer()),
            (agents_pb2_grpc.add_AgentServiceServicer_to_server, AgentServicer()),
            (
                webhooks_pb2_grpc.add_WebhookServiceServicer_to_server,
                WebhookServicer(config.allow_private_webhooks),
            ),
            (teams_pb2_grpc.add_TeamServiceServicer_to_server, TeamServicer()),
            (health_pb2_grpc.add_HealthServicer_to_server, self.health),
        ):
            door.add(self.server, add_to_server, servicer)
        if config.reflection:
            door.add(self.server, *reflection.servicer([*SERVICE_NAMES, health.SERVICE_NAME]))
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

        address = f"{config.host}:{config.port}"
        try:
            if credentials is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind": another process holds the port
            port = 0
        if port == 0:
            raise ConfigError(in_use_message(config.port))
        if self.metrics is not None:
            try:
                self.metrics.serve(config.host, config.metrics_port)
            except OSError as error:
                raise ConfigError(
                    f"--metrics-port (AGENTTASKS_METRICS_PORT): cannot listen on "
                    f"{config.metrics_port} ({error.strerror})"
                ) from None
        await self.server.start()
        self.hub.start()
        names = ["", *SERVICE_NAMES]
        self._db_watch = asyncio.create_task(dbhealth.watch(self.health, names, self.executor))
        return port

    def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish for `grace` seconds."""
        try:
            self._call(self._stop(grace))
        finally:
            self._close_loop()

    async def _stop(self, grace: float | None) -> None:
        self._db_watch.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.hub.close()
        self._work.finish()
        if self.metrics is not None:
            self.metrics.close()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._checkpoints is not None:
            self._checkpoints.stop()


def create_server(config: ServerConfig, limiter: RateLimiter | None = None) -> RunningServer:
    """A started server bound to config.host:config.port (port 0 picks a free one).

    `limiter` replaces the rate limiter's buckets (tests pass one with a manual clock).
    """
    return RunningServer(config, limiter)
