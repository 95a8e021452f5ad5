"""`agenttasks.client` against a real server, and the base distribution's dependencies."""

from __future__ import annotations

import re
from importlib import metadata

import grpc
import pytest

from agenttasks.client import AgentTasksError, connect
from agenttasks.server.ratelimit import RateLimiter, RateLimits
from agenttasks.v1 import projects_pb2, tasks_pb2, teams_pb2

from .conftest import new_team, start_server
from .test_rate_limits import StoppedClock


def test_the_base_distribution_needs_no_server_dependencies():
    base = [
        re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        for requirement in metadata.requires("agenttasks-grpc") or []
        if "extra ==" not in requirement
    ]
    assert sorted(base) == ["googleapis-common-protos", "grpcio", "grpcio-status", "protobuf"]
    server_extra = [
        r for r in metadata.requires("agenttasks-grpc") or [] if 'extra == "server"' in r
    ]
    assert any(r.startswith("peewee") for r in server_extra)


@pytest.fixture
def client(server, world):
    with connect(f"127.0.0.1:{server.port}", world.key) as client:
        yield client


def test_calls_carry_the_token(client, world):
    me = client.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    assert (me.team_id, me.token_kind) == (world.id, teams_pb2.TOKEN_KIND_TEAM_API_KEY)


def test_not_found_is_decoded(client):
    with pytest.raises(AgentTasksError) as caught:
        client.tasks.GetTask(tasks_pb2.GetTaskRequest(task_id="cnosuchtask"))
    error = caught.value
    assert (error.code, error.status_code, error.reason) == ("NOT_FOUND", 404, "NOT_FOUND")
    assert error.grpc_code == grpc.StatusCode.NOT_FOUND
    assert error.error == "task 'cnosuchtask' not found"
    assert (error.field_violations, error.retry_delay) == ([], None)


def test_validation_errors_list_their_fields(client):
    project = client.projects.CreateProject(projects_pb2.CreateProjectRequest(name="P")).project
    with pytest.raises(AgentTasksError) as caught:
        client.tasks.CreateTask(tasks_pb2.CreateTaskRequest(project_id=project.id, title="  "))
    error = caught.value
    assert (error.code, error.status_code) == ("VALIDATION_ERROR", 400)
    assert [field for field, _ in error.field_violations] == ["title"]
    assert all(description for _, description in error.field_violations)


def test_a_missing_token_is_unauthorized(server):
    with (
        connect(f"127.0.0.1:{server.port}", "tk_wrong") as client,
        pytest.raises(AgentTasksError) as caught,
    ):
        client.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    assert (caught.value.code, caught.value.status_code) == ("UNAUTHORIZED", 401)


def test_rate_limited_calls_say_when_to_retry(database_url):
    running = start_server(limiter=RateLimiter(StoppedClock()), rate_limits=RateLimits(other=2))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            world = new_team(channel)
        with connect(f"127.0.0.1:{running.port}", world.key) as client:
            for _ in range(2):
                client.teams.WhoAmI(teams_pb2.WhoAmIRequest())
            with pytest.raises(AgentTasksError) as caught:
                client.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    finally:
        running.stop(0)
    error = caught.value
    assert (error.code, error.status_code) == ("RATE_LIMITED", 429)
    assert error.retry_delay == pytest.approx(30.0)


def test_an_unreachable_server_is_an_error_within_the_deadline():
    with (
        connect("127.0.0.1:1", "tk_x", timeout=0.5) as client,
        pytest.raises(AgentTasksError) as caught,
    ):
        client.teams.WhoAmI(teams_pb2.WhoAmIRequest())
    assert caught.value.grpc_code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    assert caught.value.status_code == 0
