"""`connect()`: a channel that sends the token, applies a deadline and retries UNAVAILABLE."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from agenttasks.v1 import (
    agents_pb2_grpc,
    projects_pb2_grpc,
    tasks_pb2_grpc,
    teams_pb2_grpc,
    webhooks_pb2_grpc,
)

from .errors import AgentTasksError

_SERVICES = ("TaskService", "ProjectService", "AgentService", "WebhookService", "TeamService")

# gRPC retries UNAVAILABLE (a server restarting, a connection dropped) only while no response
# has begun; the creating calls take a `request_id`, so a repeat of one does nothing twice.
_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": f"agenttasks.v1.{name}"} for name in _SERVICES],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.2s",
                "maxBackoff": "5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


class _Calls(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    """Adds the bearer token and the default deadline to every call; raises AgentTasksError."""

    def __init__(self, token: str, timeout: float | None) -> None:
        self.metadata = ("authorization", f"Bearer {token}")
        self.timeout = timeout

    def _details(self, details: Any) -> Any:
        timeout = details.timeout if details.timeout is not None else self.timeout
        metadata = [*(details.metadata or ()), self.metadata]
        return details._replace(metadata=metadata, timeout=timeout)

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        outcome = continuation(self._details(details), request)
        error = outcome.exception()
        if error is not None and isinstance(error, grpc.RpcError):
            raise AgentTasksError(error) from None
        return outcome

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        # A stream has no default deadline: WatchTasks is meant to stay open.
        details = details._replace(metadata=[*(details.metadata or ()), self.metadata])
        return _Stream(continuation(details, request))


class _Stream:
    """A server stream whose failures, raised while it is read, are AgentTasksError."""

    def __init__(self, call: Any) -> None:
        self.call = call

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self.call)
        except grpc.RpcError as error:
            raise AgentTasksError(error) from None

    def cancel(self) -> bool:
        return self.call.cancel()


class Client:
    """Stubs of the five services over one channel; close it (or use `with`) when done."""

    def __init__(self, channel: grpc.Channel, intercepted: grpc.Channel) -> None:
        self.channel = channel
        self.tasks = tasks_pb2_grpc.TaskServiceStub(intercepted)
        self.projects = projects_pb2_grpc.ProjectServiceStub(intercepted)
        self.agents = agents_pb2_grpc.AgentServiceStub(intercepted)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(intercepted)
        self.teams = teams_pb2_grpc.TeamServiceStub(intercepted)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(
    target: str,
    token: str,
    *,
    tls: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    timeout: float | None = 10.0,
    options: list[tuple[str, Any]] | None = None,
) -> Client:
    """A Client for the server at `target` (`host:port`) calling with `token`.

    `token` is a Team API Key (`tk_...`) or an Agent Token (`at_...`). `tls=True` uses the
    system's root certificates; `credentials` gives others (mutual TLS, a private CA).
    `timeout` is the deadline, in seconds, of every unary call that sets none (None: no
    deadline). Calls that fail raise AgentTasksError.
    """
    settings = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
        # The server allows pings every 10 s; long ClaimNextTask waits stay connected.
        ("grpc.keepalive_time_ms", 30_000),
        *(options or ()),
    ]
    if credentials is None and tls:
        credentials = grpc.ssl_channel_credentials()
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options=settings)
    else:
        channel = grpc.insecure_channel(target, options=settings)
    return Client(channel, grpc.intercept_channel(channel, _Calls(token, timeout)))
