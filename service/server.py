"""Builds the gRPC server: servicers, the auth interceptor, health and reflection."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

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

from . import reflection
from .api.agents import AgentServicer
from .api.projects import ProjectServicer
from .api.tasks import TaskServicer
from .api.teams import TeamServicer
from .auth import AuthInterceptor
from .config import ServerConfig
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

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


def _options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Keep idle connections healthy through proxies, and tolerate clients that ping
        # every 10 s (long ClaimNextTask waits and WatchTasks streams sit idle).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish for `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(config: ServerConfig, limiter: RateLimiter | None = None) -> RunningServer:
    """A started server bound to config.host:config.port (port 0 picks a free one).

    `limiter` replaces the rate limiter's buckets (tests pass one with a manual clock).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
        interceptors=[AuthInterceptor(config.rate_limits, limiter)],
        options=_options(config),
    )
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(TaskServicer(), server)
    projects_pb2_grpc.add_ProjectServiceServicer_to_server(ProjectServicer(), server)
    agents_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(), server)
    webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(
        webhooks_pb2_grpc.WebhookServiceServicer(), server
    )
    teams_pb2_grpc.add_TeamServiceServicer_to_server(TeamServicer(), server)

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *SERVICE_NAMES]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    if config.reflection:
        reflection.enable([*SERVICE_NAMES, health.SERVICE_NAME], server)

    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    server.start()
    return RunningServer(server, health_servicer, port)
