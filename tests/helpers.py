"""Test clients and assertions: stubs that send a token, and the documented error body."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agenttasks.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    errors_pb2,
    projects_pb2,
    projects_pb2_grpc,
    tasks_pb2_grpc,
    teams_pb2_grpc,
    webhooks_pb2_grpc,
)


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: <value>` to every call."""

    def __init__(self, value: str) -> None:
        self.value = value

    def _with_token(self, details):
        return details._replace(metadata=[*(details.metadata or ()), ("authorization", self.value)])

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


class Client:
    """Stubs of the five services over `channel`, sending `token` (None: no header)."""

    def __init__(self, channel: grpc.Channel, token: str | None, scheme: str = "Bearer") -> None:
        self.token = token
        if token is not None:
            channel = grpc.intercept_channel(channel, _Bearer(f"{scheme} {token}"))
        self.channel = channel
        self.tasks = tasks_pb2_grpc.TaskServiceStub(channel)
        self.projects = projects_pb2_grpc.ProjectServiceStub(channel)
        self.agents = agents_pb2_grpc.AgentServiceStub(channel)
        self.webhooks = webhooks_pb2_grpc.WebhookServiceStub(channel)
        self.teams = teams_pb2_grpc.TeamServiceStub(channel)


@dataclass(frozen=True)
class ErrorBody:
    grpc_code: grpc.StatusCode
    message: str
    code: str
    status_code: int
    info: error_details_pb2.ErrorInfo
    violations: list[str]
    retry_delay: float | None


def error_body(error: grpc.RpcError) -> ErrorBody:
    """The documented details of a failed call, checked for internal consistency."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status details on {error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    detail = errors_pb2.ErrorDetail()
    bad_request = error_details_pb2.BadRequest()
    retry = error_details_pb2.RetryInfo()
    seen = set()
    for packed in status.details:
        for message in (info, detail, bad_request, retry):
            if packed.Is(message.DESCRIPTOR):
                packed.Unpack(message)
                seen.add(message.DESCRIPTOR.name)
    assert {"ErrorInfo", "ErrorDetail"} <= seen, seen
    assert info.domain == "agenttasks"
    assert info.reason == detail.code
    assert info.metadata["statusCode"] == str(detail.status_code)
    assert detail.error == status.message == error.details()
    return ErrorBody(
        grpc_code=error.code(),
        message=detail.error,
        code=detail.code,
        status_code=detail.status_code,
        info=info,
        violations=[v.field for v in bad_request.field_violations],
        retry_delay=retry.retry_delay.ToTimedelta().total_seconds()
        if "RetryInfo" in seen
        else None,
    )


EXPECTED = {
    "UNAUTHORIZED": (grpc.StatusCode.UNAUTHENTICATED, 401),
    "FORBIDDEN": (grpc.StatusCode.PERMISSION_DENIED, 403),
    "NOT_ASSIGNED_AGENT": (grpc.StatusCode.PERMISSION_DENIED, 403),
    "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, 404),
    "VALIDATION_ERROR": (grpc.StatusCode.INVALID_ARGUMENT, 400),
    "TASK_ALREADY_CLAIMED": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "TASK_NOT_CLAIMABLE": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "TASK_NOT_IN_PROGRESS": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "INVALID_TRANSITION": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "ETAG_MISMATCH": (grpc.StatusCode.ABORTED, 409),
    "PROJECT_NOT_EMPTY": (grpc.StatusCode.FAILED_PRECONDITION, 409),
    "EVENTS_EXPIRED": (grpc.StatusCode.FAILED_PRECONDITION, 410),
    "RATE_LIMITED": (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    "INTERNAL": (grpc.StatusCode.INTERNAL, 500),
}


def raises(code: str, call, *args, message: str | None = None, **kwargs) -> ErrorBody:
    """Calls `call(*args, **kwargs)`, asserts it fails with the documented `code`."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a server stream fails while it is read
            list(result)
    body = error_body(caught.value)
    grpc_code, status_code = EXPECTED[code]
    assert (body.code, body.grpc_code, body.status_code) == (code, grpc_code, status_code), body
    if message is not None:
        assert body.message == message
    return body


@dataclass
class TeamWorld:
    """A fresh team on the test server: its id, key and a client holding the key."""

    id: str
    key: str
    admin: Client
    channel: grpc.Channel

    def client(self, token: str | None) -> Client:
        return Client(self.channel, token)

    def project(self, name: str = "Project") -> projects_pb2.Project:
        return self.admin.projects.CreateProject(
            projects_pb2.CreateProjectRequest(name=name)
        ).project

    def agent(self, name: str = "Agent") -> tuple[agents_pb2.Agent, Client]:
        response = self.admin.agents.CreateAgent(agents_pb2.CreateAgentRequest(name=name))
        return response.agent, self.client(response.token)


@contextmanager
def lock_held_by_another_connection(path: str) -> Iterator[None]:
    """SQLite's write lock on the database file at `path`, held as another process holds it."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()
